"""kopf wiring only: every trigger asks the Scheduler for a pass over one FlaskApp.

Triggers: a FlaskApp seen at start or whose spec changed (its generation is ahead of status.observedGeneration);
any change to a child (Deployments becoming ready, someone deleting or editing a child: watches.py); and the
scheduler's periodic resync. The same watches keep the WatchCache that passes read instead of the API server.

Only a watch-event handler and an index: kopf itself never writes to the cluster (no progress or diff-base
annotations, no finalizers: kopf-in-production #4, #5, #7), so every write comes from the scheduler's fenced
client, which leader election can stop at once. Children are deleted by the garbage collector.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from . import api
from .cache import WatchCache
from .scheduler import Scheduler
from .settings import Settings
from .watches import ChildWatches


def register(registry: kopf.OperatorRegistry, settings: Settings, cache: WatchCache, scheduler: Scheduler,
             child_watches: ChildWatches) -> None:
    """Register the operator's kopf handlers, bound to the objects the composition root (main.py) built."""
    flaskapp_selector, resync_seconds = settings.selector, settings.resync_seconds  # (kopf's own is `settings`)
    flaskapps_listed = asyncio.Event()
    background: set[asyncio.Task] = set()  # referenced: the event loop keeps only weak references to tasks

    # An explicit registry has no default login (kopf's global one has): the kubernetes client's config, in-cluster
    # or the kube context, as the operator's own client uses.
    kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure_kopf(settings, flaskapp_selector)
        scheduler.start(asyncio.get_running_loop(), resync_seconds)
        child_watches.start()
        background.add(asyncio.get_running_loop().create_task(fill_cache()))

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        child_watches.stop()
        await scheduler.stop()

    @kopf.index(api.GROUP, api.VERSION, api.PLURAL, registry=registry)
    async def cache_flaskapp(body: kopf.Body, **_: Any) -> None:
        cache.watched_flaskapp(dict(body))

    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=registry)
    async def flaskapp_event(event: dict, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        flaskapps_listed.set()  # kopf runs event handlers only once the index holds its first listing
        if event.get("type") == "DELETED":
            cache.flaskapp_gone(namespace, name)
        elif event.get("type") is None or spec_changed(body):  # None: the first listing (the operator starts)
            scheduler.request(namespace, name, delay=0, trigger="FlaskApp")

    async def fill_cache() -> None:
        await asyncio.get_running_loop().run_in_executor(None, child_watches.wait_listed)
        await flaskapps_listed.wait()
        scheduler.cache_ready.set()


def _configure_kopf(settings: kopf.OperatorSettings, flaskapp_selector: str) -> None:
    # Watches that stall silently are restarted (kopf-in-production #1, nolar/kopf#585).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    if flaskapp_selector:
        settings.watching.label_selectors[(api.GROUP, api.PLURAL)] = flaskapp_selector
    # No create/update handlers read kopf's diff base: building it (a deep copy of every watched body per
    # event) was a fifth of the operator's CPU while 300 FlaskApps came up (py-spy, children watched by kopf).
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only problems become Events automatically; our own Events say what was done.
    settings.posting.level = logging.WARNING


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for change handlers, of which there are none: nothing stored, nothing built."""

    def build(self, *, body: kopf.Body, extra_fields=None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def spec_changed(body: kopf.Body) -> bool:
    """A spec not reconciled yet: our own status writes (observedGeneration = generation) trigger nothing."""
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed != body["metadata"].get("generation")
