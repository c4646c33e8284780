"""The operator itself on the local control plane: N FlaskApps at once, idle writes, memory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import psutil
import yaml

from flaskapp_operator.render import render
from kubetest import ROOT, OperatorProcess, new_namespace, service_account_kubeconfig, start_kube, wait_until

OPERATOR_USER = "system:serviceaccount:flaskapp-system:flaskapp-operator"


def _apps(n: int, namespace: str) -> list[dict]:
    base = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())
    return [{**base, "metadata": {"name": f"app-{i:04d}", "namespace": namespace}} for i in range(n)]


def _count_ready_apps(kube, ns: str) -> int:
    items = kube.get("flaskapps", namespace=ns)["items"]
    return sum(1 for a in items for c in a.get("status", {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True")


def _count_available_deployments(kube, ns: str) -> tuple[int, int]:
    items = kube.get("deployments", namespace=ns)["items"]
    ready = sum(1 for d in items if d.get("status", {}).get("availableReplicas", 0) >= d["spec"]["replicas"])
    return ready, len(items)


def operator_benchmark(workdir: Path, entry: Callable) -> list[dict]:
    n = 1000 if os.environ.get("BENCH_SCALE") == "large" else 100
    idle_seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "300"))
    timeout = 60 + n * 3
    workdir.mkdir(parents=True, exist_ok=True)
    kube = start_kube(workdir)
    try:
        kube.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "crd"))
        kube.wait_crd_established()
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flaskapp-system"}})
        kube.kubectl("apply", "-k", str(ROOT / "manifests" / "rbac"))
        sa = service_account_kubeconfig(kube, "flaskapp-system", "flaskapp-operator", workdir / "sa.kubeconfig")

        # The floor: kubectl apply of exactly the objects the operator would render, until all available.
        floor_ns = new_namespace(kube, "floor")
        objects = [o for doc in _apps(n, floor_ns) for o in render(doc, redis_password="pw").objects]
        started = time.monotonic()
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects), timeout=timeout)
        deployments_per_app = sum(1 for o in objects if o["kind"] == "Deployment") // n
        wait_until(lambda: _count_available_deployments(kube, floor_ns) == (n * deployments_per_app,) * 2,
                   timeout, 1, what="floor deployments available")
        floor = time.monotonic() - started
        print(f"   kubectl apply floor: {floor:.1f}s", flush=True)
        # Same conditions for the operator: no leftover pods of the floor being torn down meanwhile.
        kube.kubectl("delete", "namespace", floor_ns, "--timeout=600s")

        op = OperatorProcess(kube, workdir / "operator.log", kubeconfig=sa, resync_seconds=30).start()
        try:
            wait_until(op.healthy, 60, what="operator up")
            rss_idle = psutil.Process(op.proc.pid).memory_info().rss / 2**20
            ns = new_namespace(kube, "bench")
            started = time.monotonic()
            kube.apply(_apps(n, ns))
            wait_until(lambda: _count_ready_apps(kube, ns) == n, timeout, 1, what=f"{n} FlaskApps Ready")
            took = time.monotonic() - started
            print(f"   operator: {n} FlaskApps Ready in {took:.1f}s", flush=True)

            time.sleep(20)  # the last status writes and HPA-free settling
            before = len(kube.writes_by(OPERATOR_USER))
            print(f"   idle for {idle_seconds:.0f}s (resync every 30s)", flush=True)
            time.sleep(idle_seconds)
            idle_writes = kube.writes_by(OPERATOR_USER)[before:]
            rss = psutil.Process(op.proc.pid).memory_info().rss / 2**20
            assert op.alive
        finally:
            op.stop()
        (workdir.parent / "idle-writes.json").write_text(json.dumps(idle_writes, indent=1))
        return [
            entry(f"operator_time_to_ready_{n}_apps", took, floor, "s", floor / took, target=1 / 1.5),
            entry(f"operator_idle_writes_{idle_seconds:.0f}s", len(idle_writes), 0, "requests",
                  1 / (1 + len(idle_writes)), target=1, note="ratio is 1/(1+writes): 1 means no write"),
            entry(f"operator_rss_after_{n}_apps", rss, rss_idle, "MiB", rss_idle / rss,
                  note="baseline is the idle operator's RSS before any FlaskApp"),
        ]
    finally:
        if kube.local:
            kube.local.stop()
