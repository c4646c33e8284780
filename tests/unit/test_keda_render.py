"""Queue-length autoscaling of worker pools: a KEDA ScaledObject (Redis list trigger per queue) instead of a CPU
HPA, counted by the connection budget at its maxReplicaCount; Degraded where KEDA is not installed."""

from __future__ import annotations

import pytest

from testsupport.samples import KEDA_REJECTED, load_sample, patched
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError

QUEUED = {"workerPools.1.autoscaling": {"minReplicas": 0, "maxReplicas": 6, "queueLength": 20, "cooldownSeconds": 60}}


def by_key(objects):
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_a_queue_scaled_pool_gets_a_scaled_object_per_queue_and_no_hpa():
    objects = by_key(render(patched(load_sample("full"), "shop", QUEUED), redis_password="pw").objects)
    scaled = objects[("ScaledObject", "shop-worker-reports")]
    assert ("HorizontalPodAutoscaler", "shop-worker-reports") not in objects
    assert ("HorizontalPodAutoscaler", "shop-web") in objects  # the web keeps its CPU autoscaler
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-worker-reports"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 6, 60)
    assert [t["metadata"]["listName"] for t in spec["triggers"]] == ["reports"]  # the pool's queues
    trigger = spec["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listLength"] == "20"
    assert trigger["metadata"]["address"] == "shop-redis-broker.default.svc:6379"
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA's schema: a map of strings
    auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "shop-redis", "key": "password"}]
    # Under an autoscaler the Deployment leaves replicas to it (KEDA's HPA, and KEDA itself at zero).
    assert "replicas" not in objects[("Deployment", "shop-worker-reports")]["spec"]


def test_the_budget_counts_and_caps_the_scaled_objects_maximum():
    doc = patched(load_sample("full"), "shop", {**QUEUED, "workerPools.1.autoscaling.maxReplicas": 400})
    r = render(doc, redis_password="pw")
    scaled = by_key(r.objects)[("ScaledObject", "shop-worker-reports")]
    capped = {c["tier"]: c for c in r.tuning.report()["budget"]["cappedAutoscalers"]}
    assert scaled["spec"]["maxReplicaCount"] == capped["worker-reports"]["maxReplicas"] < 400
    assert r.feasible


def test_without_keda_nothing_falls_back_to_cpu():
    objects = by_key(render(patched(load_sample("full"), "shop", QUEUED), redis_password="pw", keda_api=False).objects)
    assert not [k for k in objects if k[0] in ("ScaledObject", "TriggerAuthentication")]
    assert ("HorizontalPodAutoscaler", "shop-worker-reports") not in objects


@pytest.mark.parametrize("case,patch,field", KEDA_REJECTED, ids=[c for c, _, _ in KEDA_REJECTED])
def test_the_parser_refuses_bad_queue_scaling_naming_the_field(case, patch, field):
    with pytest.raises(SpecError) as err:
        render(patched(load_sample("full"), case, patch), redis_password="pw")
    assert any(field in e.path or field in e.message for e in err.value.errors), err.value


def test_a_pool_scaled_to_zero_by_keda_counts_as_ready():
    from flaskapp_operator.ownership import autoscaler_minimums
    from flaskapp_operator.observe import components

    objects = render(patched(load_sample("full"), "shop", QUEUED), redis_password="pw").objects
    minimums = autoscaler_minimums(objects)
    assert minimums["shop-worker-reports"] == 0 and minimums["shop-web"] == 2
    at_zero = {"metadata": {"name": "shop-worker-reports", "generation": 3,
                            "labels": {"app.kubernetes.io/component": "worker-reports"}},
               "spec": {"replicas": 0}, "status": {"observedGeneration": 3}}
    assert components([at_zero], minimums)["worker-reports"]["ready"] is True
    # Without an autoscaler, spec.replicas is what the FlaskApp asked for: 0 is ready with none (make soak found a
    # FlaskApp with web.replicas 0 forever "RollingOut"), and a tier short of its replicas is not.
    assert components([at_zero], {})["worker-reports"]["ready"] is True
    short = {**at_zero, "spec": {"replicas": 2}, "status": {"observedGeneration": 3, "replicas": 1,
                                                            "updatedReplicas": 1, "availableReplicas": 1}}
    assert components([short], {})["worker-reports"]["ready"] is False


@pytest.mark.parametrize("max_connections", range(18, 32))
def test_a_capped_queue_scaled_pool_keeps_at_least_one_pod_or_the_plan_is_infeasible(max_connections):
    """A maximum of 0 would be a pool that never runs a task while the app reports Ready: capping stops at one
    pod, and a budget that cannot give it one is infeasible."""
    doc = patched(load_sample("full"), "shop", {**QUEUED, "database.maxConnections": max_connections,
                                                "database.budgetPolicy": "capAutoscaling"})
    r = render(doc, redis_password="pw")
    scaled = by_key(r.objects)[("ScaledObject", "shop-worker-reports")]
    assert not r.feasible or scaled["spec"]["maxReplicaCount"] >= 1, (max_connections, r.tuning.report()["budget"])


def test_the_broker_policy_admits_kedas_namespace_only_when_a_pool_scales_on_queue_length():
    def broker_sources(doc):
        policy = by_key(render(doc, redis_password="pw").objects)[("NetworkPolicy", "shop-redis-broker")]
        return [peer for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])
                if {"port": 6379, "protocol": "TCP"} in rule["ports"]]

    keda = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    assert keda in broker_sources(patched(load_sample("full"), "shop", QUEUED))
    assert keda not in broker_sources(load_sample("full"))
    own = {"namespaceSelector": {"matchLabels": {"team": "autoscaling"}}}
    assert broker_sources(patched(load_sample("full"), "shop", {**QUEUED, "networkPolicy.autoscalerFrom": [own]}))[-1] == own
