"""The env contract: one ConfigMap per FlaskApp, the Redis Secret, and the env of each app container.

Keys shared by every tier have their plain names (CACHE_TYPE); tier-specific ones are prefixed with the
tier (`web.SQLALCHEMY_ENGINE_OPTIONS`) and mapped to the plain name in that tier's containers only.
"""

from __future__ import annotations

import base64
import json
from typing import Optional

from ..naming import child_name
from ..schema import FieldError
from ..templates import render_template
from ..tuning import TierConnections
from . import agent
from .common import checksum, metadata
from .context import REDIS_SECRET_SUFFIX, Context
from .pooler import SECRET_SUFFIX as POOLER_SECRET_SUFFIX
from .pooler import database_url, pooler_secret_checksum



def _prepares_off(ctx: Context) -> bool:
    """Whether the app's psycopg must not prepare statements on the server: a transaction pooler that does not
    track them (see engine_options)."""
    pooler = ctx.spec.database.pooler if ctx.spec.database else None
    return (pooler is not None and pooler.enabled and pooler.pool_mode == "transaction"
            and not pooler.prepared_statements and database_url(ctx).driver == "psycopg")


def engine_options(ctx: Context, tier: TierConnections, prepares_off: bool = False) -> str:
    """Usable as Flask-SQLAlchemy's SQLALCHEMY_ENGINE_OPTIONS (keyword arguments of create_engine)."""
    pool = ctx.spec.database.pool if ctx.spec.database else None
    options = {"pool_size": tier.pool_size, "max_overflow": tier.max_overflow,
               "pool_recycle": pool.recycle_seconds if pool else 1800,
               "pool_pre_ping": pool.pre_ping if pool else True,
               "pool_timeout": pool.timeout_seconds if pool else 10}
    if tier.via_pooler and prepares_off:
        # psycopg 3 prepares a query on the server after 5 runs (prepare_threshold); under transaction pooling the
        # next transaction may run on another server connection, where it does not exist. psycopg2 never
        # prepares. (psycopg.org/psycopg3/docs/advanced/prepare.html, "Using prepared statements with PgBouncer")
        options["connect_args"] = {"prepare_threshold": None}
    return json.dumps(options, sort_keys=True)


GUNICORN_CONFIG_FILE = "gunicorn.conf.py"


def gunicorn_config_path(ctx: Context) -> str:
    return f"{ctx.addresses.gunicorn_config_dir}/{GUNICORN_CONFIG_FILE}"


def gunicorn_config(ctx: Context) -> str:
    """The config file: which peers' forwarded headers gunicorn and the app believe (nginx's)."""
    return render_template("gunicorn.conf.py.j2", app=ctx.name, trusted_proxies=list(ctx.spec.nginx.trusted_proxies),
                           tracing=bool(ctx.spec.monitoring.otlp_endpoint))


def gunicorn_args(ctx: Context) -> str:
    """GUNICORN_CMD_ARGS, which gunicorn reads from its environment (gunicorn settings.rst)."""
    web = ctx.tuning.web
    args = [f"--bind={ctx.addresses.gunicorn_bind}", f"--workers={web.workers}",
            f"--worker-class={web.worker_class}", f"--threads={web.threads}", f"--timeout={web.timeout_seconds}",
            f"--graceful-timeout={web.graceful_timeout_seconds}", f"--keep-alive={web.keepalive_seconds}",
            f"--max-requests={web.max_requests}", f"--max-requests-jitter={web.max_requests_jitter}",
            "--worker-tmp-dir=/dev/shm", f"--config={gunicorn_config_path(ctx)}", "--access-logfile=-"]
    if web.preload:
        args.append("--preload")
    if ctx.spec.monitoring.enabled:  # to the statsd_exporter sidecar (gunicorn docs, "Instrumentation")
        args.append(f"--statsd-host={ctx.addresses.statsd}")
    return " ".join(args)


