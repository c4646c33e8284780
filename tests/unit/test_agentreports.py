"""The agent's reports of engines outside the plan, from Prometheus's answer to the FlaskApp's BudgetGuaranteed
condition and Events (the Prometheus side runs for real in tests/workload/test_agent_reports.py)."""

from __future__ import annotations

import argparse

import pytest

from flaskapp_operator.agentreports import (QUERY, SCRAPED_QUERY, AgentReport, UnboundedEngines, budget_guaranteed,
                                           parse, parse_scraped)
from flaskapp_operator.cli import build_parser
from flaskapp_operator.prometheus import AgentReportPoller
from flaskapp_operator.reconcile import reconcile
from flaskapp_operator.settings import Settings
from testsupport.memorycluster import MemoryCluster
from testsupport.samples import load_sample, patched

UID = "00000000-0000-4000-8000-000000000002"


def answer(*series: tuple[dict, str]) -> dict:
    """Prometheus's /api/v1/query answer, as its documentation gives it."""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1765050000.123, value]} for labels, value in series]}}


def labels(app: str, tier: str, reason: str, namespace: str = "ns") -> dict:
    return {"namespace": namespace, "flaskapp": app, "tier": tier, "reason": reason}


def test_the_answer_is_read_by_app_tier_and_reason():
    found = parse(answer((labels("shop", "worker-default", "creator"), "1"),
                         (labels("shop", "web", "prebuilt_pool"), "3"),
                         (labels("blog", "web", "creator", namespace="other"), "2"),
                         ({"tier": "web", "reason": "creator"}, "5")))  # no app labels: not attributable
    assert found == {("ns", "shop"): (UnboundedEngines("web", "prebuilt_pool", 3),
                                      UnboundedEngines("worker-default", "creator", 1)),
                     ("other", "blog"): (UnboundedEngines("web", "creator", 2),)}
    assert parse(answer()) == {}
    assert parse_scraped(answer(({"namespace": "ns", "flaskapp": "shop"}, "2"), ({"namespace": "ns"}, "1"))) == {
        ("ns", "shop")}


@pytest.mark.parametrize("payload", [{"status": "error", "errorType": "bad_data", "error": "parse error"},
                                     {"status": "success", "data": {"resultType": "matrix", "result": []}}])
def test_an_answer_that_is_not_an_instant_vector_is_an_error(payload):
    with pytest.raises(ValueError):
        parse(payload)
    with pytest.raises(ValueError):
        parse_scraped(payload)


def test_the_query_counts_pods_per_reason_of_the_agents_counter():
    # The counter's name is the statsd mapping's (builders/monitoring.py); the labels are the PodMonitor's.
    from flaskapp_operator.builders.monitoring import statsd_mapping

    assert "flaskapp_agent_unbounded_engines_total" in statsd_mapping()
    assert QUERY.startswith("count by (namespace, flaskapp, tier, reason) (flaskapp_agent_unbounded_engines_total")
    # Scraped: the web pods' statsd exporter, by the port name the PodMonitor's endpoint carries.
    from flaskapp_operator.builders.monitoring import METRICS_PORTS

    assert 'endpoint="statsd-metrics"' in SCRAPED_QUERY and "statsd-metrics" in METRICS_PORTS


@pytest.mark.parametrize("kwargs, status, reason", [
    (dict(agent=False, monitoring=True, podmonitor=True, report=AgentReport(scraped=True)), None, "AgentDisabled"),
    (dict(agent=True, monitoring=False, podmonitor=True, report=AgentReport(scraped=True)), None,
     "MonitoringDisabled"),
    (dict(agent=True, monitoring=True, podmonitor=True, report=None), None, "NoPrometheus"),
    (dict(agent=True, monitoring=True, podmonitor=True, report=AgentReport(error="URLError: refused")), None,
     "PrometheusUnreachable"),
    (dict(agent=True, monitoring=True, podmonitor=False, report=AgentReport(source="http://p")), None, "NotScraped"),
    (dict(agent=True, monitoring=True, podmonitor=True, report=AgentReport(source="http://p")), None, "NotScraped"),
    (dict(agent=True, monitoring=True, podmonitor=True,
          report=AgentReport((UnboundedEngines("web", "creator", 2),), source="http://p", scraped=True)), False,
     "EnginesOutsideThePlan"),
    (dict(agent=True, monitoring=True, podmonitor=True,  # a worker pod reported, the web pods are not scraped
          report=AgentReport((UnboundedEngines("worker-a", "creator", 1),), source="http://p")), False,
     "EnginesOutsideThePlan"),
    (dict(agent=True, monitoring=True, podmonitor=True, report=AgentReport(source="http://p", scraped=True)), True,
     "EveryEngineBounded"),
])
def test_the_condition_says_what_is_known_and_what_it_would_take_to_know(kwargs, status, reason):
    got = budget_guaranteed("shop", **kwargs)
    assert got[:2] == (status, reason) and got[2]


def reconciled(cluster: MemoryCluster) -> dict:
    reconcile(cluster, "ns", "shop")
    return next((c for c in cluster.status.get("conditions", []) if c["type"] == "BudgetGuaranteed"), None)


