"""The ServiceAccount every pod runs as, and the Ingress routing to nginx."""

from __future__ import annotations

from .common import metadata
from .context import Context


def service_account(ctx: Context) -> dict:
    # The app never talks to the Kubernetes API: no token is mounted (see the pod specs).
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(ctx, ctx.child(), "app"),
            "automountServiceAccountToken": False}


def ingress_objects(ctx: Context) -> list[dict]:
    ing = ctx.spec.ingress
    if not ing.enabled:
        return []
    rule: dict = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": ctx.child("nginx"), "port": {"name": "http"}}}}]}}
    if ing.host:
        rule = {"host": ing.host, **rule}
    spec: dict = {"rules": [rule]}
    if ing.class_name:
        spec = {"ingressClassName": ing.class_name, **spec}
    if ing.tls_secret_name:
        spec["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret_name}]
    meta = metadata(ctx, ctx.child(), "ingress")
    if ing.annotations:
        meta["annotations"] = dict(sorted(ing.annotations.items()))
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}]
