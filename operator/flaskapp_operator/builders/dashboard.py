"""A Grafana dashboard per FlaskApp, one row per tier, in a ConfigMap that Grafana's dashboard sidecar
(the kube-prometheus-stack and grafana charts) loads by its `grafana_dashboard` label."""

from __future__ import annotations

import json

from .common import checksum
from .context import Context
from .alerts import requests_rate

DASHBOARD_LABEL = "grafana_dashboard"
W = 8  # panel width: three per row of Grafana's 24 columns


def _panel(title: str, exprs: dict[str, str], unit: str = "short") -> dict:
    return {"type": "timeseries", "title": title, "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"expr": e, "legendFormat": legend, "refId": chr(65 + i)}
                        for i, (legend, e) in enumerate(exprs.items())]}


def _rows(ctx: Context) -> list[tuple[str, list[dict]]]:
    app = f'namespace="{ctx.namespace}",flaskapp="{ctx.name}"'
    nginx = f'{app},tier="nginx"'
    web = f'{app},tier="web"'
    hits = ctx.spec.monitoring.cache_hit_sampling
    rows = [
        ("nginx", [
            _panel("Requests (all, from stub_status) and app routes", {
                "all": f"sum(rate(nginx_http_requests_total{{{nginx}}}[5m]))",
                "app routes": requests_rate(nginx, hits, "5m")}, "reqps"),
            _panel("Requests that reached the app, by status", {
                "{{status}}": f'sum by (status) (rate(nginx_http_response_count_total{{{nginx},cache!="HIT"}}[5m]))'}, "reqps"),
            # One in `hits` cache hits is logged to the exporter: weighted back here.
            _panel("Micro-cache outcome", {
                "{{cache}}": f'sum by (cache) (rate(nginx_http_response_count_total{{{nginx},cache!="HIT"}}[5m]))',
                "HIT": f'{hits} * sum(rate(nginx_http_response_count_total{{{nginx},cache="HIT"}}[5m]))'}, "reqps"),
            _panel("Upstream time p50 / p95 / p99", {
                f"p{q}": f"histogram_quantile(0.{q}, sum by (le) (rate(nginx_http_upstream_time_seconds_hist_bucket{{{nginx}}}[5m])))"
                for q in ("50", "95", "99")}, "s"),
            _panel("Active connections", {"{{pod}}": f"nginx_connections_active{{{nginx}}}"}),
        ]),
        ("web (gunicorn)", [
            _panel("Requests by status", {"{{status}}": f"sum by (status) (rate(gunicorn_responses_total{{{web}}}[5m]))"}, "reqps"),
            _panel("Request duration p95", {"p95": f"histogram_quantile(0.95, sum by (le) (rate(gunicorn_request_duration_seconds_bucket{{{web}}}[5m])))"}, "s"),
            # Little's law: time spent in requests per second = requests in progress = busy threads.
            _panel("Busy threads per pod (of workers x threads)", {"{{pod}}": f"sum by (pod) (rate(gunicorn_request_duration_seconds_sum{{{web}}}[1m]))"}),
        ]),
        ("redis", [
            _panel("Memory used / maxmemory", {"{{tier}}": f"redis_memory_used_bytes{{{app}}} / redis_memory_max_bytes{{{app}}}"}, "percentunit"),
            _panel("Cache hit ratio", {"hits": f'rate(redis_keyspace_hits_total{{{app},tier="redis-cache"}}[5m]) / (rate(redis_keyspace_hits_total{{{app},tier="redis-cache"}}[5m]) + rate(redis_keyspace_misses_total{{{app},tier="redis-cache"}}[5m]))'}, "percentunit"),
            _panel("Evictions", {"{{tier}}": f"rate(redis_evicted_keys_total{{{app}}}[5m])"}),
            _panel("Connected clients", {"{{tier}}": f"redis_connected_clients{{{app}}}"}),
        ]),
        ("database connection budget", [
            _panel("Worst case vs available", {
                "peak": f'flaskapp_connection_budget_peak_connections{{flaskapp_namespace="{ctx.namespace}",flaskapp="{ctx.name}"}}',
                "available": f'flaskapp_connection_budget_available_connections{{flaskapp_namespace="{ctx.namespace}",flaskapp="{ctx.name}"}}'}),
        ]),
    ]
    if ctx.spec.agent.enabled:
        rows.insert(2, ("endpoints (in-process agent)", _endpoint_panels(web)))
    if ctx.runs_flower:
        broker = f'{app},tier="redis-broker"'
        rows.insert(2, ("celery", [
            _panel("Queue length", {"{{key}}": f"redis_key_size{{{broker}}}"}),
            _panel("Tasks by outcome", {"{{type}}": f'sum by (type) (rate(flower_events_total{{{app},type=~"task-(succeeded|failed|retried)"}}[5m]))'}, "ops"),
            _panel("Task runtime p95", {"{{task}}": f"histogram_quantile(0.95, sum by (le, task) (rate(flower_task_runtime_seconds_bucket{{{app}}}[5m])))"}, "s"),
            _panel("Workers online", {"online": f"sum(flower_worker_online{{{app}}})"}),
        ]))
    return rows


