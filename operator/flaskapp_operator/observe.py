"""From the children's live state to the FlaskApp's status (pure). Rebuilt on every reconcile, never
accumulated; lastTransitionTime is kept while a condition's status does not change."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Optional

from .agentreports import BUDGET_GUARANTEED
from .naming import COMPONENT_LABEL, selector_labels

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
BUDGET_CAPPED = "BudgetCapped"  # database.budgetPolicy capAutoscaling lowered an autoscaler's maximum


@dataclass(frozen=True)
class Verdict:
    """What the reconcile concluded before looking at readiness: a problem stops the rollout."""

    degraded_reason: Optional[str] = None
    degraded_message: str = ""
    waiting_reason: Optional[str] = None  # e.g. MigrationRunning: applied what could be, holding the rest
    waiting_message: str = ""


def deployment_ready(obj: dict, minimum: int = 1) -> bool:
    """Every wanted pod updated and available; `minimum`: the autoscaler's minReplicas, which a Deployment
    the HPA has not scaled yet (created at 1) must also reach."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = max(spec.get("replicas", 1), minimum)
    return (status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) >= want
            and status.get("availableReplicas", 0) >= want
            and status.get("replicas", 0) == status.get("updatedReplicas", 0))


def stalled(obj: dict) -> Optional[str]:
    """The Deployment controller's verdict that a rollout stopped progressing (progressDeadlineSeconds)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return cond.get("message") or "ProgressDeadlineExceeded"
    return None


def job_state(obj: Optional[dict]) -> str:
    if obj is None:
        return "Pending"
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Complete"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return "Running"


def components(deployments: list[dict], minimums: Optional[dict[str, int]] = None) -> dict[str, dict]:
    """Readiness by tier; `minimums`: the autoscalers' minReplicas by Deployment name."""
    out = {}
    for d in sorted(deployments, key=lambda o: o["metadata"]["name"]):
        status = d.get("status") or {}
        name = d["metadata"]["labels"].get(COMPONENT_LABEL, d["metadata"]["name"])
        minimum = (minimums or {}).get(d["metadata"]["name"], 0)  # a tier scaled to 0 by its spec is ready with none
        out[name] = {"ready": deployment_ready(d, minimum), "readyReplicas": status.get("readyReplicas", 0),
                     "replicas": max((d.get("spec") or {}).get("replicas", 1), minimum)}
    return out


# Container states that will not fix themselves by waiting (kubelet's waiting reasons).
STUCK_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff")


@dataclass(frozen=True)
class PodProblem:
    component: str
    cause: str  # ImagePullBackOff, CrashLoopBackOff, OOMKilled, Unschedulable, ...
    message: str

    @property
    def reason(self) -> str:
        """A condition reason naming the tier and the cause, e.g. RedisCacheOOMKilled."""
        return "".join(part.capitalize() for part in self.component.split("-")) + self.cause


def _container_problem(status: dict) -> Optional[tuple[str, str]]:
    state, last = status.get("state") or {}, status.get("lastState") or {}
    waiting, terminated = state.get("waiting") or {}, last.get("terminated") or state.get("terminated") or {}
    name = status.get("name", "?")
    if terminated.get("reason") == "OOMKilled" and (status.get("restartCount", 0) > 0 or state.get("terminated")):
        return "OOMKilled", (f"container {name} was killed for exceeding its memory limit "
                             f"(restarted {status.get('restartCount', 0)} times)")
    reason = waiting.get("reason")
    if reason not in STUCK_WAITING:
        return None
    if reason == "CrashLoopBackOff":
        detail = f"exits at start with code {terminated.get('exitCode', '?')}"
        if terminated.get("message"):
            detail += f": {terminated['message'].strip()[-200:]}"
        return "CrashLoopBackOff", f"container {name} {detail} (restarted {status.get('restartCount', 0)} times)"
    cause = "ImagePullBackOff" if reason in ("ErrImagePull", "ImagePullBackOff") else reason
    return cause, f"container {name}: {reason}: {(waiting.get('message') or '').strip()[:300]}"


def _tier_order(problem: PodProblem) -> tuple[int, str]:
    """The tier users meet first is named first: web before what depends on its image or serves it."""
    order = ("web", "migrations", "nginx", "worker-", "beat", "redis-", "memcached", "pooler")
    return next((i for i, prefix in enumerate(order) if problem.component.startswith(prefix)), len(order)), \
        problem.component


# A pod whose containers have not started this long after its creation is asked about (its Events):
# a sandbox or volume that cannot be set up shows nowhere else.
STUCK_AFTER_SECONDS = 20
# Event reasons of the kubelet that say why a pod's containers cannot start.
STUCK_EVENT_REASONS = ("FailedCreatePodSandBox", "FailedMount", "FailedAttachVolume", "FailedCreatePodContainer")


