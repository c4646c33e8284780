"""The pure core in one call: a FlaskApp document in, the tuning and the Kubernetes objects out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from . import api
from .builders import Addresses, AppRef, Context, desired_objects
from .builders.app import migration_job_name
from .builders.config import env_conflicts
from .builders.ports import port_conflicts
from .schema import FieldError, SpecError, parse
from .tuning import Tuning, tune


@dataclass(frozen=True)
class Rendered:
    spec: api.FlaskAppSpec
    tuning: Tuning
    objects: list[dict]
    migration_job: Optional[str]  # name of the Job that must succeed before the app tiers roll out

    @property
    def feasible(self) -> bool:
        return self.tuning.feasible


def parse_spec(spec: Any) -> api.FlaskAppSpec:
    return parse(api.FlaskAppSpec, spec, "spec")


def app_ref(document: Any) -> AppRef:
    """Identity of a FlaskApp document; errors name the field like the API server would."""
    if not isinstance(document, dict):
        raise SpecError([FieldError("(document)", f"a FlaskApp is a YAML mapping, got {type(document).__name__}")])
    meta = document.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise SpecError([FieldError("metadata", f"must be an object, got {type(meta).__name__}")])
    errors = []
    if document.get("apiVersion") != f"{api.GROUP}/{api.VERSION}":
        errors.append(FieldError("apiVersion", f"must be {api.GROUP}/{api.VERSION}"))
    if document.get("kind") != api.KIND:
        errors.append(FieldError("kind", f"must be {api.KIND}"))
    meta = meta or {}
    if not meta.get("name"):
        errors.append(FieldError("metadata.name", "required field is missing"))
    elif not isinstance(meta["name"], str):
        errors.append(FieldError("metadata.name", f"must be a string, got {type(meta['name']).__name__}"))
    elif not re.match(api.NAME_LABEL_PATTERN, meta["name"]) or len(meta["name"]) > 63 or meta["name"] == "default":
        errors.append(FieldError("metadata.name", api.NAME_LABEL_MESSAGE.removeprefix("metadata.name ")))
    elif re.search(api.NAME_RULE_PATTERN, meta["name"]):
        errors.append(FieldError("metadata.name", api.NAME_RULE_MESSAGE.removeprefix("metadata.name ")))
    if errors:
        raise SpecError(errors)
    if not isinstance(meta.get("namespace") or "", str):
        raise SpecError([FieldError("metadata.namespace", "must be a string")])
    return AppRef(name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid"),
                  generation=meta.get("generation"))


def render(document: dict, *, redis_password: str, addresses: Optional[Addresses] = None,
           uid: Optional[str] = None, monitoring_api: bool = True,
           database_url: Optional[str] = None, keda_api: bool = True, gateway_api: bool = True) -> Rendered:
    """Everything the operator would apply for `document` (a FlaskApp as a dict).

    `redis_password` is an input so that rendering stays pure: the operator passes the one stored in the
    existing Secret, or a new random one the first time. `addresses` replaces Service addresses (the
    workload tests run the same configuration on loopback). `monitoring_api`: whether PodMonitor and
    PrometheusRule can be created (the operator asks the cluster; offline they are assumed). `database_url`:
    the URL in the database Secret, which configures PgBouncer when spec.database.pooler is enabled (a
    placeholder when not given). `keda_api`: whether KEDA's ScaledObject is served (queue-length autoscaling).
    `gateway_api`: whether Gateway API's HTTPRoute is served (spec.route).
    """
    ref = app_ref(document)
    if uid:
        ref = AppRef(ref.name, ref.namespace, uid, ref.generation)
    spec = parse_spec(document.get("spec"))
    tuning = tune(spec)
    ctx = Context(app=ref, spec=spec, tuning=tuning,
                  addresses=addresses or Addresses.in_cluster(ref.name, ref.namespace, spec.web.port),
                  redis_password=redis_password, monitoring_api=monitoring_api, database_url=database_url,
                  keda_api=keda_api, gateway_api=gateway_api)
    conflicts = env_conflicts(ctx)
    if conflicts:
        raise SpecError(conflicts)
    objects = desired_objects(ctx)
    conflicts = port_conflicts(ctx, objects)
    if conflicts:
        raise SpecError(conflicts)
    return Rendered(spec=spec, tuning=tuning, objects=objects,
                    migration_job=migration_job_name(ctx) if spec.migrations else None)
