"""One pass over one FlaskApp, for every trigger (spec change, child change, resync, leadership): read, let plan.py
decide, write, report. The decisions are in plan.py (pure); this module only does the I/O around them."""

from __future__ import annotations

import datetime
import logging
import secrets
from typing import Optional

from . import metrics
from .builders.config import REDIS_SECRET_SUFFIX
from .kube import ApplyRefused, Cluster, NameConflict, secret_value
from .naming import child_name
from .observe import Verdict, status_changed, status_patch, stuck_pods
from .pacing import RolloutPacer, auto_upgrade
from .plan import Observed, condition, database_secret_ref, decide, events, status_of, upgrade_note

log = logging.getLogger(__name__)


def reconcile(cluster: Cluster, namespace: str, name: str, pacer: Optional[RolloutPacer] = None) -> Optional[dict]:
    """Bring the children of FlaskApp namespace/name to the planned state; return the new status. `pacer`:
    rolls a new operator release's templates across apps in waves (pacing.py); None rolls them at once."""
    body = cluster.get_flaskapp(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):  # the garbage collector removes its children
        if pacer is not None:
            pacer.forget((namespace, name))
        return None
    observed = observe(cluster, body)
    plan = decide(observed)

    # A new operator release's templates roll in waves across apps (or not at all, if opted out).
    verdict, to_apply, upgrade = plan.verdict, plan.to_apply, None
    if plan.rolls_out and pacer is not None:
        upgrade = pacer.decide((namespace, name), bool(plan.paced), opted_out=not auto_upgrade(body))
        if upgrade in ("queued", "held"):
            to_apply = plan.without_paced()
    applied, pruned = [], []
    if plan.rolls_out:  # apply what differs (all or nothing), then prune what is no longer rendered
        uid = body["metadata"]["uid"]
        try:
            applied = cluster.apply(to_apply, observed.live, uid)
            pruned = cluster.prune(plan.keep, observed.live, uid)
        except ApplyRefused as refused:
            verdict = Verdict("InvalidSpec", f"{refused}; nothing was applied")
        except NameConflict as conflict:
            verdict = Verdict("NameConflict", f"{conflict}; nothing was applied")

    # Report: status from the children's state, written only when it changed; Events for what changed.
    now = datetime.datetime.now(datetime.timezone.utc)
    pods = tuple(cluster.list_pods(namespace, name)) if plan.rendered is not None else ()
    status = status_of(observed, plan, verdict, pods=pods,
                       pod_events=cluster.pod_events(namespace, stuck_pods(list(pods), now)),
                       now=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       upgrade_note=upgrade_note(upgrade, plan.paced, pacer.max_rolling if pacer else 0))
    if upgrade == "rolling" and not plan.paced and condition(status, "Ready").get("status") == "True" \
            and pacer.finish((namespace, name)):
        del status["upgrade"]
        cluster.post_event(body, "Normal", "Upgraded", "every tier runs this operator release's templates")
    previous = body.get("status") or {}
    if status_changed(previous, status):
        log.info("%s/%s: status changed (%s)", namespace, name,
                 ", ".join(k for k, v in status.items() if previous.get(k) != v))
        cluster.patch_status(namespace, name, status_patch(previous, status))
        for event in events(previous, status, verdict, body["metadata"].get("generation", 0), upgrade):
            cluster.post_event(body, *event)
    for kind, _ in applied:
        metrics.APPLIED.labels(kind).inc()
    for kind, _ in pruned:
        metrics.PRUNED.labels(kind).inc()
    if applied or pruned:
        log.info("%s/%s: applied %d, pruned %d objects", namespace, name, len(applied), len(pruned))
    if applied:
        cluster.post_event(body, "Normal", "Applied", "applied " + ", ".join(f"{k}/{n}" for k, n in applied))
    if pruned:
        cluster.post_event(body, "Normal", "Pruned", "deleted " + ", ".join(f"{k}/{n}" for k, n in pruned))
    return status


def observe(cluster: Cluster, body: dict) -> Observed:
    """Everything the plan reads: the children (from the cache), served APIs, and the Secrets it keeps or reads.
    The Redis password is kept from the existing Secret, or made once."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    live = cluster.list_children(namespace, name)
    password = (secret_value(live.get(("Secret", child_name(name, REDIS_SECRET_SUFFIX))), "password")
                or secrets.token_urlsafe(24))
    database_url = problem = None
    ref = database_secret_ref(body.get("spec"))
    if ref is not None:
        database_url = secret_value(cluster.get_secret(namespace, ref[0]), ref[1])
        if database_url is None:
            problem = (f"the pooler is configured from the database URL, but Secret {ref[0]} has no key {ref[1]} "
                       f"(or does not exist); create it and the rollout resumes")
    return Observed(body=body, live=live, redis_password=password, monitoring_api=cluster.monitoring_api(),
                    keda_api=cluster.keda_api(), gateway_api=cluster.gateway_api(), database_url=database_url,
                    database_secret_problem=problem,
                    discovery_ttl_seconds=cluster.discovery_ttl_seconds,
                    agent_report=cluster.agent_report(namespace, name))
