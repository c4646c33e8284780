"""Managed Redis: two instances, because the eviction policy is per server (redis.io eviction docs)."""

from __future__ import annotations

from ..api import RedisBroker, RedisInstance
from ..naming import STATEFULSET_NAME_MAX, child_name, selector_labels
from .common import (RECREATE, bounded, deployment, exec_probe, metadata, pod_spec, pod_template, restricted_container_security,
                     restricted_pod_security, service, tcp_probe, tmp_volume)
from .config import REDIS_SECRET_SUFFIX, redis_password_checksum, redis_secret
from .context import MEMCACHED_COMPONENT, MEMCACHED_PORT, REDIS_PORT, Context
from .monitoring import redis_sidecars

REDIS_USER = 999  # the official image's redis user
MEMCACHED_USER = 11211  # the official memcached image's memcache user
# The password, as a config file: never on a command line (`ps`, the pod spec). Not under /etc/redis,
# which Debian's redis package makes 2770 for its own redis user (the pod runs as another).
AUTH_DIR = "/etc/flaskapp/redis-auth"
AUTH_FILE = "auth.conf"
DATA_DIR = "/data"

# The cache evicts least-recently-used keys; the broker must never drop a queued task (kombu#1063).
POLICIES = {"redis-cache": "allkeys-lru", "redis-broker": "noeviction"}


def redis_server_args(maxmemory: int, policy: str, persistent: bool, port: int = REDIS_PORT) -> list[str]:
    """Server options after its config file (the password). Persistent: every write goes to the
    append-only file, fsynced once a second, so a restart loses at most a second of tasks (redis.io,
    "Redis persistence"); no RDB snapshots, whose forks double memory under load."""
    durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if persistent else ["--appendonly", "no"]
    return ["--port", str(port), "--maxmemory", str(maxmemory), "--maxmemory-policy", policy,
            "--save", "", *durability, "--dir", DATA_DIR]


# Valkey (the default image) and Redis take the same options and protocol; the image has valkey-server or
# redis-server (Valkey's images also link the redis-* names, Debian's packages do not). The options are
# arguments, never part of the script.
SERVER = ('for server in valkey-server redis-server; do command -v "$server" >/dev/null && exec "$server" "$@"; '
          'done; echo "the image has neither valkey-server nor redis-server" >&2; exit 127')
CLI = "$(command -v valkey-cli || command -v redis-cli)"


def _pod(ctx: Context, component: str, instance: RedisInstance, maxmemory: int, persistent: bool) -> dict:
    password = {"valueFrom": {"secretKeyRef": {"name": ctx.child(REDIS_SECRET_SUFFIX), "key": "password"}}}
    container = {
        "name": "redis",
        "image": ctx.spec.redis.image,
        "command": ["sh", "-c", SERVER, "server"],
        "args": [f"{AUTH_DIR}/{AUTH_FILE}", *redis_server_args(maxmemory, POLICIES[component], persistent)],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "resources": bounded({"cpu": instance.cpu, "memory": instance.memory}),
        # Ready once it answers PING (not while it loads its append-only file: LOADING); alive while it
        # accepts connections. The CLI reads the password from the environment, never from its argv
        # (REDISCLI_AUTH: redis-cli and valkey-cli 8; VALKEYCLI_AUTH: valkey-cli 9).
        "env": [{"name": "REDISCLI_AUTH", **password}, {"name": "VALKEYCLI_AUTH", **password}],
        "readinessProbe": exec_probe(["sh", "-c", f'{CLI} -p {REDIS_PORT} ping | grep -q PONG'], period=5,
                                     timeout=3),
        "livenessProbe": tcp_probe("redis", period=10, failures=6),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR},
                         {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}],
    }
    auth = {"name": "auth", "secret": {"secretName": ctx.child(REDIS_SECRET_SUFFIX), "defaultMode": 0o440,
                                       "items": [{"key": AUTH_FILE, "path": AUTH_FILE}]}}
    sidecars = redis_sidecars(ctx, component)
    # A persistent broker's data volume comes from its claim template instead.
    return pod_spec(ctx, restricted_pod_security(REDIS_USER), [container, *sidecars], [auth] if persistent else [tmp_volume("data"), auth])


