"""Two containers of one pod cannot listen on the same port (they share the pod's network namespace): the second
fails to bind and crash-loops. Checked on the rendered pods — every declared containerPort and the ports the
operator's own processes bind without declaring them — so that a spec whose web.port or sidecar takes a port
already in use is refused naming that field."""

from __future__ import annotations

from typing import Optional

from ..api import RESERVED_CONTAINER_NAMES
from ..naming import COMPONENT_LABEL
from ..schema import FieldError
from .context import Context
from .placement import JOB_TIER, tier_overrides




def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _undeclared(ctx: Context, container: str) -> list[tuple[int, str]]:
    """Ports an operator container binds without a containerPort (loopback-only listeners)."""
    a = ctx.addresses
    return {"statsd-exporter": [(_port(a.statsd), "UDP")],
            "nginx-exporter": [(_port(a.nginx_status_listen), "TCP")],
            "access-log-exporter": [(_port(a.access_log_syslog), "UDP")]}.get(container, [])


def _pod_spec(obj: dict) -> Optional[dict]:
    spec = obj.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return template.get("spec") if template else None


def _sidecar_path(ctx: Context, tier: str, name: str) -> str:
    """Where a user container of `tier`'s pods is declared: the tier's own pod block, else spec.pod."""
    own = tier_overrides(ctx, tier)
    if own is not None and any(c.get("name") == name for c in (*own.sidecars, *own.init_containers)):
        if tier.startswith("worker-"):
            index = next(i for i, p in enumerate(ctx.spec.worker_pools) if f"worker-{p.name}" == tier)
            return f"spec.workerPools[{index}].pod"
        return f"spec.{ {'redis-cache': 'redis', 'redis-broker': 'redis', 'memcached': 'redis'}.get(tier, tier)}.pod"
    return "spec.pod"


def port_conflicts(ctx: Context, objects: list[dict]) -> list[FieldError]:
    errors: dict[str, FieldError] = {}
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is None:
            continue
        tier = obj["metadata"].get("labels", {}).get(COMPONENT_LABEL, "")
        running = [*pod["containers"], *(c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always")]
        taken: dict[tuple[int, str], str] = {}
        for container in running:
            name = container["name"]
            ports = [(p["containerPort"], p.get("protocol", "TCP")) for p in container.get("ports", [])]
            for port in [*ports, *_undeclared(ctx, name)]:
                other = taken.setdefault(port, name)
                if other == name:
                    continue
                user = name if name not in RESERVED_CONTAINER_NAMES else other if other not in RESERVED_CONTAINER_NAMES else None
                if user is not None:
                    declared_in = "initContainers" if any(c["name"] == user for c in pod.get("initContainers", [])) \
                        and tier != JOB_TIER else "sidecars"
                    path = f"{_sidecar_path(ctx, tier, user)}.{declared_in}"
                elif "gunicorn" in (name, other):
                    path = "spec.web.port"
                else:
                    path = "spec"
                errors.setdefault(path, FieldError(path, f"port {port[0]}/{port[1]} of the {tier} pods is taken twice "
                                                         f"(containers {other} and {name}): the second cannot bind it"))
    return list(errors.values())
