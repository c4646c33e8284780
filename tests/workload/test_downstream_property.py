"""Every spec the parser accepts renders what its programs accept: generated FlaskApps (hypothesis, with the
fields that reach a Kubernetes object, nginx.conf or gunicorn's config drawn from wide alphabets) either are refused
naming a field, or every rendered object passes Kubernetes' own schema (kubernetes-validate, strict), nginx.conf
passes the real `nginx -t`, gunicorn.conf.py compiles, and no two containers of a pod share a port."""

from __future__ import annotations


import kubernetes_validate
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError
from testsupport.strategies import specs

pytestmark = pytest.mark.workload

KUBERNETES_SCHEMA_VERSION = "1.35.0"  # the pod schemas the API embeds (build.KUBERNETES_SCHEMA_VERSION)
# Kinds of APIs kubernetes-validate does not carry (CRDs): their schemas are checked by the integration suite.
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/", "gateway.networking.k8s.io/")
TEXT = st.text("abz09 -_./:;{}\"'#$\\*()[]^?+|~%@,=!\n", min_size=0, max_size=16)


@st.composite
def wide_specs(draw):
    doc = draw(specs())
    spec = doc["spec"]
    # Mostly plausible values, sometimes anything: most specs get through to the programs downstream.
    doc["metadata"]["name"] = draw(st.one_of(st.just("prop"), st.from_regex(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?",
                                                                            fullmatch=True), TEXT))
    spec["web"]["port"] = draw(st.one_of(st.just(8000), st.integers(1024, 65535), st.integers(1, 70000)))
    spec["web"]["gunicorn"]["keepaliveSeconds"] = draw(st.one_of(st.sampled_from([0, 61, 75, 300]),
                                                                 st.integers(0, 120)))
    spec["nginx"] = {"staticUrlPath": draw(st.one_of(st.just("/static/"), st.from_regex(r"(/[a-z0-9_.~%-]{1,8})+/",
                                                                                         fullmatch=True), TEXT)),
                     "fingerprintPattern": draw(st.one_of(st.just(r"\.[0-9a-f]{8,}\.[a-z]+$"), TEXT)),
                     "microCacheSeconds": draw(st.integers(0, 60)), "gzip": draw(st.booleans())}
    spec["monitoring"] = {"enabled": draw(st.booleans())}
    if draw(st.booleans()):
        spec["ingress"] = {"host": draw(st.one_of(st.just("shop.example.com"), TEXT))}
    if draw(st.booleans()):
        spec["route"] = {"enabled": True, "parentRefs": [{"name": draw(st.one_of(st.just("gw"), TEXT))}],
                         "hostnames": draw(st.lists(st.one_of(st.just("shop.example.com"), TEXT), max_size=2))}
    if draw(st.booleans()):
        spec["pod"] = {"sidecars": [{"name": "side", "image": "registry.example/side:1",
                                     "ports": [{"containerPort": draw(st.integers(1, 65535))}]}]}
    for pool in spec["workerPools"]:
        pool["queues"] = draw(st.lists(st.one_of(st.just("celery"), st.from_regex(r"[a-z.:_-]{1,12}", fullmatch=True),
                                                 TEXT), max_size=2, unique=True))
    return doc


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(doc=wide_specs())
def test_an_accepted_spec_renders_what_kubernetes_nginx_and_gunicorn_accept(nginx_scratch, doc):
    addresses, check = nginx_scratch
    try:
        rendered = render(doc, redis_password="pw")
    except SpecError as error:
        assert error.errors and all(e.path for e in error.errors)
        event("refused: " + error.errors[0].path.split("[")[0])
        return
    event("accepted")
    for obj in rendered.objects:
        if not obj["apiVersion"].startswith(CRD_GROUPS):
            kubernetes_validate.validate(obj, KUBERNETES_SCHEMA_VERSION, strict=True)
        spec = obj.get("spec", {})
        pod = (spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}).get("spec")
        if pod:
            running = [*pod["containers"], *(c for c in pod.get("initContainers", []) if c.get("restartPolicy"))]
            ports = [(p["containerPort"], p.get("protocol", "TCP")) for c in running for p in c.get("ports", [])]
            assert len(ports) == len(set(ports)), (obj["metadata"]["name"], ports)
        if obj["kind"] == "ConfigMap" and "gunicorn.conf.py" in obj.get("data", {}):
            compile(obj["data"]["gunicorn.conf.py"], "gunicorn.conf.py", "exec")
    local = render(doc, redis_password="pw", addresses=addresses)
    conf = next(o for o in local.objects if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].endswith("-nginx-conf"))["data"]["nginx.conf"]
    result = check(conf)
    assert result.returncode == 0, result.stderr
