"""kopf wiring only: every trigger asks the Reconciler for a pass over one FlaskApp.

Triggers: a FlaskApp seen at start or whose spec changed (its generation is ahead of status.observedGeneration);
any change to a child (Deployments becoming ready, someone deleting or editing a child); and a periodic resync.
The same watches keep the WatchCache that passes read instead of the API server.

Only watch-event handlers and indexes: kopf itself never writes to the cluster (no progress or diff-base
annotations, no finalizers: kopf-in-production #4, #5, #7), so every write comes from the Reconciler's fenced
client, which leader election can stop at once. Children are deleted by the garbage collector.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from . import api
from .cache import WatchCache
from .kube import CHILD_KINDS, KEDA_KINDS, MONITORING_KINDS
from .naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from .reconciler import Reconciler

RESYNC_SECONDS = float(os.environ.get("FLASKAPP_RESYNC_SECONDS", "60"))
# Sharding: only FlaskApps matching this label selector (the chart's watchLabelSelector); empty: all.
FLASKAPP_SELECTOR = os.environ.get("FLASKAPP_SELECTOR", "")
cache = WatchCache()
reconciler = Reconciler(cache=cache)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Watches that stall silently are restarted (kopf-in-production #1, nolar/kopf#585).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Children and pods are watched only where they carry our labels, filtered by the API server (not by kopf
    # after receiving every Secret and Pod of the cluster).
    settings.watching.label_selectors[lambda resource: (resource.group, resource.plural) in CHILD_RESOURCES] = (
        f"{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}")
    if FLASKAPP_SELECTOR:
        settings.watching.label_selectors[(api.GROUP, api.PLURAL)] = FLASKAPP_SELECTOR
    # No create/update handlers read kopf's diff base: not building it (a deep copy of every watched body per
    # event) was a fifth of the operator's CPU while 300 FlaskApps came up (py-spy).
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only problems become Events automatically; our own Events say what was done.
    settings.posting.level = logging.WARNING
    reconciler.start(asyncio.get_running_loop(), RESYNC_SECONDS)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for change handlers, of which there are none: nothing stored, nothing built."""

    def build(self, *, body: kopf.Body, extra_fields=None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    await reconciler.stop()


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def cache_flaskapp(body: kopf.Body, **_: Any) -> None:
    cache.watched_flaskapp(dict(body))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def flaskapp_event(event: dict, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    reconciler.cache_ready.set()  # kopf runs event handlers only once every index holds its first listing
    if event.get("type") == "DELETED":
        cache.flaskapp_gone(namespace, name)
    elif event.get("type") is None or spec_changed(body):  # None: the first listing (the operator starts)
        reconciler.request(namespace, name, delay=0, trigger="FlaskApp")


def spec_changed(body: kopf.Body) -> bool:
    """A spec not reconciled yet: our own status writes (observedGeneration = generation) trigger nothing."""
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed != body["metadata"].get("generation")


def _cache_child(kind: str):
    """Indexing runs for every object of the first listing before any handler (kopf's pre-indexing), then
    for each watch event: the cache is complete before the first pass."""
    async def index(body: kopf.Body, **_: Any) -> None:
        cache.watched_child(kind, dict(body))

    index.__name__ = f"cache_{kind.lower()}"
    return index


def _child_changed(kind: str):
    async def handler(event: dict, body: kopf.Body, namespace: str, labels: dict, **_: Any) -> None:
        reconciler.cache_ready.set()
        if event.get("type") == "DELETED":
            cache.child_gone(kind, dict(body))
        app = labels.get(INSTANCE_LABEL)
        if app and event.get("type") is not None:  # None: the first listing, covered by the FlaskApp's own
            reconciler.request(namespace, app, trigger=kind)

    handler.__name__ = f"child_{kind.lower()}_changed"
    return handler


# One watch per kind, only our objects (the managed-by label, filtered by the API server; Secrets included:
# only the operator's own Secrets match). Optional kinds (monitoring, KEDA) are watched once their CRDs are
# served: kopf notices CRDs as they come. Pods are watched to notice failures (image pulls, crash loops,
# OOM kills) as they happen.
WATCHED_KINDS = CHILD_KINDS + MONITORING_KINDS + KEDA_KINDS + (("v1", "Pod", "pods"),)
CHILD_RESOURCES = {(api_version.rpartition("/")[0], plural) for api_version, _, plural in WATCHED_KINDS}
for _api_version, _kind, _plural in WATCHED_KINDS:
    _group, _, _version = _api_version.rpartition("/")
    _ours = {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: kopf.PRESENT}
    kopf.index(_group, _version, _plural, labels=_ours)(_cache_child(_kind))
    kopf.on.event(_group, _version, _plural, labels=_ours)(_child_changed(_kind))
