"""The shipped RBAC is least-privilege: no wildcards (its completeness is proven by every other test
here, since the session's operator runs with exactly this ServiceAccount's token)."""

from __future__ import annotations

import yaml

from testsupport.kube import ROOT


def rules():
    for path in sorted((ROOT / "manifests" / "rbac").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("ClusterRole", "Role"):
                yield from doc["rules"]


def test_no_wildcards():
    found = list(rules())
    assert found
    for rule in found:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), rule


def test_operator_runs_as_the_service_account(kube, operator, operator_kubeconfig):
    config = yaml.safe_load(operator_kubeconfig.read_text())
    assert "token" in config["users"][0]["user"]
    sa = "system:serviceaccount:flaskapp-system:flaskapp-operator"
    denied = kube.kubectl("auth", "can-i", "delete", "nodes", f"--as={sa}", check=False).stdout.strip()
    assert denied == "no"
    assert kube.kubectl("auth", "can-i", "patch", "deployments", f"--as={sa}", "-A").stdout.strip() == "yes"


def test_liveness_endpoint_answers(operator):
    from testsupport.waiting import wait_until

    wait_until(operator.healthy, 30, what="kopf's /healthz")
