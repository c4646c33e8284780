"""The tiers that run the user's image: gunicorn web, Celery worker pools, beat, and the migration Job."""

from __future__ import annotations

from ..api import Resources, WebProbe
from ..templates import render_template
from . import agent
from ..tuning import DEFAULT_POOL_REPLICAS, DEFAULT_WEB_REPLICAS
from .common import (RECREATE, ROLLING_UPDATE, checksum, deployment, drain_before_stop, exec_probe, metadata,
                     pod_template, resources, restricted_container_security, restricted_pod_security, pod_spec,
                     service, tmp_volume)
from .config import GUNICORN_CONFIG_FILE, agent_statsd_tiers, app_env, app_env_from, gunicorn_config
from .context import Context
from .monitoring import config_volume, statsd_sidecars, monitoring_configmap

CELERY_PROBE_FILE = "celery_probe.py"
# The worker's consumer touches its heartbeat this often; the probes allow three missed beats.
WORKER_HEARTBEAT_SECONDS = 5
# beat ticks at least this often (celery beat --max-interval; its default, 300 s, would make a wedged
# scheduler wait 15 minutes for its restart).
BEAT_MAX_INTERVAL_SECONDS = 30


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
    volumes = [tmp_volume()]
    if agent.enabled(ctx):
        main["volumeMounts"].append(dict(agent.AGENT_MOUNT))
        volumes.append(agent.agent_volume(ctx))
    env_from = app_env_from(ctx)
    if env_from:
        main["envFrom"] = env_from
    user = spec.security_context
    pod = pod_spec(ctx, restricted_pod_security(user.run_as_user, user.run_as_group, user.fs_group), [main],
                   volumes, pull_secrets=True)
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
    probes = web.probes
    container = {
        "name": "gunicorn",
        "command": ["gunicorn", ctx.spec.wsgi],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": _web_probe(probes.readiness, probes.readiness.path or web.health_check_path),
        "livenessProbe": _web_probe(probes.liveness, probes.liveness.path),
        "startupProbe": _web_probe(probes.startup, probes.startup.path),
        "lifecycle": drain_before_stop(),
    }
    if _handler(container["livenessProbe"]) == _handler(container["readinessProbe"]):
        # The same check as readiness would restart pods that are merely busy. Without a liveness path there
        # is no better one: a TCP connect is answered by the kernel's backlog even when gunicorn is wedged,
        # and gunicorn's master already replaces workers silent for longer than --timeout.
        del container["livenessProbe"]
    pod = app_pod(ctx, "web", container, web.resources, "web",
                  grace=ctx.tuning.web.termination_grace_period_seconds)
    pod["containers"][0]["volumeMounts"].append(
        {"name": "gunicorn-conf", "mountPath": ctx.addresses.gunicorn_config_dir, "readOnly": True})
    pod["volumes"].append({"name": "gunicorn-conf", "configMap": {"name": ctx.child("gunicorn-conf")}})
    sidecars = statsd_sidecars(ctx)
    if sidecars:
        pod["containers"] += sidecars
        pod["volumes"].append(config_volume(ctx))
    replicas = None if web.autoscaling else (DEFAULT_WEB_REPLICAS if web.replicas is None else web.replicas)
    return [configmap,
            deployment(ctx, "web", pod, replicas=replicas, strategy=ROLLING_UPDATE,
                       checksum_value=checksum(config_checksums["web"], conf, *monitoring_configmap(ctx))),
            service(ctx, "web", port, "http")]


def _handler(probe: dict) -> dict:
    return {k: v for k, v in probe.items() if k in ("httpGet", "tcpSocket", "exec")}


def _web_probe(probe: WebProbe, path: str | None) -> dict:
    port = probe.port or "http"
    check = {"httpGet": {"path": path, "port": port}} if path else {"tcpSocket": {"port": port}}
    rendered = {**check, "periodSeconds": probe.period_seconds, "timeoutSeconds": probe.timeout_seconds,
                "failureThreshold": probe.failure_threshold}
    if probe.initial_delay_seconds:  # 0 is omitted by the API server: written, it would look like drift
        rendered["initialDelaySeconds"] = probe.initial_delay_seconds
    return rendered


def celery_probe_script(ctx: Context) -> str:
    return render_template("celery_probe.py.j2", state_dir=ctx.addresses.runtime_dir,
                           interval_seconds=WORKER_HEARTBEAT_SECONDS)


def celery_probe_objects(ctx: Context) -> list[dict]:
    """The probe script every worker and beat runs under (templates/celery_probe.py.j2)."""
    if not (ctx.spec.worker_pools or ctx.spec.beat.enabled):
        return []
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(ctx, ctx.child("celery-probe"), "celery"),
             "data": {CELERY_PROBE_FILE: celery_probe_script(ctx)}}]


def _celery_command(ctx: Context, mode: str, args: list[str]) -> list[str]:
    """Celery under the probe script: the same process (PID 1, so SIGTERM reaches Celery: warm shutdown)."""
    return ["python3", f"{ctx.addresses.celery_probe_dir}/{CELERY_PROBE_FILE}", mode,
            "--app", ctx.spec.celery_app, *args]


