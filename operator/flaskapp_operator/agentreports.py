"""What the in-process agent (flaskapp_agent) reports from the app's own processes, and what status makes of it
(pure: prometheus.py asks, this module reads the answer).

The agent has no credentials and no channel to the API server: an engine it cannot hold to the connection plan
(a `creator=` or prebuilt `pool=`, several async engines, a nested connection over the limit) is logged and
counted in `flaskapp_agent_unbounded_engines_total`, which the web and worker pods' statsd exporter serves and
the app's PodMonitor has Prometheus scrape, labelled with `namespace`, `flaskapp` and `tier`. The operator asks
Prometheus for those series, the way Flagger and Argo Rollouts read a canary's metrics, and reports them in the
FlaskApp's BudgetGuaranteed condition (budget_guaranteed below). Prometheus's HTTP API:
https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

METRIC = "flaskapp_agent_unbounded_engines_total"
# Series of pods that are gone fall out of an instant query after Prometheus's staleness period (5 minutes): a
# rollout that fixed the engine clears the report. One series per pod and reason: `count` is the pods.
QUERY = f"count by (namespace, flaskapp, tier, reason) ({METRIC} > 0)"
# No series is no evidence unless Prometheus scrapes the app: its web pods' statsd exporter must be up (the
# labels are the PodMonitor's: `endpoint` is the port's name).
SCRAPED_QUERY = 'count by (namespace, flaskapp) (up{flaskapp!="", tier="web", endpoint="statsd-metrics"} == 1)'

AppKey = tuple[str, str]  # (namespace, FlaskApp name)


@dataclass(frozen=True)
class UnboundedEngines:
    """Pods of one tier whose processes reported engines outside the plan, for one reason."""
    tier: str
    reason: str
    pods: int


@dataclass(frozen=True)
class AgentReport:
    """What the operator knows of one app's engines: `error` when Prometheus could not be asked."""
    engines: tuple[UnboundedEngines, ...] = ()
    error: Optional[str] = None
    source: str = ""  # the Prometheus URL asked
    scraped: bool = False  # Prometheus scrapes the app's web pods (SCRAPED_QUERY): no series means none reported


def _samples(payload: dict) -> list[tuple[AppKey, dict, float]]:
    """(app, labels, value) of each sample of an instant vector (Prometheus's JSON); samples without the
    PodMonitor's app labels are not attributable to an app and left out."""
    if payload.get("status") != "success":
        raise ValueError(f"Prometheus answered {payload.get('status')!r}: {payload.get('error', '')}")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"expected a vector, Prometheus answered a {data.get('resultType')!r}")
    return [((labels["namespace"], labels["flaskapp"]), labels, float(sample["value"][1]))
            for sample in data.get("result") or []
            if (labels := sample.get("metric") or {}).get("namespace") and labels.get("flaskapp")]


def parse(payload: dict) -> dict[AppKey, tuple[UnboundedEngines, ...]]:
    """The answer of QUERY by app, sorted for stable status messages."""
    found: dict[AppKey, list[UnboundedEngines]] = {}
    for app, labels, value in _samples(payload):
        found.setdefault(app, []).append(UnboundedEngines(labels.get("tier", "?"), labels.get("reason", "?"),
                                                          int(value)))
    return {key: tuple(sorted(engines, key=lambda e: (e.tier, e.reason))) for key, engines in found.items()}


def parse_scraped(payload: dict) -> frozenset[AppKey]:
    """The apps of SCRAPED_QUERY's answer."""
    return frozenset(app for app, _, value in _samples(payload) if value > 0)


BUDGET_GUARANTEED = "BudgetGuaranteed"


def budget_guaranteed(app: str, *, agent: bool, monitoring: bool, podmonitor: bool,
                      report: Optional[AgentReport]) -> tuple[Optional[bool], str, str]:
    """The BudgetGuaranteed condition (status, reason, message) of an app with a connection budget: whether every
    process keeps to the plan as far as the agent knows. None: Unknown, with what it would take to know."""
    logs = f"kubectl logs -l app.kubernetes.io/instance={app} --all-containers | grep flaskapp-agent"
    if not agent:
        return (None, "AgentDisabled", "spec.agent.enabled is false: the plan reaches the app only through "
                "SQLALCHEMY_ENGINE_OPTIONS, which its own code must pass to create_engine")
    if not monitoring:
        return (None, "MonitoringDisabled", "the agent's reports reach the operator through Prometheus, and "
                f"spec.monitoring is off: engines it could not bound are in the logs ({logs})")
    if report is None:
        return (None, "NoPrometheus", "the operator reads the agent's reports from Prometheus: run it with "
                f"--prometheus-url (chart: prometheus.url); meanwhile the FlaskAppConnectionBudgetNotGuaranteed "
                f"alert fires on them, and {logs}")
    if report.error:
        return (None, "PrometheusUnreachable", f"cannot read the agent's reports from {report.source}: "
                f"{report.error}")
    if report.engines:
        found = "; ".join(f"{e.tier}: {e.reason} ({e.pods} pod{'s' if e.pods != 1 else ''})"
                          for e in report.engines)
        return (False, "EnginesOutsideThePlan", f"processes opened database connections the agent cannot hold to "
                f"the plan, so the budget above may be exceeded: {found}. {logs} names each engine")
    if not report.scraped:
        how = ("its PodMonitor needs the Prometheus Operator's CRDs, which this cluster does not serve, or another "
               "scrape job with the same labels" if not podmonitor else
               "is its PodMonitor selected by that Prometheus, and are the metrics ports open to it "
               "(spec.monitoring.scrapeFrom)?")
        return (None, "NotScraped", f"{report.source} scrapes no web pod of the app (up{{endpoint=\"statsd-metrics\"}}), "
                f"so no report is no evidence: {how}; meanwhile: {logs}")
    return (True, "EveryEngineBounded", "every web pod is scraped and no process of the app reported an engine "
            f"outside the plan (read from {report.source})")
