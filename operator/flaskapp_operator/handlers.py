"""kopf wiring only: every trigger asks the Reconciler for a pass over one FlaskApp.

Triggers: a FlaskApp seen at start or whose spec changed (its generation is ahead of status.observedGeneration);
any change to a child (Deployments becoming ready, someone deleting or editing a child: watches.py); and a
periodic resync. The same watches keep the WatchCache that passes read instead of the API server.

Only a watch-event handler and an index: kopf itself never writes to the cluster (no progress or diff-base
annotations, no finalizers: kopf-in-production #4, #5, #7), so every write comes from the Reconciler's fenced
client, which leader election can stop at once. Children are deleted by the garbage collector.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Optional

import kopf

from . import api
from .cache import WatchCache
from .kube import CHILD_KINDS, GATEWAY_KINDS, KEDA_KINDS, MONITORING_KINDS
from .naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from .reconciler import DEBOUNCE_SECONDS, Reconciler, load_kube_config
from .watches import ChildWatches

RESYNC_SECONDS = float(os.environ.get("FLASKAPP_RESYNC_SECONDS", "60"))
# Sharding: only FlaskApps matching this label selector (the chart's watchLabelSelector); empty: all.
FLASKAPP_SELECTOR = os.environ.get("FLASKAPP_SELECTOR", "")
cache = WatchCache()
reconciler = Reconciler(cache=cache)
flaskapps_listed = asyncio.Event()
background: set[asyncio.Task] = set()  # referenced: the event loop keeps only weak references to tasks


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Watches that stall silently are restarted (kopf-in-production #1, nolar/kopf#585).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    if FLASKAPP_SELECTOR:
        settings.watching.label_selectors[(api.GROUP, api.PLURAL)] = FLASKAPP_SELECTOR
    # No create/update handlers read kopf's diff base: building it (a deep copy of every watched body per
    # event) was a fifth of the operator's CPU while 300 FlaskApps came up (py-spy, children watched by kopf).
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only problems become Events automatically; our own Events say what was done.
    settings.posting.level = logging.WARNING
    global child_watches
    child_watches = ChildWatches(load_kube_config(reconciler.identity, pool_size=len(WATCHED_KINDS) * max(
        1, len(reconciler.namespaces)) + 4), cache, WATCHED_KINDS, reconciler.namespaces, CHILD_SELECTOR,
        notify_from_watch)
    reconciler.start(asyncio.get_running_loop(), RESYNC_SECONDS)
    child_watches.start()
    background.add(asyncio.get_running_loop().create_task(_fill_cache(flaskapps_listed)))


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
    if child_watches is not None:
        child_watches.stop()
    await reconciler.stop()


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def cache_flaskapp(body: kopf.Body, **_: Any) -> None:
    cache.watched_flaskapp(dict(body))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def flaskapp_event(event: dict, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    flaskapps_listed.set()  # kopf runs event handlers only once the index holds its first listing
    if event.get("type") == "DELETED":
        cache.flaskapp_gone(namespace, name)
    elif event.get("type") is None or spec_changed(body):  # None: the first listing (the operator starts)
        reconciler.request(namespace, name, delay=0, trigger="FlaskApp")


def spec_changed(body: kopf.Body) -> bool:
    """A spec not reconciled yet: our own status writes (observedGeneration = generation) trigger nothing."""
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed != body["metadata"].get("generation")


def notify_from_watch(kind: str, namespace: str, app: str) -> None:
    """A child or pod of FlaskApp namespace/app changed (called from a watch thread): a pass soon."""
    loop = reconciler.loop
    if loop is not None:
        loop.call_soon_threadsafe(reconciler.request, namespace, app, DEBOUNCE_SECONDS, kind)


async def _fill_cache(flaskapps_listed: asyncio.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, child_watches.wait_listed)
    await flaskapps_listed.wait()
    reconciler.cache_ready.set()


# Children and pods are watched apart from kopf (watches.py), only our objects: the managed-by label, filtered
# by the API server (Secrets included: only the operator's own Secrets match). Optional kinds (monitoring,
# KEDA) are listed again while their CRDs are not served. Pods are watched to notice failures (image pulls,
# crash loops, OOM kills) as they happen.
WATCHED_KINDS = CHILD_KINDS + MONITORING_KINDS + KEDA_KINDS + GATEWAY_KINDS + (("v1", "Pod", "pods"),)
CHILD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}"
child_watches: Optional[ChildWatches] = None
