"""spec.redis.cache.engine memcached as rendered: a memcached instead of the cache Redis, Flask-Caching's env,
NetworkPolicies and alerts that follow, and no Redis at all when nothing needs a broker."""

from __future__ import annotations

import pytest

from testsupport.samples import MEMCACHED_REJECTED, load_sample, patched
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError


def by_key(objects):
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def memcached_full(**patch):
    return patched(load_sample("full"), "shop", {"redis.cache": {"engine": "memcached", "memory": "128Mi"}, **patch})


def test_memcached_replaces_the_cache_redis_and_the_app_is_told_where_it_is():
    objects = by_key(render(memcached_full(), redis_password="pw").objects)
    assert ("Deployment", "shop-redis-cache") not in objects and ("Service", "shop-redis-cache") not in objects
    assert ("StatefulSet", "shop-redis-broker") in objects  # Celery still has its broker
    container = objects[("Deployment", "shop-memcached")]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][0] == "memcached" and "--memory-limit=96" in container["command"]  # 75 % of 128
    assert objects[("Service", "shop-memcached")]["spec"]["ports"][0]["port"] == 11211
    env = objects[("ConfigMap", "shop-env")]["data"]
    assert env["CACHE_TYPE"] == "MemcachedCache"
    assert env["CACHE_MEMCACHED_SERVERS"] == "shop-memcached.default.svc:11211"
    web_env = {e["name"] for e in objects[("Deployment", "shop-web")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "CACHE_REDIS_URL" not in web_env and "CELERY_BROKER_URL" in web_env
    policy = objects[("NetworkPolicy", "shop-memcached")]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 11211}]
    web_egress = objects[("NetworkPolicy", "shop-web")]["spec"]["egress"]
    assert any(r.get("ports") == [{"protocol": "TCP", "port": 11211}] for r in web_egress)
    rules = [r for g in objects[("PrometheusRule", "shop")]["spec"]["groups"] for r in g["rules"]]
    assert not any('tier="redis-cache"' in r["expr"] for r in rules)


def test_without_a_broker_no_redis_runs_and_pods_do_not_roll_between_passes():
    doc = memcached_full(workerPools=[], beat={"enabled": False}, celeryApp=None)
    first, second = render(doc, redis_password="one"), render(doc, redis_password="two")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in first.objects}
    assert not [k for k in kinds if "redis" in k[1]], kinds
    # The operator draws a new password when no Redis Secret exists: with no Redis, nothing may depend on it.
    assert first.objects == second.objects


@pytest.mark.parametrize("case,patch,field", MEMCACHED_REJECTED, ids=[c for c, _, _ in MEMCACHED_REJECTED])
def test_the_parser_refuses_bad_cache_engines_naming_the_field(case, patch, field):
    with pytest.raises(SpecError) as err:
        render(patched(load_sample("full"), case, patch), redis_password="pw")
    assert any(e.path.startswith(field) for e in err.value.errors), err.value
