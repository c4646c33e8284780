"""The ServiceAccount every pod runs as, and the Ingress routing to nginx."""

from __future__ import annotations

from ..api import CERT_MANAGER_GROUP
from .common import metadata
from .context import Context


def service_account(ctx: Context) -> dict:
    # The app never talks to the Kubernetes API unless a pod block says so: no token is mounted by default
    # (see the pod specs). Annotations carry a cloud workload identity (IRSA, GKE Workload Identity).
    meta = metadata(ctx, ctx.child(), "app")
    if ctx.spec.service_account.annotations:
        meta["annotations"] = dict(sorted(ctx.spec.service_account.annotations.items()))
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False}


def ingress_hosts(ctx: Context) -> list[str]:
    ing = ctx.spec.ingress
    return [*([ing.host] if ing.host else []), *ing.hosts]


def tls_secret_name(ctx: Context) -> str | None:
    ing = ctx.spec.ingress
    return ing.tls_secret_name or (ctx.child("tls") if ing.issuer_ref else None)


def _issuer_annotations(ctx: Context) -> dict[str, str]:
    """cert-manager's ingress-shim contract (cert-manager.io/docs/usage/ingress): an issuer annotation on an
    Ingress with a TLS section makes cert-manager issue and renew a Certificate into its secretName."""
    ref = ctx.spec.ingress.issuer_ref
    if ref is None:
        return {}
    if ref.group != CERT_MANAGER_GROUP:  # an external issuer: named with its kind and group
        return {"cert-manager.io/issuer": ref.name, "cert-manager.io/issuer-kind": ref.kind,
                "cert-manager.io/issuer-group": ref.group}
    key = f"{CERT_MANAGER_GROUP}/cluster-issuer" if ref.kind == "ClusterIssuer" else f"{CERT_MANAGER_GROUP}/issuer"
    return {key: ref.name}


def ingress_objects(ctx: Context) -> list[dict]:
    ing = ctx.spec.ingress
    if not ing.enabled:
        return []
    backend = {"service": {"name": ctx.child("nginx"), "port": {"name": "http"}}}
    http = {"paths": [{"path": p.path, "pathType": p.path_type, "backend": backend} for p in ing.paths]}
    hosts = ingress_hosts(ctx)
    rules = [{"host": host, "http": http} for host in hosts] or [{"http": http}]
    spec: dict = {"rules": rules}
    if ing.class_name:
        spec = {"ingressClassName": ing.class_name, **spec}
    secret = tls_secret_name(ctx)
    if secret:
        spec["tls"] = [{"hosts": hosts, "secretName": secret}]
    meta = metadata(ctx, ctx.child(), "ingress")
    annotations = {**ing.annotations, **_issuer_annotations(ctx)}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}]


GATEWAY_API = "gateway.networking.k8s.io/v1"


def route_objects(ctx: Context) -> list[dict]:
    """A Gateway API HTTPRoute to the nginx Service (gateway-api.sigs.k8s.io/api-types/httproute/): every path on
    every hostname, to the Service's port 80."""
    route = ctx.spec.route
    if not route.enabled or not ctx.gateway_api:
        return []
    parents = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": p.name,
                **({"namespace": p.namespace} if p.namespace else {}),
                **({"sectionName": p.section_name} if p.section_name else {}),
                **({"port": p.port} if p.port else {})} for p in route.parent_refs]
    spec: dict = {"parentRefs": parents}
    if route.hostnames:
        spec["hostnames"] = list(route.hostnames)
    spec["rules"] = [{"matches": [{"path": {"type": p.type, "value": p.path}} for p in route.paths],
                      "backendRefs": [{"group": "", "kind": "Service", "name": ctx.child("nginx"), "port": 80}]}]
    meta = metadata(ctx, ctx.child(), "route")
    if route.annotations:
        meta["annotations"] = dict(sorted(route.annotations.items()))
    return [{"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": meta, "spec": spec}]
