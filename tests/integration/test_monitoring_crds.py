"""spec.monitoring against a real API server: without the Prometheus Operator's CRDs the exporters still
roll out and the status says why there is no PodMonitor; once the pinned CRDs are installed, the operator
creates the PodMonitor and PrometheusRule, which the API server validates against those CRDs' schemas.
And the operator's own /metrics and /readyz."""

from __future__ import annotations

import copy
import re
import subprocess

import yaml

from flaskapp_operator.render import render
from testsupport.kube import ROOT, wait_until
from localcluster import build

SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "full.yaml").read_text())
CRD_FILES = ("podmonitors", "prometheusrules", "servicemonitors")
SELECTOR = "app.kubernetes.io/managed-by=flaskapp-operator,app.kubernetes.io/instance=shop"



def monitored_app(namespace: str) -> dict:
    doc = copy.deepcopy(SAMPLE)
    doc["metadata"]["namespace"] = namespace
    return doc


def metric(body: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`, from the Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_monitors_follow_the_prometheus_operator_crds(kube, operator, namespace):
    kube.apply(monitored_app(namespace))
    status = wait_until(lambda: (kube.get("flaskapp", "shop", namespace).get("status") or {}).get("monitoring"),
                        90, what="the status note about the missing CRDs")
    assert "monitoring.coreos.com/v1" in status
    flower = wait_until(lambda: kube.get("deployment", "shop-flower", namespace), 60, what="Flower")
    assert flower["spec"]["template"]["spec"]["containers"][0]["name"] == "flower"

    crds = build.prometheus_operator_crds()
    kube.kubectl("apply", "--server-side", *(a for f in CRD_FILES for a in ("-f", str(crds / f"monitoring.coreos.com_{f}.yaml"))))
    for f in CRD_FILES:
        kube.wait_crd_established(f"{f}.monitoring.coreos.com")

    def monitors():
        found = kube.get("podmonitors,prometheusrules", namespace=namespace, selector=SELECTOR)["items"]
        return found if len(found) == 2 else None
    found = wait_until(monitors, 60, what="PodMonitor and PrometheusRule")
    assert {o["kind"] for o in found} == {"PodMonitor", "PrometheusRule"}
    wait_until(lambda: "monitoring" not in (kube.get("flaskapp", "shop", namespace).get("status") or {}), 30,
               what="the note to go")
    # What the operator applied is exactly what the renderer makes, and valid under strict field validation
    # (an unknown or misspelt field would be refused, not pruned).
    rendered = [o for o in render(monitored_app(namespace), redis_password="x").objects
                if o["apiVersion"].startswith("monitoring.coreos.com/")]
    checked = kube.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                           input=yaml.safe_dump_all(rendered))
    assert checked.returncode == 0
    live_rule = next(o for o in found if o["kind"] == "PrometheusRule")
    rendered_rule = next(o for o in rendered if o["kind"] == "PrometheusRule")
    assert live_rule["spec"] == rendered_rule["spec"]
    # The chart's optional ServiceMonitor for the operator passes the same strict check.
    chart = subprocess.run([kube.helm_bin, "template", "flaskapp-operator", str(ROOT / "charts" / "flaskapp-operator"),
                            "--kube-version", "1.35.0", "-n", namespace, "--set", "metrics.serviceMonitor.enabled=true",
                            "--show-only", "templates/servicemonitor.yaml"], capture_output=True, text=True, check=True)
    assert "kind: ServiceMonitor" in chart.stdout
    kube.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=chart.stdout)
    # An invalid edit of the same object is refused by the CRD's schema: the validation is real.
    broken = copy.deepcopy(rendered_rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    refused = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert refused.returncode != 0 and "for" in refused.stderr


def test_operator_metrics_and_readiness(kube, operator, namespace):
    doc = monitored_app(namespace)
    doc["spec"]["monitoring"]["enabled"] = False
    kube.apply(doc)
    assert wait_until(lambda: operator.scrape("/readyz")[0] == 200, 30, what="/readyz")

    def reconciled():
        code, body = operator.scrape()
        return body if code == 200 and metric(body, "flaskapp_connection_budget_available_connections",
                                              flaskapp_namespace=namespace, flaskapp="shop") else None
    body = wait_until(reconciled, 60, what="the app's budget in /metrics")
    app = kube.get("flaskapp", "shop", namespace)
    budget = app["status"]["tuning"]["budget"]
    assert metric(body, "flaskapp_connection_budget_peak_connections", flaskapp_namespace=namespace,
                  flaskapp="shop") == budget["peakConnections"]
    assert metric(body, "flaskapp_connection_budget_available_connections", flaskapp_namespace=namespace,
                  flaskapp="shop") == budget["maxConnections"] - budget["reserved"]
    assert metric(body, "flaskapp_operator_reconcile_total", outcome="success") >= 1
    assert metric(body, "flaskapp_operator_reconcile_duration_seconds_count", outcome="success") >= 1
    assert metric(body, "flaskapp_operator_objects_applied_total", kind="Deployment") >= 1
    assert metric(body, "flaskapp_operator_api_requests_total", verb="patch") >= 1  # server-side apply
    assert metric(body, "flaskapp_operator_api_requests_total", verb="get") >= 1
    assert metric(body, "flaskapp_operator_flaskapps") >= 1
    assert re.search(r"^flaskapp_operator_pending_reconciles \d", body, re.M)

    # An app removed from the cluster leaves the metrics.
    kube.kubectl("delete", "flaskapp", "shop", "-n", namespace)
    wait_until(lambda: metric(operator.scrape()[1], "flaskapp_connection_budget_available_connections",
                              flaskapp_namespace=namespace) == 0, 60, what="the app's series to go")
