"""What one pass decides, as a pure function: the FlaskApp and what the cluster holds in, the objects to apply,
those to keep, the verdict and the Events out. No I/O: reconcile.py reads the cluster, calls these, and writes.

    Observed (FlaskApp, children, served APIs, Secrets) ──decide()──> Plan (verdict, objects to apply / keep)
    Plan + pods + the outcome of the apply ──status_of()──> status ──events()──> Events worth posting
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .agentreports import BUDGET_GUARANTEED, AgentReport, budget_guaranteed
from .builders.availability import queue_scaled as queue_scaled_pool
from .builders.config import REDIS_SECRET_SUFFIX
from .kinds import GATEWAY_API, KEDA_API, MONITORING_API, Key, key_of
from .naming import COMPONENT_LABEL, child_name
from .observe import BUDGET_CAPPED, RouteProblem, Verdict, build_status, job_state, route_problem
from .ownership import autoscaler_minimums
from .pacing import AUTO_UPGRADE, inputs_hash, upgrades, with_inputs_hash
from .render import Rendered, render
from .schema import SpecError

# Tiers that run the app image: held back until the migration Job of the new image has succeeded.
GATED_COMPONENTS = ("web", "beat")
GATED_PREFIXES = ("worker-",)

UPGRADE_EVENTS = {"rolling": "UpgradeStarted", "queued": "UpgradeQueued", "held": "UpgradeHeld"}


@dataclass(frozen=True)
class Observed:
    """Everything a pass reads, read before it decides anything."""
    body: dict  # the FlaskApp
    live: dict[Key, dict]  # its children, by (kind, name)
    redis_password: str  # the managed Redis Secret's, or a new one
    monitoring_api: bool  # served APIs: the Prometheus Operator's, KEDA's, the Gateway API's
    keda_api: bool
    gateway_api: bool
    database_url: Optional[str] = None  # from the database Secret, when the pooler is configured from it
    database_secret_problem: Optional[str] = None  # why that URL could not be read
    discovery_ttl_seconds: float = 300.0  # how soon a CRD installed later is picked up (for messages)
    agent_report: Optional[AgentReport] = None  # what Prometheus holds of the agent's reports; None: not asked

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]


@dataclass
class Plan:
    """What a pass will do. `rolls_out`: objects may be written (the spec renders and its budget holds)."""
    verdict: Verdict
    rendered: Optional[Rendered] = None
    to_apply: list[dict] = field(default_factory=list)
    keep: set[Key] = field(default_factory=set)  # children prune() must not delete
    paced: list[Key] = field(default_factory=list)  # workloads a new operator release's templates would roll
    rolls_out: bool = False

    def without_paced(self) -> list[dict]:
        """to_apply, minus the workloads whose upgrade waits for a slot (pacing.py)."""
        return [o for o in self.to_apply if key_of(o) not in self.paced]


def decide(observed: Observed) -> Plan:
    """Render the FlaskApp, then decide what may roll out: nothing while a prerequisite is missing or the budget
    cannot hold; while a migration runs for a new image, only the Job and what it needs."""
    body, live, ttl = observed.body, observed.live, observed.discovery_ttl_seconds
    try:
        rendered = render(body, redis_password=observed.redis_password, uid=body["metadata"]["uid"],
                          monitoring_api=observed.monitoring_api, database_url=observed.database_url,
                          keda_api=observed.keda_api, gateway_api=observed.gateway_api)
    except SpecError as exc:
        return Plan(Verdict("InvalidSpec", str(exc)))
    redis_secret = ("Secret", child_name(observed.name, REDIS_SECRET_SUFFIX))
    digest = inputs_hash(body, database_url=observed.database_url,
                         # drawn anew each pass while no Redis runs (then no Secret keeps it)
                         redis_password=(observed.redis_password if redis_secret in {key_of(o) for o in
                                                                                     rendered.objects} else None),
                         monitoring_api=observed.monitoring_api, keda_api=observed.keda_api,
                         # (only where it changes the render: a new input changes every app's digest)
                         **({"gateway_api": observed.gateway_api} if rendered.spec.route.enabled else {}))
    desired = with_inputs_hash(rendered.objects, digest)
    queue_scaled = [p.name for p in rendered.spec.worker_pools if queue_scaled_pool(p)]
    if observed.database_secret_problem:
        return Plan(Verdict("DatabaseSecretMissing", observed.database_secret_problem), rendered)
    if queue_scaled and not observed.keda_api:
        return Plan(Verdict("KedaNotInstalled", f"worker pools {', '.join(queue_scaled)} scale on queue length "
                            f"(autoscaling.queueLength), which needs KEDA: the cluster does not serve {KEDA_API} "
                            f"ScaledObject. Install KEDA (picked up within {ttl:.0f} s) or remove queueLength to "
                            f"scale on CPU; nothing was rolled out"), rendered)
    if rendered.spec.route.enabled and not observed.gateway_api:
        return Plan(Verdict("GatewayApiNotInstalled", f"spec.route needs the Gateway API: the cluster does not "
                            f"serve {GATEWAY_API} HTTPRoute. Install the Gateway API CRDs and a Gateway controller "
                            f"(picked up within {ttl:.0f} s), or use spec.ingress; nothing was rolled out"), rendered)
    if not rendered.feasible:
        return Plan(Verdict("ConnectionBudgetExceeded", rendered.tuning.budget.message), rendered)

    verdict, to_apply, job = Verdict(), desired, rendered.migration_job
    # A migration still running for an earlier image is never cut short: it is kept, and the new image's Job
    # waits for it (two migrations must not run against one database at once).
    earlier = sorted(n for (kind, n), o in live.items()
                     if kind == "Job" and n != job and _is_migration(o) and job_state(o) == "Running")
    if job and earlier:
        to_apply = [o for o in desired if not _gated(o) and key_of(o) != ("Job", job)]
        verdict = Verdict(waiting_reason="MigrationRunning",
                          waiting_message=f"waiting for the earlier migration Job {earlier[0]} to end before "
                                          f"starting {job}")
    elif job:
        state = job_state(live.get(("Job", job)))
        if state == "Failed":
            to_apply = [o for o in desired if not _gated(o)]
            verdict = Verdict("MigrationFailed", f"migration Job {job} failed; fix the command or image, a new "
                              "image or command starts a new Job")
        elif state != "Complete":
            to_apply = [o for o in desired if not _gated(o)]
            verdict = Verdict(waiting_reason="MigrationRunning",
                              waiting_message=f"waiting for migration Job {job} before rolling out")
    # Held-back tiers are kept; the earlier migration too.
    keep = {key_of(o) for o in desired} | {("Job", n) for n in earlier}
    return Plan(verdict, rendered, to_apply, keep, paced=upgrades(to_apply, live, digest), rolls_out=True)


def status_of(observed: Observed, plan: Plan, verdict: Verdict, *, pods: tuple[dict, ...],
              pod_events: dict[str, list[dict]], now: str, upgrade_note: Optional[str]) -> dict:
    """The FlaskApp's status from the plan, the apply's outcome (verdict) and the children's state."""
    rendered, live = plan.rendered, observed.live
    spec = rendered.spec if rendered else None
    route: Optional[RouteProblem] = (route_problem(live.get(("HTTPRoute", observed.name)), observed.namespace)
                                     if spec and spec.route.enabled and observed.gateway_api else None)
    monitoring_note = None
    if spec and spec.monitoring.enabled and not observed.monitoring_api:
        monitoring_note = (f"exporters, Flower and the dashboard run; no PodMonitor or PrometheusRule: the cluster "
                           f"does not serve {MONITORING_API} (install the Prometheus Operator's CRDs; they are "
                           f"picked up within {observed.discovery_ttl_seconds:.0f} s)")
    tuning = rendered.tuning.report() if rendered else None
    guaranteed = None
    if spec is not None and tuning is not None and "budget" in tuning:
        guaranteed = budget_guaranteed(observed.name, agent=spec.agent.enabled, monitoring=spec.monitoring.enabled,
                                       podmonitor=observed.monitoring_api, report=observed.agent_report)
    return build_status(
        app=observed.name, generation=observed.body["metadata"].get("generation", 0), verdict=verdict,
        deployments=[o for (kind, _), o in live.items() if kind in ("Deployment", "StatefulSet")],
        pool_names=[p.name for p in spec.worker_pools] if spec else [],
        tuning=tuning,
        url=app_url(spec, observed.name, observed.namespace), previous=observed.body.get("status") or {}, now=now,
        pods=pods, route=route, pod_events=pod_events,
        minimums=autoscaler_minimums(rendered.objects if rendered else []),
        monitoring_note=monitoring_note, upgrade_note=upgrade_note, budget_guaranteed=guaranteed)