def agent_statsd_tiers(ctx: Context) -> list[str]:
    """The app tiers whose pods run a statsd_exporter for the agent: web and the worker pools, with monitoring."""
    if not (agent.enabled(ctx) and ctx.spec.monitoring.enabled):
        return []
    return ["web", *(f"worker-{pool.name}" for pool in ctx.spec.worker_pools)]


def tier_settings(ctx: Context) -> dict[str, dict[str, str]]:
    """Per tier, the variables only that tier's containers see."""
    t = ctx.tuning
    out: dict[str, dict[str, str]] = {
        "web": {"WEB_CONCURRENCY": str(t.web.workers), "GUNICORN_CMD_ARGS": gunicorn_args(ctx)},
    }
    for pool in ctx.spec.worker_pools:
        out[f"worker-{pool.name}"] = {
            "CELERY_WORKER_CONCURRENCY": str(t.pool_concurrency[pool.name]),
            "CELERY_WORKER_PREFETCH_MULTIPLIER": str(pool.prefetch_multiplier),
            "CELERY_TASK_ACKS_LATE": str(pool.acks_late).lower(),
            "CELERY_TASK_REJECT_ON_WORKER_LOST": str(pool.acks_late).lower(),
            "CELERY_WORKER_MAX_TASKS_PER_CHILD": str(pool.max_tasks_per_child),
        }
    if ctx.spec.beat.enabled:
        out["beat"] = {}
    if ctx.spec.migrations:
        out["migrations"] = {}
    for tier in agent_statsd_tiers(ctx):  # per-endpoint and per-task metrics into the pod's statsd_exporter
        out[tier]["FLASKAPP_AGENT_STATSD"] = ctx.addresses.statsd
    prepares_off = _prepares_off(ctx)
    for tier in t.tiers:
        if tier.tier in out:  # not PgBouncer's own pool
            out[tier.tier]["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(ctx, tier, prepares_off)
    return out


def shared_settings(ctx: Context) -> dict[str, str]:
    spec = ctx.spec
    out = {"FLASKAPP_NAME": ctx.name, "CACHE_TYPE": "RedisCache",
           "CACHE_DEFAULT_TIMEOUT": str(spec.redis.cache_default_timeout_seconds),
           "CACHE_KEY_PREFIX": f"{ctx.name}:"}
    if ctx.memcached:  # Flask-Caching's MemcachedCache (pallets-eco/flask-caching docs/configuration.rst)
        out.update(CACHE_TYPE="MemcachedCache", CACHE_MEMCACHED_SERVERS=ctx.addresses.memcached)
    if spec.cdn.base_url:
        out["CDN_URL"] = spec.cdn.base_url
    if agent.enabled(ctx):
        out["FLASKAPP_AGENT_N_PLUS_ONE"] = str(spec.agent.n_plus_one_threshold)
    return out


def env_configmap(ctx: Context) -> dict:
    data = dict(shared_settings(ctx))
    for tier, settings in tier_settings(ctx).items():
        data.update({f"{tier}.{k}": v for k, v in settings.items()})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(ctx, ctx.child("env"), "config"),
            "data": dict(sorted(data.items()))}


def redis_secret(ctx: Context) -> dict:
    """Generated once by the operator and then preserved: the password is an input of the renderer."""
    pw = ctx.redis_password
    cache, broker = ctx.addresses.redis_cache, ctx.addresses.redis_broker
    data = {"password": pw, "auth.conf": f"requirepass {pw}\n"}
    if not ctx.memcached:
        data["cache-url"] = f"redis://:{pw}@{cache}/0"
    if ctx.uses_broker:
        data.update({"broker-url": f"redis://:{pw}@{broker}/0", "result-url": f"redis://:{pw}@{broker}/1"})
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": metadata(ctx, ctx.child(REDIS_SECRET_SUFFIX), "redis"),
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _secret_ref(name: str, secret: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _config_ref(name: str, configmap: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"configMapKeyRef": {"name": configmap, "key": key}}}


