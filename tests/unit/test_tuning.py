"""Tuning invariants. The peak connection count is recomputed from the *rendered objects* (replicas,
HPA maxima, the rolling-update surge, process counts and pool sizes in the ConfigMap), independently of
the tuning engine's own arithmetic, and must fit the budget whenever the FlaskApp is not Degraded."""

from __future__ import annotations

import json
import math
import re

from hypothesis import HealthCheck, assume, given, settings
import pytest

from testsupport.samples import BUDGET_REJECTED, load_sample, patched
from testsupport.strategies import specs
from flaskapp_operator.observe import Verdict, build_status
from flaskapp_operator.schema import SpecError
from flaskapp_operator.render import render
from flaskapp_operator.tuning import cpu_cores, gunicorn_threads, gunicorn_workers, tune
from flaskapp_operator.api import Resources, ResourceAmounts
from flaskapp_operator.render import parse_spec


def peak_connections_from_objects(objects: list[dict]) -> int:
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env"))["data"]
    total = 0
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        options = env.get(f"{component}.SQLALCHEMY_ENGINE_OPTIONS")
        if options is None:  # redis, nginx: no database
            continue
        per_process = sum(json.loads(options)[k] for k in ("pool_size", "max_overflow"))
        if obj["kind"] == "Job":
            pods = 1
        else:
            hpa = by_name.get(("HorizontalPodAutoscaler", obj["metadata"]["name"]))
            keda = by_name.get(("ScaledObject", obj["metadata"]["name"]))
            assert not (hpa and keda), "two autoscalers on one Deployment"
            most = (hpa["spec"]["maxReplicas"] if hpa else keda["spec"]["maxReplicaCount"] if keda
                    else obj["spec"]["replicas"])
            strategy = obj["spec"]["strategy"]
            surge = math.ceil(most * 0.25) if strategy["type"] == "RollingUpdate" else 0
            assert strategy["type"] == "Recreate" or strategy["rollingUpdate"]["maxSurge"] == "25%"
            pods = most + surge
        if component == "web":
            processes = int(env["web.WEB_CONCURRENCY"])
        elif component.startswith("worker-"):
            processes = int(env[f"{component}.CELERY_WORKER_CONCURRENCY"])
        else:
            processes = 1
        total += pods * processes * per_process
    return total


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_peak_connections_fit_the_budget_or_the_app_is_degraded(doc):
    rendered = render(doc, redis_password="pw")
    budget = rendered.tuning.budget
    available = doc["spec"]["database"]["maxConnections"] - doc["spec"]["database"]["reservedConnections"]
    recomputed = peak_connections_from_objects(rendered.objects)
    assert recomputed == budget.peak_connections
    if rendered.feasible:
        assert recomputed <= available
    else:
        assert recomputed > available
        assert "maxConnections" in budget.message and str(available) in budget.message
        if "pool" not in doc["spec"]["database"]:
            # Infeasible only when even the smallest acceptable pools cannot fit.
            for tier in rendered.tuning.tiers:
                assert tier.pool_size <= doc["spec"]["database"]["minimumPoolSize"] and tier.max_overflow == 0
        if doc["spec"]["database"]["budgetPolicy"] == "capAutoscaling":
            # ... and even every autoscaler at its minimum.
            for scaler in autoscalers(rendered.objects).values():
                assert max_of(scaler) == min_of(scaler)


def requested_autoscaling(doc: dict, component: str) -> dict:
    spec = doc["spec"]
    if component == "web":
        return spec["web"]["autoscaling"]
    return next(p for p in spec["workerPools"] if f"worker-{p['name']}" == component)["autoscaling"]


# Where each autoscaler kind keeps its bounds.
MAX_FIELD = {"HorizontalPodAutoscaler": "maxReplicas", "ScaledObject": "maxReplicaCount"}
MIN_FIELD = {"HorizontalPodAutoscaler": "minReplicas", "ScaledObject": "minReplicaCount"}


def autoscalers(objects: list[dict]) -> dict[str, dict]:
    """HPAs and KEDA ScaledObjects by component."""
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objects if o["kind"] in MAX_FIELD}


def max_of(autoscaler: dict) -> int:
    return autoscaler["spec"][MAX_FIELD[autoscaler["kind"]]]


