"""The operator's own metrics (Prometheus client library) and its /metrics and /readyz endpoint.

Names follow Prometheus' naming guide: `flaskapp_operator_*` for the operator's work, and
`flaskapp_connection_budget_*` per FlaskApp (labels `flaskapp_namespace` and `flaskapp`: a scrape's own
`namespace` label is the operator's), which the per-app PrometheusRule alerts on.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter("flaskapp_operator_reconcile_total", "Reconcile passes, by outcome.", ["outcome"])
RECONCILE_SECONDS = Histogram("flaskapp_operator_reconcile_duration_seconds", "Duration of reconcile passes.",
                              ["outcome"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
FAILURES = Counter("flaskapp_operator_reconcile_failures_total",
                   "Failed reconcile passes (retried), by reason: the HTTP status or the error class.", ["reason"])
APPLIED = Counter("flaskapp_operator_objects_applied_total", "Children created or changed by server-side apply.",
                  ["kind"])
PRUNED = Counter("flaskapp_operator_objects_pruned_total", "Children deleted because no longer rendered.", ["kind"])
TRIGGERS = Counter("flaskapp_operator_triggers_total",
                   "Requests for a reconcile pass, by what asked: a child kind's watch event, FlaskApp, resync, "
                   "upgrade-slot, leadership or retry (requests for an app already waiting share its pass).",
                   ["trigger"])
API_REQUESTS = Counter("flaskapp_operator_api_requests_total",
                       "Kubernetes API requests of reconcile passes (kopf's own watches excluded), by verb and "
                       "HTTP status.", ["verb", "code"])


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"http_{exc.status}"
    return type(exc).__name__


class AppStates(Collector):
    """FlaskApps by Ready condition and reason, and each one's connection budget, as last reconciled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._apps: dict[tuple[str, str], tuple[str, str, Optional[int], Optional[int]]] = {}
        self.pending: Callable[[], int] = lambda: 0
        self.leading: Callable[[], bool] = lambda: True
        self.cache_sizes: Callable[[], dict[str, int]] = lambda: {}
        self.upgrades: Callable[[], dict[str, int]] = lambda: {}

    def record(self, namespace: str, name: str, status: Optional[dict]) -> None:
        with self._lock:
            if status is None:  # gone
                self._apps.pop((namespace, name), None)
                return
            ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
            budget = (status.get("tuning") or {}).get("budget") or {}
            self._apps[(namespace, name)] = (ready.get("status", "Unknown"), ready.get("reason", ""),
                                             budget.get("peakConnections"), budget.get("available"))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            apps = dict(self._apps)
        by_condition = GaugeMetricFamily("flaskapp_operator_flaskapps", "FlaskApps by Ready status and reason.",
                                         labels=["ready", "reason"])
        counts: dict[tuple[str, str], int] = {}
        for ready, reason, _, _ in apps.values():
            counts[(ready, reason)] = counts.get((ready, reason), 0) + 1
        for (ready, reason), count in sorted(counts.items()):
            by_condition.add_metric([ready, reason], count)
        yield by_condition
        peak = GaugeMetricFamily("flaskapp_connection_budget_peak_connections",
                                 "Database connections every tier together may open in the worst case (autoscalers "
                                 "at their maxima, rolling-update surge included).", labels=["flaskapp_namespace", "flaskapp"])
        available = GaugeMetricFamily("flaskapp_connection_budget_available_connections",
                                      "maxConnections minus reservedConnections.", labels=["flaskapp_namespace", "flaskapp"])
        for (namespace, name), (_, _, used, free) in sorted(apps.items()):
            if used is not None and free is not None:
                peak.add_metric([namespace, name], used)
                available.add_metric([namespace, name], free)
        yield peak
        yield available
        queue = GaugeMetricFamily("flaskapp_operator_pending_reconciles", "FlaskApps waiting for a reconcile pass.")
        queue.add_metric([], self.pending())
        yield queue
        leader = GaugeMetricFamily("flaskapp_operator_leader", "1 on the replica that reconciles (holds the Lease).")
        leader.add_metric([], 1 if self.leading() else 0)
        yield leader
        upgrades = self.upgrades()
        if upgrades:
            paced = GaugeMetricFamily("flaskapp_operator_upgrades",
                                      "FlaskApps rolling a new operator release's templates, queued for a slot, or "
                                      "held (auto-upgrade off).", labels=["state"])
            for state in ("rolling", "queued", "held"):
                paced.add_metric([state], upgrades.get(state, 0))
            yield paced
            done = CounterMetricFamily("flaskapp_operator_upgrades_completed",
                                       "FlaskApps that finished rolling a new operator release's templates.")
            done.add_metric([], upgrades.get("completed", 0))
            yield done
        sizes = self.cache_sizes()
        if sizes:
            objects = GaugeMetricFamily("flaskapp_operator_cache_objects",
                                        "FlaskApps, children and pods held in the watch cache.")
            objects.add_metric([], sizes["objects"])
            yield objects
            held = GaugeMetricFamily("flaskapp_operator_cache_bytes", "Compressed bytes held in the watch cache.")
            held.add_metric([], sizes["bytes"])
            yield held


APP_STATES = AppStates()
REGISTRY.register(APP_STATES)


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class CountingApiClient(client.ApiClient):
    """The official client, counting each request by verb and answer; writes pass only while write_guard
    allows (leader election: a replica that may have lost the Lease sends none)."""

    def __init__(self, *args, write_guard: Optional[Callable[[], bool]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_guard = write_guard

    def request(self, method, url, *args, **kwargs):  # noqa: ANN001 - the client's own signature
        if self.write_guard is not None and method.upper() in WRITE_METHODS and not self.write_guard():
            API_REQUESTS.labels(method.lower(), "fenced").inc()
            raise ApiException(status=503, reason="not the leader: writes are fenced")
        try:
            response = super().request(method, url, *args, **kwargs)
        except ApiException as exc:
            API_REQUESTS.labels(method.lower(), str(exc.status)).inc()
            raise
        except Exception:
            API_REQUESTS.labels(method.lower(), "error").inc()
            raise
        API_REQUESTS.labels(method.lower(), str(getattr(response, "status", ""))).inc()
        return response


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - scrapes every few seconds are not news
        pass


def serve(address: str, ready: Callable[[], bool]) -> WSGIServer:
    """/metrics for Prometheus and /readyz for the kubelet (ready once the operator watches and reconciles),
    in a daemon thread."""
    metrics_app = make_wsgi_app()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/readyz":
            ok = ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"starting\n"]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    host, port = address.rsplit(":", 1)
    server = make_server(host, int(port), app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