def shop(**patch) -> MemoryCluster:
    app = patched(load_sample("full"), "shop", patch)
    app["metadata"].update(namespace="ns", uid=UID, generation=1)
    cluster = MemoryCluster(app, {}, secrets={"shop-db": {"data": {}}})
    cluster.monitoring = True
    return cluster


def test_status_reports_engines_outside_the_plan_once_as_an_event_and_clears_when_they_are_gone():
    cluster = shop(**{"database.pooler": None})
    assert reconciled(cluster)["status"] == "Unknown"  # the operator was not given a Prometheus
    assert reconciled(cluster)["reason"] == "NoPrometheus"

    cluster.report = AgentReport((UnboundedEngines("web", "creator", 2),
                                  UnboundedEngines("worker-default", "more than one engine", 1)), source="http://p",
                                 scraped=True)
    cluster.app["status"] = dict(cluster.status)
    got = reconciled(cluster)
    assert (got["status"], got["reason"]) == ("False", "EnginesOutsideThePlan")
    assert "web: creator (2 pods); worker-default: more than one engine (1 pod)" in got["message"]
    warnings = [e for e in cluster.events if e[1] == "BudgetNotGuaranteed"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning"

    cluster.app["status"] = dict(cluster.status)
    reconciled(cluster)  # the same report: no second Event
    assert len([e for e in cluster.events if e[1] == "BudgetNotGuaranteed"]) == 1

    cluster.report = AgentReport(source="http://p", scraped=True)  # new pods: the old ones' series went stale
    cluster.app["status"] = dict(cluster.status)
    assert reconciled(cluster)["status"] == "True"


def test_an_app_without_a_database_has_no_budget_condition():
    cluster = shop(database=None)
    cluster.report = AgentReport(source="http://p")
    assert reconciled(cluster) is None


class Recorder:
    def __init__(self):
        self.notified: list[tuple[str, str]] = []

    def __call__(self, kind, namespace, name):
        assert kind == "AgentReport"
        self.notified.append((namespace, name))


def test_the_poller_asks_for_a_pass_of_the_apps_whose_report_changed_and_of_every_app_when_it_loses_prometheus():
    scraped = answer(({"namespace": "ns", "flaskapp": "shop"}, "2"), ({"namespace": "ns", "flaskapp": "blog"}, "1"))
    rounds = [(answer((labels("shop", "web", "creator"), "1")), scraped),
              (answer((labels("shop", "web", "creator"), "1")), scraped),
              (answer((labels("blog", "web", "creator"), "1")), scraped),
              (answer((labels("blog", "web", "creator"), "1")),
               answer(({"namespace": "ns", "flaskapp": "blog"}, "1"))),  # shop's web pods no longer scraped
              OSError("connection refused"),
              OSError("connection refused")]
    asked: list[str] = []

    def fetch(url, query):
        asked.append(query)
        got = rounds[0]
        if isinstance(got, Exception):
            rounds.pop(0)
            raise got
        if query == SCRAPED_QUERY:
            rounds.pop(0)
        return got[0] if query == QUERY else got[1]

    notify = Recorder()
    poller = AgentReportPoller("http://prometheus:9090", 60, notify,
                               every_app=lambda: [("ns", "blog"), ("ns", "shop"), ("ns", "quiet")], fetch=fetch)
    assert poller.get("ns", "shop").error == "not asked yet"
    poller.poll_once()  # first answer: unknown -> known for every app
    assert notify.notified == [("ns", "blog"), ("ns", "shop"), ("ns", "quiet")] and asked == [QUERY, SCRAPED_QUERY]
    assert poller.get("ns", "shop") == AgentReport((UnboundedEngines("web", "creator", 1),), None,
                                                   "http://prometheus:9090", True)
    assert poller.get("ns", "quiet").scraped is False
    notify.notified.clear()
    poller.poll_once()  # the same: nobody
    assert notify.notified == []
    poller.poll_once()  # shop fixed, blog not
    assert notify.notified == [("ns", "blog"), ("ns", "shop")]
    notify.notified.clear()
    poller.poll_once()  # shop no longer scraped: its condition becomes Unknown
    assert notify.notified == [("ns", "shop")] and poller.get("ns", "shop").scraped is False
    notify.notified.clear()
    poller.poll_once()  # Prometheus gone: every app's condition becomes Unknown
    assert len(notify.notified) == 3 and "connection refused" in poller.get("ns", "blog").error
    notify.notified.clear()
    poller.poll_once()  # still gone: nothing new
    assert notify.notified == []


def test_the_prometheus_url_is_a_flag_and_its_interval_an_environment_variable():
    args = build_parser().parse_args(["run", "--prometheus-url", "http://prometheus.monitoring:9090"])
    settings = Settings.from_command_line(args, {"FLASKAPP_PROMETHEUS_SECONDS": "15"})
    assert (settings.prometheus_url, settings.prometheus_seconds) == ("http://prometheus.monitoring:9090", 15.0)
    assert Settings.from_command_line(build_parser().parse_args(["run"]), {}).prometheus_url is None
    assert isinstance(args, argparse.Namespace)
