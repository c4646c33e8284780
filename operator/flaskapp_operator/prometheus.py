"""The operator's Prometheus client: two instant queries per interval for every app at once — the agent's reports
(agentreports.QUERY) and which apps are scraped at all (SCRAPED_QUERY) — in a thread of its own like the child
watches; a pass only reads what the last answers said.
Prometheus's HTTP API: https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
import urllib.request
from typing import Callable, Iterable, Optional

from .agentreports import QUERY, SCRAPED_QUERY, AgentReport, AppKey, UnboundedEngines, parse, parse_scraped

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
Notify = Callable[[str, str, str], None]  # (kind, namespace, FlaskApp name), as the child watches call it


def instant_query(url: str, query: str, timeout: float = TIMEOUT_SECONDS) -> dict:
    """GET /api/v1/query; the decoded JSON."""
    address = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(address, timeout=timeout) as answer:  # noqa: S310 (the operator's own setting)
        return json.load(answer)


class AgentReportPoller:
    """The last answer of Prometheus about every app, refreshed every `interval` seconds in a daemon thread.
    Apps whose report changed are handed to `notify` (a pass updates their status); when Prometheus becomes
    reachable or unreachable, every app of `every_app()` is."""

    def __init__(self, url: str, interval: float, notify: Notify, every_app: Callable[[], Iterable[AppKey]],
                 fetch: Callable[[str, str], dict] = instant_query):
        self.url, self.interval, self.notify, self.every_app, self.fetch = url, interval, notify, every_app, fetch
        self._lock = threading.Lock()
        self._engines: dict[AppKey, tuple[UnboundedEngines, ...]] = {}
        self._scraped: frozenset[AppKey] = frozenset()
        self._error: Optional[str] = "not asked yet"
        self._stop = threading.Event()

    def get(self, namespace: str, name: str) -> AgentReport:
        with self._lock:
            return AgentReport(self._engines.get((namespace, name), ()), self._error, self.url,
                               (namespace, name) in self._scraped)

    def poll_once(self) -> None:
        try:
            engines = parse(self.fetch(self.url, QUERY))
            scraped, error = parse_scraped(self.fetch(self.url, SCRAPED_QUERY)), None
        except Exception as exc:  # unreachable, refused, not Prometheus: every app's report becomes unknown
            engines, scraped, error = {}, frozenset(), f"{type(exc).__name__}: {exc}"
        with self._lock:
            before, was_scraped, had_error = self._engines, self._scraped, self._error
            self._engines, self._scraped, self._error = engines, scraped, error
        if error and error != had_error:
            log.warning("cannot read the agent's reports from Prometheus at %s: %s", self.url, error)
        if (error is None) != (had_error is None):  # known <-> unknown: every app's condition changes
            changed: Iterable[AppKey] = self.every_app()
        else:
            changed = sorted({k for k in before.keys() | engines.keys() if before.get(k) != engines.get(k)}
                             | (was_scraped ^ scraped))
        for namespace, name in changed:
            self.notify("AgentReport", namespace, name)

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="agent-reports", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
