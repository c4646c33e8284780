"""The tuning engine: from a FlaskApp spec to concrete process counts, pool sizes and memory limits.

Pure functions only. Every rule cites its source; docs/tuning.md has the table behind them.
Everything derived here is reported in `status.tuning` so a user can see why a number was chosen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional, Sequence

from kubernetes.utils.quantity import parse_quantity

from .api import Autoscaling, FlaskAppSpec, Resources

# CPU and memory requested for a container whose spec gives neither requests nor limits.
DEFAULT_REQUESTS = {
    "web": ("500m", "512Mi"), "worker": ("500m", "512Mi"), "beat": ("100m", "256Mi"),
    "migrations": ("250m", "256Mi"), "nginx": ("100m", "64Mi"),
    "pooler": ("100m", "64Mi"),  # PgBouncer: one process, about 2 KiB per client (pgbouncer.org/features.html)
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
MAX_AUTOSCALER_REPLICAS = 1000  # the API's bound on maxReplicas
POOLER_TIER = "pooler"
# Room on PgBouncer's max_client_conn beyond the app's own peak: psql sessions, a one-off job.
POOLER_SPARE_CLIENTS = 10


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


# nginx: one worker per core, as many as its memory holds. Measured here (nginx 1.22, the rendered nginx.conf, idle):
# the master 3.7 MiB resident, each worker 7.1 MiB, the cache manager and loader 6.2 MiB each, plus the shared
# micro-cache key zone (10 MiB): NGINX_BASE_MEMORY covers what does not grow with workers, NGINX_WORKER_MEMORY a
# worker with room for its connections' buffers (proxy_buffers, gzip) under load.
NGINX_BASE_MEMORY = parse_quantity("32Mi")
NGINX_WORKER_MEMORY = parse_quantity("16Mi")


def nginx_workers(cores: Decimal, memory: Decimal) -> int:
    """worker_processes: the container's cores (nginx.org/en/docs/ngx_core_module.html#worker_processes, "auto"
    would count the node's), at most what its memory holds, at least one."""
    return max(1, min(math.ceil(cores), int((memory - NGINX_BASE_MEMORY) // NGINX_WORKER_MEMORY)))


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


def memcached_memory_mib(memory: str) -> int:
    """memcached's item memory (-m, MiB) below the container limit: connection buffers and its hash table
    are allocated beside it (memcached's protocol and tuning notes, docs.memcached.org); same headroom as Redis."""
    return max(1, int(parse_quantity(memory) * REDIS_MAXMEMORY_FRACTION / (1024 * 1024)))


def most_replicas(replicas: Optional[int], autoscaling: Optional[Autoscaling], default: int) -> int:
    """Most pods a tier runs outside a rollout: the autoscaler's maximum, else the fixed count."""
    return autoscaling.max_replicas if autoscaling else (default if replicas is None else replicas)


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
    most_pods: int  # its replicas, or its autoscaler's maximum as rendered (capped when the budget needs it)
    processes_per_pod: int
    threads_per_process: int
    pool_size: int
    max_overflow: int
    surges: bool = True  # a RollingUpdate adds maxSurge pods during a rollout; Recreate and Jobs do not
    autoscaling: Optional[Autoscaling] = None  # what the spec asked for, when an autoscaler drives the tier
    via_pooler: bool = False  # connects to PgBouncer: its connections are PgBouncer's clients, not the server's

    @property
    def peak_pods(self) -> int:
        """Most pods at once: the maximum plus the rolling-update surge, which Kubernetes rounds up."""
        return self.most_pods + (math.ceil(self.most_pods * SURGE_FRACTION) if self.surges else 0)

    @property
    def connections_at_peak(self) -> int:
        return self.peak_pods * self.processes_per_pod * (self.pool_size + self.max_overflow)

    @property
    def capped(self) -> bool:
        return self.autoscaling is not None and self.most_pods < self.autoscaling.max_replicas


@dataclass(frozen=True)
class Budget:
    max_connections: int
    reserved: int
    peak_connections: int
    feasible: bool
    message: str
    policy: str = "capAutoscaling"
    # Per autoscaled tier: its largest maximum that still fits with every other tier as rendered.
    largest_feasible_max_replicas: tuple[tuple[str, int], ...] = ()

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
    pooler_max_clients: int = 0  # PgBouncer's max_client_conn: every client connection at peak, on one pod
    agent: bool = True  # spec.agent.enabled: whether the pools are enforced inside the app's processes
    memcached_memory_mib: int = 0  # memcached -m, when the cache engine is memcached
    memcached_threads: int = 1

    @property
    def feasible(self) -> bool:
        return self.budget is None or self.budget.feasible

    def tier(self, name: str) -> TierConnections:
        return next(t for t in self.tiers if t.tier == name)

    @property
    def capped(self) -> tuple[TierConnections, ...]:
        """Tiers whose autoscaler maximum the budget lowered."""
        return tuple(t for t in self.tiers if t.capped)

    def max_replicas(self, tier: str) -> int:
        """The maximum to render in the tier's autoscaler."""
        return self.tier(tier).most_pods

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
                      **({"memcachedMemoryMiB": self.memcached_memory_mib} if self.memcached_memory_mib else {}),
                      "brokerMaxmemoryBytes": self.redis_broker_maxmemory},
            "connections": [
                {"tier": t.tier, "peakPods": t.peak_pods, "processesPerPod": t.processes_per_pod,
                 "threadsPerProcess": t.threads_per_process, "poolSize": t.pool_size,
                 "maxOverflow": t.max_overflow, "connectionsAtPeak": t.connections_at_peak,
                 **({"maxReplicas": t.most_pods, "requestedMaxReplicas": t.autoscaling.max_replicas}
                    if t.autoscaling else {}), **({"viaPooler": True} if t.via_pooler else {})}
                for t in self.tiers],
        }
        if self.pooler_max_clients:
            pooler = self.tier(POOLER_TIER)
            out["pooler"] = {"replicas": pooler.most_pods, "peakPods": pooler.peak_pods,
                             "poolSize": pooler.pool_size, "serverConnectionsAtPeak": pooler.connections_at_peak,
                             "clientConnectionsAtPeak": sum(t.connections_at_peak for t in self.tiers if t.via_pooler),
                             "maxClientConnections": self.pooler_max_clients}
        if self.budget:
            out["budget"] = {"enforcedBy": (
                                 "agent: every SQLAlchemy engine for the database is lowered to poolSize + maxOverflow "
                                 "inside the app's processes" if self.agent else
                                 "the app: spec.agent is off, so the budget holds only if the app's code passes "
                                 "SQLALCHEMY_ENGINE_OPTIONS to create_engine"),
                             "maxConnections": self.budget.max_connections,
                             "reserved": self.budget.reserved, "available": self.budget.available,
                             "peakConnections": self.budget.peak_connections,
                             "feasible": self.budget.feasible, "message": self.budget.message,
                             "policy": self.budget.policy,
                             "cappedAutoscalers": [
                                 {"tier": t.tier, "requestedMaxReplicas": t.autoscaling.max_replicas,
                                  "maxReplicas": t.most_pods} for t in self.capped],
                             "largestFeasibleMaxReplicas": [
                                 {"tier": tier, "maxReplicas": most}
                                 for tier, most in self.budget.largest_feasible_max_replicas]}
        return out


def tune(spec: FlaskAppSpec) -> Tuning:
    web = _tune_web(spec)
    derived = {p.name: (p.concurrency, "explicit") if p.concurrency != "auto" else bounded_processes(
        celery_concurrency(cpu_cores(p.resources, "worker")), container_memory(p.resources, "worker"))
        for p in spec.worker_pools}
    concurrency = {name: count for name, (count, _) in derived.items()}
    demands = _connection_demands(spec, web, concurrency)
    if spec.database and spec.database.pooler.enabled:
        tiers, budget = _fit_pooler(spec, demands)
    else:
        tiers, budget = _fit_budget(spec, demands)
    web, tiers = _threads_within_pool(spec, web, tiers)
    return Tuning(
        agent=spec.agent.enabled,
        web=web,
        pool_concurrency=concurrency,
        pool_concurrency_bound_by={name: bound for name, (_, bound) in derived.items()},
        nginx_worker_processes=nginx_workers(cpu_cores(spec.nginx.resources, "nginx"),
                                             container_memory(spec.nginx.resources, "nginx")),
        redis_cache_maxmemory=redis_maxmemory(spec.redis.cache.memory),
        memcached_memory_mib=(memcached_memory_mib(spec.redis.cache.memory)
                              if spec.redis.cache.engine == "memcached" else 0),
        memcached_threads=max(1, math.ceil(parse_quantity(spec.redis.cache.cpu))),
        redis_broker_maxmemory=redis_maxmemory(spec.redis.broker.memory),
        tiers=tiers,
        budget=budget,
        pooler_max_clients=(sum(t.connections_at_peak for t in tiers if t.via_pooler) + POOLER_SPARE_CLIENTS
                            if any(t.via_pooler for t in tiers) else 0),
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


def _threads_within_pool(spec: FlaskAppSpec, web: WebTuning,
                         tiers: tuple[TierConnections, ...]) -> tuple[WebTuning, tuple[TierConnections, ...]]:
    """Automatic gthread threads never exceed the connections the plan gives a process (pool_size + max_overflow):
    a thread that finds the pool empty waits pool_timeout and then fails its request (SQLAlchemy pooling.rst,
    QueuePool), so a thread the plan has no connection for only turns load into errors. Explicit threads stay."""
    if spec.database is None or web.worker_class != "gthread" or spec.web.gunicorn.threads != "auto":
        return web, tiers
    tier = next(t for t in tiers if t.tier == "web")
    room = tier.pool_size + tier.max_overflow
    if tier.via_pooler or web.threads <= room:
        return web, tiers
    threads = max(1, room)
    return (dataclasses.replace(web, threads=threads),
            tuple(dataclasses.replace(t, threads_per_process=threads) if t is tier else t for t in tiers))


@dataclass(frozen=True)
class _Demand:
    """What a tier would like: a pool per process sized to its concurrency (SQLAlchemy pooling.rst)."""

    wanted: TierConnections
    shrinkable: bool = True


def _connection_demands(spec: FlaskAppSpec, web: WebTuning, concurrency: dict[str, int]) -> list[_Demand]:
    # Under gthread each thread may hold a connection: pool_size >= threads (tuning.md, SQLAlchemy pools).
    web_demand = GEVENT_POOL_DEMAND if web.worker_class == "gevent" else web.threads
    demands = [_Demand(TierConnections(
        "web", most_replicas(spec.web.replicas, spec.web.autoscaling, DEFAULT_WEB_REPLICAS),
        web.workers, web.threads, web_demand, math.ceil(web_demand / 2), autoscaling=spec.web.autoscaling))]
    for pool in spec.worker_pools:
        # A prefork child runs one task at a time: one connection, one spare.
        demands.append(_Demand(TierConnections(
            f"worker-{pool.name}", most_replicas(pool.replicas, pool.autoscaling, DEFAULT_POOL_REPLICAS),
            concurrency[pool.name], 1, 1, 1, autoscaling=pool.autoscaling)))
    if spec.beat.enabled:  # one replica, Recreate: never two at once
        demands.append(_Demand(TierConnections("beat", 1, 1, 1, 1, 0, surges=False), shrinkable=False))
    if spec.migrations:  # runs while the previous release still serves
        demands.append(_Demand(TierConnections("migrations", 1, 1, 1, 1, 0, surges=False), shrinkable=False))
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


def _total(tiers: Sequence[TierConnections]) -> int:
    """Server connections at the worst moment (PgBouncer's clients are not the server's)."""
    return sum(t.connections_at_peak for t in tiers if not t.via_pooler)


def _with_most(tiers: Sequence[TierConnections], name: str, most: int) -> list[TierConnections]:
    return [dataclasses.replace(t, most_pods=most) if t.tier == name else t for t in tiers]


def _largest_fitting(tiers: Sequence[TierConnections], name: str, low: int, high: int,
                     available: int) -> Optional[int]:
    """The largest maximum in [low, high] for tier `name` that keeps the total within `available`, the
    others unchanged (the total grows with it, so the first fit from the top is the largest)."""
    return next((m for m in range(high, low - 1, -1) if _total(_with_most(tiers, name, m)) <= available), None)


def capping_order(spec: FlaskAppSpec) -> list[str]:
    """Autoscaled tiers, the one to keep whole longest first: database.autoscalingPriority, then the web tier,
    then the worker pools in spec order."""
    autoscaled = (["web"] if spec.web.autoscaling else []) + [
        f"worker-{p.name}" for p in spec.worker_pools if p.autoscaling]
    given = [t for t in (spec.database.autoscaling_priority if spec.database else []) if t in autoscaled]
    return given + [t for t in autoscaled if t not in given]


def _cap_autoscalers(tiers: tuple[TierConnections, ...], order: list[str],
                     available: int) -> Optional[tuple[TierConnections, ...]]:
    """Lower autoscaler maxima, lowest priority first, until the total fits; then hand what is left back in
    priority order, so that no capped maximum could be raised by one without breaking the budget. None when
    even every autoscaler at its minReplicas (at least 1) does not fit."""
    current = list(tiers)
    by_name = {t.tier: t for t in tiers}
    for name in reversed(order):
        bounds = by_name[name].autoscaling
        # Never below one: a maximum of 0 (a queue-scaled pool's minReplicas) is a pool that can never run a task.
        low = max(1, bounds.min_replicas)
        most = _largest_fitting(current, name, low, bounds.max_replicas, available)
        current = _with_most(current, name, most if most is not None else low)
        if most is not None:
            break
    if _total(current) > available:
        return None
    for name in order:
        bounds = by_name[name].autoscaling
        most = next(t.most_pods for t in current if t.tier == name)
        current = _with_most(current, name, _largest_fitting(current, name, most, bounds.max_replicas, available))
    return tuple(current)


def _largest_feasible(tiers: tuple[TierConnections, ...], available: int) -> tuple[tuple[str, int], ...]:
    """Per autoscaled tier, the largest maximum (up to the API's 1000) that fits with the others as they are."""
    out = []
    for t in tiers:
        if t.autoscaling is not None:
            most = _largest_fitting(tiers, t.tier, t.autoscaling.min_replicas, MAX_AUTOSCALER_REPLICAS, available)
            out.append((t.tier, most if most is not None else 0))
    return tuple(out)


def _fit_budget(spec: FlaskAppSpec, demands: list[_Demand]) -> tuple[tuple[TierConnections, ...], Optional[Budget]]:
    """Largest pools that keep the worst-moment total within max_connections - reserved.

    Order of sacrifice: first the overflow (bursts), then pool_size down to database.minimumPoolSize for every
    shrinkable tier; then (budgetPolicy capAutoscaling) the autoscalers' maxima, lowest priority first.
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
    smallest = min(db.minimum_pool_size, largest)
    candidates = [first] + [_assign(demands, cap, 0, size_override, overflow_override)
                            for cap in range(largest, smallest - 1, -1)]

    def budget(tiers: tuple[TierConnections, ...], feasible: bool, message: str) -> Budget:
        return Budget(db.max_connections, db.reserved_connections, _total(tiers), feasible, message,
                      db.budget_policy, _largest_feasible(tiers, available))

    for tiers in candidates:
        total = _total(tiers)
        if total <= available:
            return tiers, budget(tiers, True, f"{total} of {available} connections at peak")
    tightest = candidates[-1]
    overridden = size_override is not None or overflow_override is not None
    order = capping_order(spec) if db.budget_policy == "capAutoscaling" else []
    if order:
        capped = _cap_autoscalers(tightest, order, available)
        if capped is not None:
            lowered = ", ".join(f"{t.tier} {t.autoscaling.max_replicas} -> {t.most_pods}"
                                for t in capped if t.capped)
            return capped, budget(capped, True, f"{_total(capped)} of {available} connections at peak with "
                                                f"autoscaler maxima capped ({lowered})")
        tightest = _cap_autoscalers_to_minimum(tightest, order)
    total = _total(tightest)
    return tightest, budget(tightest, False, _infeasible_message(
        tightest, total, available, db.max_connections, db.reserved_connections, overridden, smallest,
        capped=bool(order)))


def _fit_pooler(spec: FlaskAppSpec, demands: list[_Demand]) -> tuple[tuple[TierConnections, ...], Budget]:
    """With PgBouncer in front: the app's processes keep the pools they want (or the overrides) as PgBouncer
    clients; the server sees PgBouncer's pools (default_pool_size, capped by max_db_connections, per pod, at
    the pooler's peak with its rolling-update surge) and the migration Job, which connects directly (a migration
    holds session state: advisory locks, long transactions). PgBouncer's config docs (pgbouncer.org/config.html)."""
    db = spec.database
    available = db.max_connections - db.reserved_connections
    clients = [dataclasses.replace(t, via_pooler=t.tier != "migrations")
               for t in _assign(demands, 10**6, 10**6, db.pool.size, db.pool.max_overflow)]
    pooler = TierConnections(POOLER_TIER, db.pooler.replicas, 1, 1, 1, 0)
    room = available - _total(clients)
    size = db.pooler.pool_size or max(1, room // pooler.peak_pods)
    tiers = (*clients, dataclasses.replace(pooler, pool_size=size))
    total = _total(tiers)
    feasible = total <= available
    server = tiers[-1]
    # Session pooling gives each client connection a server connection until it closes: clients beyond the
    # server pools wait query_wait_timeout, then fail (pgbouncer.org/features.html).
    sessions = sum(t.connections_at_peak for t in clients if t.via_pooler)
    serving = pooler.most_pods * size
    if feasible and db.pooler.pool_mode == "session" and sessions > serving:
        return tiers, Budget(db.max_connections, db.reserved_connections, total, False, (
            f"poolMode session holds a server connection per client connection: the app opens up to {sessions} "
            f"at peak, PgBouncer's pools hold {serving} ({pooler.most_pods} pods x poolSize {size}); the rest "
            f"would wait and fail. Use poolMode transaction, or lower the app's pools (database.pool), or raise "
            f"database.pooler.poolSize within maxConnections."), db.budget_policy)
    message = (f"{total} of {available} connections at peak: PgBouncer {server.peak_pods} pods x {size}"
               if feasible else
               f"connection budget exceeded: peak {total} > {available} (maxConnections {db.max_connections} - "
               f"reservedConnections {db.reserved_connections}): PgBouncer {server.peak_pods} pods at peak "
               f"(replicas {server.most_pods} + surge) x poolSize {size} = {server.connections_at_peak}"
               f"{' + migrations 1' if spec.migrations else ''}. Lower database.pooler.replicas or poolSize, "
               f"or raise database.maxConnections.")
    return tiers, Budget(db.max_connections, db.reserved_connections, total, feasible, message, db.budget_policy)


def _cap_autoscalers_to_minimum(tiers: tuple[TierConnections, ...], order: list[str]) -> tuple[TierConnections, ...]:
    return tuple(dataclasses.replace(t, most_pods=t.autoscaling.min_replicas) if t.tier in order else t
                 for t in tiers)


def _infeasible_message(tiers: tuple[TierConnections, ...], total: int, available: int,
                        max_connections: int, reserved: int, overridden: bool, smallest: int,
                        capped: bool) -> str:
    parts = ", ".join(f"{t.tier} {t.peak_pods} pods x {t.processes_per_pod} processes x "
                      f"{t.pool_size + t.max_overflow} = {t.connections_at_peak}" for t in tiers)
    pools = ("with the pool overrides in database.pool" if overridden
             else f"even with pool_size {smallest} and max_overflow 0")
    if capped:
        pools += " and every autoscaler at its minReplicas"
    lower = "fixed replicas, autoscaler minima" if capped else "replicas, autoscaler maxima"
    return (f"connection budget exceeded {pools}: peak {total} > {available} "
            f"(maxConnections {max_connections} - reservedConnections {reserved}); {parts}. "
            f"Lower the {lower}, gunicorn workers or worker concurrency, or raise "
            f"database.maxConnections (or enable database.pooler).")
