"""kopf wiring only: every trigger asks the Reconciler for a pass over one FlaskApp.

Triggers: the FlaskApp's create/update/resume; any change to a child (Deployments becoming ready,
someone deleting or editing a child); and a periodic resync. No timers or daemons per object, hence no
finalizers (kopf-in-production #4); children are deleted by the garbage collector via ownerReferences.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from . import api
from .kube import CHILD_KINDS
from .naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from .reconciler import Reconciler

RESYNC_SECONDS = float(os.environ.get("FLASKAPP_RESYNC_SECONDS", "60"))
reconciler = Reconciler()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own prefixes, so no other kopf operator fights over annotations (kopf-in-production #5).
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration")
    # Watches that stall silently are restarted (kopf-in-production #1, nolar/kopf#585).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Only problems become Events automatically; our own Events say what was done.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = reconciler.workers
    reconciler.start(asyncio.get_running_loop(), RESYNC_SECONDS)


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    await reconciler.stop()


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
async def flaskapp_changed(namespace: str, name: str, **_: Any) -> None:
    await reconciler.reconcile_now(namespace, name)


def _child_changed(kind: str):
    async def handler(event: dict, namespace: str, labels: dict, **_: Any) -> None:
        app = labels.get(INSTANCE_LABEL)
        if app and event.get("type") is not None:  # None: the initial listing, covered by resume
            reconciler.request(namespace, app)

    handler.__name__ = f"child_{kind.lower()}_changed"
    return handler


# Pods are watched only to notice failures (image pulls, crash loops, OOM kills) as they happen.
kopf.on.event(group="", version="v1", plural="pods",
              labels={MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: kopf.PRESENT})(_child_changed("Pod"))

# Secrets are not watched: watching every Secret of the cluster is a poor trade for faster drift repair;
# the periodic resync restores a deleted or edited Redis Secret.
for _api_version, _kind, _plural in CHILD_KINDS:
    if _kind == "Secret":
        continue
    _group, _, _version = _api_version.rpartition("/")
    kopf.on.event(group=_group, version=_version, plural=_plural,
                  labels={MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: kopf.PRESENT})(_child_changed(_kind))
