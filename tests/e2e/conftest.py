"""The e2e suite runs against E2E_KUBECONFIG (a kind cluster from `make e2e`) or, in `make test`, the local
control plane. Only a real cluster runs containers: E2E_HTTP=1 turns on the checks through the Ingress."""

from __future__ import annotations

import os

import pytest

from kubetest import Kube, OperatorProcess, start_kube


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Kube:
    if os.environ.get("E2E_KUBECONFIG"):
        os.environ["FLASKAPP_TEST_KUBECONFIG"] = os.environ["E2E_KUBECONFIG"]
    kube = start_kube(tmp_path_factory.mktemp("e2e"))
    yield kube
    if kube.local:
        kube.local.stop()


@pytest.fixture(scope="session")
def real_cluster(kube) -> bool:
    return kube.local is None


@pytest.fixture(scope="session")
def local_operator(kube, tmp_path_factory):
    """Containers do not run on the local control plane, so the chart's operator pod is only scheduled
    there; the operator itself runs beside it as a process. On kind, the chart's pod does the work."""
    if kube.local is None:
        yield None
        return
    op = OperatorProcess(kube, tmp_path_factory.mktemp("op") / "operator.log").start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def http_base() -> str:
    if not os.environ.get("E2E_HTTP"):
        pytest.skip("HTTP through the Ingress needs running containers (a kind cluster: make e2e)")
    return os.environ.get("E2E_INGRESS", "http://localhost:8081")


def pytest_collection_modifyitems(items):
    # The suite is one ordered story: install, apply, check, scale, update, delete.
    items.sort(key=lambda item: item.get_closest_marker("order").args[0] if item.get_closest_marker("order") else 99)


def pytest_configure(config):
    config.addinivalue_line("markers", "order(n): position in the e2e story")
