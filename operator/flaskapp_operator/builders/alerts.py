"""The PrometheusRule of a FlaskApp: alerts on what its users and its queues feel, each with a runbook.

Metric names are those of the exporters the monitoring builder runs (see builders/monitoring.py) and of
the operator itself (flaskapp_connection_budget_*). Series carry `namespace` (Prometheus Operator), and
`flaskapp` and `tier` (the PodMonitor's relabelings).
"""

from __future__ import annotations

from .context import Context

# Objective window and hold times: long enough that one slow deploy or a burst does not page anyone.
RATE_WINDOW = "5m"
BROKER_MEMORY_RATIO = 0.8  # noeviction: at maxmemory the broker refuses new tasks
EVICTION_RATIO = 0.1  # evictions per cache lookup: the cache is too small for its working set
BUDGET_RATIO = 0.9
# A queue that holds tasks and does not shrink for this long is not consumed (scraped every 30 s: 6 samples).
QUEUE_STALL_WINDOW = "3m"


def requests_rate(selector: str, hit_sampling: int, window: str = RATE_WINDOW) -> str:
    """Requests per second through nginx's app routes, the sampled micro-cache hits weighted back (one in
    `hit_sampling` reaches the access-log exporter)."""
    counter = "nginx_http_response_count_total"
    return (f'(sum(rate({counter}{{{selector},cache!="HIT"}}[{window}])) + '
            f'({hit_sampling} * sum(rate({counter}{{{selector},cache="HIT"}}[{window}])) or vector(0)))')


def _alert(name: str, expr: str, hold: str, severity: str, summary: str, runbook: str, **labels: str) -> dict:
    return {"alert": name, "expr": expr, "for": hold, "labels": {"severity": severity, **labels},
            "annotations": {"summary": summary, "description": summary + " ({{ $value | humanize }}).",
                            "runbook": runbook}}


