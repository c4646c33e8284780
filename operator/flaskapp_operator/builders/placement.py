"""A tier's pod as the platform team shapes it: spec.pod's defaults and the tier's own `pod` block merged
into the pod template the builder wrote, and the default spread of replicated tiers.

Maps merge (the tier's key wins), lists add up by name (the tier's entry wins), the rest is replaced. The
operator's own labels, containers, volumes and mounts always win: the API refuses user entries that
would take their names (api.RESERVED_*).
"""

from __future__ import annotations

from typing import Any, Optional

from ..api import PodOverrides
from ..naming import selector_labels
from .context import Context

# The tiers that run the app image: spec.pod's volumes, mounts and extra containers are meant for them.
APP_IMAGE_TIERS = ("web", "beat", "migrations")
JOB_TIER = "migrations"  # the one tier whose pod must run to completion
# Soft spread over nodes and zones (kubernetes.io/docs/concepts/scheduling-eviction/topology-spread-constraints):
# ScheduleAnyway never leaves a pod pending, and a node without the zone label is simply not counted.
# matchLabelKeys keeps a rolling update's new ReplicaSet from counting the old one's pods.
SPREAD_TOPOLOGY_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
# What a sidecar or init container gets unless it says otherwise: PSS "restricted" at container level,
# so the pod stays admissible in a namespace that enforces it.
USER_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                           "runAsNonRoot": True}


def tier_overrides(ctx: Context, tier: str) -> Optional[PodOverrides]:
    spec = ctx.spec
    if tier.startswith("worker-"):
        return next(p.pod for p in spec.worker_pools if f"worker-{p.name}" == tier)
    own = {"web": spec.web.pod, "nginx": spec.nginx.pod, "beat": spec.beat.pod,
           "migrations": spec.migrations.pod if spec.migrations else None,
           "redis-cache": spec.redis.pod, "redis-broker": spec.redis.pod, "memcached": spec.redis.pod}
    return own.get(tier)


def default_spread(ctx: Context, tier: str) -> list[dict]:
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector_labels(ctx.name, tier)},
             "matchLabelKeys": ["pod-template-hash"]} for key in SPREAD_TOPOLOGY_KEYS]


def _by_key(entries: list[dict], key: str) -> list[dict]:
    """Later entries replace earlier ones with the same key, keeping the first one's place."""
    merged: dict[Any, dict] = {}
    for entry in entries:
        merged[entry[key]] = entry
    return list(merged.values())


def _user_container(container: dict) -> dict:
    security = {**USER_CONTAINER_SECURITY, **container.get("securityContext", {})}
    return {**container, "securityContext": security}


def _unique(entries: list[dict]) -> list[dict]:
    out: list[dict] = []
    for entry in entries:
        if entry not in out:
            out.append(entry)
    return out


def shape_pod(ctx: Context, tier: str, template: dict, *, spread: bool) -> dict:
    """`template` ({metadata, spec}) with spec.pod and the tier's block applied. `spread`: the tier may run
    more than one pod, so it gets the default spread unless a topologySpreadConstraints is given."""
    defaults = ctx.spec.pod
    own = tier_overrides(ctx, tier) or PodOverrides()
    meta, pod = template["metadata"], template["spec"]

    meta["labels"] = {**defaults.labels, **own.labels, **meta["labels"]}
    annotations = {**defaults.annotations, **own.annotations, **meta.get("annotations", {})}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))

    node_selector = {**defaults.node_selector, **own.node_selector}
    if node_selector:
        pod["nodeSelector"] = dict(sorted(node_selector.items()))
    tolerations = _unique([*defaults.tolerations, *own.tolerations])
    if tolerations:
        pod["tolerations"] = tolerations
    affinity = own.affinity or defaults.affinity
    if affinity:
        pod["affinity"] = affinity
    constraints = list(own.topology_spread_constraints or defaults.topology_spread_constraints)
    if not constraints and spread:
        constraints = default_spread(ctx, tier)
    if constraints:
        pod["topologySpreadConstraints"] = constraints
    priority = own.priority_class_name or defaults.priority_class_name
    if priority:
        pod["priorityClassName"] = priority
    automount = (own.automount_service_account_token if own.automount_service_account_token is not None
                 else defaults.automount_service_account_token)
    if automount is not None:
        pod["automountServiceAccountToken"] = automount

    inherited = defaults if tier in APP_IMAGE_TIERS or tier.startswith("worker-") else PodOverrides()
    volumes = _by_key([*inherited.volumes, *own.volumes], "name")
    if volumes:
        pod["volumes"] = [*pod.get("volumes", []), *volumes]
    mounts = _by_key([*inherited.volume_mounts, *own.volume_mounts], "mountPath")
    if mounts:
        main = pod["containers"][0]
        main["volumeMounts"] = [*main.get("volumeMounts", []), *mounts]
    init = _by_key([*inherited.init_containers, *own.init_containers], "name")
    if init:
        pod["initContainers"] = [*pod.get("initContainers", []), *map(_user_container, init)]
    sidecars = _by_key([*inherited.sidecars, *own.sidecars], "name")
    if sidecars and tier == JOB_TIER:
        # A Job completes when all its containers have exited: an ordinary sidecar (a proxy, a log shipper) never
        # does. As native sidecars (init containers restarted Always, Kubernetes >= 1.29) they start before the
        # migration, serve it, and are stopped by the kubelet when it ends (kubernetes.io/docs/concepts/workloads/
        # pods/sidecar-containers/).
        native = [{**_user_container(c), "restartPolicy": "Always"} for c in sidecars]
        pod["initContainers"] = [*pod.get("initContainers", []), *native]
    elif sidecars:
        pod["containers"] = [*pod["containers"], *map(_user_container, sidecars)]
    return template
