"""Packaging: the Helm chart and the kustomize manifests install the operator into a real API server."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import yaml

from testsupport.kube import ROOT, wait_until

CHART = ROOT / "charts" / "flaskapp-operator"


def helm(kube, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([kube.helm_bin, *args], capture_output=True, text=True, env=kube.env(), timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


def test_helm_lint_is_clean(kube):
    out = helm(kube, "lint", str(CHART), "--strict").stdout
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out


def test_helm_template_validates_against_the_kubernetes_schema(kube):
    for values in ([], ["--set", "watchNamespaces={team-a,team-b}"]):
        rendered = helm(kube, "template", "t", str(CHART), "--kube-version", "1.35.0", *values).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        assert {d["kind"] for d in docs} >= {"Deployment", "ServiceAccount", "ClusterRole", "Service"}
        for doc in docs:
            kubernetes_validate.validate(doc, "1.35.0", strict=True)
            for rule in doc.get("rules", []):
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_chart_rbac_matches_the_plain_manifests(kube):
    rendered = helm(kube, "template", "t", str(CHART), "--kube-version", "1.35.0").stdout
    chart_role = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterRole")
    plain_role = yaml.safe_load((ROOT / "manifests" / "rbac" / "role.yaml").read_text())
    assert chart_role["rules"] == plain_role["rules"]
    chart_lease_role = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Role"
                            and d["metadata"]["name"].endswith("-leader-election"))
    plain_lease_role = next(yaml.safe_load_all((ROOT / "manifests" / "rbac" / "leader_election_role.yaml").read_text()))
    assert chart_lease_role["rules"] == plain_lease_role["rules"]


def test_values_schema_rejects_bad_values(kube):
    result = helm(kube, "template", "t", str(CHART), "--kube-version", "1.35.0", "--set", "resyncSeconds=1",
                  check=False)
    assert result.returncode != 0 and "resyncSeconds" in result.stderr


def test_helm_install_and_uninstall(kube, crd):
    ns = "helm-flaskapp"
    helm(kube, "install", "fo", str(CHART), "-n", ns, "--create-namespace", "--wait", "--timeout", "120s")
    assert "Next: describe your Flask application" in helm(kube, "status", "fo", "-n", ns).stdout
    deploy = kube.get("deployment", "fo-flaskapp-operator", ns)
    # Two replicas by default (leader election), rolled; a PDB keeps one through drains.
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate" and deploy["status"]["availableReplicas"] == 2
    assert "--leader-elect" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert kube.get("pdb", "fo-flaskapp-operator", ns)["spec"]["minAvailable"] == 1
    helm(kube, "uninstall", "fo", "-n", ns, "--wait")
    left = kube.get("deployments,services,serviceaccounts,roles,rolebindings,pdb", namespace=ns,
                    selector="app.kubernetes.io/instance=fo")["items"]
    assert left == []
    assert kube.get("clusterrole", "fo-flaskapp-operator") is None
    assert kube.get("crd", "flaskapps.flaskapp.dev") is not None, "Helm keeps CRDs on uninstall"
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_kustomize_manifests_install(kube, crd):
    kube.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"))
    wait_until(lambda: (kube.get("deployment", "flaskapp-operator", "flaskapp-system") or {})
               .get("status", {}).get("availableReplicas") == 2, 90, what="operator Deployment available")
    assert kube.get("clusterrolebinding", "flaskapp-operator")
    # Remove the in-cluster operator (its image cannot run here) but keep the CRD and RBAC other tests use.
    kube.kubectl("delete", "-n", "flaskapp-system", "deployment/flaskapp-operator", "service/flaskapp-operator-health",
                 "pdb/flaskapp-operator")


def test_kube_score_finds_nothing_beyond_the_documented_exceptions():
    """kube-score over the rendered samples and the chart (hack/kube-score.sh lists, with reasons, the checks
    we deliberately ignore): a new finding fails here, as in `make lint`."""
    import os
    import sys

    result = subprocess.run(["bash", str(ROOT / "hack" / "kube-score.sh")], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PY": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_vendored_kubernetes_schemas_are_current():
    """operator/flaskapp_operator/kubernetes_schemas.json is what hack/vendor_kubernetes_schemas.py makes of the
    pinned Kubernetes release's OpenAPI document (`make kubernetes-schemas`)."""
    import importlib.util

    from localcluster import build

    spec = importlib.util.spec_from_file_location("vendor", ROOT / "hack" / "vendor_kubernetes_schemas.py")
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    committed = (ROOT / "operator" / "flaskapp_operator" / "kubernetes_schemas.json").read_text()
    assert committed == vendor.rendered(build.kubernetes_openapi(), build.KUBERNETES_SCHEMA_VERSION), \
        "stale: run `make kubernetes-schemas` then `make manifests`"
