"""Command line of the local cluster: build, images, up, down, bin; and of the kind cluster: kind-image, kind-up,
kind-down.

NODES=real (the default where the machine allows it) runs a real node; NODES=kwok runs fake nodes only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import build, images, kind
from .cluster import LocalCluster
from .node import unavailable_reason

DEFAULT_STATE = Path(os.environ.get("LOCALCLUSTER_DIR", Path(__file__).resolve().parents[2] / "build" / "localcluster"))
KIND_STATE = Path(__file__).resolve().parents[2] / "build" / "kind"


def real_nodes_wanted() -> bool:
    return os.environ.get("NODES", "real") == "real" and unavailable_reason() is None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="where the cluster keeps its state")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find cached) the control plane's and the real node's binaries")
    sub.add_parser("images", help="build (or find cached) the node's images; import them into a running cluster")
    sub.add_parser("up", help="start the cluster and print the kubeconfig path")
    sub.add_parser("down", help="stop exactly the processes `up` started and remove their state")
    sub.add_parser("bin", help="print the directories holding the binaries (for PATH)")
    sub.add_parser("kind-image", help="build (or find cached) the kind node image; print its reference and archive")
    kind_up = sub.add_parser("kind-up", help="create a kind cluster from the node image; print the kubeconfig path")
    kind_up.add_argument("--workers", type=int, default=1)
    kind_up.add_argument("--name", default=kind.DEFAULT_CLUSTER)
    kind_down = sub.add_parser("kind-down", help="delete the kind cluster, stop its engine, remove its links")
    kind_down.add_argument("--name", default=kind.DEFAULT_CLUSTER)
    args = parser.parse_args(argv)

    if args.command == "build":
        started = time.monotonic()
        tools = build.ensure_all()
        if real_nodes_wanted():
            tools.update(build.ensure_node_tools())
        tools.update(build.build_monitoring_tools())
        tools["prometheus-operator-crds"] = build.prometheus_operator_crds()
        tools["kubernetes-openapi"] = build.kubernetes_openapi()
        tools["kube-score"] = build.build_kube_score()
        tools["cert-manager-crds"] = build.cert_manager_crds()
        tools["keda-crds"] = build.keda_crds()
        tools["certmanagershim"] = build.build_cert_manager_shim()
        for name, path in tools.items():
            print(f"{name}: {path}")
        print(f"ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    elif args.command == "images":
        if not real_nodes_wanted():
            print(f"no images needed: no real node here ({unavailable_reason() or 'NODES=kwok'})", file=sys.stderr)
            return 0
        archives = images.ensure_images()
        for ref, path in archives.items():
            print(f"{ref}: {path}")
        cluster = LocalCluster(args.state_dir)
        if cluster.node is not None:
            cluster.import_images(archives)
    elif args.command == "bin":
        print(os.pathsep.join(sorted({str(p.parent) for p in build.ensure_all().values()})))
    elif args.command == "up":
        archives = images.ensure_images() if real_nodes_wanted() else {}
        cluster = LocalCluster(args.state_dir).start(images=archives)
        print(cluster.kubeconfig)
    elif args.command == "kind-image":
        ref, archive = kind.build_node_image()
        print(f"{ref}: {archive}")
    elif args.command in ("kind-up", "kind-down"):
        from .kindcluster import KindCluster

        cluster = KindCluster(KIND_STATE, args.name)
        if args.command == "kind-up":
            print(cluster.up(workers=args.workers).kubeconfig)
        else:
            cluster.down()
    elif args.command == "down":
        LocalCluster(args.state_dir).stop()
        print(f"stopped; removed {args.state_dir}", file=sys.stderr)
    return 0
