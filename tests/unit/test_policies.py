"""The rendered NetworkPolicies, read with an evaluator of the NetworkPolicy semantics written here (not the
builder's code): which pod may open which connection, in a namespace whose default denies everything.
The e2e suite checks the same on real pods with an enforcing engine (kube-router)."""

from __future__ import annotations

import copy

import pytest

from flaskapp_operator.render import render
from testsupport.samples import load_sample

FIXED = {"redis_password": "fixed-for-tests", "uid": "00000000-0000-0000-0000-000000000001"}
DNS = ("dns", 53)


def pod(component: str | None, app: str = "shop") -> dict:
    labels = {"app.kubernetes.io/name": "flaskapp", "app.kubernetes.io/instance": app}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


NS_KEY = "(namespace)"  # a pod of another namespace carries its namespace's labels under this key
OUTSIDER = {"role": "outsider", NS_KEY: {"kubernetes.io/metadata.name": "elsewhere"}}


def outside(labels: dict, namespace: str = "elsewhere") -> dict:
    return {**labels, NS_KEY: {"kubernetes.io/metadata.name": namespace}}


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        if {"In": lambda: value in e["values"], "NotIn": lambda: value not in e["values"],
            "Exists": lambda: present, "DoesNotExist": lambda: not present}[e["operator"]]() is False:
            return False
    return True


def peer_matches(peers: list | None, labels: dict | None) -> bool:
    """A rule without peers matches every address; a podSelector peer alone matches pods of the policy's
    namespace; with a namespaceSelector, pods of the namespaces it selects. `labels` None stands for
    something that is not a pod (DNS, the database, the internet)."""
    if not peers:
        return True
    if labels is None:
        return False
    own = {k: v for k, v in labels.items() if k != NS_KEY}

    def one(p: dict) -> bool:
        if "namespaceSelector" in p:
            return NS_KEY in labels and selects(p["namespaceSelector"], labels[NS_KEY]) and \
                selects(p.get("podSelector", {}), own)
        return "podSelector" in p and NS_KEY not in labels and selects(p["podSelector"], own)
    return any(one(p) for p in peers)


def port_matches(ports: list | None, port: int) -> bool:
    return not ports or any(p["port"] == port for p in ports)


def allowed(policies: list[dict], src: dict | None, dst: dict | None, port: int) -> bool:
    """Egress of the source and ingress of the destination must both allow it; a pod no policy selects
    for a direction is denied that direction (the namespace's default-deny)."""
    def direction(kind: str, own: dict | None, other: dict | None) -> bool:
        if own is None or NS_KEY in own:  # not a pod of this namespace: its side is not ours to police
            return True
        mine = [p for p in policies if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], own)]
        key, peers = ("egress", "to") if kind == "Egress" else ("ingress", "from")
        return any(peer_matches(rule.get(peers), other) and port_matches(rule.get("ports"), port)
                   for p in mine for rule in p["spec"].get(key, []))
    return direction("Egress", src, dst) and direction("Ingress", dst, src)


def full_with_default_policies() -> dict:
    doc = copy.deepcopy(load_sample("full"))
    doc["spec"].pop("networkPolicy", None)
    return doc


@pytest.fixture(scope="module")
def policies():
    return [o for o in render(full_with_default_policies(), **FIXED).objects if o["kind"] == "NetworkPolicy"]


APP_TIERS = ["web", "worker-default", "beat", "migrations"]


@pytest.mark.parametrize("tier", APP_TIERS)
def test_app_tiers_reach_redis_the_database_and_dns_and_nothing_else(policies, tier):
    for redis in ("redis-cache", "redis-broker"):
        assert allowed(policies, pod(tier), pod(redis), 6379)
    assert allowed(policies, pod(tier), None, 5432)  # the database, wherever it is
    assert allowed(policies, pod(tier), None, 53)
    assert not allowed(policies, pod(tier), None, 443)  # the internet: only through extraEgress
    assert not allowed(policies, pod(tier), pod("nginx"), 8080)


def test_only_nginx_reaches_gunicorn(policies):
    assert allowed(policies, pod("nginx"), pod("web"), 8000)
    for other in (OUTSIDER, outside(pod("nginx")), pod(None), pod("worker-default"), pod("redis-cache"),
                  pod("web", app="other")):
        assert not allowed(policies, other, pod("web"), 8000), other
    assert not allowed(policies, None, pod("web"), 8000)  # nor from outside the namespace


def test_nginx_is_the_public_entry_and_reaches_only_web_and_dns(policies):
    assert allowed(policies, None, pod("nginx"), 8080)
    assert allowed(policies, OUTSIDER, pod("nginx"), 8080)
    assert allowed(policies, pod("nginx"), None, 53)
    assert not allowed(policies, pod("nginx"), pod("redis-cache"), 6379)
    assert not allowed(policies, pod("nginx"), None, 5432)


def test_redis_admits_only_this_apps_code_and_sends_nothing(policies):
    for redis in ("redis-cache", "redis-broker"):
        for stranger in (OUTSIDER, outside(pod("web")), pod("nginx"), pod(None), pod("web", app="other")):
            assert not allowed(policies, stranger, pod(redis), 6379), (stranger, redis)
        assert not allowed(policies, pod(redis), None, 53)


def test_workers_beat_and_migrations_accept_no_connection(policies):
    for tier in ("worker-default", "beat", "migrations"):
        assert not allowed(policies, pod("web"), pod(tier), 8000)
        assert not allowed(policies, None, pod(tier), 80)


def test_configured_peers_narrow_nginx_and_database_and_extra_egress_opens_more():
    doc = full_with_default_policies()
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    doc["spec"]["networkPolicy"] = {
        "ingressFrom": [controller], "databaseTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}},
                        "podSelector": {"matchLabels": {"app": "pg"}}}],
        "databasePort": 6432, "extraEgress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}
    policies = [o for o in render(doc, **FIXED).objects if o["kind"] == "NetworkPolicy"]
    assert allowed(policies, outside({"app": "ingress"}, "ingress-nginx"), pod("nginx"), 8080)
    assert not allowed(policies, OUTSIDER, pod("nginx"), 8080)
    assert allowed(policies, pod("web"), outside({"app": "pg"}, "db"), 6432)
    assert not allowed(policies, pod("web"), outside({"app": "pg"}, "db"), 5432)
    assert not allowed(policies, pod("web"), outside({"app": "pg"}, "elsewhere"), 6432)
    assert not allowed(policies, pod("web"), OUTSIDER, 6432)
    assert allowed(policies, pod("worker-default"), None, 443)


def test_disabled_renders_no_policy():
    doc = copy.deepcopy(load_sample("full"))
    doc["spec"]["networkPolicy"] = {"enabled": False}
    assert not [o for o in render(doc, **FIXED).objects if o["kind"] == "NetworkPolicy"]
