"""The e2e suite runs on real pods: in `make test` on the local cluster's real node (images built here and
imported, Traefik as the ingress and Gateway controller), or with E2E_KUBECONFIG on the kind cluster of
`localcluster kind-up` (`make e2e`: the same images loaded into its nodes, the same Traefik as a pod). Where this
machine cannot run a real node, the local cluster falls back to kwok: the operator then runs as a process and
every check that needs a running container skips, saying why. Everything that differs between these clusters is
in the Target below."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from testsupport.kube import Kube, OperatorProcess, start_kube
from testsupport.lifecycle import KindLifecycle, LocalLifecycle
from localcluster import images, kind
from localcluster.cli import KIND_STATE
from localcluster.node import GATEWAY_CLASS, INGRESS_CLASS, NODE_NAME, unavailable_reason


@dataclass(frozen=True)
class Nodes:
    """The cluster's nodes seen from outside, as the suite acts on containers: `ctr` in a node's containerd."""

    ctr: Callable[..., subprocess.CompletedProcess]  # (node name, *ctr arguments)
    names: Callable[[], list[str]]


@dataclass(frozen=True)
class Target:
    """What differs between the clusters the suite runs on."""

    operator_image: str
    example_image: str
    postgres_image: str
    nginx_image: Optional[str]  # None: the FlaskApp's default
    redis_image: Optional[str]  # the managed cache and broker (the local node: Valkey, the default engine)
    ingress_class: str
    ingress_url: Optional[str]  # None: no running containers (kwok); the Gateway's listeners at its host too
    gateway_class: str = GATEWAY_CLASS
    nodes: Optional[Nodes] = None  # None: fake nodes
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
    # The cluster crashed, brought up again and taken down (testsupport.lifecycle), given a scratch directory;
    # None: fake nodes, nothing on this host to crash.
    lifecycle: Optional[Callable[[Path], Any]] = None

    @property
    def real_pods(self) -> bool:
        return self.ingress_url is not None

    def tag_image(self, ref: str, new: str) -> None:
        """A second reference to an image every node holds (an update the cluster must roll out)."""
        for node in self.nodes.names() if self.nodes else ():
            self.nodes.ctr(node, "images", "tag", "--force", ref, new)

    def kill_container(self, pod: dict, index: int = 0) -> None:
        """SIGKILL to a container's main process, on the node that runs it: the kubelet must restart it."""
        container_id = pod["status"]["containerStatuses"][index]["containerID"].split("://", 1)[1]
        self.nodes.ctr(pod["spec"]["nodeName"], "tasks", "kill", "--signal", "SIGKILL", container_id)


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


def local_target(ingress_url: Optional[str], nodes: Optional[Nodes], lifecycle=None) -> Target:
    """The images built here (localcluster.images), on a cluster that holds them: the local node, or a kind
    cluster from `localcluster kind-up` they were loaded into. Both run Traefik with the same
    IngressClass and GatewayClass."""
    local = {"monitoring_images": images.MONITORING_IMAGES, "prometheus_image": images.GO_BINARY_REFS["prometheus"],
             "pooler_image": images.PGBOUNCER_REF, "redis_compat_image": images.REDIS_REF, "flaskr_image": images.FLASKR_REF,
             "flask_celery_image": images.FLASK_CELERY_REF, "flask_caching_image": images.FLASK_CACHING_REF}
    return Target(images.OPERATOR_REF, images.EXAMPLE_REF, images.POSTGRES_REF, images.NGINX_REF,
                  images.VALKEY_REF, INGRESS_CLASS, ingress_url, nodes=nodes, lifecycle=lifecycle, **local)


def local_kind_target() -> Target:
    """A kind cluster from `localcluster kind-up`: the suite's images loaded into every node (those a node already
    holds skipped), its Traefik pod reached at its node's address, its nodes' containerd through its engine."""
    from localcluster.kindcluster import KindCluster

    cluster = KindCluster(KIND_STATE, os.environ.get("KIND_CLUSTER", kind.DEFAULT_CLUSTER))
    if cluster.kubeconfig.resolve() != Path(os.environ["E2E_KUBECONFIG"]).resolve() or not cluster.nodes():
        raise pytest.UsageError(f"E2E_KUBECONFIG must be the kubeconfig of the kind cluster of `make kind-up` "
                                f"({cluster.kubeconfig}, KIND_CLUSTER={cluster.name}): the suite loads the images "
                                f"built here into its nodes and acts on their containerd")
    cluster.load_images(images.ensure_images())
    return local_target(cluster.ingress_url(), Nodes(cluster.ctr_on, cluster.nodes),
                        lifecycle=lambda _scratch: KindLifecycle(cluster))


@pytest.fixture(scope="session")
def target(kube) -> Target:
    if kube.local is None:
        return local_kind_target()
    node = kube.local.node
    if node is None:
        return local_target(None, None)
    return local_target(node.ingress_url, Nodes(lambda _node, *args: node.ctr(*args), lambda: [NODE_NAME]),
                        lifecycle=lambda scratch: LocalLifecycle(kube.local, scratch / "fresh"))


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
