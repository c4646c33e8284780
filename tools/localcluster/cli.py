"""Command line of the local cluster: build, images, up, down, bin; and of the kind cluster: kind-image, kind-up,
kind-down.

NODES=real (the default where the machine allows it) runs a real node; NODES=kwok runs fake nodes only.
`--for SET` picks what a target needs: demo (`make demo`), bench (`make bench`), cluster (`localcluster up`) or
test (everything, the default). build and images print one line per step; the raw output goes to
build/logs/<tools|images>-<set>.log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import build, images, kind, progress
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
    for name, text in (
            ("build", "build (or find cached) the binaries of a set: the control plane's, the real node's, the tests'"),
            ("images", "build (or find cached) the node's images of a set; import them into a running cluster"),
            ("up", "start the cluster (with the images of a set) and print the kubeconfig path"),
            ("bin", "print the directories holding the binaries (for PATH), building those of the set if missing")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--for", dest="set", choices=build.SETS, default=None if name == "bin" else "test",
                             help="what the target at hand needs (default: test, everything; for bin: the "
                                  "control plane, kwok and helm)")
        if name == "build":
            command.add_argument("--paths", action="store_true", help="print each tool's path when done")
    sub.add_parser("down", help="stop exactly the processes `up` started and remove their state")
    sub.add_parser("kind-image", help="build (or find cached) the kind node image; print its reference and archive")
    kind_up = sub.add_parser("kind-up", help="create a kind cluster from the node image; print the kubeconfig path")
    kind_up.add_argument("--workers", type=int, default=1)
    kind_up.add_argument("--name", default=kind.DEFAULT_CLUSTER)
    kind_down = sub.add_parser("kind-down", help="delete the kind cluster, stop its engine, remove its links")
    kind_down.add_argument("--name", default=kind.DEFAULT_CLUSTER)
    args = parser.parse_args(argv)

    if args.command == "build":
        log_path = progress.LOG_DIR / f"tools-{args.set}.log"
        try:
            tools = build.ensure_with_progress(args.set, real_nodes_wanted(), log_path)
        except progress.StepFailed as failed:
            print(f"localcluster build: {failed}", file=sys.stderr)
            return 1
        if args.paths:
            for name, path in tools.items():
                print(f"{name}: {path}")
    elif args.command == "images":
        if not real_nodes_wanted():
            print(f"no images needed: no real node here ({unavailable_reason() or 'NODES=kwok'})", file=sys.stderr)
            return 0
        try:
            archives = images.ensure_images(args.set, progress.LOG_DIR / f"images-{args.set}.log")
        except progress.StepFailed as failed:
            print(f"localcluster images: {failed}", file=sys.stderr)
            return 1
        cluster = LocalCluster(args.state_dir)
        if cluster.node is not None:
            cluster.import_images(archives)
    elif args.command == "bin":
        tools = build.ensure(build.tool_set(args.set, real_nodes_wanted())) if args.set else build.ensure_all()
        print(os.pathsep.join(sorted({str(p.parent) for p in tools.values() if p.is_file()})))
    elif args.command == "up":
        archives = images.ensure_images(args.set) if real_nodes_wanted() else {}
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
