"""The operator against a real API server: install, reconcile, update, drift repair, pruning, GC."""

from __future__ import annotations

import copy
import time

import yaml

from testsupport.kube import ROOT, ready, wait_ready, wait_until

SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "full.yaml").read_text())
CHILD_KINDS = "deployments,services,configmaps,secrets,jobs,ingresses,horizontalpodautoscalers," \
              "poddisruptionbudgets,networkpolicies,serviceaccounts"
SELECTOR = "app.kubernetes.io/managed-by=flaskapp-operator,app.kubernetes.io/instance=shop"
OPERATOR_USER = "system:serviceaccount:flaskapp-system:flaskapp-operator"


def assert_idle(kube, operator, namespace: str, resyncs: int = 2, timeout: float = 60) -> None:
    """No write by the operator in `namespace` (the API server's audit log) while it runs `resyncs` resync passes
    (paced by the operator's pass counter: with the watch cache a pass sends no request the API server could
    count), once the last write it had reason to make is a few seconds old. (Apps of earlier tests, in
    namespaces being deleted, may still rightly change.)"""
    if not kube.local:
        return
    last = {"count": -1, "since": 0.0}

    def ours() -> list[str]:
        return [w for w in kube.writes_by(OPERATOR_USER) if f" {namespace}/" in w]

    def settled() -> bool:  # no new write for 3 s: the reaction to the last real change is over
        count = len(ours())
        if count != last["count"]:
            last.update(count=count, since=time.monotonic())
        return time.monotonic() - last["since"] >= 3
    wait_until(settled, 60, what="writes settle")
    writes_before = len(ours())
    passes_before = operator.passes()
    wait_until(lambda: operator.passes() - passes_before >= resyncs * operator.watched_apps(), timeout, interval=1,
               what=f"{resyncs} resyncs")
    assert ours()[writes_before:] == []


def children(kube, namespace):
    return kube.get(CHILD_KINDS, namespace=namespace, selector=SELECTOR)["items"]


def deployment(kube, namespace, name):
    return kube.get("deployment", name, namespace)


def test_crd_is_explained_and_printed(kube, crd):
    # The API server publishes the CRD's OpenAPI a moment after it is Established.
    explained = wait_until(lambda: kube.kubectl("explain", "flaskapp.spec.web.gunicorn").stdout, 60,
                           what="kubectl explain")
    assert "2 x CPU cores + 1" in explained and "gracefulTimeoutSeconds" in explained
    # The model's own description of the field, as kubectl wraps it (whitespace aside).
    import dataclasses

    from flaskapp_operator.api import Gunicorn
    description = next(f.metadata["description"] for f in dataclasses.fields(Gunicorn)
                       if f.name == "graceful_timeout_seconds")
    assert " ".join(description.split()) in " ".join(explained.split())


def test_pod_blocks_are_explained_down_to_kubernetes_own_fields(kube, crd):
    import dataclasses

    from flaskapp_operator.api import PodOverrides
    from flaskapp_operator.schema import json_name
    explained = " ".join(wait_until(lambda: kube.kubectl("explain", "flaskapp.spec.web.pod").stdout, 60,
                                    what="kubectl explain").split())
    for f in dataclasses.fields(PodOverrides):
        assert json_name(f) in explained, json_name(f)
        assert " ".join(f.metadata["description"].split()) in explained, json_name(f)
    # Below them, Kubernetes' own schema: the API server knows every field of an affinity or a container.
    nested = kube.kubectl("explain", "flaskapp.spec.workerPools.pod.affinity.nodeAffinity").stdout
    assert "preferredDuringSchedulingIgnoredDuringExecution" in nested
    assert "startupProbe" in kube.kubectl("explain", "flaskapp.spec.pod.sidecars").stdout


