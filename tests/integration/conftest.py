"""One control plane and one operator (running as the ServiceAccount our RBAC ships) per session."""

from __future__ import annotations

import pytest

from testsupport.kube import (ROOT, SESSION_SHARD_SELECTOR, Kube, OperatorProcess, new_namespace, service_account_kubeconfig,
                      start_kube)


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Kube:
    kube = start_kube(tmp_path_factory.mktemp("kube"))
    yield kube
    if kube.local:
        kube.local.stop()


@pytest.fixture(scope="session")
def crd(kube):
    kube.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "crd"))
    kube.wait_crd_established()
    # The PriorityClass the full sample's web tier names, as a cluster admin would have made it.
    kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "shop-web"},
                "value": 1000, "description": "The shop's web pods."})


@pytest.fixture(scope="session")
def operator_kubeconfig(kube, crd, tmp_path_factory):
    """Credentials of the operator's ServiceAccount bound to manifests/rbac (never cluster-admin)."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flaskapp-system"}})
    kube.kubectl("apply", "-k", str(ROOT / "manifests" / "rbac"))
    return service_account_kubeconfig(kube, "flaskapp-system", "flaskapp-operator",
                                      tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture(scope="session")
def operator(kube, operator_kubeconfig, tmp_path_factory):
    op = OperatorProcess(kube, tmp_path_factory.mktemp("operator") / "operator.log", kubeconfig=operator_kubeconfig,
                         env={"FLASKAPP_SELECTOR": SESSION_SHARD_SELECTOR}).start()
    yield op
    op.stop()


@pytest.fixture
def namespace(kube):
    name = new_namespace(kube)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _report_operator_log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