def alert_rules(ctx: Context) -> list[dict]:
    m = ctx.spec.monitoring
    app = f'namespace="{ctx.namespace}",flaskapp="{ctx.name}"'
    nginx = f'{app},tier="nginx"'
    rules = [
        _alert("FlaskAppHighErrorRatio",
               f'sum(rate(nginx_http_response_count_total{{{nginx},status=~"5.."}}[{RATE_WINDOW}])) / '
               f"{requests_rate(nginx, m.cache_hit_sampling)} > {m.error_ratio_percent / 100:g}",
               "5m", "critical",
               f"More than {m.error_ratio_percent}% of {ctx.name}'s answers are server errors",
               "Read the web pods' logs (kubectl logs -l app.kubernetes.io/instance=" + ctx.name
               + ",app.kubernetes.io/component=web -c gunicorn) for tracebacks; 502/504 from nginx mean gunicorn "
               "is down or slower than its timeout (kubectl get flaskapp " + ctx.name + " shows which tier is not "
               "ready). Roll back the image if the ratio rose with a deploy."),
        _alert("FlaskAppSlowResponses",
               f"histogram_quantile(0.95, sum by (le) (rate(nginx_http_upstream_time_seconds_hist_bucket{{{nginx}}}"
               f"[{RATE_WINDOW}]))) > {m.latency_objective_ms / 1000:g}",
               "10m", "warning",
               f"95% of {ctx.name}'s app responses take longer than the {m.latency_objective_ms} ms objective",
               "Compare gunicorn_request_duration_seconds (time inside the app) with the upstream time at nginx: "
               "close values point at the app or the database (slow queries, a pool waiting for connections); "
               "a large gap means requests queue for a free gunicorn thread - busy threads near workers x threads "
               "on the dashboard: add replicas or CPU."),
        _alert("FlaskAppRedisDown", f"redis_up{{{app}}} == 0", "2m", "critical",
               f"A Redis of {ctx.name} does not answer its exporter",
               "kubectl describe pod for the tier in the alert's labels: OOMKilled means its memory is too small "
               "(spec.redis.cache/broker.memory); a broker on a full volume stops writing its append-only file."),
        _alert("FlaskAppBrokerMemoryHigh",
               f'redis_memory_used_bytes{{{app},tier="redis-broker"}} / '
               f'redis_memory_max_bytes{{{app},tier="redis-broker"}} > {BROKER_MEMORY_RATIO:g}',
               "5m", "warning",
               f"{ctx.name}'s broker Redis is near maxmemory: at the limit it refuses new tasks (noeviction)",
               "Queues are growing faster than workers consume them (see the queue alerts) or results are not "
               "expiring; raise spec.redis.broker.memory or add worker replicas."),
        _alert("FlaskAppCacheEvictionStorm",
               f'rate(redis_evicted_keys_total{{{app},tier="redis-cache"}}[{RATE_WINDOW}]) / '
               f'(rate(redis_keyspace_hits_total{{{app},tier="redis-cache"}}[{RATE_WINDOW}]) + '
               f'rate(redis_keyspace_misses_total{{{app},tier="redis-cache"}}[{RATE_WINDOW}])) > {EVICTION_RATIO:g}',
               "10m", "warning",
               f"{ctx.name}'s cache evicts keys on more than {EVICTION_RATIO:.0%} of lookups: it is too small for what "
               "the app stores",
               "Raise spec.redis.cache.memory, or shorten timeouts of large entries (CACHE_DEFAULT_TIMEOUT)."),
        _alert("FlaskAppConnectionBudgetHigh",
               f'flaskapp_connection_budget_peak_connections{{flaskapp_namespace="{ctx.namespace}",'
               f'flaskapp="{ctx.name}"}} / flaskapp_connection_budget_available_connections'
               f'{{flaskapp_namespace="{ctx.namespace}",flaskapp="{ctx.name}"}} > {BUDGET_RATIO:g}',
               "5m", "warning",
               f"{ctx.name}'s worst case uses more than {BUDGET_RATIO:.0%} of the database connections available",
               "One more autoscaler step or tier may not fit: kubectl get flaskapp " + ctx.name + " -o "
               "jsonpath='{.status.tuning}' shows each tier's share; raise database.maxConnections or lower "
               "autoscaling maxima."),
    ]
    if ctx.spec.agent.enabled:
        rules += agent_rules(ctx, app)
    if not ctx.redis_components:  # no exporter beside an external Redis (or no Redis): nothing to alert on
        rules = [r for r in rules if "redis_" not in r["expr"]]
    elif ctx.memcached:  # the cache is a memcached (no exporter here)
        rules = [r for r in rules if 'tier="redis-cache"' not in r["expr"]]
    elif not ctx.uses_broker:  # no broker runs
        rules = [r for r in rules if 'tier="redis-broker"' not in r["expr"]]
    if ctx.runs_flower and ctx.spec.redis.mode == "managed":  # queue lengths come from the broker's exporter
        for queue in ctx.celery_queues:
            pools = [p.name for p in ctx.spec.worker_pools if queue in (p.queues or ["celery"])]
            key = f'{app},tier="redis-broker",key="{queue}"'
            rules.append(_alert(
                "FlaskAppQueueBacklogGrowing",
                f"min_over_time(redis_key_size{{{key}}}[15m]) > 0 and deriv(redis_key_size{{{key}}}[15m]) > 0",
                "15m", "warning", f"Celery queue {queue} of {ctx.name} has grown for 15 minutes",
                "Workers consume slower than tasks arrive: add replicas or concurrency to the pools consuming "
                f"it ({', '.join(pools) or 'none'}), or look for tasks that got slower (flower_task_runtime_seconds).",
                queue=queue))
            online = (f'sum(flower_worker_online{{{app},worker=~"({"|".join(pools)})@.*"}})' if pools else "vector(0)")
            # Flower sets a worker offline only on its worker-offline event: a worker that is SIGKILLed, OOM-killed,
            # hung (celery/celery#1847) or that sends its goodbye while the broker is away stays "online" in Flower
            # forever. So the queue itself is the second witness: it held tasks for the whole window and never
            # shrank (`resets` counts a gauge's decreases), i.e. nobody took one.
            stalled = (f"min_over_time(redis_key_size{{{key}}}[{QUEUE_STALL_WINDOW}]) > 0 "
                       f"and resets(redis_key_size{{{key}}}[{QUEUE_STALL_WINDOW}]) == 0")
            rules.append(_alert(
                "FlaskAppQueueNotConsumed",
                f"(redis_key_size{{{key}}} > 0 unless on() ({online} > 0)) or ({stalled})",
                "2m", "critical", f"Celery queue {queue} of {ctx.name} holds tasks that no worker takes",
                "kubectl get pods -l app.kubernetes.io/instance=" + ctx.name + " for the pools consuming it ("
                + (", ".join(pools) or "no pool lists this queue") + "): crash loops, a pool scaled to zero, "
                "workers that cannot reach the broker or hang (their liveness probe restarts them), or every worker "
                "busy with tasks longer than " + QUEUE_STALL_WINDOW + ".", queue=queue))
    return rules


def agent_rules(ctx: Context, app: str) -> list[dict]:
    """On the in-process agent's metrics (spec.agent): code that queries in a loop, and engines outside the plan."""
    logs = f"kubectl logs -l app.kubernetes.io/instance={ctx.name} --all-containers | grep flaskapp-agent"
    return [
        _alert("FlaskAppNPlusOneQueries",
               f"sum by (route, method) (rate(flaskapp_request_n_plus_one_total{{{app}}}[15m])) > 0",
               "15m", "warning",
               f"Requests to an endpoint of {ctx.name} run one SQL statement {ctx.spec.agent.n_plus_one_threshold} "
               "times or more (an N+1 query)",
               f"{logs} names the statement (logged once per interval). Load the relationship with the parent "
               "query (SQLAlchemy selectinload / joinedload) or fetch the rows in one IN query; the dashboard's "
               "'Most queries per request' panel shows how many each request runs."),
        _alert("FlaskAppConnectionBudgetNotGuaranteed",
               f"sum(flaskapp_agent_unbounded_engines_total{{{app}}}) > 0",
               "5m", "warning",
               f"A process of {ctx.name} created a database engine the agent cannot bound (NullPool, a prebuilt pool "
               "or several engines to one server): the connection budget is not guaranteed",
               f"{logs} names the engine and the reason. Use SQLAlchemy's default QueuePool and one engine per "
               "process (Flask-SQLAlchemy's db.engine), or count the extra connections in "
               "spec.database.reservedConnections."),
    ]


def prometheus_rule(ctx: Context, meta: dict) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": meta,
            "spec": {"groups": [{"name": f"flaskapp.{ctx.namespace}.{ctx.name}", "rules": alert_rules(ctx)}]}}