def test_full_sample_lifecycle(kube, operator, namespace):
    # 2. Every child is created, owned by the FlaskApp, and the FlaskApp becomes Ready.
    kube.apply(SAMPLE, namespace)
    kube.kubectl("wait", "--for=condition=Ready", "flaskapp/shop", "-n", namespace, "--timeout=120s")
    app = kube.get("flaskapp", "shop", namespace)
    uid = app["metadata"]["uid"]
    kids = children(kube, namespace)
    kinds = {k["kind"] for k in kids}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "Secret", "Job", "Ingress", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"}
    for kid in kids:
        assert [o["uid"] for o in kid["metadata"]["ownerReferences"]] == [uid], kid["metadata"]["name"]
    printed = kube.kubectl("get", "fapp", "-n", namespace).stdout
    assert printed.split()[:6] == ["NAME", "READY", "WEB", "POOLS", "URL", "AGE"]
    assert "True" in printed and "https://shop.example.com/" in printed and "2/2" in printed
    assert app["status"]["tuning"]["budget"]["feasible"] is True

    # 7. The restricted namespace admitted every pod we create.
    pods = kube.get("pods", namespace=namespace)["items"]
    assert len(pods) >= 10
    failed = [e for e in kube.get("events", namespace=namespace)["items"] if e["reason"] == "FailedCreate"]
    assert failed == []

    # 3. A no-op resync sends no write request (several resync periods of 5 s).
    # (First let the HPA bring web up to its minReplicas: a real change, not an idle one.)
    wait_until(lambda: kube.get("flaskapp", "shop", namespace)["status"]["webReplicas"] == 2, 60, what="HPA min")
    assert_idle(kube, operator, namespace)
    assert operator.alive

    # Placement (the kwok nodes are labelled with two zones): nginx's strict zone spread puts its two pods in
    # both zones; the default soft spread puts the two web pods on two nodes. The PriorityClass resolved.
    def placed(component: str) -> list[dict]:
        return [p for p in kube.get("pods", namespace=namespace,
                                    selector=f"app.kubernetes.io/instance=shop,app.kubernetes.io/component={component}")[
                                        "items"] if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kube.get("nodes")["items"]}
    nginx_zones = [nodes[p["spec"]["nodeName"]]["topology.kubernetes.io/zone"] for p in placed("nginx")]
    assert sorted(nginx_zones) == ["zone-a", "zone-b"]
    web_pods = placed("web")
    assert len({p["spec"]["nodeName"] for p in web_pods}) == len(web_pods) == 2
    assert all(p["spec"]["priority"] == 1000 for p in web_pods)

    # 3. Spec changes roll out: replicas, a gunicorn setting, the image.
    web_before = deployment(kube, namespace, "shop-web")
    checksum_before = web_before["spec"]["template"]["metadata"]["annotations"]["flaskapp.dev/config-checksum"]
    changed = copy.deepcopy(SAMPLE)
    changed["spec"]["nginx"]["replicas"] = 3
    changed["spec"]["web"]["gunicorn"]["timeoutSeconds"] = 60
    changed["spec"]["image"] = "ghcr.io/flaskapp-operator/example:0.2.0"
    kube.apply(changed, namespace)
    wait_ready(kube, namespace, "shop")
    web = deployment(kube, namespace, "shop-web")
    assert web["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.2.0")
    assert web["spec"]["template"]["metadata"]["annotations"]["flaskapp.dev/config-checksum"] != checksum_before
    assert deployment(kube, namespace, "shop-nginx")["spec"]["replicas"] == 3
    config = kube.get("configmap", "shop-env", namespace)
    assert "--timeout=60" in config["data"]["web.GUNICORN_CMD_ARGS"]
    jobs = [j["metadata"]["name"] for j in kube.get("jobs", namespace=namespace)["items"]]
    assert len(jobs) == 1, "the new image ran its own migration Job and the old one was pruned"
    app = kube.get("flaskapp", "shop", namespace)
    assert app["status"]["observedGeneration"] == app["metadata"]["generation"] == 2

    # 4. A deleted child is restored; an edited child is set back.
    kube.kubectl("delete", "service", "shop-web", "-n", namespace)
    wait_until(lambda: kube.get("service", "shop-web", namespace), 30, what="service restored")
    kube.kubectl("patch", "configmap", "shop-env", "-n", namespace, "--type=merge",
                 "-p", '{"data":{"web.WEB_CONCURRENCY":"99"}}')
    wait_until(lambda: kube.get("configmap", "shop-env", namespace)["data"]["web.WEB_CONCURRENCY"] != "99", 30,
               what="configmap restored")
    def templates():
        return {d: deployment(kube, namespace, d)["spec"]["template"]["metadata"]["annotations"]
                ["flaskapp.dev/config-checksum"] for d in ("shop-redis-cache", "shop-web")}
    before = templates()
    kube.kubectl("delete", "secret", "shop-redis", "-n", namespace)  # not watched: the resync restores it
    wait_until(lambda: kube.get("secret", "shop-redis", namespace), 30, what="secret restored")
    # A new password: Redis and its clients restart together, so they agree on it.
    def both_rolled():
        now = templates()
        return all(now[d] != before[d] for d in now)
    wait_until(both_rolled, 30, what="Redis and web roll with the new password")

    # 4. Removing a worker pool and disabling beat prune their objects.
    smaller = copy.deepcopy(changed)
    smaller["spec"]["workerPools"] = [p for p in smaller["spec"]["workerPools"] if p["name"] != "reports"]
    smaller["spec"]["beat"]["enabled"] = False
    kube.apply(smaller, namespace)
    wait_until(lambda: deployment(kube, namespace, "shop-worker-reports") is None, 30, what="pool pruned")
    wait_until(lambda: deployment(kube, namespace, "shop-beat") is None, 30, what="beat pruned")
    assert kube.get("hpa", "shop-worker-reports", namespace) is None
    assert kube.get("pdb", "shop-worker-reports", namespace) is None
    wait_ready(kube, namespace, "shop")
    # The pruned tiers left the status too, and nothing is written once the prune is done.
    wait_until(lambda: set(kube.get("flaskapp", "shop", namespace)["status"]["components"]) ==
               {"web", "nginx", "worker-default", "redis-cache", "redis-broker", "flower"}, 30, what="status without beat")
    assert_idle(kube, operator, namespace)
    events = {e["reason"] for e in kube.get("events", namespace=namespace,
                                            selector=None)["items"] if e["involvedObject"]["kind"] == "FlaskApp"}
    assert {"Applied", "Pruned", "Ready"} <= events

    # 5. Deleting the FlaskApp lets the garbage collector remove every child.
    kube.kubectl("delete", "flaskapp", "shop", "-n", namespace)
    wait_until(lambda: children(kube, namespace) == [], 60, what="children garbage-collected")
    assert operator.alive


