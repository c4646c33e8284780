"""Pieces shared by the tier builders: object metadata, restricted security contexts, probes, env."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from ..api import CONFIG_CHECKSUM_ANNOTATION, Resources
from ..naming import labels, selector_labels
from ..tuning import PRE_STOP_DRAIN_SECONDS, effective_requests
from .context import Context
from .placement import shape_pod



def metadata(ctx: Context, name: str, component: str, **extra: Any) -> dict:
    meta: dict = {"name": name, "namespace": ctx.namespace, "labels": labels(ctx.name, component, ctx.version)}
    if ctx.app.uid:
        # Owned by the FlaskApp: the cluster's garbage collector deletes children with it.
        meta["ownerReferences"] = [{
            "apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "name": ctx.name,
            "uid": ctx.app.uid, "controller": True, "blockOwnerDeletion": True,
        }]
    meta.update(extra)
    return meta


def checksum(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def restricted_pod_security(user: int, group: Optional[int] = None, fs_group: Optional[int] = None) -> dict:
    """Pod Security Standard "restricted" at pod level."""
    return {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": group or user, "fsGroup": fs_group or user,
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod_spec(ctx: Context, security: dict, containers: list[dict], volumes: list[dict], *,
             init_containers: Optional[list[dict]] = None, pull_secrets: bool = False) -> dict:
    """What every pod of a FlaskApp shares: its ServiceAccount without a token (nothing here talks to
    the API unless spec.pod says so), a pod `security` context, and the image pull secrets where the app
    image is pulled."""
    pod: dict = {"automountServiceAccountToken": False, "serviceAccountName": ctx.child(),
                 "securityContext": security}
    if init_containers:
        pod["initContainers"] = init_containers
    pod["containers"] = containers
    pod["volumes"] = volumes
    if pull_secrets and ctx.spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in ctx.spec.image_pull_secrets]
    return pod


def restricted_container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


# Every container the operator writes requests a little node disk (its log, kept at most 50 MiB by the kubelet's
# rotation; the root filesystem is read-only) and is bounded, so one chatty pod cannot fill a node.
EPHEMERAL_STORAGE_REQUEST = "64Mi"
EPHEMERAL_STORAGE_LIMIT = "1Gi"


def bounded(requests: dict, limits: Optional[dict] = None) -> dict:
    """Resources with a memory limit (the request when none is given: memory cannot be throttled, only
    reclaimed by the OOM killer, so a container may not count on more than it reserved) and node disk."""
    limits = {"memory": requests["memory"], **(limits or {})}
    return {"requests": {**requests, "ephemeral-storage": EPHEMERAL_STORAGE_REQUEST},
            "limits": {**limits, "ephemeral-storage": EPHEMERAL_STORAGE_LIMIT}}


def resources(res: Resources, tier: str) -> dict:
    limits = {k: v for k, v in (("cpu", res.limits.cpu), ("memory", res.limits.memory)) if v}
    return bounded(effective_requests(res, tier), limits)


def tcp_probe(port: int | str, period: int = 10, failures: int = 3) -> dict:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "failureThreshold": failures}


def http_probe(path: str, port: int | str, period: int = 10, failures: int = 3) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures}


def exec_probe(command: list[str], period: int, timeout: int, failures: int = 3) -> dict:
    return {"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


# An emptyDir is node disk: each is bounded (the kubelet evicts a pod whose volume outgrows it).
TMP_SIZE_LIMIT = "256Mi"


def tmp_volume(name: str = "tmp", size_limit: str = TMP_SIZE_LIMIT) -> dict:
    return {"name": name, "emptyDir": {"sizeLimit": size_limit}}


def pod_template(ctx: Context, component: str, pod_spec: dict, checksum_value: Optional[str],
                 versioned: bool, spread: bool = False) -> dict:
    """A workload's pod template: its tier's labels, the checksum of the config its pods read, and what the
    FlaskApp's pod blocks add (placement.py)."""
    meta: dict = {"labels": labels(ctx.name, component, ctx.version if versioned else None)}
    if checksum_value:
        # A config change changes the pod template, so the workload rolls its pods.
        meta["annotations"] = {CONFIG_CHECKSUM_ANNOTATION: checksum_value}
    return shape_pod(ctx, component, {"metadata": meta, "spec": pod_spec}, spread=spread)


def deployment(ctx: Context, component: str, pod_spec: dict, *, replicas: Optional[int],
               strategy: dict, checksum_value: Optional[str] = None, versioned: bool = True) -> dict:
    """`versioned`: the pods run the app image, so its version label belongs on them. Redis pods must not
    carry it: a new app image would otherwise restart Redis, flushing the cache and the broker's queues."""
    name = ctx.child(component)
    spec: dict = {
        "selector": {"matchLabels": selector_labels(ctx.name, component)},
        "strategy": strategy,
        "revisionHistoryLimit": 5,
        # More than one pod (or an autoscaler's count): spread them, so one node's loss takes only some.
        "template": pod_template(ctx, component, pod_spec, checksum_value, versioned,
                                 spread=replicas is None or replicas > 1),
    }
    if replicas is not None:  # left out under an autoscaler, so the HPA owns the count
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(ctx, name, component),
            "spec": spec}


ROLLING_UPDATE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
RECREATE = {"type": "Recreate"}


def service(ctx: Context, component: str, port: int, target: int | str, port_name: str = "http") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(ctx, ctx.child(component), component),
            "spec": {"type": "ClusterIP", "selector": selector_labels(ctx.name, component),
                     "ports": [{"name": port_name, "port": port,
                                "targetPort": target, "protocol": "TCP"}]}}


def drain_before_stop() -> dict:
    """preStop: keep serving while endpoint removal reaches every proxy, then take SIGTERM (the kubelet's
    built-in sleep action: no shell or sleep binary needed in the image)."""
    return {"preStop": {"sleep": {"seconds": PRE_STOP_DRAIN_SECONDS}}}
