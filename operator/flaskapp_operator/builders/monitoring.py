"""Metrics of every tier with no change to the app's code (`spec.monitoring`).

    gunicorn --statsd-host--> statsd_exporter sidecar          (requests, latency histogram, status codes)
    in-process agent      --> the same statsd_exporter         (per endpoint / per task: latency, queries,
                                                                 SQL time, cache hits, N+1 suspects)
    nginx stub_status      --> nginx-prometheus-exporter sidecar (connections, requests)
    nginx access log (JSON over syslog) --> nginxlog-exporter sidecar (response/upstream time, cache outcome)
    each managed Redis     --> redis_exporter sidecar            (memory, evictions, hits, Celery queue lengths)
    Celery workers' events --> Flower Deployment /metrics        (tasks, failures, retries, runtime, workers)

Every exporter listens on a port named `<what>-metrics`; one PodMonitor scrapes them all, and the
NetworkPolicies open those ports to `monitoring.scrapeFrom` only.
"""

from __future__ import annotations

import yaml

from ..naming import INSTANCE_LABEL, NAME_LABEL
from .common import (RECREATE, bounded, deployment, http_probe, metadata, restricted_container_security,
                     restricted_pod_security, pod_spec, tcp_probe, tmp_volume)
from .config import REDIS_SECRET_SUFFIX, redis_url_env
from .alerts import prometheus_rule
from .context import Context
from .dashboard import dashboard_configmap

STATSD_METRICS_PORT = 9102  # statsd_exporter's default web port
NGINX_METRICS_PORT = 9113  # nginx-prometheus-exporter's default
ACCESS_METRICS_PORT = 4040  # prometheus-nginxlog-exporter's default
REDIS_METRICS_PORT = 9121  # redis_exporter's default
FLOWER_PORT = 5555  # Flower's default
METRICS_PORTS = {"statsd-metrics": STATSD_METRICS_PORT, "nginx-metrics": NGINX_METRICS_PORT,
                 "access-metrics": ACCESS_METRICS_PORT, "redis-metrics": REDIS_METRICS_PORT,
                 "celery-metrics": FLOWER_PORT}
CONFIG_DIR = "/etc/flaskapp/monitoring"
STATSD_MAPPING_FILE = "statsd-mapping.yaml"
ACCESS_LOG_EXPORTER_FILE = "nginxlog-exporter.yaml"
ACCESS_LOG_TAG = "nginx"
EXPORTER_USER = 65534  # nobody: for Flower, whose pod runs no app code
# Latency buckets (seconds) shared by gunicorn's and nginx's histograms, so their quantiles compare.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
QUERY_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200)  # statements per request or task


def enabled(ctx: Context) -> bool:
    return ctx.spec.monitoring.enabled


def _exporter(name: str, image: str, args: list[str], port_name: str, *, memory: str = "64Mi",
              cpu: str = "10m", mounts: tuple[dict, ...] = (), env: tuple[dict, ...] = ()) -> dict:
    """A container of `image` run with `args` (its image's entrypoint), serving /metrics on `port_name`."""
    container = {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "args": args,
        "ports": [{"name": port_name, "containerPort": METRICS_PORTS[port_name], "protocol": "TCP"}],
        "resources": bounded({"cpu": cpu, "memory": memory}),
        # Liveness only: an exporter's trouble must not take its server out of the Service (a failed
        # scrape shows as up == 0 in Prometheus instead).
        "livenessProbe": http_probe("/metrics", port_name, period=30, failures=4),
        "securityContext": restricted_container_security(),
    }
    if env:
        container["env"] = list(env)
    if mounts:
        container["volumeMounts"] = list(mounts)
    return container


def config_volume(ctx: Context) -> dict:
    return {"name": "monitoring", "configMap": {"name": ctx.child("monitoring")}}


_CONFIG_MOUNT = {"name": "monitoring", "mountPath": CONFIG_DIR, "readOnly": True}


# -- gunicorn ---------------------------------------------------------------------------------------------