def test_scale_subresource(kube, operator, namespace):
    minimal = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())
    minimal["spec"]["web"] = {"replicas": 1}
    kube.apply(minimal, namespace)
    wait_ready(kube, namespace, "hello")
    kube.kubectl("scale", "flaskapp/hello", "-n", namespace, "--replicas=3")
    wait_until(lambda: (deployment(kube, namespace, "hello-web") or {}).get("spec", {}).get("replicas") == 3, 30,
               what="web scaled")
    wait_until(lambda: ready(kube, namespace, "hello") and
               kube.get("flaskapp", "hello", namespace)["status"]["webReplicas"] == 3, 120, what="3 ready")


def test_non_canonical_quantities_cause_no_writes(kube, operator, namespace):
    """The API server stores 0.5 as 500m and 1024Mi as 1Gi: the operator must see that as no change."""
    app = copy.deepcopy(SAMPLE)
    app["metadata"] = {"name": "quantities"}
    app["spec"]["web"]["resources"] = {"requests": {"cpu": "0.5", "memory": "1024Mi"},
                                       "limits": {"cpu": "1.0", "memory": "2048Mi"}}
    app["spec"]["database"]["maxConnections"] = 200
    kube.apply(app, namespace)
    kube.kubectl("wait", "--for=condition=Ready", "flaskapp/quantities", "-n", namespace, "--timeout=120s")
    live = kube.get("deployment", "quantities-web", namespace)["spec"]["template"]["spec"]["containers"][0]
    assert live["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi",  # canonical on the server
                                             "ephemeral-storage": "64Mi"}
    assert_idle(kube, operator, namespace)


def _scaling_events(kube, namespace, deployment_name):
    return [e["message"] for e in kube.get("events", namespace=namespace)["items"]
            if e["reason"] == "ScalingReplicaSet" and e["involvedObject"]["name"] == deployment_name]


def switch_to_autoscaling(kube, namespace, name: str, replicas: int, autoscaling: dict) -> dict:
    """A minimal app with `replicas` web pods, Ready, then switched to `autoscaling`, Ready again: its web
    Deployment."""
    app = copy.deepcopy(yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text()))
    app["metadata"] = {"name": name}
    for web in ({"replicas": replicas}, {"autoscaling": autoscaling}):
        app["spec"]["web"] = web
        kube.apply(app, namespace)
        wait_ready(kube, namespace, name)  # the HPA exists once Ready reports the new generation
    assert kube.get("hpa", f"{name}-web", namespace)
    return deployment(kube, namespace, f"{name}-web")


def test_a_tier_scaled_to_zero_that_turns_autoscaled_starts_at_its_minimum(kube, operator, namespace):
    """An HPA never scales its target up from 0 replicas: the handover gives it at least minReplicas."""
    web = switch_to_autoscaling(kube, namespace, "from-zero", 0, {"minReplicas": 2, "maxReplicas": 4})
    assert web["spec"]["replicas"] == 2


def test_switching_to_autoscaling_keeps_the_pods_and_a_new_autoscaled_tier_starts_at_its_minimum(
        kube, operator, namespace):
    minimal = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())
    web = switch_to_autoscaling(kube, namespace, "switch", 3, {"minReplicas": 2, "maxReplicas": 5})
    assert web["spec"]["replicas"] == 3
    # The Deployment controller never scaled the tier down (the SSA handover kept spec.replicas).
    assert not [m for m in _scaling_events(kube, namespace, "switch-web") if "down" in m], \
        _scaling_events(kube, namespace, "switch-web")

    fresh = copy.deepcopy(minimal)
    fresh["metadata"] = {"name": "fresh"}
    fresh["spec"]["web"] = {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}
    kube.apply(fresh, namespace)
    wait_ready(kube, namespace, "fresh")
    first = wait_until(lambda: _scaling_events(kube, namespace, "fresh-web"), 30, what="scaling events")
    assert not any(m.endswith("from 0 to 1") for m in first), first
