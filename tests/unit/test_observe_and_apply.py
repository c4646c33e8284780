"""Status from children (pure) and the no-op detection that keeps idle reconciles write-free."""

from __future__ import annotations

from flaskapp_operator.ownership import contains, up_to_date, with_applied_hash
from flaskapp_operator.observe import Verdict, build_status, deployment_ready, job_state, pod_problems, stuck_pods

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
    # What the API server returns: our fields plus its own (uid, resourceVersion, managedFields, ...).
    live = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {**desired["metadata"], "uid": "u", "resourceVersion": "7", "creationTimestamp": "t",
                         "managedFields": [{"manager": "flaskapp-operator", "operation": "Apply"}]},
            "data": {"k": "v"}}
    assert up_to_date(live, desired)
    assert not up_to_date({**live, "data": {"k": "edited"}}, desired)
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


def pod(component: str, name: str = "", *, waiting: str = "", last_terminated: dict | None = None,
        restarts: int = 0, init: bool = False, unschedulable: bool = False) -> dict:
    """A Pod as the kubelet reports it (field names from the core/v1 PodStatus)."""
    cs = {"name": "c", "restartCount": restarts, "ready": False,
          "state": {"waiting": {"reason": waiting, "message": "m"}} if waiting else {"running": {}},
          "lastState": {"terminated": last_terminated} if last_terminated else {}}
    status: dict = {"initContainerStatuses" if init else "containerStatuses": [cs]}
    if unschedulable:
        status = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "0/1 nodes are available: 1 Insufficient cpu."}]}
    return {"metadata": {"name": name or f"a-{component}-x", "labels": {"app.kubernetes.io/component": component}},
            "status": status}


def test_pod_problems_name_the_tier_and_the_cause():
    problems = pod_problems([
        pod("web", waiting="ImagePullBackOff"),
        pod("redis-cache", waiting="CrashLoopBackOff", last_terminated={"reason": "OOMKilled", "exitCode": 137},
            restarts=2),
        pod("worker-p", waiting="CrashLoopBackOff", last_terminated={"reason": "Error", "exitCode": 4}, restarts=3),
        pod("nginx", waiting="CreateContainerConfigError", init=True),
        pod("beat", unschedulable=True),
    ])
    assert {c: p.reason for c, p in problems.items()} == {
        "web": "WebImagePullBackOff", "redis-cache": "RedisCacheOOMKilled", "worker-p": "WorkerPCrashLoopBackOff",
        "nginx": "NginxCreateContainerConfigError", "beat": "BeatUnschedulable"}
    assert "code 4" in problems["worker-p"].message and "memory limit" in problems["redis-cache"].message


def test_pods_that_start_normally_are_no_problem():
    assert pod_problems([pod("web"), pod("web", waiting="ContainerCreating"),
                         pod("web", last_terminated={"reason": "Completed", "exitCode": 0}, restarts=1)]) == {}


def test_a_failing_pod_makes_a_not_ready_tier_degraded_web_named_first():
    pods = (pod("redis-cache", waiting="CrashLoopBackOff", last_terminated={"reason": "OOMKilled"}, restarts=1),
            pod("web", waiting="ErrImagePull"))
    s = build_status(app="a", generation=2, verdict=Verdict(), deployments=[dep("web", 1, 0), dep("redis-cache", 1, 0)],
                     pool_names=[], tuning=None, url="http://x/", previous={}, now=NOW, pods=pods)
    assert cond(s, "Degraded")["status"] == "True" and cond(s, "Degraded")["reason"] == "WebImagePullBackOff"
    assert "redis-cache" in cond(s, "Degraded")["message"] and cond(s, "Ready")["status"] == "False"


def test_a_failing_pod_of_a_ready_tier_is_not_degraded():
    """One crash-looping surplus pod while the tier has every replica it wants: still Ready."""
    s = build_status(app="a", generation=2, verdict=Verdict(), deployments=[dep("web", 2, 2)], pool_names=[],
                     tuning=None, url="http://x/", previous={}, now=NOW,
                     pods=(pod("web", waiting="CrashLoopBackOff", restarts=1),))
    assert cond(s, "Ready")["status"] == "True" and cond(s, "Degraded")["status"] == "False"


def test_a_stuck_migration_pod_is_degraded_while_waiting_for_it():
    s = build_status(app="a", generation=2, verdict=Verdict(waiting_reason="MigrationRunning", waiting_message="w"),
                     deployments=[dep("web", 1, 1)], pool_names=[], tuning=None, url="http://x/", previous={},
                     now=NOW, pods=(pod("migrations", waiting="ImagePullBackOff"),))
    assert cond(s, "Degraded")["reason"] == "MigrationsImagePullBackOff"
    assert cond(s, "Progressing")["reason"] == "MigrationRunning"