def statsd_mapping() -> str:
    """gunicorn's statsd names (gunicorn docs, "Instrumentation") as Prometheus metrics. Timers arrive in
    milliseconds; statsd_exporter observes them in seconds."""
    mappings = [
        {"match": "gunicorn.request.duration", "name": "gunicorn_request_duration_seconds",
         "observer_type": "histogram", "histogram_options": {"buckets": list(LATENCY_BUCKETS)}},
        {"match": "gunicorn.requests", "name": "gunicorn_requests_total"},
        {"match": "gunicorn.request.status.*", "name": "gunicorn_responses_total", "labels": {"status": "$1"}},
        {"match": "gunicorn.workers", "name": "gunicorn_workers"},
        {"match": "gunicorn.log.*", "name": "gunicorn_log_entries_total", "labels": {"level": "$1"}},
        *agent_mappings(),
    ]
    return yaml.safe_dump({"mappings": mappings}, sort_keys=False)


def agent_mappings() -> list[dict]:
    """The in-process agent's statsd lines (operator/flaskapp_agent): DogStatsD tags become labels (route =
    the Flask URL rule, method, status class; task = the Celery task name). Timers arrive in milliseconds."""
    def histogram(match: str, name: str, buckets) -> dict:
        return {"match": match, "name": name, "observer_type": "histogram",
                "histogram_options": {"buckets": list(buckets)}}

    return [
        histogram("flaskapp.request.duration", "flaskapp_request_duration_seconds", LATENCY_BUCKETS),
        histogram("flaskapp.request.sql_duration", "flaskapp_request_sql_duration_seconds", LATENCY_BUCKETS),
        histogram("flaskapp.request.queries", "flaskapp_request_queries", QUERY_BUCKETS),
        {"match": "flaskapp.request.n_plus_one", "name": "flaskapp_request_n_plus_one_total"},
        {"match": "flaskapp.cache.lookups", "name": "flaskapp_cache_lookups_total"},
        histogram("flaskapp.task.duration", "flaskapp_task_duration_seconds", TASK_BUCKETS),
        histogram("flaskapp.task.sql_duration", "flaskapp_task_sql_duration_seconds", TASK_BUCKETS),
        histogram("flaskapp.task.queries", "flaskapp_task_queries", QUERY_BUCKETS),
        {"match": "flaskapp.task.n_plus_one", "name": "flaskapp_task_n_plus_one_total"},
        {"match": "flaskapp.task.retries", "name": "flaskapp_task_retries_total"},
        {"match": "flaskapp.agent.engines_lowered", "name": "flaskapp_agent_engines_lowered_total"},
        {"match": "flaskapp.agent.unbounded_engines", "name": "flaskapp_agent_unbounded_engines_total"},
    ]


def statsd_sidecars(ctx: Context) -> list[dict]:
    """statsd_exporter beside gunicorn (its --statsd-host) and the agent of web and worker pods."""
    if not enabled(ctx):
        return []
    return [_exporter("statsd-exporter", ctx.spec.monitoring.images.statsd_exporter, [
        f"--statsd.listen-udp={ctx.addresses.statsd}", "--statsd.listen-tcp=",
        f"--statsd.mapping-config={CONFIG_DIR}/{STATSD_MAPPING_FILE}",
        f"--web.listen-address=:{STATSD_METRICS_PORT}"], "statsd-metrics", mounts=(_CONFIG_MOUNT,))]


# -- nginx ------------------------------------------------------------------------------------------------

def access_log_exporter_config(ctx: Context) -> str:
    """prometheus-nginxlog-exporter reads the JSON access log nginx sends over syslog (its README,
    "Sidecar"); the micro-cache outcome becomes a label."""
    return yaml.safe_dump({
        "listen": {"port": ACCESS_METRICS_PORT, "address": "0.0.0.0", "metrics_endpoint": "/metrics"},
        "namespaces": [{
            "name": "nginx", "parser": "json", "metrics_override": {"prefix": "nginx"},
            "source": {"syslog": {"listen_address": f"udp://{ctx.addresses.access_log_syslog}",
                                  "format": "rfc3164", "tags": [ACCESS_LOG_TAG]}},
            "relabel_configs": [{"target_label": "cache", "from": "cache"}],
            "histogram_buckets": list(LATENCY_BUCKETS),
        }],
    }, sort_keys=False)


def nginx_sidecars(ctx: Context) -> list[dict]:
    if not enabled(ctx):
        return []
    images = ctx.spec.monitoring.images
    return [
        _exporter("nginx-exporter", images.nginx_exporter, [
            f"--nginx.scrape-uri=http://{ctx.addresses.nginx_status_listen}/stub_status",
            f"--web.listen-address=:{NGINX_METRICS_PORT}"], "nginx-metrics"),
        _exporter("access-log-exporter", images.nginx_log_exporter, [
            f"-config-file={CONFIG_DIR}/{ACCESS_LOG_EXPORTER_FILE}"], "access-metrics", mounts=(_CONFIG_MOUNT,)),
    ]


