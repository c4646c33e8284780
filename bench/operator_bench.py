"""The operator itself on the local control plane: N FlaskApps at once, idle writes and reads, memory, and the
time from a spec change to the first apply (BENCH_SCALE=large: 1,000 FlaskApps)."""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Callable

import subprocess
import sys

import psutil
import yaml

from flaskapp_operator.render import render
from testsupport.kube import ROOT, OperatorProcess, new_namespace, service_account_kubeconfig, start_kube, wait_until

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


def _audit_time(event: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _settled(kube, seconds: float = 10) -> Callable[[], bool]:
    """True once the operator has sent no write for `seconds` (the audit log)."""
    last = {"count": -1, "since": time.monotonic()}

    def check() -> bool:
        count = len(kube.writes_by(OPERATOR_USER))
        if count != last["count"]:
            last.update(count=count, since=time.monotonic())
        return time.monotonic() - last["since"] >= seconds
    return check


def _scrape(op) -> str:
    """The operator's /metrics, asked again until it answers (a 5 s timeout can pass while 1,000 apps load it)."""
    return wait_until(lambda: (lambda answer: answer[1] if answer[0] == 200 else None)(op.scrape()), 60,
                      what="the operator's /metrics")


def _passes(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('flaskapp_operator_reconcile_total{outcome="success"}'))


def _triggers(metrics: str) -> dict[str, float]:
    """What asked for passes so far (flaskapp_operator_triggers_total by trigger)."""
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("flaskapp_operator_triggers_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('trigger="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def _since(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: round(v - before.get(k, 0)) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def _profiler(pid: int, path: Path):
    """BENCH_PROFILE=1: py-spy samples the operator (every thread) while the FlaskApps come up (speedscope JSON)."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--threads",
                             "--format", "speedscope", "--output", str(path), "--rate", "50", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _change_latencies(kube, ns: str, n: int, changes: int) -> list[float]:
    """Seconds from the API server receiving a spec change of one FlaskApp to the operator's first write to one
    of its children, while the others are idle; both instants from the audit log (the API server's clock)."""
    names = [f"app-{i * (n // changes):04d}" for i in range(changes)]
    for name in names:
        kube.kubectl("patch", "flaskapp", name, "-n", ns, "--type=merge", "-p", '{"spec":{"web":{"replicas":3}}}')
        wait_until(lambda: (kube.get("deployment", f"{name}-web", ns) or {}).get("spec", {}).get("replicas") == 3,
                   60, 0.2, what=f"{name} rolled out")
    events = [e for e in kube.audit_events() if e.get("stage") == "ResponseComplete"
              and (e.get("objectRef") or {}).get("namespace") == ns]
    latencies = []
    for name in names:
        changed = min(_audit_time(e) for e in events if e["verb"] == "patch"
                      and e["objectRef"].get("resource") == "flaskapps" and e["objectRef"].get("name") == name
                      and e["user"]["username"] != OPERATOR_USER)
        applied = min(_audit_time(e) for e in events if e["user"]["username"] == OPERATOR_USER
                      and e["verb"] in ("patch", "create") and _audit_time(e) >= changed
                      and e["objectRef"].get("resource") not in ("events", "flaskapps")
                      and e["objectRef"].get("name", "").startswith(f"{name}-"))
        latencies.append((applied - changed).total_seconds())
    return latencies


def operator_benchmark(workdir: Path, entry: Callable) -> list[dict]:
    n = int(os.environ.get("BENCH_APPS") or (1000 if os.environ.get("BENCH_SCALE") == "large" else 100))
    idle_seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "300"))
    changes = int(os.environ.get("BENCH_CHANGES", "50"))
    resync_seconds = 30
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
        kube.kubectl("delete", "namespace", floor_ns, f"--timeout={timeout}s")

        op = OperatorProcess(kube, workdir / "operator.log", kubeconfig=sa, resync_seconds=resync_seconds,
                             env={"FLASKAPP_DISCOVERY_SECONDS": "300"}).start()  # the operator's default
        try:
            wait_until(op.healthy, 60, what="operator up")
            rss_idle = psutil.Process(op.proc.pid).memory_info().rss / 2**20
            ns = new_namespace(kube, "bench")
            profiler = _profiler(op.proc.pid, workdir.parent / "operator-profile.json")
            started = time.monotonic()
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_apps(n, ns)), timeout=timeout)
            wait_until(lambda: _count_ready_apps(kube, ns) == n, timeout, 1, what=f"{n} FlaskApps Ready")
            took = time.monotonic() - started
            print(f"   operator: {n} FlaskApps Ready in {took:.1f}s; triggers {_since(_triggers(_scrape(op)), {})}",
                  flush=True)
            if profiler is not None:
                profiler.send_signal(2)  # SIGINT: py-spy writes its profile and exits
                profiler.wait(60)

            wait_until(_settled(kube), 300, 1, what="the operator's last writes")
            before = len(kube.writes_by(OPERATOR_USER))
            idle_from = datetime.datetime.now(datetime.timezone.utc)
            metrics = _scrape(op)
            passes_before, triggers_before = _passes(metrics), _triggers(metrics)
            print(f"   idle for {idle_seconds:.0f}s (resync every {resync_seconds}s)", flush=True)
            idle_until = time.monotonic() + idle_seconds
            wait_until(lambda: time.monotonic() >= idle_until, idle_seconds + 10, 1, what="the idle window")
            # Counted at once: reading a 1,000-app audit log takes minutes, while resyncs go on.
            metrics = _scrape(op)
            resyncs = (_passes(metrics) - passes_before) / n  # passes over every app
            idle_triggers = _since(_triggers(metrics), triggers_before)
            idle_to = datetime.datetime.now(datetime.timezone.utc)
            idle_writes = kube.writes_by(OPERATOR_USER)[before:]  # up to now: can only over-count
            reads = [f"{e['verb']} {(e.get('objectRef') or {}).get('resource') or e.get('requestURI')}"
                     for e in kube.audit_events()
                     if e.get("stage") == "ResponseComplete" and e["user"]["username"] == OPERATOR_USER
                     and e["verb"] in ("get", "list") and idle_from <= _audit_time(e) <= idle_to]
            reads_per_app = len(reads) / (n * max(resyncs, 1))
            rss = psutil.Process(op.proc.pid).memory_info().rss / 2**20
            print(f"   idle: {len(idle_writes)} writes, {len(reads)} reads over {resyncs:.1f} resyncs of {n} apps; "
                  f"RSS {rss:.1f} MiB; triggers {idle_triggers}", flush=True)
            latencies = _change_latencies(kube, ns, n, changes)
            print(f"   spec change -> first apply: p50 {_percentile(latencies, 0.5):.2f}s, "
                  f"p99 {_percentile(latencies, 0.99):.2f}s over {len(latencies)} changes", flush=True)
            assert op.alive
        finally:
            op.stop()
        (workdir.parent / "idle-writes.json").write_text(json.dumps({"writes": idle_writes, "reads": reads}, indent=1))
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        return [
            entry(f"operator_time_to_ready_{n}_apps", took, floor, "s", floor / took, target=1 / 1.2),
            entry(f"operator_idle_writes_{idle_seconds:.0f}s", len(idle_writes), 0, "requests",
                  1 / (1 + len(idle_writes)), target=1, note="ratio is 1/(1+writes): 1 means no write"),
            entry("operator_idle_reads_per_app_per_resync", reads_per_app, 1, "requests", 1 / (1 + reads_per_app),
                  target=0.5, reads=len(reads), resyncs=round(resyncs, 1),
                  note="ratio is 1/(1+reads per app per resync): 0.5 means 1 read, 1 means none"),
            entry(f"operator_rss_after_{n}_apps", rss, 150, "MiB", 150 / rss, target=1, idle_rss=round(rss_idle, 1),
                  note="baseline is the 150 MiB goal; idle_rss is the operator's before any FlaskApp"),
            entry("operator_spec_change_to_apply_p50", p50, 2, "s", 2 / max(p50, 1e-3), target=1, changes=changes,
                  note="baseline is the 2 s goal, with every other FlaskApp idle"),
            entry("operator_spec_change_to_apply_p99", p99, 2, "s", 2 / max(p99, 1e-3), target=1, changes=changes,
                  note="baseline is the 2 s goal, with every other FlaskApp idle"),
        ]
    finally:
        if kube.local:
            kube.local.stop()
