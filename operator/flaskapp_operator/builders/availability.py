"""HorizontalPodAutoscalers where asked, and PodDisruptionBudgets for the replicated tiers."""

from __future__ import annotations

from typing import Optional

from ..api import Autoscaling, WorkerPool
from ..naming import selector_labels
from .common import metadata
from .context import REDIS_SECRET_SUFFIX, Context


def hpa(ctx: Context, component: str, autoscaling: Optional[Autoscaling]) -> list[dict]:
    if autoscaling is None:
        return []
    name = ctx.child(component)
    return [{
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(ctx, name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            # The spec's maximum, or lower when the connection budget caps it (database.budgetPolicy).
            "minReplicas": autoscaling.min_replicas, "maxReplicas": ctx.tuning.max_replicas(component),
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization}}}],
        },
    }]


KEDA_API = "keda.sh/v1alpha1"
KEDA_AUTH_SUFFIX = "keda-broker"
DEFAULT_QUEUE = "celery"  # Celery's default queue, a Redis list of that name on the broker


def queue_scaled(pool: WorkerPool) -> bool:
    return pool.autoscaling is not None and pool.autoscaling.queue_length is not None


def scaled_object(ctx: Context, pool: WorkerPool) -> dict:
    """KEDA scales the pool on the length of its queues' Redis lists (keda.sh/docs/latest/scalers/redis-lists/):
    from minReplicas (0 allowed: KEDA wakes it on the first message) to the budget's maximum."""
    component = f"worker-{pool.name}"
    a = pool.autoscaling
    triggers = [{"type": "redis", "name": f"queue-{i}",
                 "metadata": {"address": ctx.addresses.redis_broker, "listName": queue,
                              "listLength": str(a.queue_length), "activationListLength": "0", "databaseIndex": "0"},
                 "authenticationRef": {"name": ctx.child(KEDA_AUTH_SUFFIX)}}
                for i, queue in enumerate(pool.queues or [DEFAULT_QUEUE])]
    return {"apiVersion": KEDA_API, "kind": "ScaledObject",
            "metadata": metadata(ctx, ctx.child(component), component),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ctx.child(component)},
                     "minReplicaCount": a.min_replicas,
                     # The spec's maximum, or lower when the connection budget caps it (database.budgetPolicy).
                     "maxReplicaCount": ctx.tuning.max_replicas(component),
                     "pollingInterval": a.polling_seconds, "cooldownPeriod": a.cooldown_seconds,
                     "triggers": triggers}}


def broker_trigger_authentication(ctx: Context) -> dict:
    """The broker's password for KEDA, from the managed Redis Secret (never copied into the ScaledObject)."""
    return {"apiVersion": KEDA_API, "kind": "TriggerAuthentication",
            "metadata": metadata(ctx, ctx.child(KEDA_AUTH_SUFFIX), "redis-broker"),
            "spec": {"secretTargetRef": [{"parameter": "password", "name": ctx.child(REDIS_SECRET_SUFFIX),
                                          "key": "password"}]}}


def pdb(ctx: Context, component: str) -> dict:
    # One pod at a time during node drains; the rolling update itself never goes below the count.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(ctx, ctx.child(component), component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ctx.name, component)}}}


def availability_objects(ctx: Context) -> list[dict]:
    spec = ctx.spec
    out = [*hpa(ctx, "web", spec.web.autoscaling), pdb(ctx, "web"), pdb(ctx, "nginx")]
    for pool in spec.worker_pools:
        if queue_scaled(pool):
            # Only where KEDA is served: elsewhere the operator reports Degraded (reconcile.py), never a CPU fallback.
            out += [scaled_object(ctx, pool)] if ctx.keda_api else []
        else:
            out += hpa(ctx, f"worker-{pool.name}", pool.autoscaling)
        out.append(pdb(ctx, f"worker-{pool.name}"))
    if ctx.keda_api and any(queue_scaled(p) for p in spec.worker_pools):
        out.append(broker_trigger_authentication(ctx))
    return out