def _stateful_set(ctx: Context, component: str, pod: dict, broker: RedisBroker) -> dict:
    """One pod that keeps its volume across restarts and rescheduling; the StatefulSet controller replaces
    the pod only after the old one is gone (never two Redis on one append-only file)."""
    service = ctx.child(component)
    name = child_name(ctx.name, component, limit=STATEFULSET_NAME_MAX)  # the same as the Service's up to 52
    claim: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": broker.storage}}}
    if broker.storage_class_name:
        claim["storageClassName"] = broker.storage_class_name
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(ctx, name, component),
        "spec": {
            "replicas": 1, "serviceName": service,
            "selector": {"matchLabels": selector_labels(ctx.name, component)},
            "updateStrategy": {"type": "RollingUpdate"},
            # Deleting the FlaskApp deletes the queue with it; nothing else does.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "revisionHistoryLimit": 5,
            "template": pod_template(ctx, component, pod, redis_password_checksum(ctx), versioned=False),
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
    }


def _broker_disruption_budget(ctx: Context) -> dict:
    """A drain or a cluster-autoscaler scale-down must not restart the broker on its own: the eviction
    waits until someone deletes the pod (its queue survives that, on the volume)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(ctx, ctx.child("redis-broker"), "redis-broker"),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector_labels(ctx.name, "redis-broker")}}}


def _instance(ctx: Context, component: str, instance: RedisInstance, maxmemory: int) -> list[dict]:
    persistent = isinstance(instance, RedisBroker) and instance.persistent
    pod = _pod(ctx, component, instance, maxmemory, persistent)
    if persistent:
        workload = [_stateful_set(ctx, component, pod, instance), _broker_disruption_budget(ctx)]
    else:
        workload = [deployment(ctx, component, pod, replicas=1, strategy=RECREATE, versioned=False,
                               checksum_value=redis_password_checksum(ctx))]
    return [*workload, service(ctx, component, REDIS_PORT, "redis", port_name="redis")]


def memcached_objects(ctx: Context) -> list[dict]:
    """memcached as the cache (spec.redis.cache.engine): LRU eviction is its only mode, so no policy to set; item
    memory below the container limit; no auth (memcached's SASL needs the binary protocol, which Flask-Caching's
    clients do not speak): its NetworkPolicy admits the app tiers only."""
    cache, t = ctx.spec.redis.cache, ctx.tuning
    container = {
        "name": "memcached",
        "image": cache.memcached_image,
        "command": ["memcached", f"--port={MEMCACHED_PORT}", f"--memory-limit={t.memcached_memory_mib}",
                    f"--threads={t.memcached_threads}", "--conn-limit=4096"],
        "ports": [{"name": "memcached", "containerPort": MEMCACHED_PORT, "protocol": "TCP"}],
        "resources": bounded({"cpu": cache.cpu, "memory": cache.memory}),
        # Ready once it listens; no liveness probe (a TCP check would repeat readiness; memcached exits on what it
        # cannot recover from, and the kubelet restarts it).
        "readinessProbe": tcp_probe("memcached", period=5),
        "securityContext": restricted_container_security(),
    }
    pod = pod_spec(ctx, restricted_pod_security(MEMCACHED_USER), [container], [])
    return [deployment(ctx, MEMCACHED_COMPONENT, pod, replicas=1, strategy=RECREATE, versioned=False),
            service(ctx, MEMCACHED_COMPONENT, MEMCACHED_PORT, "memcached", port_name="memcached")]


def redis_objects(ctx: Context) -> list[dict]:
    if ctx.spec.redis.mode != "managed":
        return []
    t = ctx.tuning
    out = [redis_secret(ctx)] if ctx.redis_components else []
    if ctx.memcached:
        out += memcached_objects(ctx)
    else:
        out += _instance(ctx, "redis-cache", ctx.spec.redis.cache, t.redis_cache_maxmemory)
    if ctx.uses_broker:
        out += _instance(ctx, "redis-broker", ctx.spec.redis.broker, t.redis_broker_maxmemory)
    return out