def min_of(autoscaler: dict) -> int:
    return autoscaler["spec"][MIN_FIELD[autoscaler["kind"]]]


def requested_max_replicas(doc: dict, hpa: dict) -> int:
    return requested_autoscaling(doc, hpa["metadata"]["labels"]["app.kubernetes.io/component"])["maxReplicas"]


def with_max_replicas(objects: list[dict], changes: dict[str, int]) -> list[dict]:
    """The rendered objects with some autoscalers' maximum replaced (by component)."""
    out = []
    for o in objects:
        component = o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if o["kind"] in MAX_FIELD and component in changes:
            o = {**o, "spec": {**o["spec"], MAX_FIELD[o["kind"]]: changes[component]}}
        out.append(o)
    return out


def priority_order(doc: dict) -> list[str]:
    """Autoscaled tiers, highest priority first, as the API documents database.autoscalingPriority."""
    spec = doc["spec"]
    autoscaled = (["web"] if "autoscaling" in spec["web"] else []) + [
        f"worker-{p['name']}" for p in spec["workerPools"] if "autoscaling" in p]
    given = [t for t in spec["database"].get("autoscalingPriority", []) if t in autoscaled]
    return given + [t for t in autoscaled if t not in given]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_capped_autoscalers_fit_and_are_maximal_in_priority_order(doc):
    """budgetPolicy capAutoscaling: the rendered plan fits; no capped maximum can be raised by one, alone, without
    breaking the budget; nor even with every lower-priority autoscaler at its minimum (the order is kept)."""
    doc["spec"]["database"]["budgetPolicy"] = "capAutoscaling"
    rendered = render(doc, redis_password="pw")
    assume(rendered.feasible)
    available = doc["spec"]["database"]["maxConnections"] - doc["spec"]["database"]["reservedConnections"]
    objects = rendered.objects
    assert peak_connections_from_objects(objects) <= available
    hpas = autoscalers(objects)
    order = priority_order(doc)
    assert sorted(order) == sorted(hpas)
    capped = [c for c in order if max_of(hpas[c]) < requested_max_replicas(doc, hpas[c])]
    reported = {c["tier"]: c["maxReplicas"] for c in rendered.tuning.report()["budget"]["cappedAutoscalers"]}
    assert reported == {c: max_of(hpas[c]) for c in capped}
    # A maximum of 0 would be a pool that never runs a task: capping stops at one (or the plan is infeasible).
    assert all(max_of(h) >= 1 for h in hpas.values()), {c: max_of(h) for c, h in hpas.items()}
    for component in capped:
        assert max_of(hpas[component]) >= min_of(hpas[component])
        one_more = {component: max_of(hpas[component]) + 1}
        assert peak_connections_from_objects(with_max_replicas(objects, one_more)) > available
        lower = order[order.index(component) + 1:]
        at_minimum = {c: max(1, min_of(hpas[c])) for c in lower}
        assert peak_connections_from_objects(with_max_replicas(objects, {**at_minimum, **one_more})) > available


def test_the_issues_example_caps_instead_of_degrading():
    """The full sample with maxConnections 100 fits web maxReplicas 20; at 24 it used to be Degraded."""
    doc = load_sample("full")
    doc["spec"]["web"]["autoscaling"]["maxReplicas"] = 24
    rendered = render(doc, redis_password="pw")
    assert rendered.feasible
    report = rendered.tuning.report()["budget"]
    assert report["cappedAutoscalers"] and all(c["maxReplicas"] < c["requestedMaxReplicas"]
                                               for c in report["cappedAutoscalers"])
    assert peak_connections_from_objects(rendered.objects) <= 95
    doc["spec"]["database"]["budgetPolicy"] = "degrade"
    degraded = render(doc, redis_password="pw")
    assert not degraded.feasible and "autoscaler maxima" in degraded.tuning.budget.message


