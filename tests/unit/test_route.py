"""spec.route: a Gateway API HTTPRoute to nginx beside or instead of the Ingress; the app is Ready only once every
Gateway it names accepted the route (the controllers' own conditions), and Degraded where the API is missing."""

from __future__ import annotations

import copy

import pytest

from flaskapp_operator.observe import Verdict, build_status, route_problem
from flaskapp_operator.reconcile import reconcile
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError
from testsupport.samples import load_sample, patched
from test_observe_and_apply import NOW, cond, dep
from testsupport.memorycluster import MemoryCluster
from test_reconcile import UID

ROUTE = {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
         "hostnames": ["shop.example.com"], "paths": [{"path": "/", "type": "PathPrefix"},
                                                      {"path": "/api", "type": "Exact"}]}


def routed(**route) -> dict:
    return patched(load_sample("full"), "shop", {"route": {**ROUTE, **route}})


def the_route(objects) -> dict:
    (route,) = [o for o in objects if o["kind"] == "HTTPRoute"]
    return route


def test_the_route_sends_every_path_of_every_hostname_to_the_nginx_service():
    objects = render(routed(), redis_password="pw").objects
    route = the_route(objects)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
                                            "namespace": "gateways", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["shop.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [m["path"] for m in rule["matches"]] == [{"type": "PathPrefix", "value": "/"},
                                                     {"type": "Exact", "value": "/api"}]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "shop-nginx")
    (backend,) = rule["backendRefs"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"] in [p["port"] for p in service["spec"]["ports"]]
    # Beside the Ingress (the full sample has one); either may be turned off.
    assert [o for o in objects if o["kind"] == "Ingress"]
    alone = render(patched(routed(), "shop", {"ingress.enabled": False}), redis_password="pw").objects
    assert the_route(alone) and not [o for o in alone if o["kind"] == "Ingress"]


def test_no_route_unless_enabled_and_none_where_the_api_is_not_served():
    assert not [o for o in render(load_sample("full"), redis_password="pw").objects if o["kind"] == "HTTPRoute"]
    assert not [o for o in render(routed(), redis_password="pw", gateway_api=False).objects if o["kind"] == "HTTPRoute"]


@pytest.mark.parametrize("route, field", [
    ({"parentRefs": []}, "spec.route.parentRefs"),
    ({"parentRefs": [{"name": "Not_A_Name"}]}, "spec.route.parentRefs[0].name"),
    ({"hostnames": ["shop example"]}, "spec.route.hostnames[0]"),
    ({"paths": [{"path": "/", "type": "RegularExpression"}]}, "spec.route.paths[0].type"),
    ({"paths": [{"path": "api"}]}, "spec.route.paths[0].path"),
])
def test_bad_routes_are_refused_naming_the_field(route, field):
    with pytest.raises(SpecError) as refused:
        render(routed(**route), redis_password="pw")
    assert any(e.path == field for e in refused.value.errors), refused.value


def accepted(route: dict, **overrides) -> dict:
    """The route as a Gateway controller would answer it (Gateway API status.parents)."""
    route = copy.deepcopy(route)
    conditions = [{"type": t, "status": "True", "reason": t} for t in ("Accepted", "ResolvedRefs")]
    for kind, (status, reason, message) in overrides.items():
        conditions = [c if c["type"] != kind else {"type": kind, "status": status, "reason": reason, "message": message}
                      for c in conditions]
    route["status"] = {"parents": [{"parentRef": ref, "controllerName": "traefik.io/gateway-controller",
                                    "conditions": conditions} for ref in route["spec"]["parentRefs"]]}
    return route


def test_ready_only_once_every_gateway_accepted_the_route():
    route = the_route(render(routed(), redis_password="pw").objects)

    def status(problem):
        return build_status(app="shop", generation=1, verdict=Verdict(), deployments=[dep("web", 1, 1)],
                            pool_names=[], tuning=None, url="http://x/", previous={}, now=NOW, route=problem)

    waiting = status(route_problem(route, "shop-ns"))
    assert cond(waiting, "Ready")["status"] == "False" and cond(waiting, "Ready")["reason"] == "RouteNotAccepted"
    assert "gateways/public listener https" in cond(waiting, "Ready")["message"]
    assert cond(waiting, "Degraded")["status"] == "False"
    refused = status(route_problem(accepted(route, Accepted=("False", "NotAllowedByListeners", "namespace not allowed")),
                                   "shop-ns"))
    assert cond(refused, "Ready")["reason"] == "NotAllowedByListeners"
    assert cond(refused, "Degraded")["status"] == "True" and "namespace not allowed" in cond(refused, "Degraded")["message"]
    unresolved = route_problem(accepted(route, ResolvedRefs=("False", "BackendNotFound", "no service")), "shop-ns")
    assert unresolved.reason == "BackendNotFound" and unresolved.refused
    assert route_problem(accepted(route), "shop-ns") is None
    assert cond(status(None), "Ready")["status"] == "True"


def test_without_the_gateway_api_the_app_is_degraded_and_nothing_rolls_out():
    app = patched(routed(), "shop", {"ingress.enabled": False})
    app["metadata"].update(namespace="ns", uid=UID, generation=1)
    cluster = MemoryCluster(app, {})
    reconcile(cluster, "ns", "shop")
    assert cluster.applied == []
    degraded = next(c for c in cluster.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "GatewayApiNotInstalled"
    cluster.gateway = True
    reconcile(cluster, "ns", "shop")
    assert ("HTTPRoute", "shop") in cluster.applied
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert cluster.status["url"] == "http://shop.example.com/"  # the route's first hostname and path