def test_pods_stuck_before_their_containers_start_are_asked_about():
    import datetime

    now = datetime.datetime(2026, 1, 1, 0, 1, 0, tzinfo=datetime.timezone.utc)
    fresh, old = "2026-01-01T00:00:50Z", "2026-01-01T00:00:00Z"

    def p(name, created, **kw):
        out = pod("redis-cache", name, **kw)
        out["metadata"]["creationTimestamp"] = created
        out["spec"] = {"nodeName": "n"}
        return out
    pods = [p("creating-old", old, waiting="ContainerCreating"), p("creating-new", fresh, waiting="ContainerCreating"),
            p("running-old", old)]
    unscheduled = p("unscheduled", old, waiting="ContainerCreating")
    unscheduled["spec"] = {}
    assert stuck_pods(pods + [unscheduled], now) == ["creating-old"]


def test_a_sandbox_that_cannot_start_in_its_memory_limit_is_oom_killed():
    stuck = pod("redis-cache", "r", waiting="ContainerCreating")
    events = {"r": [{"reason": "Scheduled", "message": "assigned"},
                    {"reason": "FailedCreatePodSandBox", "lastTimestamp": "2026-01-01T00:00:09Z",
                     "message": "failed to create shim task: OCI runtime create failed: runc create failed: unable "
                                "to start container process: container init was OOM-killed (memory limit too low?)"}]}
    problem = pod_problems([stuck], events)["redis-cache"]
    assert problem.reason == "RedisCacheOOMKilled" and "memory limit too low" in problem.message
    events["r"][1]["message"] = "MountVolume.SetUp failed for volume \"conf\": configmap \"x\" not found"
    events["r"][1]["reason"] = "FailedMount"
    assert pod_problems([stuck], events)["redis-cache"].reason == "RedisCacheFailedMount"


def test_the_oom_event_names_the_cause_even_when_a_later_retry_words_it_otherwise():
    stuck = pod("redis-cache", "r", waiting="ContainerCreating")
    events = {"r": [{"reason": "FailedCreatePodSandBox", "lastTimestamp": "2026-01-01T00:00:09Z",
                     "message": "runc create failed: container init was OOM-killed (memory limit too low?)"},
                    {"reason": "FailedCreatePodSandBox", "lastTimestamp": "2026-01-01T00:00:19Z",
                     "message": "failed to start sandbox container task: cannot start a stopped process"}]}
    assert pod_problems([stuck], events)["redis-cache"].reason == "RedisCacheOOMKilled"


def test_status_patch_removes_a_pruned_tier_from_nested_maps():
    from flaskapp_operator.observe import status_patch

    old = {"components": {"web": {"ready": True}, "beat": {"ready": True}}, "tuning": {"web": {"workers": 3}}}
    new = {"components": {"web": {"ready": True}}, "tuning": {"web": {"workers": 3}}}
    patch = status_patch(old, new)
    assert patch["components"] == {"web": {"ready": True}, "beat": None}
    # Applied as RFC 7386 says, the patch gives exactly the new status.
    def merge(target, p):
        if not isinstance(p, dict):
            return p
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in p.items():
            out.pop(k, None) if v is None else out.__setitem__(k, merge(out.get(k), v))
        return out
    assert merge(old, patch) == new


def test_quantities_the_api_server_canonicalised_are_up_to_date():
    desired = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": "1"}}}]}}}}
    live = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "1"}}}]}}}}
    assert contains(live, desired)
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "600m"
    assert not contains(live, desired)
    # Only resource maps compare by value: elsewhere "0.5" and "500m" are different strings.
    assert not contains({"env": [{"value": "500m"}]}, {"env": [{"value": "0.5"}]})


def test_an_autoscaled_tier_is_ready_only_at_its_minimum():
    """An HPA-managed Deployment is created at 1 replica; minReplicas 2 means not ready yet."""
    s = build_status(app="a", generation=2, verdict=Verdict(), deployments=[dep("web", 1, 1)], pool_names=[],
                     tuning=None, url="http://x/", previous={}, now=NOW, minimums={"a-web": 2})
    assert cond(s, "Ready")["status"] == "False" and s["components"]["web"]["replicas"] == 2
    assert not deployment_ready(dep("web", 1, 1), minimum=2) and deployment_ready(dep("web", 3, 3), minimum=2)


def test_a_rollout_past_its_progress_deadline_is_degraded():
    stuck = dep("web", 2, 1)
    stuck["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                      "message": 'ReplicaSet "a-web-1" has timed out progressing.'}]
    s = status([stuck])
    assert cond(s, "Degraded")["reason"] == "WebProgressDeadlineExceeded"
    assert "timed out" in cond(s, "Degraded")["message"]
