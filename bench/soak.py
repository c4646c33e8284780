"""`make soak`: an hour of churn against the operator on kwok nodes (not part of `make test`).

FlaskApps are created, updated and deleted continuously: random valid specs drawn from the model with hypothesis
(the property tests' strategy, testsupport/strategies.py), and every invalid spec the test suites know (the API server
must refuse each). At the end:
- the operator process never died or restarted (same process throughout);
- every FlaskApp left ends Ready, or Degraded with a reason;
- no child outlives its FlaskApp (the garbage collector, through our ownerReferences);
- RSS after the churn stays within 10 % of RSS after the warm-up.
Writes build/soak.json. SOAK_SECONDS (3600), SOAK_APPS (at most that many FlaskApps at once, 30), SOAK_SEED.
"""

from __future__ import annotations

import copy
import json
import os
import random
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import yaml

from hypothesis.errors import NonInteractiveExampleWarning

from testsupport.kube import ROOT, OperatorProcess, new_namespace, service_account_kubeconfig, start_kube, wait_until
from testsupport.samples import (BUDGET_REJECTED, KEDA_REJECTED, MEMCACHED_REJECTED, POD_BLOCK_REJECTED, load_sample,
                                 patched)
from testsupport.strategies import specs

OUT = Path(os.environ.get("SOAK_OUT", ROOT / "build" / "soak.json"))
CHILD_KINDS = ("deployments,statefulsets,services,configmaps,secrets,jobs,ingresses,horizontalpodautoscalers,"
               "poddisruptionbudgets,networkpolicies,serviceaccounts")
INVALID = [patched(load_sample("full"), f"bad-{case}", patch)
           for case, patch, _ in POD_BLOCK_REJECTED + BUDGET_REJECTED + KEDA_REJECTED + MEMCACHED_REJECTED]


