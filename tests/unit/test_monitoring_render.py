"""spec.monitoring as rendered: every exporter port is scraped and reachable from the monitoring namespace
only; nothing changes for apps that leave it off; invalid input is refused by field. The exporters'
numbers are checked on real servers in tests/workload/test_monitoring_exporters.py, the alerts with promtool in
tests/integration/test_alert_rules.py."""

from __future__ import annotations

import copy

import pytest

from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError
from testsupport.samples import load_sample
from test_policies import FIXED, allowed, outside, pod

MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}


def full(**monitoring) -> dict:
    doc = copy.deepcopy(load_sample("full"))
    doc["spec"]["monitoring"].update(monitoring)
    return doc


def workloads(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objects
            if o["kind"] in ("Deployment", "StatefulSet")}


def metrics_ports(workload: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", []) if p["name"].endswith("-metrics")}


def test_every_tier_exposes_metrics_that_the_pod_monitor_scrapes():
    objects = render(full(), **FIXED).objects
    monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    exposed = {tier: metrics_ports(w) for tier, w in workloads(objects).items()}
    # Which exporter sits beside which server: the issue's list, tier by tier.
    assert set(exposed["web"]) == {"statsd-metrics"}
    assert set(exposed["nginx"]) == {"nginx-metrics", "access-metrics"}
    assert set(exposed["redis-cache"]) == set(exposed["redis-broker"]) == {"redis-metrics"}
    assert set(exposed["flower"]) == {"celery-metrics"}
    # Worker pods run a statsd_exporter for the in-process agent's per-task metrics (spec.agent, on by default).
    assert all(set(exposed[t]) == {"statsd-metrics"} for t in exposed if t.startswith("worker-"))
    assert not exposed["beat"]
    assert set().union(*exposed.values()) == scraped
    for tier, workload in workloads(objects).items():  # the monitor's selector picks every pod
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()), tier


def test_metrics_ports_are_open_to_the_monitoring_namespace_only():
    objects = render(full(), **FIXED).objects
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    prometheus = outside({"app": "prometheus"}, "monitoring")
    stranger = outside({"app": "prometheus"}, "elsewhere")
    for tier, workload in workloads(objects).items():
        for name, port in metrics_ports(workload).items():
            assert allowed(policies, prometheus, pod(tier), port), (tier, name)
            assert not allowed(policies, stranger, pod(tier), port), (tier, name)
            assert not allowed(policies, pod("worker-default"), pod(tier), port), (tier, name)
    # Flower reads the broker's events, nothing else.
    assert allowed(policies, pod("flower"), pod("redis-broker"), 6379)
    assert not allowed(policies, pod("flower"), pod("redis-cache"), 6379)
    assert not allowed(policies, pod("flower"), pod("web"), 8000)


def test_workers_send_task_events_and_flower_reads_the_broker_from_the_secret():
    objects = render(full(), **FIXED).objects
    tiers = workloads(objects)
    for tier in (t for t in tiers if t.startswith("worker-")):
        assert "--task-events" in tiers[tier]["spec"]["template"]["spec"]["containers"][0]["command"]
    flower = tiers["flower"]["spec"]["template"]["spec"]["containers"][0]
    assert not any("redis://" in a for a in flower["command"])  # the password stays off the command line
    broker = next(e for e in flower["env"] if e["name"] == "CELERY_BROKER_URL")
    assert broker["valueFrom"]["secretKeyRef"] == {"name": "shop-redis", "key": "broker-url"}
    broker_args = next(c for c in tiers["redis-broker"]["spec"]["template"]["spec"]["containers"]
                       if c["name"] == "redis-exporter")["args"]
    assert "--check-single-keys=db0=celery,db0=reports" in broker_args  # every pool's queue


