"""The tuning engine: from a FlaskApp spec to concrete process counts, pool sizes and memory limits.

Pure functions only. Every rule cites its source; docs/tuning.md has the table behind them.
Everything derived here is reported in `status.tuning` so a user can see why a number was chosen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional

from kubernetes.utils.quantity import parse_quantity

from .api import Autoscaling, FlaskAppSpec, Resources

# CPU and memory requested for a container whose spec gives neither requests nor limits.
DEFAULT_REQUESTS = {
    "web": ("500m", "512Mi"), "worker": ("500m", "512Mi"), "beat": ("100m", "256Mi"),
    "migrations": ("250m", "256Mi"), "nginx": ("100m", "64Mi"),
}
SURGE_FRACTION = Decimal("0.25")  # the Deployment default maxSurge (25%), which we render explicitly
REDIS_MAXMEMORY_FRACTION = Decimal("0.75")  # headroom for fragmentation, client and AOF buffers
TERMINATION_MARGIN_SECONDS = 10  # signal delivery and process exit after gunicorn's graceful stop
# A terminating pod keeps serving this long before its SIGTERM, while kube-proxy, the ingress controller
# and nginx drop it from their endpoints (the removal is asynchronous: kubernetes.io/docs/concepts/
# workloads/pods/pod-lifecycle/#pod-termination). Counted inside terminationGracePeriodSeconds.
PRE_STOP_DRAIN_SECONDS = 5
DEFAULT_WEB_REPLICAS = 2
DEFAULT_POOL_REPLICAS = 1
GEVENT_POOL_DEMAND = 10  # greenlets are cheap; their DB connections are not


def effective_requests(resources: Resources, tier: str) -> dict[str, str]:
    """Requests as Kubernetes will see them: given ones, else the limits (Kubernetes' own rule), else
    our per-tier default, so that every pod is schedulable with known CPU."""
    default_cpu, default_memory = DEFAULT_REQUESTS[tier]
    return {"cpu": resources.requests.cpu or resources.limits.cpu or default_cpu,
            "memory": resources.requests.memory or resources.limits.memory or default_memory}


def cpu_cores(resources: Resources, tier: str) -> Decimal:
    """CPU cores the container may use: its limit, else its request, never the node's count.

    os.cpu_count() inside a pod reports the node's CPUs (gunicorn issue #2028), which over-forks.
    """
    return parse_quantity(resources.limits.cpu or effective_requests(resources, tier)["cpu"])


# Derived process counts obey the bounds explicit ones do (the API's maximum of 64), and the memory limit:
# every gunicorn worker and Celery child is a process of its own. PROCESS_MEMORY is what one such process
# is budgeted; measured on the example app (Flask, SQLAlchemy, Celery) on the local cluster, a gunicorn
# worker held 72 MiB resident and a Celery child 65 MiB.
MAX_PROCESSES = 64
PROCESS_MEMORY = parse_quantity("96Mi")


def container_memory(resources: Resources, tier: str) -> Decimal:
    """Memory the container may use: its limit, else its request (Kubernetes' own rule for requests)."""
    return parse_quantity(resources.limits.memory or effective_requests(resources, tier)["memory"])


def bounded_processes(by_cpu: int, memory: Decimal) -> tuple[int, str]:
    """The CPU-derived count, lowered to what the memory and the maximum allow; and which one bound it."""
    by_memory = max(1, int(memory // PROCESS_MEMORY))
    return min((by_cpu, "cpu"), (by_memory, "memory"), (MAX_PROCESSES, "maximum"), key=lambda c: c[0])


def gunicorn_workers(cores: Decimal) -> int:
    """2 x cores + 1 (gunicorn docs/source/design.rst, "How Many Workers?")."""
    return max(1, int(2 * cores + 1))


def gunicorn_threads(cores: Decimal) -> int:
    """2-4 x cores for gthread (gunicorn docs/source/settings.rst, threads); the low end, at least 2."""
    return min(MAX_PROCESSES, max(2, math.ceil(2 * cores)))


def celery_concurrency(cores: Decimal) -> int:
    """Celery defaults to the *host's* CPU count (celery configuration.rst, worker_concurrency);
    we take the container's cores, at least one process."""
    return max(1, math.ceil(cores))


def redis_maxmemory(memory: str) -> int:
    """maxmemory below the container limit; replication and AOF buffers are not counted in it
    (redis.io, "Key eviction")."""
    return int(parse_quantity(memory) * REDIS_MAXMEMORY_FRACTION)


def peak_replicas(replicas: Optional[int], autoscaling: Optional[Autoscaling], default: int) -> int:
    """Most pods a tier can have at once: the autoscaler's maximum (or the fixed count) plus the
    rolling-update surge, which Kubernetes rounds up (maxSurge 25%)."""
    most = autoscaling.max_replicas if autoscaling else (default if replicas is None else replicas)
    return most + math.ceil(most * SURGE_FRACTION)


@dataclass(frozen=True)
class WebTuning:
    worker_class: str
    workers: int
    workers_bound_by: str  # explicit, cpu, memory or maximum
    threads: int
    timeout_seconds: int
    graceful_timeout_seconds: int
    keepalive_seconds: int
    max_requests: int
    max_requests_jitter: int
    preload: bool
    termination_grace_period_seconds: int


@dataclass(frozen=True)
class TierConnections:
    """One DB-using tier at its worst moment."""

    tier: str
    peak_pods: int
    processes_per_pod: int
    threads_per_process: int
    pool_size: int
    max_overflow: int

    @property
    def connections_at_peak(self) -> int:
        return self.peak_pods * self.processes_per_pod * (self.pool_size + self.max_overflow)


@dataclass(frozen=True)
class Budget:
    max_connections: int
    reserved: int
    peak_connections: int
    feasible: bool
    message: str

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class Tuning:
    web: WebTuning
    pool_concurrency: dict[str, int]
    pool_concurrency_bound_by: dict[str, str]
    nginx_worker_processes: int
    redis_cache_maxmemory: int
    redis_broker_maxmemory: int
    tiers: tuple[TierConnections, ...]
    budget: Optional[Budget]

    @property
    def feasible(self) -> bool:
        return self.budget is None or self.budget.feasible

    def tier(self, name: str) -> TierConnections:
        return next(t for t in self.tiers if t.tier == name)

    def report(self) -> dict:
        """The status.tuning block."""
        out: dict = {
            "web": {"workerClass": self.web.worker_class, "workers": self.web.workers,
                    "workersBoundBy": self.web.workers_bound_by,
                    "threads": self.web.threads, "timeoutSeconds": self.web.timeout_seconds,
                    "gracefulTimeoutSeconds": self.web.graceful_timeout_seconds,
                    "terminationGracePeriodSeconds": self.web.termination_grace_period_seconds},
            "workerPools": [{"name": n, "concurrency": c, "concurrencyBoundBy": self.pool_concurrency_bound_by[n]}
                            for n, c in self.pool_concurrency.items()],
            "nginxWorkerProcesses": self.nginx_worker_processes,
            "redis": {"cacheMaxmemoryBytes": self.redis_cache_maxmemory,
                      "brokerMaxmemoryBytes": self.redis_broker_maxmemory},
            "connections": [
                {"tier": t.tier, "peakPods": t.peak_pods, "processesPerPod": t.processes_per_pod,
                 "threadsPerProcess": t.threads_per_process, "poolSize": t.pool_size,
                 "maxOverflow": t.max_overflow, "connectionsAtPeak": t.connections_at_peak}
                for t in self.tiers],
        }
        if self.budget:
            out["budget"] = {"maxConnections": self.budget.max_connections,
                             "reserved": self.budget.reserved, "available": self.budget.available,
                             "peakConnections": self.budget.peak_connections,
                             "feasible": self.budget.feasible, "message": self.budget.message}
        return out


def tune(spec: FlaskAppSpec) -> Tuning:
    web = _tune_web(spec)
    derived = {p.name: (p.concurrency, "explicit") if p.concurrency != "auto" else bounded_processes(
        celery_concurrency(cpu_cores(p.resources, "worker")), container_memory(p.resources, "worker"))
        for p in spec.worker_pools}
    concurrency = {name: count for name, (count, _) in derived.items()}
    demands = _connection_demands(spec, web, concurrency)
    tiers, budget = _fit_budget(spec, demands)
    return Tuning(
        web=web,
        pool_concurrency=concurrency,
        pool_concurrency_bound_by={name: bound for name, (_, bound) in derived.items()},
        nginx_worker_processes=max(1, math.ceil(cpu_cores(spec.nginx.resources, "nginx"))),
        redis_cache_maxmemory=redis_maxmemory(spec.redis.cache.memory),
        redis_broker_maxmemory=redis_maxmemory(spec.redis.broker.memory),
        tiers=tiers,
        budget=budget,
    )


def _tune_web(spec: FlaskAppSpec) -> WebTuning:
    g = spec.web.gunicorn
    cores = cpu_cores(spec.web.resources, "web")
    workers, bound_by = (g.workers, "explicit") if g.workers != "auto" else bounded_processes(
        gunicorn_workers(cores), container_memory(spec.web.resources, "web"))
    if g.worker_class != "gthread":
        threads = 1  # sync: one request per worker; gevent: concurrency comes from greenlets
    else:
        threads = g.threads if g.threads != "auto" else gunicorn_threads(cores)
    grace = spec.web.termination_grace_period_seconds or (
        PRE_STOP_DRAIN_SECONDS + g.graceful_timeout_seconds + TERMINATION_MARGIN_SECONDS)
    return WebTuning(
        worker_class=g.worker_class, workers=workers, workers_bound_by=bound_by, threads=threads,
        timeout_seconds=g.timeout_seconds,
        graceful_timeout_seconds=g.graceful_timeout_seconds, keepalive_seconds=g.keepalive_seconds,
        max_requests=g.max_requests, max_requests_jitter=g.max_requests_jitter, preload=g.preload,
        termination_grace_period_seconds=grace,
    )


@dataclass(frozen=True)
class _Demand:
    """What a tier would like: a pool per process sized to its concurrency (SQLAlchemy pooling.rst)."""

    wanted: TierConnections
    shrinkable: bool = True


def _connection_demands(spec: FlaskAppSpec, web: WebTuning, concurrency: dict[str, int]) -> list[_Demand]:
    # Under gthread each thread may hold a connection: pool_size >= threads (tuning.md, SQLAlchemy pools).
    web_demand = GEVENT_POOL_DEMAND if web.worker_class == "gevent" else web.threads
    demands = [_Demand(TierConnections(
        "web", peak_replicas(spec.web.replicas, spec.web.autoscaling, DEFAULT_WEB_REPLICAS),
        web.workers, web.threads, web_demand, math.ceil(web_demand / 2)))]
    for pool in spec.worker_pools:
        # A prefork child runs one task at a time: one connection, one spare.
        demands.append(_Demand(TierConnections(
            f"worker-{pool.name}", peak_replicas(pool.replicas, pool.autoscaling, DEFAULT_POOL_REPLICAS),
            concurrency[pool.name], 1, 1, 1)))
    if spec.beat.enabled:  # one replica, Recreate: never two at once
        demands.append(_Demand(TierConnections("beat", 1, 1, 1, 1, 0), shrinkable=False))
    if spec.migrations:  # runs while the previous release still serves
        demands.append(_Demand(TierConnections("migrations", 1, 1, 1, 1, 0), shrinkable=False))
    return demands


def _assign(demands: list[_Demand], size_cap: int, overflow_cap: int,
            override_size: Optional[int], override_overflow: Optional[int]) -> tuple[TierConnections, ...]:
    tiers = []
    for d in demands:
        tier = d.wanted
        if d.shrinkable:
            tier = dataclasses.replace(
                tier,
                pool_size=override_size if override_size is not None else min(tier.pool_size, size_cap),
                max_overflow=(override_overflow if override_overflow is not None
                              else min(tier.max_overflow, overflow_cap)))
        tiers.append(tier)
    return tuple(tiers)


def _fit_budget(spec: FlaskAppSpec, demands: list[_Demand]) -> tuple[tuple[TierConnections, ...], Optional[Budget]]:
    """Largest pools that keep the worst-moment total within max_connections - reserved.

    Order of sacrifice: first the overflow (bursts), then pool_size down to 1 for every shrinkable tier.
    """
    db = spec.database
    pool = db.pool if db else None
    size_override = pool.size if pool else None
    overflow_override = pool.max_overflow if pool else None
    first = _assign(demands, 10**6, 10**6, size_override, overflow_override)
    if db is None:
        return first, None
    available = db.max_connections - db.reserved_connections
    largest = max(d.wanted.pool_size for d in demands)
    candidates = [first] + [_assign(demands, cap, 0, size_override, overflow_override)
                            for cap in range(largest, 0, -1)]
    for tiers in candidates:
        total = sum(t.connections_at_peak for t in tiers)
        if total <= available:
            return tiers, Budget(db.max_connections, db.reserved_connections, total, True,
                                 f"{total} of {available} connections at peak")
    tightest = candidates[-1]
    total = sum(t.connections_at_peak for t in tightest)
    return tightest, Budget(db.max_connections, db.reserved_connections, total, False,
                            _infeasible_message(tightest, total, available, db.max_connections,
                                                db.reserved_connections, size_override is not None
                                                or overflow_override is not None))


def _infeasible_message(tiers: tuple[TierConnections, ...], total: int, available: int,
                        max_connections: int, reserved: int, overridden: bool) -> str:
    parts = ", ".join(f"{t.tier} {t.peak_pods} pods x {t.processes_per_pod} processes x "
                      f"{t.pool_size + t.max_overflow} = {t.connections_at_peak}" for t in tiers)
    pools = ("with the pool overrides in database.pool" if overridden
             else "even with pool_size 1 and max_overflow 0")
    return (f"connection budget exceeded {pools}: peak {total} > {available} "
            f"(maxConnections {max_connections} - reservedConnections {reserved}); {parts}. "
            f"Lower the autoscaler maxima, gunicorn workers or worker concurrency, or raise "
            f"database.maxConnections (or put a pooler such as PgBouncer in front).")