@settings(max_examples=200, deadline=None)
@given(specs())
def test_pools_are_as_large_as_the_budget_allows(doc):
    """Not only safe but useful: with no override, a feasible web pool never sits below the thread count
    unless the budget forced it down (one more connection per web process would not fit)."""
    assume("pool" not in doc["spec"]["database"])
    rendered = render(doc, redis_password="pw")
    assume(rendered.feasible)
    # Everything below is read from the rendered objects, not from the engine's own figures.
    objects = rendered.objects
    # Capped autoscalers come with the smallest pools (database.minimumPoolSize): a different promise,
    # checked by the capping tests.
    assume(not any(max_of(o) < requested_max_replicas(doc, o) for o in autoscalers(objects).values()))
    env = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env"))["data"]
    options = json.loads(env["web.SQLALCHEMY_ENGINE_OPTIONS"])
    threads = int(re.search(r"--threads[= ](\d+)", env["web.GUNICORN_CMD_ARGS"]).group(1)) \
        if "--threads" in env["web.GUNICORN_CMD_ARGS"] else 1
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-web"))
    hpa = next((o for o in objects if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] ==
                web["metadata"]["name"]), None)
    most = hpa["spec"]["maxReplicas"] if hpa else web["spec"]["replicas"]
    web_pods = most + math.ceil(most * 0.25)
    if options["pool_size"] < threads and web_pods > 0:
        available = doc["spec"]["database"]["maxConnections"] - doc["spec"]["database"]["reservedConnections"]
        one_more = web_pods * int(env["web.WEB_CONCURRENCY"])
        assert peak_connections_from_objects(objects) + one_more > available


def test_workers_come_from_the_container_cpu_not_the_node():
    assert gunicorn_workers(cpu_cores(Resources(limits=ResourceAmounts(cpu="2")), "web")) == 5
    assert gunicorn_workers(cpu_cores(Resources(requests=ResourceAmounts(cpu="500m")), "web")) == 2
    assert gunicorn_threads(cpu_cores(Resources(limits=ResourceAmounts(cpu="2")), "web")) == 4
    assert gunicorn_workers(cpu_cores(Resources(), "web")) == 2  # the 500m default request


def test_the_classic_failure_is_caught():
    """3 pods x 5 workers x SQLAlchemy's default 5+10 = 225 connections against PostgreSQL's 100."""
    spec = parse_spec({"image": "a:1", "wsgi": "a:b", "web": {"replicas": 3, "resources": {"limits": {"cpu": "2"}}},
                       "database": {"secretName": "db", "pool": {"size": 5, "maxOverflow": 10}}})
    tuning = tune(spec)
    assert not tuning.feasible
    assert "peak 300 > 95" in tuning.budget.message  # 4 pods (3 + surge) x 5 x 15


def test_without_overrides_the_same_app_fits_by_shrinking_pools():
    spec = parse_spec({"image": "a:1", "wsgi": "a:b", "web": {"replicas": 3, "resources": {"limits": {"cpu": "2"}}},
                       "database": {"secretName": "db"}})
    tuning = tune(spec)
    assert tuning.feasible and tuning.budget.peak_connections <= 95
    web = tuning.tier("web")
    assert web.peak_pods == 4 and web.processes_per_pod == 5


def test_termination_grace_exceeds_gunicorn_graceful_timeout():
    spec = parse_spec({"image": "a:1", "wsgi": "a:b", "web": {"gunicorn": {"gracefulTimeoutSeconds": 45}}})
    assert tune(spec).web.termination_grace_period_seconds > 45


def test_redis_maxmemory_leaves_headroom():
    t = tune(parse_spec(load_sample("full")["spec"]))
    assert t.redis_cache_maxmemory == int(256 * 2**20 * 0.75)


def test_derived_workers_obey_the_maximum_and_the_memory_limit():
    """A huge CPU limit no longer derives thousands of workers; memory bounds them too, and status says
    which bound applied."""
    from flaskapp_operator.tuning import MAX_PROCESSES

    def workers(cpu, memory):
        spec = parse_spec({"image": "x", "wsgi": "app:app", "web": {"resources": {"limits": {"cpu": cpu, "memory": memory}}}})
        t = tune(spec)
        return t.web.workers, t.report()["web"]["workersBoundBy"]

    assert workers("1", "1Gi") == (3, "cpu")
    assert workers("4000", "1000Gi") == (MAX_PROCESSES, "maximum")
    count, bound = workers("8", "512Mi")  # 17 by CPU; 512 MiB holds fewer processes
    assert bound == "memory" and count < 17 and count * 96 <= 512


