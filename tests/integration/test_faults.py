"""Faults: the API server restarts under the operator; the operator is SIGKILLed mid-rollout."""

from __future__ import annotations

import copy
import signal

import pytest
import yaml

from testsupport.kube import ROOT, ready, wait_ready, wait_until

MINIMAL = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())
FULL = yaml.safe_load((ROOT / "manifests" / "samples" / "full.yaml").read_text())


def app(name: str, base: dict = MINIMAL) -> dict:
    doc = copy.deepcopy(base)
    doc["metadata"] = {"name": name}
    return doc


def test_operator_survives_an_api_server_restart(kube, operator, namespace):
    if kube.local is None:
        pytest.skip("restarting the API server needs the local control plane")
    kube.apply(app("restart"), namespace)
    wait_ready(kube, namespace, "restart")
    kube.local.restart_apiserver()
    changed = app("restart")
    changed["spec"]["nginx"] = {"replicas": 3}
    kube.apply(changed, namespace)
    wait_until(lambda: kube.get("deployment", "restart-nginx", namespace)["spec"]["replicas"] == 3, 90,
               what="a change made after the restart is reconciled")
    wait_ready(kube, namespace, "restart")
    # Drift after the restart is repaired too: the watches on children are back.
    kube.kubectl("delete", "service", "restart-web", "-n", namespace)
    wait_until(lambda: kube.get("service", "restart-web", namespace), 60, what="service restored")
    assert operator.alive


def test_sigkill_mid_rollout_converges_without_duplicates_or_orphans(kube, operator, namespace):
    names = [f"kill-{i}" for i in range(6)]
    kube.apply([app(n, FULL if i % 2 else MINIMAL) for i, n in enumerate(names)], namespace)

    def apps_with_children() -> int:
        owned = kube.get("deployments,configmaps,services", namespace=namespace,
                         selector="app.kubernetes.io/managed-by=flaskapp-operator")["items"]
        return len({c["metadata"]["labels"]["app.kubernetes.io/instance"] for c in owned})
    # Killed mid-rollout: some apps have children already, not all of them.
    wait_until(lambda: apps_with_children() >= 1, 60, interval=0.1, what="a first app's children")
    operator.stop(signal.SIGKILL)
    started = apps_with_children()
    assert started < len(names) or not all(ready(kube, namespace, n) for n in names), \
        "the kill came after the rollout"
    operator.start()
    for n in names:
        wait_ready(kube, namespace, n, timeout=180)
    uids = {kube.get("flaskapp", n, namespace)["metadata"]["uid"]: n for n in names}
    children = kube.get("deployments,services,configmaps,secrets,jobs,ingresses,hpa,pdb,networkpolicies,"
                        "serviceaccounts", namespace=namespace,
                        selector="app.kubernetes.io/managed-by=flaskapp-operator")["items"]
    per_app: dict[str, list[str]] = {}
    for child in children:
        owners = [o["uid"] for o in child["metadata"].get("ownerReferences", [])]
        assert len(owners) == 1 and owners[0] in uids, f"orphan {child['kind']}/{child['metadata']['name']}"
        per_app.setdefault(uids[owners[0]], []).append(f"{child['kind']}/{child['metadata']['name']}")
    for i, n in enumerate(names):
        kinds = [k.split("/")[0] for k in per_app[n]]
        assert kinds.count("Job") == (1 if i % 2 else 0), per_app[n]
        assert len(per_app[n]) == len(set(per_app[n]))
        assert len(per_app[n]) == len(per_app[names[i % 2]]), "every app of a kind has the same children"
    assert all(ready(kube, namespace, n) for n in names)