def random_spec() -> dict:
    """A random valid spec, its pod counts clamped (kwok's fake pods still cost the API server)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        spec = specs().example()["spec"]
    for tier in [spec["web"], *spec["workerPools"]]:
        if "replicas" in tier:
            tier["replicas"] = min(tier["replicas"], 3)
        else:
            tier["autoscaling"]["minReplicas"] = min(tier["autoscaling"]["minReplicas"], 2)
    return spec


def final_state(app: dict) -> str | None:
    """"Ready", "Degraded: <reason>", or None while neither holds (yet)."""
    conditions = {c["type"]: c for c in (app.get("status") or {}).get("conditions") or []}
    if conditions.get("Ready", {}).get("status") == "True":
        return "Ready"
    degraded = conditions.get("Degraded", {})
    if degraded.get("status") == "True" and degraded.get("reason"):
        return f"Degraded: {degraded['reason']}"
    return None


def orphans(kube, ns: str) -> list[str]:
    """Children whose FlaskApp no longer exists."""
    alive = {a["metadata"]["name"] for a in kube.get("flaskapps", namespace=ns)["items"]}
    children = kube.get(CHILD_KINDS, namespace=ns, selector="app.kubernetes.io/managed-by=flaskapp-operator")["items"]
    return sorted(f"{c['kind']}/{c['metadata']['name']}" for c in children
                  if c["metadata"]["labels"].get("app.kubernetes.io/instance") not in alive)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "3600"))
    most = int(os.environ.get("SOAK_APPS", "30"))
    rng = random.Random(int(os.environ.get("SOAK_SEED", "12")))
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-soak-"))
    kube = start_kube(workdir)
    counts = {"created": 0, "updated": 0, "deleted": 0, "invalid_refused": 0, "invalid_accepted": 0}
    try:
        kube.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "crd"))
        kube.wait_crd_established()
        kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "shop-web"},
                    "value": 1000})
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flaskapp-system"}})
        kube.kubectl("apply", "-k", str(ROOT / "manifests" / "rbac"))
        sa = service_account_kubeconfig(kube, "flaskapp-system", "flaskapp-operator", workdir / "sa.kubeconfig")
        ns = new_namespace(kube, "soak")
        kube.kubectl("create", "secret", "generic", "db", "-n", ns,
                     "--from-literal=url=postgresql://app:pw@postgres:5432/app")
        op = OperatorProcess(kube, workdir / "operator.log", kubeconfig=sa, resync_seconds=30,
                             env={"FLASKAPP_DISCOVERY_SECONDS": "300"}).start()
        wait_until(op.healthy, 60, what="operator up")
        pid = op.proc.pid
        process = psutil.Process(pid)
        started = time.monotonic()
        warmup_until = started + max(60.0, seconds * 0.1)
        rss_warm = None
        live: set[str] = set()
        serial = 0
        print(f"soak: {seconds:.0f}s of churn, at most {most} FlaskApps, operator pid {pid}", flush=True)
        while time.monotonic() - started < seconds:
            if rss_warm is None and time.monotonic() >= warmup_until:
                rss_warm = process.memory_info().rss / 2**20
                print(f"   RSS after warm-up: {rss_warm:.1f} MiB", flush=True)
            action = rng.choices(["create", "update", "delete", "invalid"], weights=[4, 4, 3, 1])[0]
            if action == "create" and len(live) < most or not live:
                serial += 1
                name = f"soak-{serial:05d}"
                kube.apply({"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": name},
                            "spec": random_spec()}, ns)
                live.add(name)
                counts["created"] += 1
            elif action in ("create", "update"):
                name = rng.choice(sorted(live))
                kube.apply({"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": name},
                            "spec": random_spec()}, ns)
                counts["updated"] += 1
            elif action == "delete":
                name = rng.choice(sorted(live))
                kube.kubectl("delete", "flaskapp", name, "-n", ns, "--wait=false")
                live.discard(name)
                counts["deleted"] += 1
            else:
                doc = copy.deepcopy(rng.choice(INVALID))
                refused = kube.apply(doc, ns, check=False).returncode != 0
                counts["invalid_refused" if refused else "invalid_accepted"] += 1
                if not refused:
                    live.add(doc["metadata"]["name"])
            if serial % 50 == 0 and action == "create":
                print(f"   {time.monotonic() - started:.0f}s: {counts}", flush=True)
            time.sleep(rng.uniform(0.2, 1.5))  # churn pacing, not a wait for a condition

        print("   churn over; waiting for every FlaskApp to settle and every orphan to be collected", flush=True)
        states: dict[str, str | None] = {}

        def settled() -> bool:
            states.clear()
            states.update({a["metadata"]["name"]: final_state(a) for a in kube.get("flaskapps", namespace=ns)["items"]})
            return all(states.values())
        left = orphans(kube, ns)
        try:  # a failure is a finding: the figures are still written
            wait_until(settled, 600, 5, what="every FlaskApp Ready or Degraded with a reason")
        except AssertionError:
            pass
        try:
            wait_until(lambda: not orphans(kube, ns), 300, 5, what="no orphaned child (the garbage collector)")
        except AssertionError:
            pass
        rss_end = process.memory_info().rss / 2**20
        result = {
            "seconds": round(time.monotonic() - started), "actions": counts, "apps_left": len(states),
            "final_states": {str(s): sum(1 for v in states.values() if v == s)  # None: not settled
                             for s in sorted(set(states.values()), key=str)},
            "unsettled": sorted(name for name, state in states.items() if not state),
            "orphans": orphans(kube, ns),
            "operator_alive": op.alive and op.proc.pid == pid, "orphans_at_first_look": len(left),
            "rss_after_warmup_mib": round(rss_warm or 0, 1), "rss_end_mib": round(rss_end, 1),
            "rss_growth": round(rss_end / rss_warm - 1, 3) if rss_warm else None,
            "operator_errors_logged": sum(" ERROR " in line for line in
                                          (workdir / "operator.log").read_text(errors="replace").splitlines()),
        }
        op.stop()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        ok = (result["operator_alive"] and counts["invalid_accepted"] == 0 and not result["unsettled"]
              and not result["orphans"]
              and result["rss_growth"] is not None and result["rss_growth"] <= 0.10)
        print("soak: " + ("PASSED" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if kube.local:
            kube.local.stop()


if __name__ == "__main__":
    raise SystemExit(main())