def events(previous: dict, status: dict, verdict: Verdict, generation: int,
           upgrade: Optional[str]) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events a status change is worth: a new problem, a capped budget, an upgrade
    wave, becoming Ready. Each is posted once per change, not on every pass."""
    posted = []
    if verdict.degraded_reason and (previous.get("observedGeneration") != generation
                                    or condition(previous, "Degraded").get("reason") != verdict.degraded_reason):
        posted.append(("Warning", verdict.degraded_reason, verdict.degraded_message))
    if condition(previous, BUDGET_CAPPED).get("status") != "True" and \
            condition(status, BUDGET_CAPPED).get("status") == "True":
        posted.append(("Warning", "BudgetCapped", condition(status, BUDGET_CAPPED)["message"]))
    if condition(previous, BUDGET_GUARANTEED).get("status") != "False" and \
            condition(status, BUDGET_GUARANTEED).get("status") == "False":
        posted.append(("Warning", "BudgetNotGuaranteed", condition(status, BUDGET_GUARANTEED)["message"]))
    if status.get("upgrade") and not (previous.get("upgrade") or "").startswith(upgrade):
        posted.append(("Normal", UPGRADE_EVENTS[upgrade], status["upgrade"]))
    if condition(previous, "Ready").get("status") != "True" and condition(status, "Ready").get("status") == "True":
        posted.append(("Normal", "Ready", "every component is ready"))
    return posted


def upgrade_note(state: Optional[str], paced: list[Key], max_rolling: int) -> Optional[str]:
    tiers = ", ".join(n for _, n in paced) or "its tiers"
    if state == "rolling":
        return f"rolling: {tiers} to this operator release's templates" if paced else \
            "rolling: waiting for the upgraded tiers to be ready"
    if state == "queued":
        return (f"queued: {tiers} keep the previous release's pods until one of {max_rolling} upgrade "
                f"slots frees (FlaskApps roll new templates in waves)")
    if state == "held":
        return (f"held: {tiers} keep the previous release's pods ({AUTO_UPGRADE} is \"false\"); a spec change "
                f"rolls them")
    return None


def app_url(spec, name: str, namespace: str) -> str:
    ingress = spec.ingress if spec else None
    if ingress is not None and ingress.enabled and (ingress.host or ingress.hosts):
        scheme = "https" if ingress.tls_secret_name or ingress.issuer_ref else "http"
        return f"{scheme}://{ingress.host or ingress.hosts[0]}/"
    route = spec.route if spec else None
    if route is not None and route.enabled and route.hostnames:  # the scheme is the Gateway listener's: unknown
        return f"http://{route.hostnames[0].removeprefix('*.')}{route.paths[0].path}"
    return f"http://{child_name(name, 'nginx')}.{namespace}.svc/"


def database_secret_ref(spec) -> Optional[tuple[str, str]]:
    """(Secret name, key) of the database URL when spec.database.pooler is enabled (PgBouncer is configured from
    it); read before parsing, so an invalid spec asks for nothing (the parser names the field)."""
    db = (spec or {}).get("database") if isinstance(spec, dict) else None
    if not isinstance(db, dict) or not (db.get("pooler") or {}).get("enabled"):
        return None
    secret_name, key = db.get("secretName"), db.get("urlKey", "url")
    return (secret_name, key) if isinstance(secret_name, str) else None


def condition(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), {})


def _gated(obj: dict) -> bool:
    component = obj["metadata"]["labels"].get(COMPONENT_LABEL, "")
    return obj["kind"] == "Deployment" and (component in GATED_COMPONENTS or component.startswith(GATED_PREFIXES))


def _is_migration(obj: dict) -> bool:
    return (obj["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "migrations"
