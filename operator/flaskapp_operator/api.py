"""The FlaskApp API (flaskapp.dev/v1alpha1): the one source of truth for the CRD and the parser.

`make manifests` generates manifests/crd/ from these classes (crd.py); a unit test fails when the
committed CRD is stale. Field names are snake_case here and camelCase in the API.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from kubernetes.utils.quantity import parse_quantity

from .naming import OPERATOR_LABELS
from .nginx_syntax import URL_PATH_PREFIX, URL_PATH_PREFIX_MESSAGE, pcre_problem
from .schema import IntOrAuto, Quantity, Rule, field, rules

GROUP = "flaskapp.dev"
VERSION = "v1alpha1"
KIND = "FlaskApp"
PLURAL = "flaskapps"
SINGULAR = "flaskapp"
SHORT_NAMES = ("fapp",)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
SIZE = r"^[0-9]+[kmgKMG]?$"  # nginx size syntax (client_max_body_size)
# An image reference as the distribution/reference grammar defines it: [registry[:port]/]path[:tag][@digest]
# (github.com/distribution/reference, regexp.go). No whitespace, lowercase path components.
IMAGE_REFERENCE = (r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?"
                   r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
                   r"(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})?$")
# An absolute path without "." or ".." segments (RE2 has no lookahead: each segment is spelled out).
ABSOLUTE_PATH = r"^(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+/?$"
# Child names are `<app>-<suffix>`; the only suffixes with a dash that another app's name plus one of its
# own suffixes can spell are the worker pools' `worker-<pool>` (app `shop` pool `web` = app `shop-worker`'s
# web tier). A FlaskApp name without a `-worker` segment makes such collisions impossible.
NAME_RULE_CEL = "!self.metadata.name.matches('-worker(-|$)')"
# Every child is `<name>-<suffix>` and most are Services, whose names are DNS-1035 labels (a letter first, no dot);
# the name is also the value of every child's app.kubernetes.io/instance label (at most 63 characters); and the
# app's ServiceAccount takes the name, which must not be the namespace's own `default`.
NAME_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_LABEL_CEL = (f"self.metadata.name.matches('{NAME_LABEL_PATTERN}') && size(self.metadata.name) <= 63 && "
                  "self.metadata.name != 'default'")
NAME_LABEL_MESSAGE = ("metadata.name must be a DNS-1035 label of at most 63 characters (lowercase letters, digits and "
                      "'-', starting with a letter: it names Services and is a label value of every child), and not "
                      "'default' (the namespace's own ServiceAccount)")
NAME_RULE_PATTERN = r"-worker(-|$)"
NAME_RULE_MESSAGE = ("metadata.name must not contain a '-worker' segment: its children could take the names "
                     "of another FlaskApp's worker pools")
# Below this Redis cannot hold its own process and the pod's sandbox, let alone data (about 3 MiB resident
# empty; maxmemory is 75 % of the limit).
REDIS_MIN_MEMORY = "8Mi"
# Where ingress controllers and nginx's own pods live in most clusters: the private address ranges
# (RFC 1918), carrier-grade NAT space some CNIs use (RFC 6598) and IPv6 unique local addresses (RFC 4193).
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
# Requests carrying one of these are someone's own: never answered from, nor stored in, the micro-cache.
API_KEY_HEADERS = ("X-Api-Key", "Api-Key", "X-Auth-Token", "X-Access-Token")
HEADER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]*$"  # nginx ignores header names with underscores by default


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value)  # strict: no host bits set, as gunicorn and nginx read it
    except ValueError:
        return False
    return True


def _within(value: Optional[str], low: str, high: str) -> bool:
    return value is None or parse_quantity(low) <= parse_quantity(value) <= parse_quantity(high)


# Sizes no container runs with: "1500m" of memory is 1.5 bytes, "1.5Gi" of CPU 1.6 billion cores.
@rules(
    Rule("!has(self.cpu) || (quantity(string(self.cpu)).compareTo(quantity('1m')) >= 0 && "
         "quantity(string(self.cpu)).compareTo(quantity('10000')) <= 0)",
         "cpu must be between 1m and 10000 cores", lambda r: _within(r.cpu, "1m", "10000"), ".cpu"),
    Rule("!has(self.memory) || (quantity(string(self.memory)).compareTo(quantity('1Mi')) >= 0 && "
         "quantity(string(self.memory)).compareTo(quantity('64Ti')) <= 0)",
         "memory must be between 1Mi and 64Ti (a suffix m means thousandths of a byte)",
         lambda r: _within(r.memory, "1Mi", "64Ti"), ".memory"),
)
@dataclass(frozen=True, kw_only=True)
class ResourceAmounts:
    cpu: Optional[Quantity] = field("CPU, e.g. 500m or 2. The tuning engine sizes processes from it.",
                                    default=None)
    memory: Optional[Quantity] = field("Memory, e.g. 512Mi.", default=None)


def _not_above(request: Optional[str], limit: Optional[str]) -> bool:
    return request is None or limit is None or parse_quantity(request) <= parse_quantity(limit)


@rules(
    Rule("!has(self.requests.cpu) || !has(self.limits.cpu) || "
         "quantity(string(self.requests.cpu)).compareTo(quantity(string(self.limits.cpu))) <= 0",
         "requests.cpu must not exceed limits.cpu",
         lambda res: _not_above(res.requests.cpu, res.limits.cpu), ".requests.cpu"),
    Rule("!has(self.requests.memory) || !has(self.limits.memory) || "
         "quantity(string(self.requests.memory)).compareTo(quantity(string(self.limits.memory))) <= 0",
         "requests.memory must not exceed limits.memory",
         lambda res: _not_above(res.requests.memory, res.limits.memory), ".requests.memory"),
)
@dataclass(frozen=True, kw_only=True)
class Resources:
    requests: ResourceAmounts = field("Resources the scheduler reserves for the container.",
                                      default=ResourceAmounts)
    limits: ResourceAmounts = field("Upper bounds enforced on the container. When set, the CPU limit "
                                    "(not the node's CPU count) drives worker counts.", default=ResourceAmounts)


@rules(
    Rule("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas",
         lambda a: a.min_replicas <= a.max_replicas, ".minReplicas"),
)
@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    min_replicas: int = field("Fewest replicas the HorizontalPodAutoscaler keeps.", default=1,
                              minimum=1, maximum=1000, json="minReplicas")
    max_replicas: int = field("Most replicas the HorizontalPodAutoscaler may run. The connection budget "
                              "is computed for this maximum plus the rolling-update surge.",
                              minimum=1, maximum=1000, json="maxReplicas")
    target_cpu_utilization: int = field("Average CPU utilisation (percent of requests) the autoscaler "
                                        "aims for.", default=70, minimum=10, maximum=100,
                                        json="targetCPUUtilizationPercentage")



@rules(
    *Autoscaling.__rules__,  # type: ignore[attr-defined]
    Rule("self.minReplicas >= 1 || has(self.queueLength)",
         "minReplicas 0 (scale to zero) needs queueLength: a CPU autoscaler cannot wake a pool that has no pods",
         lambda a: a.min_replicas >= 1 or a.queue_length is not None, ".minReplicas"),
)
@dataclass(frozen=True, kw_only=True)
class PoolAutoscaling(Autoscaling):
    min_replicas: int = field("Fewest replicas; 0 (scale to zero) with queueLength.", default=1,
                              minimum=0, maximum=1000, json="minReplicas")
    queue_length: Optional[int] = field(
        "Queued tasks per pod to aim for: scale on the backlog of the pool's queues (the broker's Redis lists) with a "
        "KEDA ScaledObject instead of a CPU HorizontalPodAutoscaler. Needs KEDA installed (keda.sh CRDs) and the "
        "managed broker.", default=None, minimum=1, maximum=100000, json="queueLength")
    cooldown_seconds: int = field("With queueLength: seconds after the queues were last active before scaling to "
                                  "minReplicas (KEDA cooldownPeriod).", default=300, minimum=0, maximum=86400)
    polling_seconds: int = field("With queueLength: how often KEDA reads the queue lengths (pollingInterval).",
                                 default=15, minimum=1, maximum=3600)


# Names the operator gives its own containers, volumes and mounts in the pods it writes: a user's sidecar,
# volume or mount may not take them (a unit test checks these lists against every rendered pod).
RESERVED_CONTAINER_NAMES = ("gunicorn", "celery", "beat", "migrate", "nginx", "copy-static", "precompress-static",
                            "redis", "statsd-exporter", "nginx-exporter", "access-log-exporter", "redis-exporter",
                            "flower", "pgbouncer", "memcached")
RESERVED_VOLUME_NAMES = ("tmp", "gunicorn-conf", "celery-probe", "monitoring", "conf", "static", "data", "auth",
                         "pgbouncer", "flaskapp-agent")
RESERVED_MOUNT_PATHS = ("/tmp", "/etc/flaskapp", "/etc/nginx/nginx.conf", "/var/www/static")
# The labels that select a tier's pods and say who manages them, and the annotation that rolls pods on a
# config change.
RESERVED_LABELS = OPERATOR_LABELS
CONFIG_CHECKSUM_ANNOTATION = f"{GROUP}/config-checksum"
RESERVED_ANNOTATIONS = (CONFIG_CHECKSUM_ANNOTATION,)
# A Celery queue name that every reader splits the same way: no comma (Celery's -Q list separator), no space, not
# empty, no glob character (redis_exporter's --check-keys takes patterns).
QUEUE_NAME = r"^[A-Za-z0-9._:-]+$"
NGINX_UPSTREAM_IDLE_SECONDS = 60  # nginx.conf's upstream keepalive_timeout
POD_LIST_MAX = 16  # bounds each list (and the API server's cost estimate of the rules over it)


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _reserved_mount(path: str) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in RESERVED_MOUNT_PATHS)


_MOUNT_CEL = " || ".join(f"m.mountPath == '{r}' || m.mountPath.startsWith('{r}/')" for r in RESERVED_MOUNT_PATHS)


@rules(
    # Written as key lookups, not loops over the keys: a map's keys have no length bound the API server can use
    # to estimate a loop's cost.
    Rule("!has(self.labels) || !(" + " || ".join(f"'{k}' in self.labels" for k in RESERVED_LABELS) + ")",
         f"labels must not set the operator's own labels ({', '.join(RESERVED_LABELS)})",
         lambda p: not set(p.labels) & set(RESERVED_LABELS), ".labels"),
    Rule("!has(self.annotations) || !(" + " || ".join(f"'{k}' in self.annotations" for k in RESERVED_ANNOTATIONS) + ")",
         f"annotations must not set the operator's own ({', '.join(RESERVED_ANNOTATIONS)})",
         lambda p: not set(p.annotations) & set(RESERVED_ANNOTATIONS), ".annotations"),
    Rule(f"!has(self.volumes) || self.volumes.all(v, !(v.name in {_cel_list(RESERVED_VOLUME_NAMES)}))",
         f"volume names {', '.join(RESERVED_VOLUME_NAMES)} are the operator's own",
         lambda p: not {v.get("name") for v in p.volumes} & set(RESERVED_VOLUME_NAMES), ".volumes"),
    Rule(f"!has(self.sidecars) || self.sidecars.all(c, !(c.name in {_cel_list(RESERVED_CONTAINER_NAMES)}))",
         f"container names {', '.join(RESERVED_CONTAINER_NAMES)} are the operator's own",
         lambda p: not {c.get("name") for c in p.sidecars} & set(RESERVED_CONTAINER_NAMES), ".sidecars"),
    Rule(f"!has(self.initContainers) || self.initContainers.all(c, !(c.name in {_cel_list(RESERVED_CONTAINER_NAMES)}))",
         f"container names {', '.join(RESERVED_CONTAINER_NAMES)} are the operator's own",
         lambda p: not {c.get("name") for c in p.init_containers} & set(RESERVED_CONTAINER_NAMES), ".initContainers"),
    Rule(f"!has(self.volumeMounts) || self.volumeMounts.all(m, !({_MOUNT_CEL}))",
         f"volumeMounts must not use the operator's mount paths ({', '.join(RESERVED_MOUNT_PATHS)})",
         lambda p: not any(_reserved_mount(m.get("mountPath", "")) for m in p.volume_mounts), ".volumeMounts"),
)
@dataclass(frozen=True, kw_only=True)
class PodOverrides:
    """What a platform team sets on a tier's pods. In spec.pod: defaults every tier inherits; in a tier's own
    block: added to (maps, lists by name) or replacing (the rest) those defaults."""

    node_selector: dict[str, str] = field("Node labels the pods must run on (merged with spec.pod's; the tier's "
                                          "value wins for a key).", default=dict)
    tolerations: list[dict[str, Any]] = field("Taints the pods tolerate (added to spec.pod's).", default=list,
                                              max_items=POD_LIST_MAX, kubernetes="Toleration")
    affinity: Optional[dict[str, Any]] = field("Node and pod (anti-)affinity; replaces spec.pod's.", default=None,
                                               kubernetes="Affinity")
    topology_spread_constraints: list[dict[str, Any]] = field(
        "How the pods spread over nodes and zones; replaces spec.pod's and the default: a soft spread "
        "(ScheduleAnyway, maxSkew 1) over kubernetes.io/hostname and topology.kubernetes.io/zone for every tier "
        "that may run more than one pod.", default=list, max_items=POD_LIST_MAX,
        kubernetes="TopologySpreadConstraint")
    priority_class_name: Optional[str] = field("PriorityClass of the pods; replaces spec.pod's.", default=None,
                                               pattern=DNS_SUBDOMAIN, max_length=253)
    annotations: dict[str, str] = field("Pod annotations (service mesh injection, Vault agent, ...), merged with "
                                        "spec.pod's.", default=dict)
    labels: dict[str, str] = field("Pod labels (cost allocation, policies), merged with spec.pod's; the "
                                   "operator's app.kubernetes.io labels cannot be changed.", default=dict)
    volumes: list[dict[str, Any]] = field("Extra volumes of the pods (added to spec.pod's; same name: the tier's "
                                          "wins).", default=list, max_items=POD_LIST_MAX, list_map_key="name",
                                          kubernetes="Volume")
    volume_mounts: list[dict[str, Any]] = field(
        "Extra mounts of the tier's main container (gunicorn, celery, beat, the migration, nginx, redis), added "
        "to spec.pod's. The root filesystem is read-only: mount a volume where the app writes.", default=list,
        max_items=POD_LIST_MAX, kubernetes="VolumeMount")
    init_containers: list[dict[str, Any]] = field(
        "Containers run to completion before the pod's own (after spec.pod's).", default=list,
        max_items=POD_LIST_MAX, list_map_key="name", kubernetes="Container")
    sidecars: list[dict[str, Any]] = field("Containers run beside the main container (after spec.pod's).",
                                           default=list, max_items=POD_LIST_MAX, list_map_key="name",
                                           kubernetes="Container")
    automount_service_account_token: Optional[bool] = field(
        "Mount the ServiceAccount's token (the app calls the Kubernetes API, with the RBAC you grant the "
        "ServiceAccount). Default: not mounted.", default=None)


@dataclass(frozen=True, kw_only=True)
class WebProbe:
    path: Optional[str] = field("HTTP path (an answer below 400 passes); a TCP connect when unset.", default=None,
                                pattern=r"^/\S*$", max_length=1024)
    port: Optional[int] = field("Port; web.port when unset.", default=None, minimum=1, maximum=65535)
    initial_delay_seconds: int = field("Seconds before the first probe.", default=0, minimum=0, maximum=3600)
    period_seconds: int = field("Seconds between probes.", default=10, minimum=1, maximum=3600)
    timeout_seconds: int = field("Seconds a probe may take.", default=1, minimum=1, maximum=3600)
    failure_threshold: int = field("Consecutive failures that count.", default=3, minimum=1, maximum=1000)


@dataclass(frozen=True, kw_only=True)
class WebLivenessProbe(WebProbe):
    failure_threshold: int = field("Consecutive failures before the container is restarted.", default=6,
                                   minimum=1, maximum=1000)


@dataclass(frozen=True, kw_only=True)
class WebStartupProbe(WebProbe):
    period_seconds: int = field("Seconds between probes.", default=2, minimum=1, maximum=3600)
    failure_threshold: int = field("Consecutive failures before the container is restarted: period x this is "
                                   "the time the app gets to import and bind (default 2 min).", default=60,
                                   minimum=1, maximum=1000)


@dataclass(frozen=True, kw_only=True)
class WebProbes:
    readiness: WebProbe = field("Readiness: failing pods leave the Service. path defaults to web.healthCheckPath.",
                                default=WebProbe)
    liveness: WebLivenessProbe = field("Liveness: failing containers are restarted. Left out while it would be the "
                                       "same check as readiness (a busy pod must not be restarted): give it a "
                                       "path that proves the app is not wedged.", default=WebLivenessProbe)
    startup: WebStartupProbe = field("Startup: the other probes wait until it passes once.",
                                     default=WebStartupProbe)


_REPLICAS_XOR_AUTOSCALING = Rule(
    "!(has(self.replicas) && has(self.autoscaling))",
    "set either replicas or autoscaling, not both",
    lambda t: not (t.replicas is not None and t.autoscaling is not None), ".autoscaling")


@rules(
    Rule("self.workerClass != 'sync' || self.threads == 'auto' || self.threads == 1",
         "the sync worker class runs one thread per worker (gunicorn silently switches to gthread "
         "when threads > 1); use workerClass gthread",
         lambda g: g.worker_class != "sync" or g.threads in ("auto", 1), ".threads"),
    Rule("self.maxRequestsJitter <= self.maxRequests", "maxRequestsJitter must not exceed maxRequests",
         lambda g: g.max_requests_jitter <= g.max_requests, ".maxRequestsJitter"),
    Rule("self.gracefulTimeoutSeconds <= self.timeoutSeconds * 4",
         "gracefulTimeoutSeconds is unreasonably longer than timeoutSeconds (at most 4x)",
         lambda g: g.graceful_timeout_seconds <= g.timeout_seconds * 4, ".gracefulTimeoutSeconds"),
    # gunicorn closing an idle connection that nginx still holds for reuse makes nginx's next request on it fail
    # (a 502 for a non-idempotent one): keep-alive off, or longer than nginx keeps an idle upstream connection.
    Rule(f"self.keepaliveSeconds == 0 || self.keepaliveSeconds > {NGINX_UPSTREAM_IDLE_SECONDS}",
         f"keepaliveSeconds must be 0 (off) or above nginx's upstream idle timeout ({NGINX_UPSTREAM_IDLE_SECONDS} "
         "s), so that gunicorn never closes a connection nginx is about to reuse",
         lambda g: g.keepalive_seconds == 0 or g.keepalive_seconds > NGINX_UPSTREAM_IDLE_SECONDS, ".keepaliveSeconds"),
)
@dataclass(frozen=True, kw_only=True)
class Gunicorn:
    worker_class: str = field("Gunicorn worker class. gthread suits I/O-bound Flask apps; gevent needs "
                              "gevent in the image.", default="gthread", enum=("sync", "gthread", "gevent"))
    workers: IntOrAuto = field('Worker processes per pod: "auto" (2 x CPU cores + 1, cores from the '
                               'container) or a number.', default="auto", minimum=1, maximum=64)
    threads: IntOrAuto = field('Threads per worker (gthread): "auto" (2 x CPU cores, at least 2) or a '
                               'number.', default="auto", minimum=1, maximum=64)
    timeout_seconds: int = field("Workers silent for longer are killed and restarted.", default=30,
                                 minimum=1, maximum=3600)
    graceful_timeout_seconds: int = field("Time a worker gets to finish requests after a restart "
                                          "signal. Must stay below terminationGracePeriodSeconds.",
                                          default=30, minimum=1, maximum=3600)
    keepalive_seconds: int = field("Keep-alive for connections from nginx: 0 (off) or above nginx's upstream "
                                   "idle timeout (60 s) so gunicorn never closes first.", default=75,
                                   minimum=0, maximum=3600, json="keepaliveSeconds")
    max_requests: int = field("Restart a worker after this many requests (0 disables); limits leaks.",
                              default=1000, minimum=0, maximum=1000000)
    max_requests_jitter: int = field("Random extra requests per worker so restarts do not coincide.",
                                     default=100, minimum=0, maximum=1000000)
    preload: bool = field("Load the app before forking workers (saves memory; SQLAlchemy engines must "
                          "be disposed after fork).", default=False)


@rules(
    _REPLICAS_XOR_AUTOSCALING,
    Rule("!has(self.terminationGracePeriodSeconds) || "
         "self.gunicorn.gracefulTimeoutSeconds < self.terminationGracePeriodSeconds",
         "gunicorn.gracefulTimeoutSeconds must be below terminationGracePeriodSeconds, or Kubernetes "
         "kills workers mid-request",
         lambda w: w.termination_grace_period_seconds is None
         or w.gunicorn.graceful_timeout_seconds < w.termination_grace_period_seconds,
         ".terminationGracePeriodSeconds"),
)
@dataclass(frozen=True, kw_only=True)
class Web:
    replicas: Optional[int] = field("Fixed number of web pods (default 2). Mutually exclusive with "
                                    "autoscaling.", default=None, minimum=0, maximum=1000)
    autoscaling: Optional[Autoscaling] = field("Run a HorizontalPodAutoscaler instead of fixed replicas.",
                                               default=None)
    resources: Resources = field("CPU and memory of the gunicorn container.", default=Resources)
    gunicorn: Gunicorn = field("Gunicorn settings; numbers left at auto are derived from the CPU.",
                               default=Gunicorn)
    port: int = field("Port gunicorn binds inside the pod.", default=8000, minimum=1024, maximum=65535)
    health_check_path: Optional[str] = field("HTTP path for the readiness probe; a TCP check when unset.",
                                             default=None, pattern=r"^/")
    termination_grace_period_seconds: Optional[int] = field(
        "Pod termination grace period; derived from gunicorn.gracefulTimeoutSeconds when unset.",
        default=None, minimum=1, maximum=3600)
    probes: WebProbes = field("Readiness, liveness and startup probes of gunicorn.", default=WebProbes)
    pod: PodOverrides = field("Placement, metadata, volumes and extra containers of the web pods.",
                              default=PodOverrides)


@rules(_REPLICAS_XOR_AUTOSCALING)
@dataclass(frozen=True, kw_only=True)
class WorkerPool:
    name: str = field("Pool name, used in object names.", pattern=DNS_LABEL, max_length=20)
    queues: list[str] = field("Celery queues this pool consumes (default: celery): names of letters, digits and "
                              "._:-, as Celery's -Q (comma-separated), KEDA's listName and the exporter's key "
                              "list all read them the same way.", default=list, max_items=20,
                              item_pattern=QUEUE_NAME, item_max_length=200)
    concurrency: IntOrAuto = field('Prefork processes per pod: "auto" (one per CPU core of the container) '
                                   'or a number.', default="auto", minimum=1, maximum=64)
    replicas: Optional[int] = field("Fixed number of pods (default 1). Mutually exclusive with "
                                    "autoscaling.", default=None, minimum=0, maximum=1000)
    autoscaling: Optional[PoolAutoscaling] = field(
        "Run an autoscaler instead of fixed replicas: on CPU (a HorizontalPodAutoscaler), or on the queues' backlog "
        "(queueLength: a KEDA ScaledObject).", default=None)
    prefetch_multiplier: int = field("Messages each process reserves; 1 for long tasks with acksLate.",
                                     default=1, minimum=1, maximum=1024)
    acks_late: bool = field("Acknowledge after the task ran (idempotent tasks): a lost worker's task is "
                            "redelivered.", default=True)
    max_tasks_per_child: int = field("Recycle a process after this many tasks (0: never).", default=1000,
                                     minimum=0, maximum=1000000)
    resources: Resources = field("CPU and memory of the worker container.", default=Resources)
    termination_grace_period_seconds: int = field(
        "Seconds a stopping worker gets: on SIGTERM Celery stops taking tasks and finishes the running ones "
        "(warm shutdown); what still runs after this is killed (and, with acksLate, redelivered). Set it "
        "above your longest task.", default=30, minimum=1, maximum=86400)
    pod: PodOverrides = field("Placement, metadata, volumes and extra containers of the pool's pods.",
                              default=PodOverrides)


@dataclass(frozen=True, kw_only=True)
class Beat:
    enabled: bool = field("Run exactly one celery beat (1 replica, Recreate strategy).", default=False)
    resources: Resources = field("CPU and memory of the beat container.", default=Resources)
    pod: PodOverrides = field("Placement, metadata, volumes and extra containers of the beat pod.",
                              default=PodOverrides)


@rules(
    Rule(f"quantity(string(self.memory)).compareTo(quantity('{REDIS_MIN_MEMORY}')) >= 0",
         f"memory must be at least {REDIS_MIN_MEMORY}: Redis and its pod need a few MiB before any data",
         lambda r: parse_quantity(r.memory) >= parse_quantity(REDIS_MIN_MEMORY), ".memory"),
)
@dataclass(frozen=True, kw_only=True)
class RedisInstance:
    memory: Quantity = field("Memory limit of the instance; maxmemory is set below it with headroom.",
                             default="256Mi")
    cpu: Quantity = field("CPU request of the instance.", default="100m")


@dataclass(frozen=True, kw_only=True)
class RedisCache(RedisInstance):
    engine: str = field("redis: a Redis with maxmemory-policy allkeys-lru (Flask-Caching RedisCache); memcached: a "
                        "memcached instead (MemcachedCache, CACHE_MEMCACHED_SERVERS; the app needs a memcache client "
                        "library such as pylibmc or python-memcached). Managed mode only.",
                        default="redis", enum=("redis", "memcached"))
    memcached_image: str = field("Image of memcached when engine is memcached.", default="memcached:1.6.38-alpine",
                                 pattern=IMAGE_REFERENCE)


@dataclass(frozen=True, kw_only=True)
class RedisBroker(RedisInstance):
    persistent: bool = field("Keep queued tasks across restarts: an append-only file (fsync every second) on a "
                             "PersistentVolumeClaim, in a StatefulSet with a PodDisruptionBudget. Off: the "
                             "broker runs on an emptyDir and a restart loses every queued task.", default=True)
    storage: Quantity = field("Size of the broker's volume.", default="1Gi")
    storage_class_name: Optional[str] = field("StorageClass of the broker's volume; the cluster's default "
                                              "when unset.", default=None, pattern=DNS_SUBDOMAIN)


@dataclass(frozen=True, kw_only=True)
class ExternalRedis:
    secret_name: str = field("Secret holding the URLs of an existing Redis.", pattern=DNS_LABEL)
    cache_url_key: str = field("Key of the cache URL in the Secret.", default="cache-url")
    broker_url_key: str = field("Key of the broker URL in the Secret.", default="broker-url")


@rules(
    Rule("self.mode == 'managed' || !has(self.cache.engine) || self.cache.engine == 'redis'",
         "cache.engine memcached runs a managed memcached: it needs mode managed",
         lambda r: r.mode == "managed" or r.cache.engine == "redis", ".cache.engine"),
    Rule("self.mode != 'external' || has(self.external)", "redis.external is required when mode is external",
         lambda r: r.mode != "external" or r.external is not None, ".external"),
    Rule("!has(self.pod.volumeMounts) || self.pod.volumeMounts.all(m, m.mountPath != '/data' && "
         "!m.mountPath.startsWith('/data/'))", "volumeMounts must not use /data, the Redis data directory",
         lambda r: not any(m.get("mountPath", "").rstrip("/") == "/data" or m.get("mountPath", "").startswith("/data/")
                           for m in r.pod.volume_mounts), ".pod.volumeMounts"),
)
@dataclass(frozen=True, kw_only=True)
class Redis:
    mode: str = field("managed: the operator runs a cache and a broker instance; external: URLs come "
                      "from a Secret.", default="managed", enum=("managed", "external"))
    image: str = field("Image of the managed instances: Valkey (BSD-3-Clause) by default; a Redis image works the "
                       "same (redis:7.2 is BSD; 7.4 and later are RSALv2/SSPL).", default="valkey/valkey:9.1.4-alpine",
                       pattern=IMAGE_REFERENCE)
    cache: RedisCache = field("The cache instance (maxmemory-policy allkeys-lru), or a memcached.", default=RedisCache)
    broker: RedisBroker = field("The Celery broker instance (maxmemory-policy noeviction: evicting "
                                "queued messages loses tasks), durable by default.", default=RedisBroker)
    external: Optional[ExternalRedis] = field("An existing Redis, when mode is external.", default=None)
    cache_default_timeout_seconds: int = field("Flask-Caching default timeout (CACHE_DEFAULT_TIMEOUT).",
                                               default=300, minimum=0, maximum=31536000)
    pod: PodOverrides = field("Placement, metadata, volumes and extra containers of both managed Redis pods.",
                              default=PodOverrides)


@dataclass(frozen=True, kw_only=True)
class PoolOverrides:
    size: Optional[int] = field("SQLAlchemy pool_size for every process; computed when unset.",
                                default=None, minimum=1, maximum=1000)
    max_overflow: Optional[int] = field("SQLAlchemy max_overflow for every process; computed when unset.",
                                        default=None, minimum=0, maximum=1000)
    recycle_seconds: int = field("pool_recycle: below any server, proxy or NAT idle timeout.",
                                 default=1800, minimum=1, maximum=86400)
    timeout_seconds: int = field("pool_timeout: how long a request waits for a connection.", default=10,
                                 minimum=1, maximum=300)
    pre_ping: bool = field("pool_pre_ping: test connections before use.", default=True)


@dataclass(frozen=True, kw_only=True)
class Pooler:
    enabled: bool = field("Run PgBouncer between the app and the database: the app's DATABASE_URL points at it, "
                          "and only its server-side pool counts against maxConnections, so the app's processes "
                          "may together open more client connections than the database allows.", default=False)
    pool_mode: str = field("transaction: a server connection is held for one transaction (most sharing; session "
                           "state such as SET, LISTEN, advisory locks and server-side prepared statements is not "
                           "kept across transactions); session: for the client's whole connection.",
                           default="transaction", enum=("transaction", "session"))
    replicas: int = field("PgBouncer pods.", default=2, minimum=1, maximum=20)
    image: str = field("Image with the pgbouncer binary on its PATH (1.21 or later for preparedStatements).",
                       default="edoburu/pgbouncer:v1.24.1-p1", pattern=IMAGE_REFERENCE)
    pool_size: Optional[int] = field(
        "Server connections per PgBouncer pod (default_pool_size, also its max_db_connections); the largest "
        "that fits the budget when unset.", default=None, minimum=1, maximum=10000)
    prepared_statements: bool = field(
        "Transaction mode: let drivers use server-side prepared statements, tracked by PgBouncer itself "
        "(max_prepared_statements, PgBouncer 1.21+). Off: psycopg's automatic prepares are turned off "
        "(connect_args prepare_threshold None; a plain postgresql:// URL is psycopg 3, SQLAlchemy 2.1's default).",
        default=False)
    resources: Resources = field("CPU and memory of the pgbouncer container.", default=Resources)


@rules(
    Rule("self.reservedConnections < self.maxConnections",
         "reservedConnections must be below maxConnections",
         lambda d: d.reserved_connections < d.max_connections, ".reservedConnections"),
)
@dataclass(frozen=True, kw_only=True)
class Database:
    secret_name: str = field("Secret holding the database URL.", pattern=DNS_LABEL)
    url_key: str = field("Key of the URL in the Secret (exposed as DATABASE_URL).", default="url")
    max_connections: int = field("The server's max_connections (PostgreSQL's default is 100).",
                                 default=100, minimum=1, maximum=100000)
    reserved_connections: int = field("Connections kept free for admins and other clients "
                                      "(superuser_reserved_connections is 3 by default).", default=5,
                                      minimum=0, maximum=100000)
    pool: PoolOverrides = field("SQLAlchemy pool settings (SQLALCHEMY_ENGINE_OPTIONS).", default=PoolOverrides)
    budget_policy: str = field(
        "What the operator does when the worst case (every autoscaler at its maximum during a rolling update) "
        "does not fit even with the smallest pools: capAutoscaling lowers the autoscalers' maxReplicas to the "
        "largest values that fit (reported in status.tuning.budget.cappedAutoscalers and the BudgetCapped "
        "condition); degrade rolls nothing out and reports Degraded.",
        default="capAutoscaling", enum=("capAutoscaling", "degrade"))
    minimum_pool_size: int = field(
        "Smallest SQLAlchemy pool_size per process the budget may shrink a pool to (max_overflow 0) before it "
        "caps autoscalers. Under gthread a pool smaller than the threads makes requests queue for a connection.",
        default=1, minimum=1, maximum=1000)
    autoscaling_priority: list[str] = field(
        "Tiers (web, worker-<pool>) in the order their autoscaler maxima are kept: the last is capped first. "
        "Unlisted autoscaled tiers follow: web, then the worker pools in spec order.",
        default=list, max_items=11, item_pattern=r"^(web|worker-[a-z0-9]([-a-z0-9]*[a-z0-9])?)$",
        item_max_length=27)
    pooler: Pooler = field("A PgBouncer tier in front of the database.", default=Pooler)


@rules(
    Rule("self.trustedProxies.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())",
         "trustedProxies must be networks in CIDR notation without host bits (10.0.0.0/8, fd00::/8)",
         lambda n: all(_is_network(c) for c in n.trusted_proxies), ".trustedProxies"),
)
@dataclass(frozen=True, kw_only=True)
class Nginx:
    image: str = field("Unprivileged nginx image.", default="nginxinc/nginx-unprivileged:1.30.4-alpine",
                       pattern=IMAGE_REFERENCE)
    replicas: int = field("Nginx pods.", default=2, minimum=1, maximum=100)
    static_url_path: str = field("URL prefix served from disk: path segments of letters, digits and _~%@:+,=!*()-. "
                                 "(no . or .. segment), starting and ending with /.", default="/static/",
                                 pattern=URL_PATH_PREFIX, max_length=256, pattern_message=URL_PATH_PREFIX_MESSAGE)
    static_dir: str = field("Directory in the app image copied to nginx at pod start (absolute, no . or .. "
                            "segments).", default="/app/static", pattern=ABSOLUTE_PATH)
    static_max_age_seconds: int = field("Cache-Control max-age of fingerprinted static files (a content hash "
                                        "in the name, see fingerprintPattern): a year, immutable.",
                                        default=31536000, minimum=0, maximum=31536000)
    static_revalidate_seconds: int = field("Cache-Control max-age of the other static files, which browsers "
                                           "then revalidate (ETag, Last-Modified): a deploy that changes "
                                           "them is seen within this time.", default=60, minimum=0,
                                           maximum=86400)
    fingerprint_pattern: str = field("Regular expression (nginx/PCRE) for static file names that carry a "
                                     "content hash, as bundlers write them (app.3f2a9c1b.css).",
                                     default=r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$",
                                     # It is written inside double quotes in nginx.conf: no quote, no space,
                                     # no trailing backslash (it would escape the closing quote).
                                     pattern=r'^[^"\s]*[^"\s\\]$',
                                     max_length=200, check=pcre_problem)
    gzip: bool = field("Compress text responses.", default=True)
    gzip_level: int = field("gzip level; above ~5 costs CPU and gains little.", default=4, minimum=1,
                            maximum=9)
    micro_cache_seconds: int = field("Cache anonymous GET/HEAD responses this long unless the app's "
                                     "Cache-Control says otherwise (0 disables); requests with cookies, "
                                     "Authorization or a microCacheBypassHeaders header always bypass it.",
                                     default=1, minimum=0, maximum=3600)
    micro_cache_bypass_headers: list[str] = field(
        "Request headers (besides Cookie and Authorization) that make a request personal: it bypasses the "
        "micro-cache and its answer is never stored.", default=API_KEY_HEADERS, item_pattern=HEADER_NAME,
        item_max_length=64, max_items=32)
    micro_cache_grace_seconds: int = field(
        "While one request refreshes an expired entry, others get the old copy, at most this many seconds "
        "past its freshness (0: they wait for the refresh). Bounds how stale a healthy app's page can be.",
        default=1, minimum=0, maximum=60)
    micro_cache_stale_if_error_seconds: int = field(
        "While gunicorn is unreachable or times out, serve cached entries up to this many seconds past "
        "their freshness instead of the error (0 disables). The app's own error answers pass through.",
        default=0, minimum=0, maximum=86400)
    trusted_proxies: list[str] = field(
        "Networks (CIDR) of the proxies in front of nginx, such as the ingress controller. Only their "
        "X-Forwarded-For/-Proto/-Host/-Port are believed: the client address comes from X-Forwarded-For "
        "(nginx realip), the scheme and host the app sees from the others; anyone else's are replaced. "
        "gunicorn believes forwarded headers only from these networks too (where nginx runs), and the "
        "NetworkPolicy lets only nginx reach it. Default: private networks.", default=PRIVATE_NETWORKS,
        item_max_length=43, max_items=32, min_items=1)
    client_max_body_size: str = field("Largest request body (nginx size syntax).", default="10m",
                                      pattern=SIZE)
    resources: Resources = field("CPU and memory of the nginx container.", default=Resources)
    pod: PodOverrides = field("Placement, metadata, volumes and extra containers of the nginx pods.",
                              default=PodOverrides)


# KEDA installs its operator, which runs the Redis scaler, in the namespace `keda` (keda.sh/docs/latest/deploy/).
KEDA_PEERS = ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}},)


@dataclass(frozen=True, kw_only=True)
class NetworkPolicies:
    enabled: bool = field("Create a NetworkPolicy per tier: each accepts traffic only from the tier that calls "
                          "it and sends only where it must (DNS, the next tier, Redis, the database). The app "
                          "keeps working in a namespace with a default-deny policy.", default=True)
    ingress_from: list[dict[str, Any]] = field(
        "NetworkPolicyPeers (podSelector, namespaceSelector, ipBlock) allowed to reach nginx, e.g. the "
        "ingress controller's namespace. Empty: any source, since nginx is the public entry.", default=list,
        max_items=16)
    database_to: list[dict[str, Any]] = field(
        "NetworkPolicyPeers where the database lives (an ipBlock, or the namespace of an in-cluster "
        "server). Empty: any address, on databasePort only.", default=list, max_items=16)
    database_port: int = field("TCP port of the database (PostgreSQL 5432, PgBouncer 6432, MySQL 3306).",
                               default=5432, minimum=1, maximum=65535)
    extra_egress: list[dict[str, Any]] = field(
        "NetworkPolicyEgressRules added to every app tier (web, worker pools, beat, migrations), for the "
        "other services the app calls (an external API, an external Redis on another port).", default=list,
        max_items=16)
    autoscaler_from: list[dict[str, Any]] = field(
        "NetworkPolicyPeers of the autoscaler that reads the queue lengths of pools with autoscaling.queueLength "
        "(KEDA's operator), admitted to the managed broker's port. Default: the namespace `keda` (KEDA's Helm "
        "chart and manifests).", default=KEDA_PEERS, max_items=16)


@dataclass(frozen=True, kw_only=True)
class MonitoringImages:
    statsd_exporter: str = field("Prometheus statsd_exporter: gunicorn's statsd metrics as Prometheus metrics "
                                 "(a sidecar of each web pod).", default="quay.io/prometheus/statsd-exporter:v0.28.0",
                                 pattern=IMAGE_REFERENCE)
    nginx_exporter: str = field("NGINX Prometheus exporter: connections and requests from stub_status (a sidecar "
                                "of each nginx pod).", default="nginx/nginx-prometheus-exporter:1.4.0",
                                pattern=IMAGE_REFERENCE)
    nginx_log_exporter: str = field(
        "prometheus-nginxlog-exporter: response and upstream time histograms and micro-cache outcomes from "
        "nginx's access log, received over syslog (a sidecar of each nginx pod).",
        default="ghcr.io/martin-helmich/prometheus-nginxlog-exporter/exporter:v1.11.0", pattern=IMAGE_REFERENCE)
    redis_exporter: str = field("Redis exporter: memory, evictions, hits, clients and Celery queue lengths (a "
                                "sidecar of each managed Redis).", default="oliver006/redis_exporter:v1.74.0",
                                pattern=IMAGE_REFERENCE)
    flower: str = field("Flower: Celery task and worker metrics from the workers' events (one Deployment when "
                        "worker pools or beat run).", default="mher/flower:2.0.1", pattern=IMAGE_REFERENCE)


# Prometheus in a namespace named `monitoring` (kube-prometheus, the kube-prometheus-stack docs).
DEFAULT_SCRAPERS = ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},)


@rules(
    # The same rule as a pod's labels: objects carrying another instance or manager label would escape the
    # operator's label-filtered watch (re-applied on every pass, never pruned).
    Rule("!has(self.labels) || !(" + " || ".join(f"'{k}' in self.labels" for k in RESERVED_LABELS) + ")",
         f"labels must not set the operator's own labels ({', '.join(RESERVED_LABELS)})",
         lambda m: not set(m.labels) & set(RESERVED_LABELS), ".labels"),
)
@dataclass(frozen=True, kw_only=True)
class Monitoring:
    enabled: bool = field("Export metrics of every tier (exporter sidecars, Flower), a PodMonitor, a "
                          "PrometheusRule with alerts and a Grafana dashboard. The app's code is not changed.",
                          default=False)
    latency_objective_ms: int = field("The web tier's 95th-percentile response time objective (through nginx, "
                                      "cache hits excluded): above it for 10 minutes, an alert fires.",
                                      default=500, minimum=1, maximum=600000, json="latencyObjectiveMs")
    error_ratio_percent: int = field("Share of 5xx answers (percent) above which an alert fires.", default=5,
                                     minimum=1, maximum=100)
    cache_hit_sampling: int = field(
        "One in this many micro-cache HITs reaches the access-log exporter (every request that reaches the app "
        "always does). A log line per hit costs nginx about as much as serving the hit; the dashboard and "
        "alerts weight the sampled hits back. 1: every hit (exact counts, at a cost at high rates).",
        default=32, minimum=1, maximum=1000)
    scrape_from: list[dict[str, Any]] = field(
        "NetworkPolicyPeers allowed to reach the metrics ports (Prometheus' namespace). Only they can: the "
        "metrics ports are closed to everyone else.", default=DEFAULT_SCRAPERS, max_items=16)
    labels: dict[str, str] = field("Labels for the PodMonitor, PrometheusRule and dashboard ConfigMap, for the "
                                   "selectors of a Prometheus (e.g. release: kube-prometheus-stack).",
                                   default=dict)
    otlp_endpoint: Optional[str] = field(
        "OTLP endpoint of an OpenTelemetry collector (http://collector:4318). Sets the standard OTEL_* variables "
        "in every app container, so an image with OpenTelemetry's auto-instrumentation sends traces (with or "
        "without enabled).",
        default=None, pattern=r"^https?://[^\s]+$")
    otlp_protocol: str = field("OTLP transport of otlpEndpoint (OTEL_EXPORTER_OTLP_PROTOCOL).",
                               default="http/protobuf", enum=("http/protobuf", "grpc"))
    images: MonitoringImages = field("Exporter images.", default=MonitoringImages)


@dataclass(frozen=True, kw_only=True)
class IngressPath:
    path: str = field("URL path routed to nginx.", pattern=r"^/\S*$", max_length=1024)
    path_type: str = field("How path matches (networking.k8s.io/v1 Ingress).", default="Prefix",
                           enum=("Prefix", "Exact", "ImplementationSpecific"))


CERT_MANAGER_GROUP = "cert-manager.io"


@rules(
    Rule(f"self.group != '{CERT_MANAGER_GROUP}' || self.kind == 'Issuer' || self.kind == 'ClusterIssuer'",
         "kind must be Issuer or ClusterIssuer for cert-manager.io issuers",
         lambda r: r.group != CERT_MANAGER_GROUP or r.kind in ("Issuer", "ClusterIssuer"), ".kind"),
)
@dataclass(frozen=True, kw_only=True)
class IssuerRef:
    name: str = field("Name of the cert-manager issuer.", pattern=DNS_SUBDOMAIN, max_length=253)
    kind: str = field("Issuer (in the FlaskApp's namespace) or ClusterIssuer; an external issuer's own kind "
                      "(e.g. AWSPCAClusterIssuer) with its group.", default="Issuer", pattern=r"^[A-Z][A-Za-z0-9]*$",
                      max_length=63)
    group: str = field("API group of the issuer: cert-manager.io, or an external issuer's.",
                       default="cert-manager.io", pattern=DNS_SUBDOMAIN, max_length=253)


HOST = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


@rules(
    Rule("!has(self.tlsSecretName) || has(self.host) || (has(self.hosts) && size(self.hosts) > 0)",
         "tlsSecretName needs a host",
         lambda i: i.tls_secret_name is None or i.host is not None or bool(i.hosts), ".tlsSecretName"),
    Rule("!has(self.issuerRef) || has(self.host) || (has(self.hosts) && size(self.hosts) > 0)",
         "issuerRef needs a host: cert-manager issues certificates for named hosts",
         lambda i: i.issuer_ref is None or i.host is not None or bool(i.hosts), ".issuerRef"),
    Rule("!has(self.host) || !has(self.hosts) || !(self.host in self.hosts)", "hosts repeats host",
         lambda i: i.host is None or i.host not in i.hosts, ".hosts"),
)
@dataclass(frozen=True, kw_only=True)
class Ingress:
    enabled: bool = field("Create an Ingress routing to nginx.", default=True)
    host: Optional[str] = field("Host name; all hosts when neither host nor hosts is set. The status URL uses "
                                "it.", default=None, pattern=HOST, max_length=253)
    hosts: list[str] = field("More host names routed the same way.", default=list, item_pattern=HOST,
                             item_max_length=253, max_items=32)
    paths: list[IngressPath] = field("Paths routed to nginx, on every host.",
                                     default=(IngressPath(path="/", path_type="Prefix"),), min_items=1, max_items=32)
    class_name: Optional[str] = field("IngressClass name.", default=None)
    tls_secret_name: Optional[str] = field("Secret with the TLS certificate for the hosts. With issuerRef, where "
                                           "cert-manager stores it (default <name>-tls).", default=None,
                                           pattern=DNS_SUBDOMAIN, max_length=253)
    issuer_ref: Optional[IssuerRef] = field(
        "A cert-manager issuer: the Ingress gets its annotations (cert-manager.io/issuer or cluster-issuer) and "
        "a TLS section, and cert-manager's ingress-shim issues and renews the certificate.", default=None)
    annotations: dict[str, str] = field("Extra annotations for the Ingress.", default=dict)


@dataclass(frozen=True, kw_only=True)
class RouteParent:
    name: str = field("Name of the Gateway.", pattern=DNS_SUBDOMAIN, max_length=253)
    namespace: Optional[str] = field("Namespace of the Gateway (default: the FlaskApp's). Its listener must allow "
                                     "routes from this namespace (allowedRoutes).", default=None, pattern=DNS_LABEL,
                                     max_length=63)
    section_name: Optional[str] = field("The Gateway's listener to attach to (default: every listener that allows "
                                        "the route).", default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    port: Optional[int] = field("Only the Gateway's listeners on this port.", default=None, minimum=1,
                                maximum=65535)


@dataclass(frozen=True, kw_only=True)
class RoutePath:
    path: str = field("URL path routed to nginx.", pattern=r"^/\S*$", max_length=1024)
    type: str = field("How path matches (Gateway API HTTPPathMatch).", default="PathPrefix",
                      enum=("PathPrefix", "Exact"))


@rules(
    Rule("!self.enabled || (has(self.parentRefs) && size(self.parentRefs) > 0)",
         "parentRefs names the Gateway the route attaches to", lambda r: not r.enabled or bool(r.parent_refs),
         ".parentRefs"),
)
@dataclass(frozen=True, kw_only=True)
class Route:
    enabled: bool = field("Create a Gateway API HTTPRoute (gateway.networking.k8s.io/v1) routing to nginx, attached "
                          "to an existing Gateway. Beside or instead of the Ingress; needs the Gateway API CRDs and a "
                          "Gateway controller in the cluster. Ready only once the Gateway accepted the route.",
                          default=False)
    parent_refs: list[RouteParent] = field("The Gateways (and listeners) the route attaches to.", default=list,
                                           max_items=8)
    hostnames: list[str] = field("Host names the route answers (default: every host of the listener). The status "
                                 "URL uses the first.", default=list, item_pattern=HOST, item_max_length=253,
                                 max_items=16)
    paths: list[RoutePath] = field("Paths routed to nginx, on every host.",
                                   default=(RoutePath(path="/", type="PathPrefix"),), min_items=1, max_items=16)
    annotations: dict[str, str] = field("Extra annotations for the HTTPRoute.", default=dict)


@dataclass(frozen=True, kw_only=True)
class ServiceAccount:
    annotations: dict[str, str] = field(
        "Annotations of the app's ServiceAccount, e.g. cloud workload identity (eks.amazonaws.com/role-arn, "
        "iam.gke.io/gcp-service-account, azure.workload.identity/client-id).", default=dict)


@dataclass(frozen=True, kw_only=True)
class AppSecurity:
    run_as_user: int = field("UID of the app containers (the image must run as any non-root user).",
                             default=10001, minimum=1, maximum=2147483647)
    run_as_group: int = field("GID of the app containers.", default=10001, minimum=1, maximum=2147483647)
    fs_group: int = field("Group owning mounted volumes.", default=10001, minimum=1, maximum=2147483647)


@dataclass(frozen=True, kw_only=True)
class Cdn:
    base_url: Optional[str] = field("Base URL of a CDN in front of static files (CDN_URL).", default=None,
                                    pattern=r"^https?://")


@rules(
    Rule("!(has(self.value) && has(self.valueFrom))", "value and valueFrom are exclusive",
         lambda e: e.value is None or e.value_from is None, ".valueFrom"),
)
@dataclass(frozen=True, kw_only=True)
class EnvVar:
    name: str = field("Variable name.", pattern=ENV_NAME)
    value: Optional[str] = field("Literal value.", default=None)
    value_from: Optional[dict[str, Any]] = field("A Kubernetes EnvVarSource (secretKeyRef, ...).",
                                                 default=None)


@rules(
    Rule("has(self.configMapRef) != has(self.secretRef)", "exactly one of configMapRef and secretRef",
         lambda e: (e.config_map_ref is None) != (e.secret_ref is None)),
)
@dataclass(frozen=True, kw_only=True)
class EnvFromSource:
    config_map_ref: Optional[str] = field("Name of a ConfigMap to import.", default=None, json="configMapRef")
    secret_ref: Optional[str] = field("Name of a Secret to import.", default=None)
    prefix: Optional[str] = field("Prefix for every imported name.", default=None)


@dataclass(frozen=True, kw_only=True)
class Agent:
    enabled: bool = field(
        "Load the operator's in-process agent into every container that runs the app's Python (web, worker pools, "
        "beat, migrations): a pure-Python package mounted read-only and first on PYTHONPATH, no change to the image. "
        "It lowers every SQLAlchemy engine for the budgeted database to the plan's pool (connection budget), gives "
        "app.config the operator's cache, CDN and database values for keys the app does not set, gives Celery's "
        "Redis broker connections timeouts and keepalive (a stalled connection is made again), and, with "
        "monitoring, measures every endpoint and Celery task (latency, queries per request, time in SQL, cache "
        "hits, N+1 suspects). Any error inside it is logged once and the app runs as without it.", default=True)
    n_plus_one_threshold: int = field(
        "A request or task that runs one SQL statement at least this many times is counted as an N+1 suspect of its "
        "endpoint (flaskapp_request_n_plus_one_total) and the statement is logged.", default=10, minimum=2,
        maximum=100000, json="nPlusOneThreshold")


@dataclass(frozen=True, kw_only=True)
class Migrations:
    command: list[str] = field("Command run in the app image as a Job before a new image rolls out.",
                               min_items=1)
    timeout_seconds: int = field("activeDeadlineSeconds of the Job.", default=600, minimum=10,
                                 maximum=86400)
    backoff_limit: int = field("Retries of the Job before the FlaskApp is Degraded.", default=2, minimum=0,
                               maximum=10)
    resources: Resources = field("CPU and memory of the migration container.", default=Resources)
    pod: PodOverrides = field("Placement, metadata, volumes and extra containers of the migration Job's pod.",
                              default=PodOverrides)


@rules(
    Rule("((!has(self.workerPools) || size(self.workerPools) == 0) && !self.beat.enabled) || has(self.celeryApp)",
         "celeryApp is required when worker pools or beat are configured",
         lambda s: (not s.worker_pools and not s.beat.enabled) or s.celery_app is not None, ".celeryApp"),
    Rule("self.redis.mode == 'managed' || !has(self.workerPools) || "
         "self.workerPools.all(p, !has(p.autoscaling) || !has(p.autoscaling.queueLength))",
         "workerPools[].autoscaling.queueLength needs the managed broker (redis.mode managed): KEDA reads its lists",
         lambda s: s.redis.mode == "managed" or all(p.autoscaling is None or p.autoscaling.queue_length is None
                                                   for p in s.worker_pools), ".workerPools"),
    Rule("!has(self.database) || !has(self.database.autoscalingPriority) || self.database.autoscalingPriority.all("
         "t, t == 'web' || (has(self.workerPools) && self.workerPools.exists(p, 'worker-' + p.name == t)))",
         "database.autoscalingPriority must name tiers of this FlaskApp: web or worker-<pool name>",
         lambda s: s.database is None or all(
             t == "web" or t in {f"worker-{p.name}" for p in s.worker_pools} for t in s.database.autoscaling_priority),
         ".database.autoscalingPriority"),
)
@dataclass(frozen=True, kw_only=True)
class FlaskAppSpec:
    image: str = field("Container image of the Flask application.", min_length=1, pattern=IMAGE_REFERENCE)
    image_pull_policy: str = field("Image pull policy of every app container.", default="IfNotPresent",
                                   enum=("Always", "IfNotPresent", "Never"))
    image_pull_secrets: list[str] = field("Names of Secrets for pulling the image.", default=list)
    wsgi: str = field("WSGI entry point for gunicorn, module:variable or module:factory().",
                      pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w]*(\(\))?$")
    celery_app: Optional[str] = field("Celery application for workers and beat (celery --app).",
                                      default=None, pattern=r"^[A-Za-z_][\w.:]*$")
    web: Web = field("The gunicorn web tier.", default=Web)
    worker_pools: list[WorkerPool] = field("Celery worker pools, keyed by name.", default=list,
                                          max_items=10, list_map_key="name")
    beat: Beat = field("The celery beat scheduler.", default=Beat)
    redis: Redis = field("Cache and broker.", default=Redis)
    database: Optional[Database] = field("The SQL database and its connection budget.", default=None)
    nginx: Nginx = field("Nginx in front of gunicorn: static files, gzip, micro-cache, buffering.",
                         default=Nginx)
    ingress: Ingress = field("Ingress to nginx.", default=Ingress)
    route: Route = field("Gateway API HTTPRoute to nginx.", default=Route)
    network_policy: NetworkPolicies = field("NetworkPolicies of every tier.", default=NetworkPolicies)
    monitoring: Monitoring = field("Metrics, alerts, dashboards and tracing for every tier.", default=Monitoring)
    cdn: Cdn = field("CDN settings.", default=Cdn)
    agent: Agent = field("The in-process agent that applies the plan inside the app's own processes.",
                         default=Agent)
    env: list[EnvVar] = field("Extra environment variables for app containers.", default=list)
    env_from: list[EnvFromSource] = field("ConfigMaps and Secrets imported into app containers.",
                                          default=list)
    migrations: Optional[Migrations] = field("Database migrations run before a new image rolls out.",
                                             default=None)
    pod: PodOverrides = field(
        "Defaults for every tier's pod block. Placement and metadata (nodeSelector, tolerations, affinity, "
        "topologySpreadConstraints, priorityClassName, annotations, labels, automountServiceAccountToken) apply "
        "to every pod; volumes, volumeMounts, initContainers and sidecars to the tiers running the app image "
        "(web, worker pools, beat, migrations).", default=PodOverrides)
    service_account: ServiceAccount = field("The ServiceAccount every pod of the app runs as.",
                                            default=ServiceAccount)
    security_context: AppSecurity = field("User and groups of the app containers (PSS restricted).",
                                          default=AppSecurity)
