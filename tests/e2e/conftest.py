"""The e2e suite runs on real pods: in `make test` on the local cluster's real node (images built here and
imported, Traefik as the ingress controller), or with E2E_KUBECONFIG on a kind cluster (`make e2e`,
ingress-nginx, images loaded by kind). Where this machine cannot run a real node, the local cluster falls
back to kwok: the operator then runs as a process and every check that needs a running container skips,
saying why."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from testsupport.kube import Kube, OperatorProcess, start_kube
from localcluster import images
from localcluster.node import INGRESS_CLASS, unavailable_reason


@dataclass(frozen=True)
class Target:
    """What differs between the clusters the suite runs on."""

    operator_image: str
    example_image: str
    postgres_image: str
    nginx_image: Optional[str]  # None: the FlaskApp's default
    redis_image: Optional[str]  # the managed cache and broker (the local node: Valkey, the default engine)
    ingress_class: str
    ingress_url: Optional[str]  # None: no running containers (kwok)
    # spec.monitoring.images (None: the FlaskApp's defaults) and the Prometheus the suite runs.
    monitoring_images: Optional[dict] = None
    prometheus_image: str = "quay.io/prometheus/prometheus:v3.16.0"  # the release of Go module v0.316.0
    pooler_image: Optional[str] = None  # spec.database.pooler.image (None: the FlaskApp's default)
    # A Redis image, for what must keep working when a user picks Redis over the default Valkey.
    redis_compat_image: Optional[str] = os.environ.get("REDIS_COMPAT_IMG", "redis:7.2.7-alpine")
    # A public Flask app, unchanged, in an image of its own (localcluster/publicapps.py).
    flaskr_image: str = os.environ.get("FLASKR_IMG", "ghcr.io/flaskapp-operator/public-flaskr:2.5.1")
    flask_celery_image: str = os.environ.get("FLASK_CELERY_IMG", "ghcr.io/flaskapp-operator/public-flask-celery:3.1.3")
    flask_caching_image: str = os.environ.get("FLASK_CACHING_IMG",
                                              "ghcr.io/flaskapp-operator/public-flask-caching-hello:2.5.1")

    @property
    def real_pods(self) -> bool:
        return self.ingress_url is not None


KIND = Target(
    operator_image=os.environ.get("IMG", "ghcr.io/flaskapp-operator/flaskapp-operator:0.1.0"),
    example_image=os.environ.get("EXAMPLE_IMG", "ghcr.io/flaskapp-operator/example:0.1.0"),
    postgres_image="postgres:16.6-alpine", nginx_image=None, redis_image=None, ingress_class="nginx",
    ingress_url=os.environ.get("E2E_INGRESS", "http://localhost:8081"))


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Kube:
    if os.environ.get("E2E_KUBECONFIG"):
        os.environ["FLASKAPP_TEST_KUBECONFIG"] = os.environ["E2E_KUBECONFIG"]
        yield start_kube(tmp_path_factory.mktemp("e2e"))
        return
    real = unavailable_reason() is None and os.environ.get("NODES", "real") == "real"
    kube = start_kube(tmp_path_factory.mktemp("e2e"), nodes="real" if real else "kwok",
                      images=images.ensure_images() if real else None)
    yield kube
    kube.local.stop()


def local_target(ingress_class: str, ingress_url: Optional[str]) -> Target:
    """The images built here (localcluster.images), on a cluster that holds them: the local node, or a kind
    cluster from `localcluster kind-up` they were loaded into (E2E_IMAGES=local)."""
    local = {"monitoring_images": images.MONITORING_IMAGES, "prometheus_image": images.GO_BINARY_REFS["prometheus"],
             "pooler_image": images.PGBOUNCER_REF, "redis_compat_image": images.REDIS_REF, "flaskr_image": images.FLASKR_REF,
             "flask_celery_image": images.FLASK_CELERY_REF, "flask_caching_image": images.FLASK_CACHING_REF}
    return Target(images.OPERATOR_REF, images.EXAMPLE_REF, images.POSTGRES_REF, images.NGINX_REF,
                  images.VALKEY_REF, ingress_class, ingress_url, **local)


@pytest.fixture(scope="session")
def target(kube) -> Target:
    if kube.local is None:
        if os.environ.get("E2E_IMAGES") == "local":
            # No ingress controller on the local kind cluster yet: a URL nothing answers, so ingress checks fail.
            return local_target(INGRESS_CLASS, os.environ.get("E2E_INGRESS", "http://127.0.0.1:9"))
        return KIND
    node = kube.local.node
    return local_target(INGRESS_CLASS, node.ingress_url if node else None)


@pytest.fixture(scope="session")
def real_pods(target) -> Target:
    """Checks that need running containers; skipped only where no real node can run (said why)."""
    if not target.real_pods:
        reason = unavailable_reason() or "NODES=kwok"
        if os.environ.get("CI") == "true" and os.environ.get("NODES", "real") == "real":
            # CI's machine can run a real node (make debs installs its packages): never let it pass by skipping.
            pytest.fail(f"CI runs these checks on real pods, and this machine cannot run a real node: {reason}")
        pytest.skip(f"no running containers on kwok fake nodes ({reason})")
    return target


@pytest.fixture(scope="session")
def local_operator(kube, target, tmp_path_factory):
    """On kwok fake nodes the chart's operator pod is only scheduled, so the operator runs beside it as a
    process; wherever containers run, the chart's pod does the work."""
    if target.real_pods:
        yield None
        return
    op = OperatorProcess(kube, Path(tmp_path_factory.mktemp("op")) / "operator.log").start()
    yield op
    op.stop()


def pytest_collection_modifyitems(items):
    # The suite is one ordered story: install, apply, check, scale, update, break, delete.
    items.sort(key=lambda item: item.get_closest_marker("order").args[0] if item.get_closest_marker("order") else 99)


def pytest_configure(config):
    config.addinivalue_line("markers", "order(n): position in the e2e story")
