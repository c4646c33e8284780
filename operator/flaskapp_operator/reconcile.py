"""One reconcile of one FlaskApp, for every trigger (create, update, resume, child change, resync)."""

from __future__ import annotations

import datetime
import logging
import secrets
from typing import Optional

from . import metrics
from .builders.config import REDIS_SECRET_SUFFIX
from .builders.availability import queue_scaled as queue_scaled_pool
from .kube import (DISCOVERY_TTL_SECONDS, GATEWAY_API, KEDA_API, MONITORING_API, ApplyRefused, Cluster, Key,
                   NameConflict,
                   autoscaler_minimums, key_of, secret_value)
from .naming import COMPONENT_LABEL, child_name
from .pacing import AUTO_UPGRADE, RolloutPacer, auto_upgrade, inputs_hash, upgrades, with_inputs_hash
from .observe import (BUDGET_CAPPED, Verdict, build_status, job_state, route_problem, status_changed, status_patch,
                      stuck_pods)
from .render import Rendered, render
from .schema import SpecError

log = logging.getLogger(__name__)

MONITORING_API_MISSING = (f"exporters, Flower and the dashboard run; no PodMonitor or PrometheusRule: the cluster "
                          f"does not serve {MONITORING_API} (install the Prometheus Operator's CRDs; they are "
                          f"picked up within {DISCOVERY_TTL_SECONDS:.0f} s)")

# Tiers that run the app image: held back until the migration Job of the new image has succeeded.
GATED_COMPONENTS = ("web", "beat")
GATED_PREFIXES = ("worker-",)


def _gated(obj: dict) -> bool:
    component = obj["metadata"]["labels"].get(COMPONENT_LABEL, "")
    return obj["kind"] == "Deployment" and (component in GATED_COMPONENTS or component.startswith(GATED_PREFIXES))


