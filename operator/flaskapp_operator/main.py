"""The composition root of `flaskapp-operator run` (what kubebuilder's cmd/main.go is to a Go operator): every
object of a running operator is built here, from one Settings, and nowhere else.

    Settings ──> WatchCache <── ChildWatches (threads: children and pods of our FlaskApps)
                     ^     \\
        kopf (FlaskApps) ──> Scheduler ──> reconcile() passes ──> Cluster (server-side apply, status, Events)
                                  ^      ^
    LeaderElection (optional: only the   AgentReportPoller (optional: the in-process agent's reports, read
    Lease holder writes)                 from Prometheus into the BudgetGuaranteed condition)

kopf watches only FlaskApps (handlers.py); children are watched apart (watches.py) because kopf keeps a full
copy of every watched object and its diff base, which does not scale to the tens of children of each app.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Optional

import kopf
from kubernetes import client

from .apiclient import api_client
from .cache import WatchCache
from .crdwait import discovery, wait_until_served
from .handlers import register
from .kinds import WATCHED_KINDS
from .kube import Cluster
from .leader import LeaderElection
from .memory import limit_arenas
from .prometheus import AgentReportPoller
from .metrics import APP_STATES, serve
from .naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from .scheduler import Scheduler
from .settings import Settings
from .watches import ChildWatches

# Children and pods are watched only where they are ours: the managed-by label, filtered by the API server
# (Secrets included: only the operator's own Secrets match).
CHILD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}"


def run_operator(settings: Settings) -> int:
    limit_arenas()  # before any thread allocates
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per child event

    cache = WatchCache()
    election = None
    if settings.lease is not None:
        election = LeaderElection(client.CoordinationV1Api(api_client(settings.identity)), settings.lease.namespace,
                                  settings.lease.name, settings.identity)

    reports: Optional[AgentReportPoller] = None  # set below, once notify exists

    def connect(write_guard) -> Cluster:
        return Cluster(api_client(settings.identity, write_guard=write_guard), cache,
                       discovery_ttl_seconds=settings.discovery_ttl_seconds,
                       agent_reports=reports.get if reports is not None else None)

    scheduler = Scheduler(cache, connect, workers=settings.workers, debounce_seconds=settings.debounce_seconds,
                          max_rolling_upgrades=settings.max_rolling_upgrades, election=election)

    def notify(kind: str, namespace: str, app: str) -> None:
        """A child or pod of FlaskApp namespace/app changed (called from a watch thread): a pass soon."""
        if scheduler.loop is not None:
            scheduler.loop.call_soon_threadsafe(scheduler.request, namespace, app, None, kind)

    if settings.prometheus_url:
        reports = AgentReportPoller(settings.prometheus_url, settings.prometheus_seconds, notify,
                                    every_app=cache.flaskapp_keys)
        reports.start()
    watch_connections = len(WATCHED_KINDS) * max(1, len(settings.namespaces)) + 4
    child_watches = ChildWatches(api_client(settings.identity, pool_size=watch_connections), cache, WATCHED_KINDS,
                                 settings.namespaces, CHILD_SELECTOR, notify,
                                 absent_retry_seconds=settings.discovery_ttl_seconds)
    registry = kopf.OperatorRegistry()
    register(registry, settings, cache, scheduler, child_watches)

    crd_served = threading.Event()
    APP_STATES.pending = lambda: scheduler.pending
    APP_STATES.leading = lambda: scheduler.started and (election is None or election.leading())
    APP_STATES.cache_sizes = cache.sizes
    APP_STATES.upgrades = scheduler.pacer.counts if scheduler.pacer is not None else dict
    if settings.metrics_address:
        # A standby is ready too: it watches and keeps its cache warm, and a rolling update must go on.
        serve(settings.metrics_address,
              ready=lambda: crd_served.is_set() and (scheduler.started or election is not None))
    # Not ready, and kopf not started, until the API server serves the FlaskApp resource (crdwait.py).
    wait_until_served(discovery(api_client(settings.identity)))
    crd_served.set()
    try:
        asyncio.run(kopf.operator(
            registry=registry, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
            standalone=True,  # no kopf peering: leader election decides which replica writes
            liveness_endpoint=settings.liveness, identity=settings.identity,
        ))
    finally:
        if election is not None:
            election.release()  # SIGTERM (a rolling update): the standby takes over at its next try
    return 0
