"""Command line of the local control plane: build, up, down, status, bin."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import build
from .cluster import LocalCluster

DEFAULT_STATE = Path(os.environ.get("LOCALCLUSTER_DIR", Path(__file__).resolve().parents[2] / "build" / "localcluster"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="where the cluster keeps its state")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find cached) etcd, Kubernetes, kwok and helm binaries")
    sub.add_parser("up", help="start the control plane and print the kubeconfig path")
    sub.add_parser("down", help="stop exactly the processes `up` started and remove their state")
    sub.add_parser("bin", help="print the directories holding the binaries (for PATH)")
    args = parser.parse_args(argv)

    if args.command == "build":
        started = time.monotonic()
        for name, path in build.ensure_all().items():
            print(f"{name}: {path}")
        print(f"ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    elif args.command == "bin":
        print(os.pathsep.join(sorted({str(p.parent) for p in build.ensure_all().values()})))
    elif args.command == "up":
        cluster = LocalCluster(args.state_dir).start()
        print(cluster.kubeconfig)
    elif args.command == "down":
        LocalCluster(args.state_dir).stop()
        print(f"stopped; removed {args.state_dir}", file=sys.stderr)
    return 0
