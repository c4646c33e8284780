"""Bad input against the real API server: rejected with the field named, or Degraded without rollout."""

from __future__ import annotations

import copy

import pytest
import yaml

from testsupport.kube import ROOT, wait_ready, wait_until
from testsupport.samples import BUDGET_REJECTED, KEDA_REJECTED, MEMCACHED_REJECTED, POD_BLOCK_REJECTED, patched

BASE = yaml.safe_load((ROOT / "manifests" / "samples" / "full.yaml").read_text())


def variant(name: str, patch: dict) -> dict:
    return patched(BASE, name, patch)


# (case, spec changes, text the API server's rejection must contain: the field path)
REJECTED = [
    ("image-missing", {"image": None}, "spec.image"),
    ("wsgi-malformed", {"wsgi": "no entry point"}, "spec.wsgi"),
    ("workers-word", {"web.gunicorn.workers": "lots"}, "spec.web.gunicorn.workers"),
    ("workers-huge", {"web.gunicorn.workers": 500}, "spec.web.gunicorn.workers"),
    ("workers-float", {"web.gunicorn.workers": 2.5}, "spec.web.gunicorn.workers"),
    ("worker-class", {"web.gunicorn.workerClass": "eventlet"}, "spec.web.gunicorn.workerClass"),
    ("sync-threads", {"web.gunicorn.workerClass": "sync", "web.gunicorn.threads": 4}, "spec.web.gunicorn.threads"),
    ("jitter", {"web.gunicorn.maxRequests": 10, "web.gunicorn.maxRequestsJitter": 50},
     "spec.web.gunicorn.maxRequestsJitter"),
    ("replicas-and-hpa", {"web.replicas": 3}, "spec.web.autoscaling"),
    ("min-over-max", {"web.autoscaling.minReplicas": 9}, "spec.web.autoscaling.minReplicas"),
    ("grace-too-short", {"web.terminationGracePeriodSeconds": 5}, "spec.web.terminationGracePeriodSeconds"),
    ("cpu-word", {"web.resources.requests.cpu": "lots"}, "spec.web.resources.requests.cpu"),
    ("nginx-negative", {"nginx.replicas": -1}, "spec.nginx.replicas"),
    ("pull-policy", {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ("pool-name", {"workerPools.0.name": "Bad_Name"}, "spec.workerPools[0].name"),
    ("pool-duplicate", {"workerPools.1.name": "default"}, "spec.workerPools[1]"),
    ("redis-external", {"redis.mode": "external"}, "spec.redis.external"),
    ("reserved-over-max", {"database.reservedConnections": 500}, "spec.database.reservedConnections"),
    ("static-path", {"nginx.staticUrlPath": "static"}, "spec.nginx.staticUrlPath"),
    ("body-size", {"nginx.clientMaxBodySize": "ten megs"}, "spec.nginx.clientMaxBodySize"),
    ("gzip-level", {"nginx.gzipLevel": 11}, "spec.nginx.gzipLevel"),
    ("tls-no-host", {"ingress.host": None, "ingress.hosts": None}, "spec.ingress.tlsSecretName"),
    ("celery-app", {"celeryApp": None}, "spec.celeryApp"),
    ("unknown-field", {"web.gunicron": {"workers": 2}}, "gunicron"),
    ("beat-type", {"beat.enabled": "yes"}, "spec.beat.enabled"),
    ("migration-empty", {"migrations.command": []}, "spec.migrations.command"),
    ("max-connections-zero", {"database.maxConnections": 0}, "spec.database.maxConnections"),
    ("overflow-negative", {"database.pool": {"maxOverflow": -1}}, "spec.database.pool.maxOverflow"),
    ("reserved-negative", {"database.reservedConnections": -100}, "spec.database.reservedConnections"),
    ("micro-cache-negative", {"nginx.microCacheSeconds": -1}, "spec.nginx.microCacheSeconds"),
    ("image-spaces", {"image": "my image:1"}, "spec.image"),
    ("nginx-image-spaces", {"nginx.image": " nginx"}, "spec.nginx.image"),
    ("env-value-and-from", {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     "spec.env[0].valueFrom"),
    ("env-from-empty", {"envFrom": [{"prefix": "X_"}]}, "spec.envFrom[0]"),
    ("env-from-both", {"envFrom": [{"configMapRef": "a", "secretRef": "b"}]}, "spec.envFrom[0]"),
    ("static-dir-dotdot", {"nginx.staticDir": "/app/../etc"}, "spec.nginx.staticDir"),
    ("redis-tiny", {"redis.cache": {"memory": "1Ki", "cpu": "50m"}}, "spec.redis.cache.memory"),
    ("cpu-zero", {"web.resources.limits.cpu": "0"}, "spec.web.resources.limits.cpu"),
    ("request-over-limit", {"web.resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
     "spec.web.resources.requests.cpu"),
    ("memory-milli", {"web.resources.limits.memory": "1500m"}, "spec.web.resources.limits.memory"),
    ("cpu-binary", {"web.resources.limits.cpu": "1.5Gi"}, "spec.web.resources.limits.cpu"),
    *POD_BLOCK_REJECTED,
    *BUDGET_REJECTED,
    *KEDA_REJECTED,
    *MEMCACHED_REJECTED,
]

# Valid for the schema, but only the operator can judge them: Degraded, an Event, no rollout.
DEGRADED = [
    ("budget-small", {"database.maxConnections": 20}, "ConnectionBudgetExceeded"),
    ("budget-overrides", {"database.pool": {"size": 10, "maxOverflow": 10}}, "ConnectionBudgetExceeded"),
    ("budget-huge-hpa", {"web.autoscaling.maxReplicas": 400, "database.budgetPolicy": "degrade"},
     "ConnectionBudgetExceeded"),
]


@pytest.mark.parametrize("case,patch,field", REJECTED, ids=[c for c, _, _ in REJECTED])
def test_rejected_by_the_api_server_naming_the_field(kube, crd, namespace, case, patch, field):
    result = kube.apply(variant(case, patch), namespace, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize("case,patch,reason", DEGRADED, ids=[c for c, _, _ in DEGRADED])
def test_degraded_with_an_event_and_no_rollout(kube, operator, namespace, case, patch, reason):
    kube.apply(variant(case, patch), namespace)

    def degraded():
        app = kube.get("flaskapp", case, namespace)
        conds = {c["type"]: c for c in app.get("status", {}).get("conditions", [])}
        return conds.get("Degraded", {}).get("status") == "True" and conds["Degraded"]

    cond = wait_until(degraded, 60, what=f"{case} Degraded")
    assert cond["reason"] == reason and "maxConnections" in cond["message"]
    events = wait_until(lambda: [e for e in kube.get("events", namespace=namespace)["items"]
                                 if e["involvedObject"]["name"] == case and e["reason"] == reason], 30,
                        what="a Warning event")
    assert events[0]["type"] == "Warning"
    # Nothing was rolled out with a configuration that breaks the budget.
    children = kube.get("deployments,configmaps,services,jobs", namespace=namespace,
                        selector=f"app.kubernetes.io/instance={case}")["items"]
    assert children == []
    assert operator.alive


@pytest.mark.parametrize("name", ["1shop", "shop.v2", "s" * 64, "default"])
def test_names_no_child_could_carry_are_refused_by_the_api_server(kube, crd, namespace, name):
    """A Service name is a DNS-1035 label, the name is every child's instance label (at most 63) and the app's
    ServiceAccount: the CRD refuses such FlaskApp names, as the CLI does."""
    result = kube.apply(variant(name, {}), namespace, check=False)
    assert result.returncode != 0, f"{name} was accepted"
    assert "DNS-1035" in result.stderr or "metadata.name" in result.stderr, result.stderr


def test_an_env_entry_taking_an_operator_variable_is_invalid_and_applies_nothing(kube, operator, namespace):
    """Only the operator knows which variables it sets for a spec: InvalidSpec naming the entry, no child."""
    kube.apply(variant("env-override", {"env": [{"name": "SQLALCHEMY_ENGINE_OPTIONS",
                                                 "value": '{"pool_size": 50, "max_overflow": 50}'}]}), namespace)

    def invalid():
        app = kube.get("flaskapp", "env-override", namespace)
        conds = {c["type"]: c for c in app.get("status", {}).get("conditions", [])}
        return conds.get("Degraded", {}).get("reason") == "InvalidSpec" and conds["Degraded"]

    cond = wait_until(invalid, 60, what="env-override InvalidSpec")
    assert "spec.env[0].name" in cond["message"] and "SQLALCHEMY_ENGINE_OPTIONS" in cond["message"]
    assert kube.get("deployments", namespace=namespace, selector="app.kubernetes.io/instance=env-override")["items"] == []


def test_autoscalers_too_large_for_the_budget_are_capped_and_the_app_rolls_out(kube, operator, namespace):
    """budgetPolicy capAutoscaling (the default): the HPA the cluster gets has the lowered maximum, the app
    becomes Ready, and BudgetCapped (condition and Warning event) says what was lowered. Raising the budget
    gives the spec's maximum back."""
    kube.apply(variant("capped", {"web.autoscaling.maxReplicas": 400}), namespace)
    kube.kubectl("wait", "--for=condition=Ready", "flaskapp/capped", "-n", namespace, "--timeout=120s")
    app = kube.get("flaskapp", "capped", namespace)
    conds = {c["type"]: c for c in app["status"]["conditions"]}
    assert conds["BudgetCapped"]["status"] == "True" and "web 400 -> " in conds["BudgetCapped"]["message"]
    hpa = kube.get("hpa", "capped-web", namespace)
    capped = next(c for c in app["status"]["tuning"]["budget"]["cappedAutoscalers"] if c["tier"] == "web")
    assert hpa["spec"]["maxReplicas"] == capped["maxReplicas"] < 400
    wait_until(lambda: [e for e in kube.get("events", namespace=namespace)["items"]
                        if e["involvedObject"]["name"] == "capped" and e["reason"] == "BudgetCapped"
                        and e["type"] == "Warning"], 30, what="a BudgetCapped event")
    kube.apply(variant("capped", {"web.autoscaling.maxReplicas": 400, "database.maxConnections": 5000}), namespace)
    wait_until(lambda: kube.get("hpa", "capped-web", namespace)["spec"]["maxReplicas"] == 400, 60,
               what="the spec's maximum back")
    wait_until(lambda: {c["type"]: c["status"] for c in kube.get("flaskapp", "capped", namespace)["status"][
        "conditions"]}.get("BudgetCapped") == "False", 60, what="BudgetCapped False")


def test_a_degraded_app_recovers_when_fixed(kube, operator, namespace):
    kube.apply(variant("recovers", {"database.maxConnections": 20}), namespace)
    wait_until(lambda: kube.get("flaskapp", "recovers", namespace).get("status", {}).get("conditions"), 60)
    kube.apply(variant("recovers", {"database.maxConnections": 200}), namespace)
    kube.kubectl("wait", "--for=condition=Ready", "flaskapp/recovers", "-n", namespace, "--timeout=120s")


def test_an_object_the_api_server_refuses_applies_nothing(kube, operator, namespace):
    """The schema cannot judge an Ingress annotation key; the API server can. All or nothing: the objects a
    new app's first pass created before the Ingress are deleted again, and no workload (no pod) was created."""
    kube.apply(variant("refused", {"ingress.annotations": {"not a valid key!": "x"}}), namespace)

    def degraded():
        conds = {c["type"]: c for c in kube.get("flaskapp", "refused", namespace).get("status", {}).get("conditions", [])}
        return conds.get("Degraded", {}).get("status") == "True" and conds["Degraded"]

    cond = wait_until(degraded, 60, what="refused Degraded")
    assert cond["reason"] == "InvalidSpec"
    assert "Ingress/refused" in cond["message"] and "metadata.annotations" in cond["message"], cond["message"]
    wait_until(lambda: [e for e in kube.get("events", namespace=namespace)["items"]
                        if e["involvedObject"]["name"] == "refused" and e["type"] == "Warning"], 30,
               what="a Warning event")
    children = kube.get("deployments,configmaps,secrets,services,serviceaccounts,jobs,ingresses", namespace=namespace,
                        selector="app.kubernetes.io/instance=refused")["items"]
    assert children == []
    pods_kinds = [e for e in kube.audit_events() if e.get("stage") == "ResponseComplete" and e["verb"] in (
        "create", "patch") and (e.get("objectRef") or {}).get("namespace") == namespace
        and e["objectRef"].get("resource") in ("deployments", "statefulsets", "jobs")]
    assert pods_kinds == [], "a workload was written before the refusal"
    # Fixed, it rolls out.
    kube.apply(variant("refused", {"ingress.annotations": {"example.com/owner": "shop-team"},
                                   "database.maxConnections": 200}), namespace)
    wait_until(lambda: kube.get("deployments", namespace=namespace, selector="app.kubernetes.io/instance=refused")["items"],
               60, what="children after the fix")


MINIMAL = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())


def _degraded(kube, namespace, name):
    conds = {c["type"]: c for c in (kube.get("flaskapp", name, namespace) or {}).get("status", {}).get("conditions", [])}
    return conds.get("Degraded", {}).get("status") == "True" and conds["Degraded"]


def test_an_object_that_is_not_ours_is_never_taken_over(kube, operator, namespace):
    """A user's ServiceAccount named like the app's: NameConflict, the user's object untouched, nothing
    else created."""
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "taken", "labels": {"team": "x"}}},
               namespace)
    app = copy.deepcopy(MINIMAL)
    app["metadata"] = {"name": "taken"}
    kube.apply(app, namespace)
    cond = wait_until(lambda: _degraded(kube, namespace, "taken"), 60, what="NameConflict")
    assert cond["reason"] == "NameConflict" and "ServiceAccount/taken" in cond["message"], cond
    user_sa = kube.get("serviceaccount", "taken", namespace)
    assert user_sa["metadata"]["labels"] == {"team": "x"} and not user_sa["metadata"].get("ownerReferences")
    assert kube.get("deployments,configmaps,services", namespace=namespace,
                    selector="app.kubernetes.io/instance=taken")["items"] == []


def test_two_apps_whose_child_names_could_meet_cannot_exist(kube, operator, namespace):
    """FlaskApp `pair-worker` would render Deployment pair-worker-web, as FlaskApp `pair` with a pool `web`
    does: the API server refuses the name with a `-worker` segment, so the collision cannot happen."""
    first = copy.deepcopy(MINIMAL)
    first["metadata"] = {"name": "pair-worker"}
    refused = kube.apply(first, namespace, check=False)
    assert refused.returncode != 0 and "-worker" in refused.stderr, refused.stderr
    second = copy.deepcopy(MINIMAL)
    second["metadata"] = {"name": "pair"}
    second["spec"].update(celeryApp="app.celery_app", workerPools=[{"name": "web", "replicas": 1}])
    kube.apply(second, namespace)
    wait_ready(kube, namespace, "pair")
