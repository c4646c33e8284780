"""NetworkPolicies, one per tier: each accepts traffic only from the tier that calls it and sends only where
it must. Every policy lists both directions, so the app works unchanged in a namespace whose default is to
deny everything, and nothing else in the cluster reaches gunicorn or Redis.

    ingress controller -> nginx -> web -> {redis-cache or memcached, redis-broker, database}
                                  workers, beat, migrations -> {redis-cache or memcached, redis-broker, database}
    with a pooler: web, workers, beat -> pooler -> database (migrations still -> database)
    flower -> redis-broker (monitoring)
    KEDA (networkPolicy.autoscalerFrom) -> redis-broker (pools scaled on queue length)
    monitoring.scrapeFrom -> each tier's metrics ports (monitoring)
    every tier that resolves names -> DNS
"""

from __future__ import annotations

from ..naming import COMPONENT_LABEL, INSTANCE_LABEL, NAME_LABEL, selector_labels
from .availability import queue_scaled
from .common import metadata
from .config import agent_statsd_tiers
from ..tuning import POOLER_TIER
from .context import MEMCACHED_COMPONENT, MEMCACHED_PORT, NGINX_PORT, POOLER_PORT, REDIS_PORT, Context
from .pooler import database_url
from .monitoring import METRICS_PORTS, enabled as monitoring_enabled

# DNS wherever the cluster runs it (a kube-system pod, a node-local cache, a host process).
DNS_EGRESS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
# An external Redis, wherever it is: the default port and the usual TLS one.
EXTERNAL_REDIS_PORTS = (6379, 6380)


def app_tiers(ctx: Context) -> list[str]:
    """The tiers that run the app's code, hence talk to Redis and the database: exactly the tiers the
    connection budget counts (web first)."""
    return [t.tier for t in ctx.tuning.tiers if t.tier != POOLER_TIER]


def _pooled(ctx: Context, tier: str) -> bool:
    """Whether `tier` reaches the database through PgBouncer (builders/config.py, database_url_env)."""
    return bool(ctx.spec.database and ctx.spec.database.pooler.enabled and tier != "migrations")


def _database_port(ctx: Context) -> int:
    """The server's port: the database URL's when the operator reads it (the pooler's configuration comes from it),
    else networkPolicy.databasePort."""
    db = ctx.spec.database
    if db and db.pooler.enabled and ctx.database_url:
        return database_url(ctx).port
    return ctx.spec.network_policy.database_port


def _database_egress(ctx: Context) -> dict:
    np = ctx.spec.network_policy
    rule: dict = {"ports": _tcp(_database_port(ctx))}
    if np.database_to:
        rule = {"to": [dict(peer) for peer in np.database_to], **rule}
    return rule


def _pods(ctx: Context, components: list[str]) -> dict:
    return {"podSelector": {
        "matchLabels": {NAME_LABEL: "flaskapp", INSTANCE_LABEL: ctx.name},
        "matchExpressions": [{"key": COMPONENT_LABEL, "operator": "In", "values": sorted(components)}]}}


def _tcp(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _policy(ctx: Context, component: str, ingress: list[dict], egress: list[dict]) -> dict:
    """Both policy types always: a direction without rules is denied entirely. An empty list is left out,
    as the API server stores it (an empty list sent would differ from the stored object forever)."""
    spec: dict = {"podSelector": {"matchLabels": selector_labels(ctx.name, component)},
                  "policyTypes": ["Ingress", "Egress"]}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(ctx, ctx.child(component), component), "spec": spec}


def _app_egress(ctx: Context, tier: str) -> list[dict]:
    spec, np = ctx.spec, ctx.spec.network_policy
    rules = [DNS_EGRESS]
    if spec.redis.mode == "managed":
        if ctx.redis_components:
            rules.append({"to": [_pods(ctx, list(ctx.redis_components))], "ports": _tcp(REDIS_PORT)})
        if ctx.memcached:
            rules.append({"to": [_pods(ctx, [MEMCACHED_COMPONENT])], "ports": _tcp(MEMCACHED_PORT)})
    else:
        rules.append({"ports": _tcp(*EXTERNAL_REDIS_PORTS)})
    if _pooled(ctx, tier):
        rules.append({"to": [_pods(ctx, [POOLER_TIER])], "ports": _tcp(POOLER_PORT)})
    elif spec.database:
        rules.append(_database_egress(ctx))
    rules.extend(dict(extra) for extra in np.extra_egress)
    return rules