# -- Redis ------------------------------------------------------------------------------------------------

def redis_sidecars(ctx: Context, component: str) -> list[dict]:
    if not enabled(ctx):
        return []
    args = [f"--redis.addr=redis://127.0.0.1:{ctx.addresses.redis_port(component)}",
            f"--web.listen-address=:{REDIS_METRICS_PORT}"]
    if component == "redis-broker":
        # Celery's Redis transport keeps each queue as a list named after it, in the broker URL's db 0.
        args.append("--check-single-keys=" + ",".join(f"db0={q}" for q in ctx.celery_queues))
    password = {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": ctx.child(REDIS_SECRET_SUFFIX), "key": "password"}}}
    return [_exporter("redis-exporter", ctx.spec.monitoring.images.redis_exporter, args, "redis-metrics",
                      env=(password,))]


# -- Celery -----------------------------------------------------------------------------------------------

def flower_objects(ctx: Context) -> list[dict]:
    """Flower consumes the workers' task events (celery worker --task-events) and serves /metrics. Celery
    reads the broker from CELERY_BROKER_URL: the password stays off the command line."""
    if not ctx.runs_flower:
        return []
    broker_env = next(e for e in redis_url_env(ctx) if e["name"] == "CELERY_BROKER_URL")
    container = _exporter("flower", ctx.spec.monitoring.images.flower, ["flower", f"--port={FLOWER_PORT}",
                                                                         "--address=0.0.0.0", "--db=/tmp/flower",
                                                                         "--purge_offline_workers=300"],
                          "celery-metrics", memory="256Mi", cpu="50m", env=(broker_env,),
                          mounts=({"name": "tmp", "mountPath": "/tmp"},))
    container["command"] = ["celery"]  # the image's entrypoint varies between Flower images
    container["readinessProbe"] = http_probe("/healthcheck", "celery-metrics", period=15)
    # Alive while it accepts connections; ready while it answers its health check (a different check).
    container["livenessProbe"] = tcp_probe("celery-metrics", period=30, failures=4)
    # /tmp: the only writable place under the read-only root filesystem (Flower's --db, if ever persistent).
    pod = pod_spec(ctx, restricted_pod_security(EXPORTER_USER), [container], [tmp_volume()])
    # One Flower per app: two would each see every event, and report every task twice.
    return [deployment(ctx, "flower", pod, replicas=1, strategy=RECREATE, versioned=False)]


# -- the monitors -----------------------------------------------------------------------------------------

def monitoring_configmap(ctx: Context) -> list[dict]:
    if not enabled(ctx):
        return []
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(ctx, ctx.child("monitoring"), "monitoring"),
             "data": {STATSD_MAPPING_FILE: statsd_mapping(),
                      ACCESS_LOG_EXPORTER_FILE: access_log_exporter_config(ctx)}}]


def pod_monitor(ctx: Context, meta: dict) -> dict:
    """Every exporter port of the app's pods; `tier` and `flaskapp` labels from the pods' own labels."""
    def relabelings() -> list[dict]:
        return [{"sourceLabels": [f"__meta_kubernetes_pod_label_app_kubernetes_io_{source}"], "targetLabel": target}
                for source, target in (("instance", "flaskapp"), ("component", "tier"))]

    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta, "spec": {
        "selector": {"matchLabels": {NAME_LABEL: "flaskapp", INSTANCE_LABEL: ctx.name}},
        "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": "30s", "relabelings": relabelings()}
                                for port in METRICS_PORTS],
    }}


def monitor_objects(ctx: Context) -> list[dict]:
    """The exporters' config, Flower, and what a Prometheus Operator and Grafana pick up. The PodMonitor
    and PrometheusRule only where their CRDs are served (`Context.monitoring_api`)."""
    if not enabled(ctx):
        return []
    def meta(suffix: str) -> dict:
        out = metadata(ctx, ctx.child(suffix), "monitoring")
        out["labels"].update(ctx.spec.monitoring.labels)
        return out

    out = [*monitoring_configmap(ctx), *flower_objects(ctx), dashboard_configmap(ctx, meta("dashboard"))]
    if ctx.monitoring_api:
        out += [pod_monitor(ctx, meta("")), prometheus_rule(ctx, meta(""))]
    return out