def _heartbeat_probe(ctx: Context, check: str, max_age: int, period: int, failures: int) -> dict:
    # -S: the check needs the standard library only; skipping site-packages makes it start in milliseconds.
    return exec_probe(["python3", "-S", f"{ctx.addresses.celery_probe_dir}/{CELERY_PROBE_FILE}", check, str(max_age)],
                      period=period, timeout=5, failures=failures)


def _mount_celery_probe(ctx: Context, pod: dict) -> None:
    pod["containers"][0]["volumeMounts"].append(
        {"name": "celery-probe", "mountPath": ctx.addresses.celery_probe_dir, "readOnly": True})
    pod["volumes"].append({"name": "celery-probe", "configMap": {"name": ctx.child("celery-probe")}})


def worker_objects(ctx: Context, config_checksums: dict[str, str]) -> list[dict]:
    objects = []
    probe_script = celery_probe_script(ctx)  # once per render, not once per pool
    for pool in ctx.spec.worker_pools:
        tier = f"worker-{pool.name}"
        queues = ",".join(pool.queues) or "celery"
        container = {
            "name": "celery",
            "command": _celery_command(ctx, "worker", ["worker", "--loglevel", "INFO",
                        "--hostname", f"{pool.name}@%h", "--queues", queues,
                        "--concurrency", str(ctx.tuning.pool_concurrency[pool.name]),
                        "--prefetch-multiplier", str(pool.prefetch_multiplier),
                        *(["--max-tasks-per-child", str(pool.max_tasks_per_child)]
                          if pool.max_tasks_per_child else []),
                        # Task events feed Flower's metrics (Celery docs, "Monitoring and Management").
                        *(["--task-events"] if ctx.runs_flower else [])]),
            # Alive while its event loop turns, or while it waits for the broker; ready when connected.
            "livenessProbe": _heartbeat_probe(ctx, "live", 3 * WORKER_HEARTBEAT_SECONDS, period=10, failures=3),
            "readinessProbe": _heartbeat_probe(ctx, "ready", 3 * WORKER_HEARTBEAT_SECONDS, period=5, failures=2),
        }
        pod = app_pod(ctx, tier, container, pool.resources, "worker",
                      grace=pool.termination_grace_period_seconds)
        _mount_celery_probe(ctx, pod)
        if tier in agent_statsd_tiers(ctx):  # the agent's per-task metrics
            pod["containers"] += statsd_sidecars(ctx)
            pod["volumes"].append(config_volume(ctx))
        replicas = None if pool.autoscaling else (DEFAULT_POOL_REPLICAS if pool.replicas is None
                                                  else pool.replicas)
        sidecar_config = monitoring_configmap(ctx) if tier in agent_statsd_tiers(ctx) else []
        objects.append(deployment(ctx, tier, pod, replicas=replicas, strategy=ROLLING_UPDATE,
                                  checksum_value=checksum(config_checksums[tier], probe_script, *sidecar_config)))
    return objects


def beat_objects(ctx: Context, config_checksums: dict[str, str]) -> list[dict]:
    if not ctx.spec.beat.enabled:
        return []
    max_age = 3 * BEAT_MAX_INTERVAL_SECONDS
    container = {
        "name": "beat",
        "command": _celery_command(ctx, "beat", [
            "beat", "--loglevel", "INFO", "--schedule", "/tmp/celerybeat-schedule", "--pidfile", "/tmp/celerybeat.pid",
            "--max-interval", str(BEAT_MAX_INTERVAL_SECONDS)]),
        # The first tick comes once the app is imported: the startup probe allows five minutes for that.
        "startupProbe": _heartbeat_probe(ctx, "live", max_age, period=5, failures=60),
        "livenessProbe": _heartbeat_probe(ctx, "live", max_age, period=30, failures=2),
    }
    pod = app_pod(ctx, "beat", container, ctx.spec.beat.resources, "beat")
    _mount_celery_probe(ctx, pod)
    # Exactly one scheduler: a second beat would send every periodic task twice.
    return [deployment(ctx, "beat", pod, replicas=1, strategy=RECREATE,
                       checksum_value=checksum(config_checksums["beat"], celery_probe_script(ctx)))]


def _migration_template(ctx: Context) -> dict:
    m = ctx.spec.migrations
    container = {"name": "migrate", "command": list(m.command)}
    pod = app_pod(ctx, "migrations", container, m.resources, "migrations", restart="Never")
    return pod_template(ctx, "migrations", pod, None, versioned=True)


def migration_job_name(ctx: Context) -> str:
    """A new Job for every new pod template (image, command, env, resources, pod block): a Job's template
    is immutable, and a changed one means the migration must run again anyway."""
    return ctx.child(f"migrate-{checksum(_migration_template(ctx))[:10]}")


def migration_objects(ctx: Context) -> list[dict]:
    m = ctx.spec.migrations
    if not m:
        return []
    return [{
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata(ctx, migration_job_name(ctx), "migrations"),
        "spec": {"backoffLimit": m.backoff_limit, "activeDeadlineSeconds": m.timeout_seconds,
                 "template": _migration_template(ctx)},
    }]
