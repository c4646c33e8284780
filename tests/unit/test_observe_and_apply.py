"""Status from children (pure) and the no-op detection that keeps idle reconciles write-free."""

from __future__ import annotations

from flaskapp_operator.kube import contains, up_to_date, with_applied_hash
from flaskapp_operator.observe import Verdict, build_status, deployment_ready, job_state

NOW = "2026-01-01T00:00:00Z"


def dep(component: str, replicas: int, ready: int, generation: int = 1, observed: int = 1) -> dict:
    return {"metadata": {"name": f"a-{component}", "generation": generation,
                         "labels": {"app.kubernetes.io/component": component}},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": replicas,
                       "readyReplicas": ready, "availableReplicas": ready}}


def status(deployments, verdict=Verdict(), previous=None):
    return build_status(app="a", generation=2, verdict=verdict, deployments=deployments, pool_names=["p"],
                        tuning=None, url="http://x/", previous=previous or {}, now=NOW)


def cond(s, t):
    return next(c for c in s["conditions"] if c["type"] == t)


def test_deployment_readiness_needs_the_current_generation():
    assert deployment_ready(dep("web", 2, 2))
    assert not deployment_ready(dep("web", 2, 1))
    assert not deployment_ready(dep("web", 2, 2, generation=3, observed=2))


def test_ready_when_every_component_is_ready():
    s = status([dep("web", 2, 2), dep("worker-p", 1, 1)])
    assert cond(s, "Ready")["status"] == "True" and cond(s, "Progressing")["status"] == "False"
    assert s["webReplicas"] == 2 and s["workerPools"] == "1/1" and s["observedGeneration"] == 2


def test_progressing_names_what_it_waits_for():
    s = status([dep("web", 2, 1), dep("worker-p", 1, 1)])
    assert cond(s, "Ready")["status"] == "False"
    assert "web" in cond(s, "Progressing")["message"]


def test_degraded_verdict_wins():
    s = status([dep("web", 2, 2)], Verdict("ConnectionBudgetExceeded", "peak 300 > 95"))
    assert cond(s, "Degraded")["status"] == "True" and cond(s, "Degraded")["reason"] == "ConnectionBudgetExceeded"
    assert cond(s, "Ready")["status"] == "False"


def test_transition_time_is_kept_while_status_holds():
    first = status([dep("web", 2, 2)])
    again = build_status(app="a", generation=2, verdict=Verdict(), deployments=[dep("web", 2, 2)], pool_names=["p"],
                         tuning=None, url="http://x/", previous=first, now="2030-01-01T00:00:00Z")
    assert again == first


def test_job_states():
    assert job_state(None) == "Pending"
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Complete"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"
    assert job_state({"status": {}}) == "Running"


def test_contains_ignores_server_defaults_but_not_edits():
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "image": "x"}]}}}
    live = {"spec": {"replicas": 2, "progressDeadlineSeconds": 600,
                     "template": {"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/d"}]}}}
    assert contains(live, desired)
    live["spec"]["replicas"] = 5
    assert not contains(live, desired)


def test_up_to_date_needs_the_same_hash_and_content():
    desired = with_applied_hash({"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}})
    assert up_to_date(desired, desired)
    changed = with_applied_hash({"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "w"}})
    assert not up_to_date(desired, changed)
    assert not up_to_date(None, desired)


def test_status_patch_removes_what_is_gone():
    from flaskapp_operator.observe import status_changed, status_patch

    old = {"conditions": [], "tuning": {"web": {}}}
    new = {"conditions": []}
    assert status_changed(old, new)
    assert status_patch(old, new) == {"conditions": [], "tuning": None}
    assert not status_changed(new, dict(new))