def _is_migration(obj: dict) -> bool:
    return (obj["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "migrations"


def _url(spec, name: str, namespace: str) -> str:
    ingress = spec.ingress if spec else None
    if ingress is not None and ingress.enabled and (ingress.host or ingress.hosts):
        scheme = "https" if ingress.tls_secret_name or ingress.issuer_ref else "http"
        return f"{scheme}://{ingress.host or ingress.hosts[0]}/"
    route = spec.route if spec else None
    if route is not None and route.enabled and route.hostnames:  # the scheme is the Gateway listener's: unknown
        return f"http://{route.hostnames[0].removeprefix('*.')}{route.paths[0].path}"
    return f"http://{child_name(name, 'nginx')}.{namespace}.svc/"


def reconcile(cluster: Cluster, namespace: str, name: str, pacer: Optional[RolloutPacer] = None) -> Optional[dict]:
    """Bring the children of FlaskApp namespace/name to the rendered state; return the new status. `pacer`:
    rolls a new operator release's templates across apps in waves (pacing.py); None rolls them at once."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    # 1. Load the FlaskApp; it may be gone (the garbage collector removes its children).
    body = cluster.get_flaskapp(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        if pacer is not None:
            pacer.forget((namespace, name))
        return None
    meta = body["metadata"]
    generation = meta.get("generation", 0)
    previous = body.get("status") or {}

    # 2. List the children that exist now (one LIST per kind).
    live = cluster.list_children(namespace, name)

    # 3. Render: the Redis password is kept from the existing Secret, or made once; monitors only where
    #    their CRDs are served.
    monitoring_api = cluster.monitoring_api()
    password = (secret_value(live.get(("Secret", child_name(name, REDIS_SECRET_SUFFIX))), "password")
                or secrets.token_urlsafe(24))
    database_url, missing = _pooler_database_url(cluster, namespace, body.get("spec"))
    keda_api = cluster.keda_api()
    gateway_api = cluster.gateway_api()
    try:
        rendered: Optional[Rendered] = render(body, redis_password=password,
                                              uid=meta["uid"], monitoring_api=monitoring_api,
                                              database_url=database_url, keda_api=keda_api, gateway_api=gateway_api)
    except SpecError as exc:
        rendered = None
        verdict = Verdict("InvalidSpec", str(exc))

    # 4. Decide what may roll out: nothing when the budget cannot hold; only the migration Job and
    #    what it needs while it runs for a new image.
    applied: list[Key] = []
    pruned: list[Key] = []
    upgrade: Optional[str] = None  # pacing of this release's new templates: rolling, queued or held
    paced: list[Key] = []  # the workloads it concerns
    if rendered is not None:
        verdict = Verdict()
        redis_secret = ("Secret", child_name(name, REDIS_SECRET_SUFFIX))
        digest = inputs_hash(body, database_url=database_url,
                             # drawn anew each pass while no Redis runs (then no Secret keeps it)
                             redis_password=password if redis_secret in {key_of(o) for o in rendered.objects} else None,
                             monitoring_api=monitoring_api, keda_api=keda_api,
                             # (only where it changes the render: a new input changes every app's digest)
                             **({"gateway_api": gateway_api} if rendered.spec.route.enabled else {}))
        desired = with_inputs_hash(rendered.objects, digest)
        queue_scaled = [p.name for p in rendered.spec.worker_pools if queue_scaled_pool(p)]
        if missing:
            verdict = Verdict("DatabaseSecretMissing", missing)
        elif queue_scaled and not keda_api:
            verdict = Verdict("KedaNotInstalled", f"worker pools {', '.join(queue_scaled)} scale on queue length "
                              f"(autoscaling.queueLength), which needs KEDA: the cluster does not serve {KEDA_API} "
                              f"ScaledObject. Install KEDA (picked up within {DISCOVERY_TTL_SECONDS:.0f} s) or remove "
                              f"queueLength to scale on CPU; nothing was rolled out")
        elif rendered.spec.route.enabled and not gateway_api:
            verdict = Verdict("GatewayApiNotInstalled", f"spec.route needs the Gateway API: the cluster does not serve "
                              f"{GATEWAY_API} HTTPRoute. Install the Gateway API CRDs and a Gateway controller "
                              f"(picked up within {DISCOVERY_TTL_SECONDS:.0f} s), or use spec.ingress; nothing was "
                              f"rolled out")
        elif not rendered.feasible:
            verdict = Verdict("ConnectionBudgetExceeded", rendered.tuning.budget.message)
        else:
            to_apply = desired
            job = rendered.migration_job
            # A migration still running for an earlier image is never cut short: it is kept, and the
            # new image's Job waits for it (two migrations must not run against one database at once).
            earlier = sorted(n for (kind, n), o in live.items()
                             if kind == "Job" and n != job and _is_migration(o) and job_state(o) == "Running")
            if job and earlier:
                to_apply = [o for o in desired if not _gated(o) and key_of(o) != ("Job", job)]
                verdict = Verdict(waiting_reason="MigrationRunning",
                                  waiting_message=f"waiting for the earlier migration Job {earlier[0]} to end "
                                                  f"before starting {job}")
            elif job:
                state = job_state(live.get(("Job", job)))
                if state != "Complete":
                    to_apply = [o for o in desired if not _gated(o)]
                    verdict = (Verdict("MigrationFailed", f"migration Job {job} failed; fix the command or "
                                       "image, a new image or command starts a new Job")
                               if state == "Failed" else
                               Verdict(waiting_reason="MigrationRunning",
                                       waiting_message=f"waiting for migration Job {job} before rolling out"))

            # 5. A new operator release's templates roll in waves across apps (or not at all, if opted out).
            paced = upgrades(to_apply, live, digest)
            if pacer is not None:
                upgrade = pacer.decide((namespace, name), bool(paced), opted_out=not auto_upgrade(body))
                if upgrade in ("queued", "held"):
                    to_apply = [o for o in to_apply if key_of(o) not in paced]

            # 6. Apply what differs (all or nothing), then prune what is no longer rendered (held-back tiers
            #    are kept).
            try:
                applied = cluster.apply(to_apply, live, meta["uid"])
                pruned = cluster.prune({key_of(o) for o in desired} | {("Job", n) for n in earlier}, live,
                                       meta["uid"])
            except ApplyRefused as refused:
                verdict = Verdict("InvalidSpec", f"{refused}; nothing was applied")
            except NameConflict as conflict:
                verdict = Verdict("NameConflict", f"{conflict}; nothing was applied")

    # 7. Report: status from the children's state, written only when it changed; Events for actions.
    deployments = [o for (kind, _), o in live.items() if kind in ("Deployment", "StatefulSet")]
    spec = rendered.spec if rendered else None
    pods = tuple(cluster.list_pods(namespace, name)) if rendered is not None else ()
    pod_events = cluster.pod_events(namespace, stuck_pods(list(pods), datetime.datetime.now(datetime.timezone.utc)))
    status = build_status(
        app=name, generation=generation, verdict=verdict, deployments=deployments,
        pool_names=[p.name for p in spec.worker_pools] if spec else [],
        tuning=rendered.tuning.report() if rendered else None,
        url=_url(spec, name, namespace), previous=previous, now=now, pods=pods,
        route=(route_problem(live.get(("HTTPRoute", name)), namespace)
               if spec and spec.route.enabled and gateway_api and rendered is not None else None),
        pod_events=pod_events, minimums=autoscaler_minimums(rendered.objects if rendered else []),
        monitoring_note=MONITORING_API_MISSING if spec and spec.monitoring.enabled and not monitoring_api else None,
        upgrade_note=_upgrade_note(upgrade, paced, pacer))
    if upgrade == "rolling" and not paced and _condition_status(status, "Ready") == "True" and pacer.finish(
            (namespace, name)):
        del status["upgrade"]
        cluster.post_event(body, "Normal", "Upgraded", "every tier runs this operator release's templates")
    if status_changed(previous, status):
        log.info("%s/%s: status changed (%s)", namespace, name,
                 ", ".join(k for k, v in status.items() if previous.get(k) != v))
        cluster.patch_status(namespace, name, status_patch(previous, status))
        if verdict.degraded_reason and (previous.get("observedGeneration") != generation
                                        or _condition_reason(previous, "Degraded") != verdict.degraded_reason):
            cluster.post_event(body, "Warning", verdict.degraded_reason, verdict.degraded_message)
        if _condition_status(previous, BUDGET_CAPPED) != "True" and _condition_status(status, BUDGET_CAPPED) == "True":
            cluster.post_event(body, "Warning", "BudgetCapped", _condition(status, BUDGET_CAPPED)["message"])
        if status.get("upgrade") and not (previous.get("upgrade") or "").startswith(upgrade):
            cluster.post_event(body, "Normal", UPGRADE_EVENTS[upgrade], status["upgrade"])
        if _condition_status(previous, "Ready") != "True" and _condition_status(status, "Ready") == "True":
            cluster.post_event(body, "Normal", "Ready", "every component is ready")
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


UPGRADE_EVENTS = {"rolling": "UpgradeStarted", "queued": "UpgradeQueued", "held": "UpgradeHeld"}


def _upgrade_note(state: Optional[str], paced: list[Key], pacer: Optional[RolloutPacer]) -> Optional[str]:
    tiers = ", ".join(n for _, n in paced) or "its tiers"
    if state == "rolling":
        return f"rolling: {tiers} to this operator release's templates" if paced else \
            "rolling: waiting for the upgraded tiers to be ready"
    if state == "queued":
        return (f"queued: {tiers} keep the previous release's pods until one of {pacer.max_rolling} upgrade "
                f"slots frees (FlaskApps roll new templates in waves)")
    if state == "held":
        return (f"held: {tiers} keep the previous release's pods ({AUTO_UPGRADE} is \"false\"); a spec change "
                f"rolls them")
    return None


def _pooler_database_url(cluster: Cluster, namespace: str, spec) -> tuple[Optional[str], Optional[str]]:
    """The URL in the database Secret when spec.database.pooler is enabled (PgBouncer is configured from it),
    and why it is missing, if it is. Read before parsing: an invalid spec reads nothing."""
    db = (spec or {}).get("database") if isinstance(spec, dict) else None
    if not isinstance(db, dict) or not (db.get("pooler") or {}).get("enabled"):
        return None, None
    secret_name, key = db.get("secretName"), db.get("urlKey", "url")
    if not isinstance(secret_name, str):
        return None, None  # the parser names the field
    url = secret_value(cluster.get_secret(namespace, secret_name), key)
    if url is None:
        return None, (f"the pooler is configured from the database URL, but Secret {secret_name} has no key {key} "
                      f"(or does not exist); create it and the rollout resumes")
    return url, None


def _condition(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), {})


def _condition_status(status: dict, ctype: str) -> Optional[str]:
    return _condition(status, ctype).get("status")


def _condition_reason(status: dict, ctype: str) -> Optional[str]:
    return _condition(status, ctype).get("reason")
