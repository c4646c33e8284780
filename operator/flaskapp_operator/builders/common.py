"""Pieces shared by the tier builders: object metadata, restricted security contexts, probes, env."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from ..api import Resources
from ..naming import labels, selector_labels
from ..tuning import PRE_STOP_DRAIN_SECONDS, effective_requests
from .context import Context

API_GROUP_ANNOTATION_PREFIX = "flaskapp.dev"
CONFIG_CHECKSUM = f"{API_GROUP_ANNOTATION_PREFIX}/config-checksum"


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


def restricted_pod_security(user: int) -> dict:
    """Pod Security Standard "restricted" at pod level."""
    return {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user, "fsGroup": user,
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod_spec(ctx: Context, user: int, containers: list[dict], volumes: list[dict], *,
             init_containers: Optional[list[dict]] = None, pull_secrets: bool = False) -> dict:
    """What every pod of a FlaskApp shares: its ServiceAccount without a token (nothing here talks to
    the API), PSS "restricted" as `user`, and the image pull secrets where the app image is pulled."""
    pod: dict = {"automountServiceAccountToken": False, "serviceAccountName": ctx.child(),
                 "securityContext": restricted_pod_security(user)}
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


def resources(res: Resources, tier: str) -> dict:
    out: dict = {"requests": effective_requests(res, tier)}
    limits = {k: v for k, v in (("cpu", res.limits.cpu), ("memory", res.limits.memory)) if v}
    if limits:
        out["limits"] = limits
    return out


def tcp_probe(port: int | str, period: int = 10, failures: int = 3) -> dict:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "failureThreshold": failures}


def http_probe(path: str, port: int | str, period: int = 10, failures: int = 3) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures}


def exec_probe(command: list[str], period: int, timeout: int, failures: int = 3) -> dict:
    return {"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def tmp_volume(name: str = "tmp") -> dict:
    return {"name": name, "emptyDir": {}}


def pod_template(ctx: Context, component: str, pod_spec: dict, checksum_value: Optional[str],
                 versioned: bool) -> dict:
    """A workload's pod template: its tier's labels and the checksum of the config its pods read."""
    meta: dict = {"labels": labels(ctx.name, component, ctx.version if versioned else None)}
    if checksum_value:
        # A config change changes the pod template, so the workload rolls its pods.
        meta["annotations"] = {CONFIG_CHECKSUM: checksum_value}
    return {"metadata": meta, "spec": pod_spec}


def deployment(ctx: Context, component: str, pod_spec: dict, *, replicas: Optional[int],
               strategy: dict, checksum_value: Optional[str] = None, versioned: bool = True) -> dict:
    """`versioned`: the pods run the app image, so its version label belongs on them. Redis pods must not
    carry it: a new app image would otherwise restart Redis, flushing the cache and the broker's queues."""
    name = ctx.child(component)
    spec: dict = {
        "selector": {"matchLabels": selector_labels(ctx.name, component)},
        "strategy": strategy,
        "revisionHistoryLimit": 5,
        "template": pod_template(ctx, component, pod_spec, checksum_value, versioned),
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
