"""Nginx in front of gunicorn: static files from disk, gzip, micro-cache, buffering (tuning.md)."""

from __future__ import annotations

from ..api import NGINX_UPSTREAM_IDLE_SECONDS
from ..templates import render_template
from .common import (ROLLING_UPDATE, bounded, checksum, deployment, drain_before_stop, http_probe, metadata,
                     resources, restricted_container_security, restricted_pod_security, pod_spec, service, tcp_probe,
                     tmp_volume)
from .context import NGINX_PORT, Context
from .monitoring import ACCESS_LOG_TAG, config_volume, monitoring_configmap, nginx_sidecars

NGINX_USER = 101  # the nginx-unprivileged image's user
# The app's static files, copied (and gzipped beside) at pod start.
STATIC_SIZE_LIMIT = "1Gi"
# The micro-cache (max_size=256m in nginx.conf.j2) and the buffers of large bodies nginx spools to disk
# (client bodies up to client_max_body_size, responses beyond proxy_buffers).
NGINX_TMP_SIZE_LIMIT = "1Gi"
STATIC_VOLUME_MOUNT = "/var/www/static"
# A request carrying any of these (or one of nginx.microCacheBypassHeaders) is personal: it bypasses the
# micro-cache and its answer is never stored.
PERSONAL_HEADERS = ("Cookie", "Authorization")
# How long, and for how many requests, nginx reuses one connection to the web Service before opening a
# new one (which kube-proxy sends to a random ready pod): new pods share the load within seconds, at the
# cost of one in-cluster TCP handshake per 20 requests. Measured: with connections living 5 s only, a new
# pod of three served 9 % of 1,500 requests (the e2e suite's share check).
UPSTREAM_CONNECTION_LIFETIME_SECONDS = 5
UPSTREAM_CONNECTION_REQUESTS = 20
# Text types worth compressing, above gzip_min_length; `gzip -k` keeps the original beside the .gz.
PRECOMPRESS = ("find {root} -type f \\( -name '*.css' -o -name '*.js' -o -name '*.svg' -o -name '*.json' "
               "-o -name '*.html' -o -name '*.txt' -o -name '*.xml' -o -name '*.map' \\) -size +1k "
               "-exec gzip -9 -k -f {{}} \\;")


def nginx_conf(ctx: Context) -> str:
    n, a, t = ctx.spec.nginx, ctx.addresses, ctx.tuning
    return render_template(
        "nginx.conf.j2",
        app=ctx.name, worker_processes=t.nginx_worker_processes, runtime_dir=a.runtime_dir,
        mime_types=a.mime_types, listen=a.nginx_listen, upstream=a.upstream,
        # Idle connections kept per nginx worker: enough for every gunicorn thread of one web pod.
        upstream_keepalive=max(8, t.web.workers * t.web.threads),
        upstream_connection_lifetime_seconds=UPSTREAM_CONNECTION_LIFETIME_SECONDS,
        upstream_connection_requests=UPSTREAM_CONNECTION_REQUESTS, upstream_idle_seconds=NGINX_UPSTREAM_IDLE_SECONDS,
        static_url_path=n.static_url_path, static_root=a.static_root,
        static_max_age_seconds=n.static_max_age_seconds, static_revalidate_seconds=n.static_revalidate_seconds,
        fingerprint_pattern=n.fingerprint_pattern, gzip=n.gzip, gzip_level=n.gzip_level,
        personal_header_variables=[f"$http_{h.lower().replace('-', '_')}"
                                   for h in (*PERSONAL_HEADERS, *n.micro_cache_bypass_headers)],
        micro_cache_seconds=n.micro_cache_seconds, grace_seconds=n.micro_cache_grace_seconds,
        stale_if_error_seconds=n.micro_cache_stale_if_error_seconds,
        trusted_proxies=n.trusted_proxies, client_max_body_size=n.client_max_body_size,
        # nginx waits a little longer than gunicorn's own worker timeout, so gunicorn's error wins.
        proxy_read_timeout=t.web.timeout_seconds + 5,
        monitoring=ctx.spec.monitoring.enabled, status_listen=a.nginx_status_listen,
        access_log_syslog=a.access_log_syslog, access_log_tag=ACCESS_LOG_TAG,
        hit_sampling=ctx.spec.monitoring.cache_hit_sampling,
    )


COPY_STATIC = ('if [ -d "$1" ]; then exec cp -R "$1/." "$2/"; fi; '
               'echo "flaskapp: $1 is not a directory in the app image: nginx serves no static files" >&2')


def nginx_objects(ctx: Context) -> list[dict]:
    n = ctx.spec.nginx
    conf = nginx_conf(ctx)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": metadata(ctx, ctx.child("nginx-conf"), "nginx"), "data": {"nginx.conf": conf}}
    copy_static = {
        # Static files live in the app image; copy them to a volume nginx serves from disk. An image without the
        # directory (an API with no static files) starts nginx with none, saying so in this container's log.
        # The paths are arguments, never part of the script.
        "name": "copy-static",
        "image": ctx.spec.image,
        "imagePullPolicy": ctx.spec.image_pull_policy,
        "command": ["sh", "-c", COPY_STATIC, "copy-static", n.static_dir.rstrip("/") or "/", STATIC_VOLUME_MOUNT],
        "resources": bounded({"cpu": "50m", "memory": "64Mi"}),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "static", "mountPath": STATIC_VOLUME_MOUNT}],
    }
    init_containers = [copy_static]
    if n.gzip:
        # Compress text assets once at pod start, at the best level; gzip_static then sends the .gz
        # from disk instead of compressing on every request (nginx ngx_http_gzip_static_module).
        init_containers.append({
            "name": "precompress-static",
            "image": n.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", PRECOMPRESS.format(root=STATIC_VOLUME_MOUNT)],
            "resources": bounded({"cpu": "50m", "memory": "32Mi"}),
            "securityContext": restricted_container_security(),
            "volumeMounts": [{"name": "static", "mountPath": STATIC_VOLUME_MOUNT}],
        })
    container = {
        "name": "nginx",
        "image": n.image,
        "ports": [{"name": "http", "containerPort": NGINX_PORT, "protocol": "TCP"}],
        "resources": resources(n.resources, "nginx"),
        "readinessProbe": http_probe("/nginx-health", "http", period=5),
        # Alive while it accepts connections; ready while it answers its health location.
        "livenessProbe": tcp_probe("http", period=10, failures=6),
        "lifecycle": drain_before_stop(),
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf", "readOnly": True},
            {"name": "static", "mountPath": STATIC_VOLUME_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [{"name": "conf", "configMap": {"name": ctx.child("nginx-conf")}},
               tmp_volume("static", STATIC_SIZE_LIMIT), tmp_volume("tmp", NGINX_TMP_SIZE_LIMIT)]
    sidecars = nginx_sidecars(ctx)
    if sidecars:
        volumes.append(config_volume(ctx))
    # The app image is pulled for the static files, hence its pull secrets.
    pod = pod_spec(ctx, restricted_pod_security(NGINX_USER), [container, *sidecars], volumes, init_containers=init_containers,
                   pull_secrets=True)
    return [configmap,
            deployment(ctx, "nginx", pod, replicas=n.replicas, strategy=ROLLING_UPDATE,
                       checksum_value=checksum(conf, ctx.spec.image, *monitoring_configmap(ctx))),
            service(ctx, "nginx", 80, "http")]