def _scrapers(ctx: Context, *port_names: str) -> list[dict]:
    """The metrics ports of a tier, open to monitoring.scrapeFrom only (when monitoring is on)."""
    if not monitoring_enabled(ctx):
        return []
    return [{"from": [dict(peer) for peer in ctx.spec.monitoring.scrape_from],
             "ports": _tcp(*(METRICS_PORTS[p] for p in port_names))}]


def network_policies(ctx: Context) -> list[dict]:
    np = ctx.spec.network_policy
    if not np.enabled:
        return []
    web_port = ctx.spec.web.port
    nginx_from: dict = {"ports": _tcp(NGINX_PORT)}
    if np.ingress_from:
        nginx_from = {"from": [dict(peer) for peer in np.ingress_from], **nginx_from}
    policies = [
        _policy(ctx, "nginx", ingress=[nginx_from, *_scrapers(ctx, "nginx-metrics", "access-metrics")],
                egress=[DNS_EGRESS, {"to": [_pods(ctx, ["web"])], "ports": _tcp(web_port)}]),
        _policy(ctx, "web", ingress=[{"from": [_pods(ctx, ["nginx"])], "ports": _tcp(web_port)},
                                     *_scrapers(ctx, "statsd-metrics")],
                egress=_app_egress(ctx, "web")),
    ]
    # Workers, beat and migrations serve nothing: no ingress but the scrape of a worker's statsd_exporter (agent).
    scraped = agent_statsd_tiers(ctx)
    policies += [_policy(ctx, tier, ingress=_scrapers(ctx, "statsd-metrics") if tier in scraped else [],
                         egress=_app_egress(ctx, tier)) for tier in app_tiers(ctx)[1:]]
    if pooled := [t for t in app_tiers(ctx) if _pooled(ctx, t)]:
        policies.append(_policy(ctx, POOLER_TIER, ingress=[{"from": [_pods(ctx, pooled)], "ports": _tcp(POOLER_PORT)}],
                                egress=[DNS_EGRESS, _database_egress(ctx)]))
    broker_clients = app_tiers(ctx)
    if ctx.runs_flower:
        broker_clients = [*broker_clients, "flower"]
        broker_egress = ([{"to": [_pods(ctx, ["redis-broker"])], "ports": _tcp(REDIS_PORT)}]
                         if ctx.spec.redis.mode == "managed" else [{"ports": _tcp(*EXTERNAL_REDIS_PORTS)}])
        policies.append(_policy(ctx, "flower", ingress=_scrapers(ctx, "celery-metrics"),
                                egress=[DNS_EGRESS, *broker_egress]))
    if ctx.memcached:
        policies.append(_policy(ctx, MEMCACHED_COMPONENT, egress=[], ingress=[
            {"from": [_pods(ctx, app_tiers(ctx))], "ports": _tcp(MEMCACHED_PORT)}]))
    if ctx.spec.redis.mode == "managed":
        for component in ctx.redis_components:
            clients = broker_clients if component == "redis-broker" else app_tiers(ctx)
            ingress = [{"from": [_pods(ctx, clients)], "ports": _tcp(REDIS_PORT)}, *_scrapers(ctx, "redis-metrics")]
            if component == "redis-broker" and np.autoscaler_from and any(map(queue_scaled, ctx.spec.worker_pools)):
                # KEDA reads the queues' lengths from its own namespace: a pool at zero wakes only if it can.
                ingress.append({"from": [dict(peer) for peer in np.autoscaler_from], "ports": _tcp(REDIS_PORT)})
            policies.append(_policy(ctx, component, egress=[], ingress=ingress))
    return policies