def stuck_pods(pods: list[dict], now: datetime.datetime) -> list[str]:
    """Names of scheduled pods none of whose containers has started within STUCK_AFTER_SECONDS."""
    stuck = []
    for pod in pods:
        status = pod.get("status") or {}
        created = pod["metadata"].get("creationTimestamp")
        if not created or not (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            continue
        started = any({"running", "terminated"} & (cs.get("state") or {}).keys() or cs.get("restartCount")
                      for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []))
        if not started and (now - _parse_time(created)).total_seconds() > STUCK_AFTER_SECONDS:
            stuck.append(pod["metadata"]["name"])
    return sorted(stuck)


def _parse_time(value) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def _event_problem(events: list[dict]) -> Optional[tuple[str, str]]:
    relevant = sorted((e for e in events if e.get("reason") in STUCK_EVENT_REASONS),
                      key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    if not relevant:
        return None
    # runc's words when the memory limit cannot even hold the container's init process; the retries
    # in between fail with other words ("cannot start a stopped process") for the same cause.
    oom = [e for e in relevant if "oom-killed" in (e.get("message") or "").lower()]
    chosen = (oom or relevant)[-1]
    message = (chosen.get("message") or "").strip()
    return ("OOMKilled" if oom else chosen["reason"]), f"{chosen['reason']}: {message[-300:]}"


def pod_problems(pods: list[dict], events: Optional[dict[str, list[dict]]] = None) -> dict[str, PodProblem]:
    """The first problem of each component's pods that waiting will not cure, by component. `events`:
    the Events of stuck pods (see stuck_pods), by pod name."""
    found: dict[str, PodProblem] = {}
    events = events or {}
    for pod in sorted(pods, key=lambda o: o["metadata"]["name"]):
        component = (pod["metadata"].get("labels") or {}).get(COMPONENT_LABEL)
        if not component or component in found or pod["metadata"].get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        unschedulable = next((c for c in status.get("conditions") or []
                              if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"), None)
        if unschedulable:
            found[component] = PodProblem(component, "Unschedulable",
                                          f"pod {pod['metadata']['name']}: {unschedulable.get('message', '')}")
            continue
        statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        problem = next(filter(None, map(_container_problem, statuses)), None) or \
            _event_problem(events.get(pod["metadata"]["name"], []))
        if problem:
            found[component] = PodProblem(component, problem[0], f"pod {pod['metadata']['name']}: {problem[1]}")
    return found


def condition(ctype: str, ok: Optional[bool], reason: str, message: str, generation: int, previous: list[dict],
              now: str) -> dict:
    status = "Unknown" if ok is None else "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == ctype), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get(
        "lastTransitionTime") else now
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since}


def budget_capped(budget: dict) -> tuple[bool, str, str]:
    """The BudgetCapped condition from status.tuning.budget."""
    capped = budget.get("cappedAutoscalers") or []
    if capped:
        return (True, "AutoscalersCapped", "the database connection budget lowered maxReplicas: " + ", ".join(
            f"{c['tier']} {c['requestedMaxReplicas']} -> {c['maxReplicas']}" for c in capped))
    return False, "WithinBudget", "every autoscaler keeps the maxReplicas of the spec"


@dataclass(frozen=True)
class RouteProblem:
    reason: str
    message: str
    refused: bool  # a Gateway controller said no (else: no answer yet)


def _same_parent(answered: dict, ref: dict, namespace: str) -> bool:
    def key(r: dict) -> tuple:
        return (r.get("name"), r.get("namespace") or namespace, r.get("sectionName"), r.get("port"))
    return key(answered) == key(ref)


def route_problem(route: Optional[dict], namespace: str) -> Optional[RouteProblem]:
    """Why the HTTPRoute does not carry traffic yet, from the Gateway controllers' own conditions (Gateway API:
    status.parents[].conditions Accepted and ResolvedRefs, per parentRef); None once every Gateway accepted it."""
    if route is None:
        return RouteProblem("RouteNotCreated", "the HTTPRoute does not exist yet", False)
    answers = (route.get("status") or {}).get("parents") or []
    for ref in route["spec"]["parentRefs"]:
        gateway = f"Gateway {ref.get('namespace') or namespace}/{ref['name']}" + (
            f" listener {ref['sectionName']}" if ref.get("sectionName") else "")
        answer = next((a for a in answers if _same_parent(a.get("parentRef") or {}, ref, namespace)), None)
        if answer is None:
            return RouteProblem("RouteNotAccepted", f"no controller of {gateway} has accepted the route yet (does "
                                "the Gateway exist, and allow routes from this namespace?)", False)
        conditions = {c["type"]: c for c in answer.get("conditions") or []}
        for kind in ("Accepted", "ResolvedRefs"):
            found = conditions.get(kind)
            if found is None:
                return RouteProblem("RouteNotAccepted", f"{gateway}: no {kind} condition yet", False)
            if found.get("status") != "True":
                return RouteProblem(found.get("reason") or f"Not{kind}",
                                    f"{gateway} ({answer.get('controllerName', 'its controller')}): {kind} is "
                                    f"{found.get('status')}: {found.get('message') or found.get('reason')}", True)
    return None


def build_status(*, app: str, generation: int, verdict: Verdict, deployments: list[dict], pool_names: list[str],
                 tuning: Optional[dict], url: str, previous: dict, now: str, pods: tuple[dict, ...] = (),
                 pod_events: Optional[dict[str, list[dict]]] = None,
                 minimums: Optional[dict[str, int]] = None, monitoring_note: Optional[str] = None,
                 upgrade_note: Optional[str] = None, route: Optional[RouteProblem] = None,
                 budget_guaranteed: Optional[tuple[Optional[bool], str, str]] = None) -> dict:
    comps = components(deployments, minimums)
    not_ready = sorted(n for n, c in comps.items() if not c["ready"])
    all_ready = not not_ready and bool(comps)
    prev_conditions = previous.get("conditions") or []
    # Only tiers still short of ready pods (and a migration being waited for) can be held back by a pod.
    found = pod_problems(list(pods), pod_events)
    for d in deployments:  # a rollout the Deployment controller gave up on, when no pod says more
        component = d["metadata"]["labels"].get(COMPONENT_LABEL, d["metadata"]["name"])
        if component in not_ready and component not in found and (message := stalled(d)):
            found[component] = PodProblem(component, "ProgressDeadlineExceeded", message)
    problems = sorted((p for c, p in found.items()
                       if c in not_ready or (c == "migrations" and verdict.waiting_reason)), key=_tier_order)

    if verdict.degraded_reason:
        ready = (False, verdict.degraded_reason, verdict.degraded_message)
        progressing = (False, verdict.degraded_reason, "rollout stopped: " + verdict.degraded_reason)
        degraded = (True, verdict.degraded_reason, verdict.degraded_message)
    elif problems:
        message = "; ".join(f"{p.component}: {p.message}" for p in problems)
        ready = (False, problems[0].reason, message)
        progressing = (True, verdict.waiting_reason or "RollingOut", verdict.waiting_message or
                       "waiting for " + ", ".join(not_ready))
        degraded = (True, problems[0].reason, message)
    elif verdict.waiting_reason:
        ready = (False, verdict.waiting_reason, verdict.waiting_message)
        progressing = (True, verdict.waiting_reason, verdict.waiting_message)
        degraded = (False, "AsExpected", "")
    elif all_ready and route is not None:  # every pod serves, but no traffic reaches them through the Gateway
        ready = (False, route.reason, route.message)
        progressing = (not route.refused, "RouteNotAccepted" if not route.refused else route.reason, route.message)
        degraded = (route.refused, route.reason if route.refused else "AsExpected", route.message if route.refused else "")
    elif all_ready:
        ready = (True, "AllComponentsReady", f"{len(comps)} components ready")
        progressing = (False, "RolloutComplete", "every component runs the current spec")
        degraded = (False, "AsExpected", "")
    else:
        message = "waiting for " + ", ".join(not_ready) if not_ready else "creating components"
        ready = (False, "ComponentsNotReady", message)
        progressing = (True, "RollingOut", message)
        degraded = (False, "AsExpected", "")

    conditions = [condition(t, *v, generation=generation, previous=prev_conditions, now=now)
                  for t, v in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded))]
    if tuning is not None and "budget" in tuning:
        conditions.append(condition(BUDGET_CAPPED, *budget_capped(tuning["budget"]), generation=generation,
                                    previous=prev_conditions, now=now))
    if budget_guaranteed is not None:  # what the in-process agent reports (agentreports.py)
        conditions.append(condition(BUDGET_GUARANTEED, *budget_guaranteed, generation=generation,
                                    previous=prev_conditions, now=now))
    pools_ready = sum(1 for p in pool_names if comps.get(f"worker-{p}", {}).get("ready"))
    web = comps.get("web", {})
    status = {
        "observedGeneration": generation,
        "conditions": conditions,
        "webReplicas": web.get("readyReplicas", 0),
        "webSelector": ",".join(f"{k}={v}" for k, v in selector_labels(app, "web").items()),
        "workerPools": f"{pools_ready}/{len(pool_names)}",
        "url": url,
        "components": comps,
    }
    if tuning is not None:
        status["tuning"] = tuning
    if monitoring_note:
        status["monitoring"] = monitoring_note
    if upgrade_note:
        status["upgrade"] = upgrade_note
    return status


def status_changed(old: dict, new: dict) -> bool:
    return any(old.get(k) != v for k, v in new.items()) or any(k not in new for k in old)


def status_patch(old: dict, new: dict) -> dict:
    """A JSON merge patch (RFC 7386) from old to new: keys the new status no longer has are removed, at any
    depth (the tuning of an invalid spec, the component of a pruned tier), since a merge patch merges maps."""
    patch: dict = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        patch[key] = status_patch(before, value) if isinstance(value, dict) and isinstance(before, dict) else value
    return patch
