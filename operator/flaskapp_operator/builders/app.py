"""The tiers that run the user's image: gunicorn web, Celery worker pools, beat, and the migration Job."""

from __future__ import annotations

from ..api import Resources
from ..naming import labels
from ..tuning import DEFAULT_POOL_REPLICAS, DEFAULT_WEB_REPLICAS
from .common import (RECREATE, ROLLING_UPDATE, checksum, deployment, drain_before_stop, exec_probe, http_probe,
                     metadata, resources, restricted_container_security, pod_spec, service, tcp_probe,
                     tmp_volume)
from .config import GUNICORN_CONFIG_FILE, app_env, app_env_from, gunicorn_config
from .context import Context
from .monitoring import config_volume, flower_enabled, gunicorn_sidecars, monitoring_configmap

APP_USER = 10001  # the app image must tolerate an arbitrary non-root user (PSS "restricted")


def app_pod(ctx: Context, tier: str, container: dict, res: Resources, resource_tier: str, *,
            grace: int | None = None, restart: str = "Always") -> dict:
    spec = ctx.spec
    main = {
        "name": container.pop("name"),
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        **container,
        "env": app_env(ctx, tier),
        "resources": resources(res, resource_tier),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    env_from = app_env_from(ctx)
    if env_from:
        main["envFrom"] = env_from
    pod = pod_spec(ctx, APP_USER, [main], [tmp_volume()], pull_secrets=True)
    pod["restartPolicy"] = restart
    if grace is not None:
        pod["terminationGracePeriodSeconds"] = grace
    return pod


def web_objects(ctx: Context, config_checksums: dict[str, str]) -> list[dict]:
    web = ctx.spec.web
    conf = gunicorn_config(ctx)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": metadata(ctx, ctx.child("gunicorn-conf"), "web"), "data": {GUNICORN_CONFIG_FILE: conf}}
    port = web.port
    readiness = http_probe(web.health_check_path, "http") if web.health_check_path else tcp_probe("http")
    container = {
        "name": "gunicorn",
        "command": ["gunicorn", ctx.spec.wsgi],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": readiness,
        "livenessProbe": tcp_probe("http", period=10, failures=6),
        "startupProbe": tcp_probe("http", period=2, failures=60),
        "lifecycle": drain_before_stop(),
    }
    pod = app_pod(ctx, "web", container, web.resources, "web",
                  grace=ctx.tuning.web.termination_grace_period_seconds)
    pod["containers"][0]["volumeMounts"].append(
        {"name": "gunicorn-conf", "mountPath": ctx.addresses.gunicorn_config_dir, "readOnly": True})
    pod["volumes"].append({"name": "gunicorn-conf", "configMap": {"name": ctx.child("gunicorn-conf")}})
    sidecars = gunicorn_sidecars(ctx)
    if sidecars:
        pod["containers"] += sidecars
        pod["volumes"].append(config_volume(ctx))
    replicas = None if web.autoscaling else (DEFAULT_WEB_REPLICAS if web.replicas is None else web.replicas)
    return [configmap,
            deployment(ctx, "web", pod, replicas=replicas, strategy=ROLLING_UPDATE,
                       checksum_value=checksum(config_checksums["web"], conf, *monitoring_configmap(ctx))),
            service(ctx, "web", port, "http")]


def _celery_ping(ctx: Context, node: str) -> dict:
    # Liveness through the broker: a wedged worker stops answering control messages.
    command = f'celery --app {ctx.spec.celery_app} inspect ping --destination "{node}@$HOSTNAME" --timeout 10'
    return exec_probe(["sh", "-c", command], period=60, timeout=20, failures=3)


def worker_objects(ctx: Context, config_checksums: dict[str, str]) -> list[dict]:
    objects = []
    for pool in ctx.spec.worker_pools:
        tier = f"worker-{pool.name}"
        queues = ",".join(pool.queues) or "celery"
        container = {
            "name": "celery",
            "command": ["celery", "--app", ctx.spec.celery_app, "worker", "--loglevel", "INFO",
                        "--hostname", f"{pool.name}@%h", "--queues", queues,
                        "--concurrency", str(ctx.tuning.pool_concurrency[pool.name]),
                        "--prefetch-multiplier", str(pool.prefetch_multiplier),
                        *(["--max-tasks-per-child", str(pool.max_tasks_per_child)]
                          if pool.max_tasks_per_child else []),
                        # Task events feed Flower's metrics (Celery docs, "Monitoring and Management").
                        *(["--task-events"] if flower_enabled(ctx) else [])],
            "livenessProbe": _celery_ping(ctx, pool.name),
            "readinessProbe": _celery_ping(ctx, pool.name),
        }
        pod = app_pod(ctx, tier, container, pool.resources, "worker")
        replicas = None if pool.autoscaling else (DEFAULT_POOL_REPLICAS if pool.replicas is None
                                                  else pool.replicas)
        objects.append(deployment(ctx, tier, pod, replicas=replicas, strategy=ROLLING_UPDATE,
                                  checksum_value=config_checksums[tier]))
    return objects


def beat_objects(ctx: Context, config_checksums: dict[str, str]) -> list[dict]:
    if not ctx.spec.beat.enabled:
        return []
    container = {
        "name": "beat",
        "command": ["celery", "--app", ctx.spec.celery_app, "beat", "--loglevel", "INFO",
                    "--schedule", "/tmp/celerybeat-schedule", "--pidfile", "/tmp/celerybeat.pid"],
        "livenessProbe": exec_probe(["sh", "-c", "kill -0 $(cat /tmp/celerybeat.pid)"], period=30, timeout=5),
    }
    pod = app_pod(ctx, "beat", container, Resources(), "beat")
    # Exactly one scheduler: a second beat would send every periodic task twice.
    return [deployment(ctx, "beat", pod, replicas=1, strategy=RECREATE,
                       checksum_value=config_checksums["beat"])]


def migration_job_name(ctx: Context) -> str:
    return ctx.child(f"migrate-{migration_hash(ctx)[:10]}")


def migration_hash(ctx: Context) -> str:
    """A new Job for every new image, command or env: Job templates are immutable."""
    m = ctx.spec.migrations
    return checksum(ctx.spec.image, list(m.command), app_env(ctx, "migrations"), app_env_from(ctx))


def migration_objects(ctx: Context) -> list[dict]:
    m = ctx.spec.migrations
    if not m:
        return []
    container = {"name": "migrate", "command": list(m.command)}
    pod = app_pod(ctx, "migrations", container, Resources(), "migrations", restart="Never")
    return [{
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata(ctx, migration_job_name(ctx), "migrations"),
        "spec": {"backoffLimit": m.backoff_limit, "activeDeadlineSeconds": m.timeout_seconds,
                 "template": {"metadata": {"labels": labels(ctx.name, "migrations", ctx.version)},
                              "spec": pod}},
    }]