def test_derived_celery_concurrency_obeys_the_memory_limit():
    spec = parse_spec({"image": "x", "wsgi": "app:app", "celeryApp": "app.celery",
                       "workerPools": [{"name": "p", "resources": {"limits": {"cpu": "16", "memory": "256Mi"}}}]})
    pool = tune(spec).report()["workerPools"][0]
    assert pool["concurrencyBoundBy"] == "memory" and pool["concurrency"] * 96 <= 256


@pytest.mark.parametrize("case,patch,field", BUDGET_REJECTED, ids=[c for c, _, _ in BUDGET_REJECTED])
def test_the_parser_refuses_bad_budget_settings_naming_the_field(case, patch, field):
    with pytest.raises(SpecError) as err:
        render(patched(load_sample("full"), case, patch), redis_password="pw")
    assert any(e.path.startswith(field) for e in err.value.errors), err.value


def test_the_budget_capped_condition_names_each_lowered_maximum():
    def status(max_replicas: int) -> dict:
        doc = patched(load_sample("full"), "capped", {"web.autoscaling.maxReplicas": max_replicas})
        tuning = render(doc, redis_password="pw").tuning.report()
        return build_status(app="capped", generation=1, verdict=Verdict(), deployments=[], pool_names=[],
                            tuning=tuning, url="http://x/", previous={}, now="2026-01-01T00:00:00Z")

    capped = next(c for c in status(60)["conditions"] if c["type"] == "BudgetCapped")
    assert capped["status"] == "True" and capped["reason"] == "AutoscalersCapped"
    assert "web 60 -> " in capped["message"]
    fits = next(c for c in status(4)["conditions"] if c["type"] == "BudgetCapped")
    assert fits["status"] == "False" and fits["reason"] == "WithinBudget"
    without_db = build_status(app="x", generation=1, verdict=Verdict(), deployments=[], pool_names=[],
                              tuning=render(load_sample("minimal"), redis_password="pw").tuning.report(),
                              url="http://x/", previous={}, now="2026-01-01T00:00:00Z")
    assert "BudgetCapped" not in {c["type"] for c in without_db["conditions"]}


@given(specs())
def test_automatic_threads_never_exceed_the_connections_a_process_gets(doc):
    """Under gthread a request thread with no connection waits pool_timeout and fails: automatic threads agree
    with the pool the plan gives each web process. Read back from the rendered gunicorn args and engine options."""
    try:
        rendered = render(doc, redis_password="pw")
    except SpecError:
        assume(False)
    spec = rendered.spec
    assume(spec.database is not None and not spec.database.pooler.enabled)
    assume(spec.web.gunicorn.worker_class == "gthread" and spec.web.gunicorn.threads == "auto")
    env = next(o for o in rendered.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env"))
    threads = int(re.search(r"--threads=(\d+)", env["data"]["web.GUNICORN_CMD_ARGS"]).group(1))
    plan = json.loads(env["data"]["web.SQLALCHEMY_ENGINE_OPTIONS"])
    assert 1 <= threads <= max(1, plan["pool_size"] + plan["max_overflow"])
    assert threads == min(gunicorn_threads(cpu_cores(spec.web.resources, "web")),
                          max(1, plan["pool_size"] + plan["max_overflow"]))


@pytest.mark.parametrize("cpu, memory", [("8", "64Mi"), ("8", "256Mi"), ("1", "32Mi"), ("4", "1Gi"), ("2", "40Mi")])
def test_nginx_workers_follow_the_cores_and_fit_the_memory(cpu, memory):
    """Recomputed from the rendered nginx.conf and the nginx container: one worker per core of its limit, no more
    than (memory - 32 MiB for the master, cache processes and shared zones) / 16 MiB per worker, at least one."""
    from kubernetes.utils.quantity import parse_quantity

    doc = patched(load_sample("minimal"), "shop", {"nginx.resources": {"limits": {"cpu": cpu, "memory": memory}}})
    objects = render(doc, redis_password="pw").objects
    conf = next(o for o in objects if o["metadata"]["name"].endswith("-nginx-conf"))["data"]["nginx.conf"]
    workers = int(re.search(r"^worker_processes (\d+);", conf, re.M).group(1))
    limits = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-nginx"))[
        "spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    mib = parse_quantity(limits["memory"]) / 2**20
    assert workers == max(1, min(math.ceil(parse_quantity(limits["cpu"])), int((mib - 32) // 16)))
