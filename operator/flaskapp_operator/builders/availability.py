"""HorizontalPodAutoscalers where asked, and PodDisruptionBudgets for the replicated tiers."""

from __future__ import annotations

from typing import Optional

from ..api import Autoscaling
from ..naming import selector_labels
from .common import metadata
from .context import Context


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


def pdb(ctx: Context, component: str) -> dict:
    # One pod at a time during node drains; the rolling update itself never goes below the count.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(ctx, ctx.child(component), component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ctx.name, component)}}}


def availability_objects(ctx: Context) -> list[dict]:
    spec = ctx.spec
    out = [*hpa(ctx, "web", spec.web.autoscaling), pdb(ctx, "web"), pdb(ctx, "nginx")]
    for pool in spec.worker_pools:
        out += [*hpa(ctx, f"worker-{pool.name}", pool.autoscaling), pdb(ctx, f"worker-{pool.name}")]
    return out
