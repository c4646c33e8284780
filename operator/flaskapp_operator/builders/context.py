"""What every builder receives: the app's identity, its parsed spec, its tuning and where things listen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..api import FlaskAppSpec
from ..naming import child_name, image_version
from ..tuning import Tuning

REDIS_PORT = 6379
POOLER_PORT = 6432  # PgBouncer's default
REDIS_SECRET_SUFFIX = "redis"  # the managed Redis' password and URLs
MEMCACHED_PORT = 11211
MEMCACHED_COMPONENT = "memcached"
NGINX_PORT = 8080  # the unprivileged nginx image cannot bind below 1024
STATIC_ROOT = "/var/www/static"


@dataclass(frozen=True)
class Addresses:
    """Where processes listen and find each other. In a cluster these are Service names; the workload
    tests pass loopback ports and local directories instead, so the very same templates run locally."""

    gunicorn_bind: str
    nginx_listen: str
    upstream: str
    redis_cache: str
    redis_broker: str
    static_root: str = STATIC_ROOT
    runtime_dir: str = "/tmp"
    mime_types: str = "/etc/nginx/mime.types"
    gunicorn_config_dir: str = "/etc/flaskapp/gunicorn"
    celery_probe_dir: str = "/etc/flaskapp/celery"
    pooler: str = "127.0.0.1:6432"  # where the app finds PgBouncer (spec.database.pooler)
    memcached: str = "127.0.0.1:11211"  # where the app finds memcached (spec.redis.cache.engine)
    pooler_listen_port: int = 6432
    pooler_config_dir: str = "/etc/flaskapp/pgbouncer"
    # Inside a pod, between a server and its exporter sidecar (monitoring).
    statsd: str = "127.0.0.1:9125"  # gunicorn -> statsd_exporter, UDP
    nginx_status_listen: str = "127.0.0.1:8081"  # nginx stub_status, for nginx-prometheus-exporter
    access_log_syslog: str = "127.0.0.1:5531"  # nginx access log -> nginxlog-exporter, UDP syslog

    def redis_port(self, component: str) -> int:
        """The port a Redis listens on in its own pod (its Service's port in a cluster)."""
        address = self.redis_cache if component == "redis-cache" else self.redis_broker
        return int(address.rsplit(":", 1)[1])

    @classmethod
    def in_cluster(cls, name: str, namespace: str, web_port: int) -> "Addresses":
        def svc(component: str, port: int) -> str:
            return f"{child_name(name, component)}.{namespace}.svc:{port}"

        return cls(gunicorn_bind=f"0.0.0.0:{web_port}", nginx_listen=str(NGINX_PORT),
                   upstream=svc("web", web_port), redis_cache=svc("redis-cache", REDIS_PORT),
                   redis_broker=svc("redis-broker", REDIS_PORT), pooler=svc("pooler", POOLER_PORT),
                   memcached=svc(MEMCACHED_COMPONENT, MEMCACHED_PORT))


@dataclass(frozen=True)
class AppRef:
    name: str
    namespace: str
    uid: Optional[str] = None  # unknown when rendering a file outside a cluster: no ownerReferences
    generation: Optional[int] = None


@dataclass(frozen=True)
class Context:
    app: AppRef
    spec: FlaskAppSpec
    tuning: Tuning
    addresses: Addresses
    redis_password: str
    # Whether the cluster serves monitoring.coreos.com/v1 (PodMonitor, PrometheusRule). The CLI assumes so.
    monitoring_api: bool = True
    # Whether the cluster serves keda.sh/v1alpha1 (ScaledObject): queue-length autoscaling. The CLI assumes so.
    keda_api: bool = True
    gateway_api: bool = True  # whether the cluster serves Gateway API's HTTPRoute (spec.route)
    # The database URL from the user's Secret, which configures PgBouncer (spec.database.pooler); read by the
    # operator, given to the CLI with --database-url.
    database_url: Optional[str] = None

    @property
    def name(self) -> str:
        return self.app.name

    @property
    def namespace(self) -> str:
        return self.app.namespace

    @property
    def version(self) -> Optional[str]:
        return image_version(self.spec.image)

    @property
    def uses_broker(self) -> bool:
        """Whether anything consumes or schedules tasks: without worker pools or beat there is no broker."""
        return bool(self.spec.worker_pools or self.spec.beat.enabled)

    @property
    def runs_flower(self) -> bool:
        """Flower (the Celery exporter) runs where monitoring is on and anything uses Celery."""
        return self.spec.monitoring.enabled and self.uses_broker

    @property
    def celery_queues(self) -> list[str]:
        """Every queue a worker pool consumes (Celery's default `celery` when none names one)."""
        return sorted({q for pool in self.spec.worker_pools for q in (pool.queues or ["celery"])} or {"celery"})

    @property
    def redis_components(self) -> tuple[str, ...]:
        """The managed Redis instances this app runs."""
        if self.spec.redis.mode != "managed":
            return ()
        cache = ("redis-cache",) if self.spec.redis.cache.engine == "redis" else ()
        return cache + (("redis-broker",) if self.uses_broker else ())

    @property
    def memcached(self) -> bool:
        """Whether the cache is a managed memcached (spec.redis.cache.engine)."""
        return self.spec.redis.mode == "managed" and self.spec.redis.cache.engine == "memcached"

    def child(self, suffix: str = "") -> str:
        return child_name(self.app.name, suffix)
