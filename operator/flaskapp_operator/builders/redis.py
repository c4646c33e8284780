"""Managed Redis: two instances, because the eviction policy is per server (redis.io eviction docs)."""

from __future__ import annotations

from ..api import RedisInstance
from ..naming import selector_labels
from .common import (RECREATE, deployment, metadata, pod_spec, restricted_container_security, service,
                     tcp_probe, tmp_volume)
from .config import REDIS_SECRET_SUFFIX, redis_password_checksum, redis_secret
from .context import REDIS_PORT, Context

REDIS_USER = 999  # the official image's redis user

# The cache evicts least-recently-used keys; the broker must never drop a queued task (kombu#1063).
POLICIES = {"redis-cache": "allkeys-lru", "redis-broker": "noeviction"}


def redis_server_args(maxmemory: int, policy: str, port: int = REDIS_PORT) -> list[str]:
    """redis-server arguments; $(REDIS_PASSWORD) is expanded by the kubelet from the container's env."""
    return ["--port", str(port), "--maxmemory", str(maxmemory), "--maxmemory-policy", policy,
            "--requirepass", "$(REDIS_PASSWORD)", "--save", "", "--appendonly", "no"]


def _instance(ctx: Context, component: str, instance: RedisInstance, maxmemory: int) -> list[dict]:
    container = {
        "name": "redis",
        "image": ctx.spec.redis.image,
        "command": ["redis-server"],
        "args": redis_server_args(maxmemory, POLICIES[component]),
        "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": ctx.child(REDIS_SECRET_SUFFIX), "key": "password"}}}],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": instance.cpu, "memory": instance.memory},
                      "limits": {"memory": instance.memory}},
        "readinessProbe": tcp_probe("redis", period=5),
        "livenessProbe": tcp_probe("redis", period=10, failures=6),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod = pod_spec(ctx, REDIS_USER, [container], [tmp_volume("data")])
    return [deployment(ctx, component, pod, replicas=1, strategy=RECREATE, versioned=False,
                       checksum_value=redis_password_checksum(ctx)),
            service(ctx, component, REDIS_PORT, "redis", port_name="redis")]


def _only_from_this_app(ctx: Context, component: str) -> dict:
    """Redis is reachable only from this FlaskApp's own pods."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(ctx, ctx.child(component), component),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(ctx.name, component)},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "flaskapp",
                                                          "app.kubernetes.io/instance": ctx.name}}}],
                "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
            }],
        },
    }


def redis_objects(ctx: Context) -> list[dict]:
    if ctx.spec.redis.mode != "managed":
        return []
    t = ctx.tuning
    return [redis_secret(ctx),
            *_instance(ctx, "redis-cache", ctx.spec.redis.cache, t.redis_cache_maxmemory),
            *_instance(ctx, "redis-broker", ctx.spec.redis.broker, t.redis_broker_maxmemory),
            _only_from_this_app(ctx, "redis-cache"), _only_from_this_app(ctx, "redis-broker")]
