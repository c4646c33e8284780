"""An engine the agent cannot bound, from the app's process to the FlaskApp's BudgetGuaranteed condition, through
real servers: the agent in a gunicorn worker counts it, the web pod's statsd exporter (run from its rendered args)
serves the counter, a real Prometheus scrapes it, and the operator's poller (prometheus.py) reads it back.

The scrape job gives the series the labels the app's PodMonitor gives them on a cluster (namespace, flaskapp,
tier, endpoint); the PodMonitor's relabelling itself runs in the e2e suite."""

from __future__ import annotations

import pytest
import requests
import yaml

from flaskapp_operator.agentreports import UnboundedEngines, budget_guaranteed
from flaskapp_operator.prometheus import AgentReportPoller
from localcluster.build import build_monitoring_tools
from testsupport.stack import Stack, free_ports, scratch_stack, wait_port
from testsupport.waiting import wait_until
from test_public_apps import flaskr_document

pytestmark = pytest.mark.workload

# How Google's Cloud SQL connector (and others like it) is used: SQLAlchemy is given a connect function and a URL
# without a server. The engine is made on first use of /connector, so the test sees the report appear.
APP = '''
import os

import psycopg
from flask import Flask
from sqlalchemy import create_engine, text

app = Flask(__name__)
plain_url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
engines = []


@app.get("/connector")
def connector():
    if not engines:
        engines.append(create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(plain_url)))
    with engines[0].connect() as connection:
        return str(connection.execute(text("select 1")).scalar())
'''


@pytest.fixture
def reports_stack():
    document = flaskr_document(agent=True)
    document["metadata"]["name"] = "reports"
    document["spec"]["wsgi"] = "reports:app"
    document["spec"]["web"]["gunicorn"]["workers"] = 1
    del document["spec"]["migrations"]
    with scratch_stack("flaskapp-reports-", document=document, app_files={"reports.py": APP},
                       url_scheme="postgresql+psycopg", with_celery=False) as stack:
        yield stack


def start_prometheus(stack: Stack) -> str:
    """A real Prometheus scraping the web pod's statsd exporter every second; its URL."""
    port, = free_ports(1)
    exporter = stack.metrics_url("statsd-exporter", "web").removeprefix("http://").removesuffix("/metrics")
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [{
        "job_name": "podMonitor/workload/reports/0", "static_configs": [{
            "targets": [exporter], "labels": {"namespace": "workload", "flaskapp": "reports", "tier": "web",
                                              "endpoint": "statsd-metrics"}}]}]}
    (stack.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = build_monitoring_tools()["prometheus"]
    proc = stack._spawn("prometheus", [str(prometheus), f"--config.file={stack.workdir / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={stack.workdir / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{port}"])
    wait_port(port, proc, log=stack.log("prometheus"))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/-/ready", timeout=5).ok, 60, what="Prometheus ready")
    return url


def scraped(url: str) -> bool:
    answer = requests.get(f"{url}/api/v1/query", params={"query": 'up{flaskapp="reports"} == 1'}, timeout=5).json()
    return bool(answer["data"]["result"])


def test_an_engine_outside_the_plan_reaches_the_budget_condition_through_prometheus(reports_stack):
    stack = reports_stack
    url = start_prometheus(stack)
    wait_until(lambda: scraped(url), 60, what="Prometheus scraping the web pod's statsd exporter")
    notified: list[tuple[str, str]] = []
    poller = AgentReportPoller(url, 60, lambda kind, ns, name: notified.append((ns, name)),
                               every_app=lambda: [("workload", "reports")])

    def condition():
        poller.poll_once()
        return budget_guaranteed("reports", agent=True, monitoring=True, podmonitor=True,
                                 report=poller.get("workload", "reports"))

    # Scraped, and no engine reported yet: guaranteed.
    assert condition()[:2] == (True, "EveryEngineBounded") and poller.get("workload", "reports").scraped
    assert notified == [("workload", "reports")]  # Prometheus answered for the first time

    assert requests.get(f"{stack.gunicorn_url}/connector", timeout=30).text == "1"
    assert "engine postgresql+psycopg (no host in its URL) is NOT bounded" in stack.log("gunicorn").read_text()
    status, reason, message = wait_until(lambda: (got := condition())[0] is False and got, 60,
                                         what="the report in Prometheus")
    assert reason == "EnginesOutsideThePlan" and "web: creator (1 pod)" in message, message
    assert poller.get("workload", "reports").engines == (UnboundedEngines("web", "creator", 1),)
    assert notified[-1] == ("workload", "reports")

    # Prometheus gone: unknown, naming why; never the last answer passed off as current.
    stack.stop_process("prometheus")
    status, reason, message = condition()
    assert (status, reason) == (None, "PrometheusUnreachable") and url in message
