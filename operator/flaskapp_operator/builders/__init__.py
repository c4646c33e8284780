"""One builder per tier; `desired_objects` lists every child of a FlaskApp in a deterministic order."""

from __future__ import annotations

from .agent import agent_configmap
from .app import beat_objects, celery_probe_objects, migration_objects, web_objects, worker_objects
from .availability import availability_objects
from .config import config_checksums, env_configmap
from .context import Addresses, AppRef, Context
from .monitoring import monitor_objects
from .network import ingress_objects, route_objects, service_account
from .nginx import nginx_objects
from .policies import network_policies
from .pooler import pooler_objects
from .redis import redis_objects

__all__ = ["Addresses", "AppRef", "Context", "desired_objects"]


def desired_objects(ctx: Context) -> list[dict]:
    checksums = config_checksums(ctx)  # once per render, one per app tier
    return [
        service_account(ctx),
        env_configmap(ctx),
        *agent_configmap(ctx),
        *redis_objects(ctx),
        *pooler_objects(ctx),
        *migration_objects(ctx),
        *web_objects(ctx, checksums),
        *celery_probe_objects(ctx),
        *worker_objects(ctx, checksums),
        *beat_objects(ctx, checksums),
        *nginx_objects(ctx),
        *availability_objects(ctx),
        *ingress_objects(ctx),
        *route_objects(ctx),
        *monitor_objects(ctx),
        *network_policies(ctx),
    ]