def operator_env(ctx: Context, tier: str) -> list[dict]:
    """The variables the operator sets in an app container of `tier`."""
    configmap = ctx.child("env")
    env = [_config_ref(k, configmap, k) for k in shared_settings(ctx)]
    env += [_config_ref(k, configmap, f"{tier}.{k}") for k in tier_settings(ctx).get(tier, {})]
    if ctx.spec.database:
        env.append(database_url_env(ctx, tier))
    env += redis_url_env(ctx)
    env += tracing_env(ctx, tier)
    if agent.enabled(ctx):
        env.append({"name": "PYTHONPATH", "value": agent.python_path(ctx)})
    return env


# Where each operator-set variable comes from, for the message that refuses an env entry taking its name.
_ENV_SOURCES = (
    ("SQLALCHEMY_ENGINE_OPTIONS", "spec.database.pool (the connection budget)"),
    ("DATABASE_URL", "spec.database.secretName and urlKey (PgBouncer's URL with spec.database.pooler)"),
    ("GUNICORN_CMD_ARGS", "spec.web.gunicorn"), ("WEB_CONCURRENCY", "spec.web.gunicorn"),
    ("CELERY_BROKER_URL", "spec.redis"), ("CELERY_RESULT_BACKEND", "spec.redis"),
    ("CELERY_", "spec.workerPools"), ("CACHE_", "spec.redis"), ("CDN_URL", "spec.cdn.baseUrl"),
    ("OTEL_", "spec.monitoring.otlpEndpoint"), ("FLASKAPP_AGENT", "spec.agent"), ("FLASKAPP_", "the FlaskApp's name"),
)


def env_conflicts(ctx: Context) -> list[FieldError]:
    """spec.env entries that would replace a variable the operator sets: refused, because the plan (the
    connection budget above all) would then report what the pods do not run. PYTHONPATH is the exception: the
    agent's directory is put in front of the user's value."""
    ours = {e["name"] for tier in tier_settings(ctx) for e in operator_env(ctx, tier)} - {"PYTHONPATH"}
    errors = []
    for i, e in enumerate(ctx.spec.env):
        if e.name in ours:
            source = next(s for prefix, s in _ENV_SOURCES + (("", "the operator"),) if e.name.startswith(prefix))
            errors.append(FieldError(f"spec.env[{i}].name", f"{e.name} is set by the operator from {source}: "
                                     "set that instead (an env entry would replace what the plan counts on)"))
        elif e.name == "PYTHONPATH" and e.value is None and agent.enabled(ctx):
            errors.append(FieldError(f"spec.env[{i}].valueFrom", "PYTHONPATH must be a literal value with "
                                     "spec.agent enabled: the agent's directory is put in front of it"))
    return errors


def app_env(ctx: Context, tier: str) -> list[dict]:
    """The env of an app container of `tier`: ours, then the user's (which may not take our names:
    env_conflicts; a user PYTHONPATH is folded into ours when the agent runs)."""
    env = operator_env(ctx, tier)
    taken = {e["name"] for e in env}
    for e in ctx.spec.env:
        if e.name in taken:
            continue
        entry: dict = {"name": e.name}
        if e.value is not None:
            entry["value"] = e.value
        if e.value_from is not None:
            entry["valueFrom"] = e.value_from
        env.append(entry)
    return env


def database_url_env(ctx: Context, tier: str) -> dict:
    """DATABASE_URL: PgBouncer's when a pooler runs (the migration Job keeps the server's: it may hold session
    state, such as an advisory lock, across transactions), else the server's from the user's Secret."""
    db = ctx.spec.database
    if db.pooler.enabled and tier != "migrations":
        return _secret_ref("DATABASE_URL", ctx.child(POOLER_SECRET_SUFFIX), "url")
    return _secret_ref("DATABASE_URL", db.secret_name, db.url_key)