def test_monitoring_off_renders_what_it_always_did():
    doc = full(enabled=False)
    objects = render(doc, **FIXED).objects
    assert not [o for o in objects if o["kind"] in ("PodMonitor", "PrometheusRule")]
    assert not any(metrics_ports(w) for w in workloads(objects).values())
    conf = next(o for o in objects if o["metadata"]["name"] == "shop-nginx-conf")["data"]["nginx.conf"]
    assert "access_log off;" in conf and "stub_status" not in conf
    gunicorn_args = next(o for o in objects if o["metadata"]["name"] == "shop-env")["data"]["web.GUNICORN_CMD_ARGS"]
    assert "statsd" not in gunicorn_args
    del doc["spec"]["monitoring"]  # tracing is its own switch (otlpEndpoint): off too, nothing differs
    assert render(doc, **FIXED).objects == render(full(enabled=False, otlpEndpoint=None), **FIXED).objects


def test_without_the_prometheus_operator_crds_the_exporters_still_run():
    objects = render(full(), **FIXED, monitoring_api=False).objects
    assert not [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert metrics_ports(workloads(objects)["web"])
    assert any(o["metadata"]["labels"].get("grafana_dashboard") == "1" for o in objects if o["kind"] == "ConfigMap")


def test_tracing_variables_name_each_tier():
    objects = render(full(), **FIXED).objects
    for tier, workload in workloads(objects).items():
        if tier in ("web", "beat") or tier.startswith("worker-"):
            env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["OTEL_SERVICE_NAME"]["value"] == f"shop-{tier}"
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.monitoring.svc:4318"
            attributes = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
            assert attributes["flaskapp.tier"] == tier and attributes["k8s.pod.name"] == "$(OTEL_K8S_POD_NAME)"
            names = list(env)  # the kubelet expands $(VAR) only for variables defined earlier
            assert names.index("OTEL_K8S_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")


def test_alerts_watch_every_queue_and_carry_runbooks():
    objects = render(full(), **FIXED).objects
    rules = next(o for o in objects if o["kind"] == "PrometheusRule")["spec"]["groups"][0]["rules"]
    for rule in rules:
        assert rule["annotations"]["runbook"] and rule["annotations"]["summary"], rule["alert"]
        assert 'namespace="default"' in rule["expr"] or 'flaskapp_namespace="default"' in rule["expr"]
    not_consumed = {r["labels"]["queue"]: r for r in rules if r["alert"] == "FlaskAppQueueNotConsumed"}
    assert set(not_consumed) == {"celery", "reports"}
    assert "(reports)@" in not_consumed["reports"]["expr"] and "(default)@" in not_consumed["celery"]["expr"]
    assert "300 ms" in next(r for r in rules if r["alert"] == "FlaskAppSlowResponses")["annotations"]["summary"]


@pytest.mark.parametrize("monitoring, field", [
    ({"otlpEndpoint": "collector:4318"}, "spec.monitoring.otlpEndpoint"),
    ({"latencyObjectiveMs": 0}, "spec.monitoring.latencyObjectiveMs"),
    ({"errorRatioPercent": 101}, "spec.monitoring.errorRatioPercent"),
    ({"otlpProtocol": "thrift"}, "spec.monitoring.otlpProtocol"),
    ({"images": {"flower": "Not An Image"}}, "spec.monitoring.images.flower"),
    ({"scrape": []}, "spec.monitoring.scrape"),
])
def test_invalid_monitoring_input_names_the_field(monitoring, field):
    with pytest.raises(SpecError) as err:
        render(full(**monitoring), **FIXED)
    assert field in str(err.value)


def test_an_external_redis_has_no_redis_alerts_or_exporters():
    doc = full()
    doc["spec"]["redis"] = {"mode": "external", "external": {"secretName": "redis-urls"}}
    objects = render(doc, **FIXED).objects
    rules = next(o for o in objects if o["kind"] == "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert rules and not [r for r in rules if "redis_" in r["expr"]]
    assert {r["alert"] for r in rules} == {"FlaskAppHighErrorRatio", "FlaskAppSlowResponses",
                                          "FlaskAppConnectionBudgetHigh", "FlaskAppNPlusOneQueries",
                                          "FlaskAppConnectionBudgetNotGuaranteed"}  # the last two: the agent's
    assert "flower" in workloads(objects)  # Celery still measured, from the workers' events