def _endpoint_panels(web: str) -> list[dict]:
    """Per Flask URL rule and method, from the agent's histograms in the web pods' statsd_exporter."""
    by = "route, method"
    # Requests without SQL send no statement count: average over every request (the duration's count).
    per_request = (f"sum by ({by}) (rate(flaskapp_request_queries_sum{{{web}}}[5m])) / "
                   f"sum by ({by}) (rate(flaskapp_request_duration_seconds_count{{{web}}}[5m]))")
    return [
        _panel("Slowest endpoints (p95)", {"{{method}} {{route}}": f"topk(10, histogram_quantile(0.95, sum by ({by}, le) "
                                           f"(rate(flaskapp_request_duration_seconds_bucket{{{web}}}[5m]))))"}, "s"),
        _panel("Busiest endpoints", {"{{method}} {{route}}": f"topk(10, sum by ({by}) "
                                     f"(rate(flaskapp_request_duration_seconds_count{{{web}}}[5m])))"}, "reqps"),
        _panel("Most queries per request", {"{{method}} {{route}}": f"topk(10, {per_request})"}),
        _panel("N+1 suspects (requests per second)", {"{{method}} {{route}}": f"topk(10, sum by ({by}) "
                                                      f"(rate(flaskapp_request_n_plus_one_total{{{web}}}[15m])))"}),
        _panel("Share of request time in SQL", {"{{method}} {{route}}": f"topk(10, sum by ({by}) "
                                                f"(rate(flaskapp_request_sql_duration_seconds_sum{{{web}}}[5m])) / "
                                                f"sum by ({by}) (rate(flaskapp_request_duration_seconds_sum{{{web}}}[5m])))"},
               "percentunit"),
        _panel("App cache hit ratio (Flask-Caching)", {"hits": f'sum(rate(flaskapp_cache_lookups_total{{{web},result="hit"}}[5m])) / '
                                                       f"sum(rate(flaskapp_cache_lookups_total{{{web}}}[5m]))"}, "percentunit"),
    ]


def dashboard(ctx: Context) -> dict:
    panels: list[dict] = []
    y = 0
    for title, row in _rows(ctx):
        panels.append({"type": "row", "title": title, "collapsed": False, "id": len(panels) + 1,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for i, panel in enumerate(row):
            panels.append({**panel, "id": len(panels) + 1, "gridPos": {"h": 8, "w": W, "x": (i % 3) * W, "y": y + (i // 3) * 8}})
        y += 8 * ((len(row) + 2) // 3)
    return {
        "title": f"FlaskApp {ctx.namespace}/{ctx.name}", "uid": "flaskapp-" + checksum(ctx.namespace, ctx.name)[:16],
        "tags": ["flaskapp"], "timezone": "browser", "schemaVersion": 39, "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


def dashboard_json(ctx: Context) -> str:
    return json.dumps(dashboard(ctx), indent=1, sort_keys=True)


def dashboard_configmap(ctx: Context, meta: dict) -> dict:
    meta["labels"][DASHBOARD_LABEL] = "1"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {f"flaskapp-{ctx.namespace}-{ctx.name}.json": dashboard_json(ctx)}}