def redis_url_env(ctx: Context) -> list[dict]:
    """CACHE_REDIS_URL, CELERY_BROKER_URL, CELERY_RESULT_BACKEND from the managed or the external Secret."""
    redis = ctx.spec.redis
    if redis.mode == "managed":
        secret = child_name(ctx.name, REDIS_SECRET_SUFFIX)
        cache_key, broker_key, result_key = "cache-url", "broker-url", "result-url"
    else:
        secret = redis.external.secret_name
        cache_key, broker_key, result_key = (redis.external.cache_url_key, redis.external.broker_url_key,
                                             redis.external.broker_url_key)
    env = [] if ctx.memcached else [_secret_ref("CACHE_REDIS_URL", secret, cache_key)]
    if ctx.uses_broker:
        env += [_secret_ref("CELERY_BROKER_URL", secret, broker_key),
                _secret_ref("CELERY_RESULT_BACKEND", secret, result_key)]
    return env


def tracing_env(ctx: Context, tier: str) -> list[dict]:
    """OpenTelemetry's standard variables (opentelemetry.io, "SDK configuration"): an image running the
    auto-instrumentation sends one service's traces per tier, tagged with app, tier and pod."""
    m = ctx.spec.monitoring
    if not m.otlp_endpoint:
        return []
    attributes = {"service.namespace": ctx.namespace, "k8s.namespace.name": ctx.namespace,
                  "k8s.pod.name": "$(OTEL_K8S_POD_NAME)", "flaskapp.name": ctx.name, "flaskapp.tier": tier}
    return [{"name": "OTEL_K8S_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "OTEL_SERVICE_NAME", "value": f"{ctx.name}-{tier}"},
            {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": ",".join(f"{k}={v}" for k, v in attributes.items())},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": m.otlp_endpoint},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": m.otlp_protocol},
            {"name": "OTEL_TRACES_EXPORTER", "value": "otlp"},
            {"name": "OTEL_METRICS_EXPORTER", "value": "none"},
            {"name": "OTEL_LOGS_EXPORTER", "value": "none"}]


def app_env_from(ctx: Context) -> list[dict]:
    out = []
    for src in ctx.spec.env_from:
        entry: dict = {}
        if src.config_map_ref:
            entry["configMapRef"] = {"name": src.config_map_ref}
        if src.secret_ref:
            entry["secretRef"] = {"name": src.secret_ref}
        if src.prefix:
            entry["prefix"] = src.prefix
        out.append(entry)
    return out


def redis_password_checksum(ctx: Context) -> Optional[str]:
    """Changes with the managed Redis password (a deleted Secret gets a new one): Redis and its clients
    read it at start, so both must restart together. A digest: the password never appears."""
    # No managed Redis (external, or memcached and no broker): no password, and nothing to restart for.
    return checksum(ctx.redis_password) if ctx.redis_components else None


def config_checksums(ctx: Context) -> dict[str, str]:
    """Per app tier, a checksum of exactly what that tier reads: the ConfigMap values its env refers to,
    the env itself (Secret names included), envFrom and the managed Redis password. A change rolls only
    the tiers it reaches (a worker pool's concurrency does not restart web)."""
    data = env_configmap(ctx)["data"]
    pooled = pooler_secret_checksum(ctx)  # only when a pooler runs: other apps' pods keep their checksum
    out = {}
    for tier in tier_settings(ctx):
        env = app_env(ctx, tier)
        read = {e["name"]: data.get(e["valueFrom"]["configMapKeyRef"]["key"])
                for e in env if "configMapKeyRef" in e.get("valueFrom", {})}
        parts = [read, env, app_env_from(ctx), redis_password_checksum(ctx)]
        if pooled:
            parts.append(pooled)
        if agent.enabled(ctx):  # a new agent (an operator upgrade) reaches running processes by a restart
            parts.append(agent.agent_files())
        out[tier] = checksum(*parts)
    return out
