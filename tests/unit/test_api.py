"""The API: the committed CRD is generated from the model, and invalid specs are rejected by field."""

from __future__ import annotations

import copy

import pytest
import yaml

from testsupport.samples import ROOT, load_sample
from flaskapp_operator.crd import crd, crd_yaml
from flaskapp_operator.kubernetes_types import crd_schema
from flaskapp_operator.render import parse_spec
from flaskapp_operator.schema import SpecError

CRD_FILE = ROOT / "manifests" / "crd" / "flaskapp.dev_flaskapps.yaml"
CHART_CRD_FILE = ROOT / "charts" / "flaskapp-operator" / "crds" / "flaskapp.dev_flaskapps.yaml"


def test_committed_crd_is_generated_from_the_model():
    assert CRD_FILE.read_text() == crd_yaml(), "manifests/crd is stale: run `make manifests`"


def test_chart_crd_is_the_same_file():
    assert CHART_CRD_FILE.read_text() == CRD_FILE.read_text(), "chart CRD differs: run `make manifests`"


KUBERNETES_SCHEMAS = [crd_schema(kind) for kind in ("Affinity", "Container", "Toleration",
                                                     "TopologySpreadConstraint", "Volume", "VolumeMount")]


def _is_kubernetes_type(schema: dict) -> bool:
    return {k: v for k, v in schema.items() if k != "description"} in KUBERNETES_SCHEMAS


def _walk(schema: dict, path: str = "spec"):
    """Our own fields: Kubernetes' types are documented by Kubernetes (kubectl explain pod.spec...)."""
    yield path, schema
    if _is_kubernetes_type(schema):
        return
    for name, prop in (schema.get("properties") or {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema and not _is_kubernetes_type(schema["items"]):
        yield from _walk(schema["items"], f"{path}[]")


def test_every_spec_field_has_a_description():
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = [p for p, s in _walk(spec) if "description" not in s and not p.endswith("[]")]
    assert missing == []


def test_crd_has_status_scale_printer_columns_and_short_name():
    version = crd()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.web.replicas"
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Ready", "Web", "Pools", "URL", "Age"}
    assert crd()["spec"]["names"]["shortNames"]


def test_defaults_are_applied_like_the_api_server():
    spec = parse_spec({"image": "app:1", "wsgi": "app:app"})
    assert spec.web.gunicorn.worker_class == "gthread"
    assert spec.web.gunicorn.workers == "auto"
    assert spec.nginx.micro_cache_seconds == 1
    assert spec.redis.cache.memory == "256Mi"


def test_samples_parse():
    for name in ("minimal", "full"):
        parse_spec(load_sample(name)["spec"])


def _with(path: str, value):
    spec = copy.deepcopy(load_sample("full")["spec"])
    node = spec
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


_DELETE = object()

# (description, modified spec, the field path the error must name)
INVALID = [
    ("image missing", _with("image", _DELETE), "spec.image"),
    ("wsgi malformed", _with("wsgi", "not an entry point"), "spec.wsgi"),
    ("workers not a number", _with("web.gunicorn.workers", "lots"), "spec.web.gunicorn.workers"),
    ("workers too many", _with("web.gunicorn.workers", 500), "spec.web.gunicorn.workers"),
    ("unknown worker class", _with("web.gunicorn.workerClass", "eventlet"), "spec.web.gunicorn.workerClass"),
    ("sync with threads", _with("web.gunicorn", {"workerClass": "sync", "threads": 4}), "spec.web.gunicorn.threads"),
    ("jitter above max", _with("web.gunicorn", {"maxRequests": 10, "maxRequestsJitter": 50}),
     "spec.web.gunicorn.maxRequestsJitter"),
    ("replicas and autoscaling", _with("web.replicas", 3), "spec.web.autoscaling"),
    ("min above max", _with("web.autoscaling", {"minReplicas": 5, "maxReplicas": 2}), "spec.web.autoscaling.minReplicas"),
    ("grace below graceful timeout", _with("web.terminationGracePeriodSeconds", 10),
     "spec.web.terminationGracePeriodSeconds"),
    ("bad cpu quantity", _with("web.resources", {"requests": {"cpu": "lots"}}), "spec.web.resources.requests.cpu"),
    ("negative replicas", _with("nginx.replicas", -1), "spec.nginx.replicas"),
    ("pull policy", _with("imagePullPolicy", "Sometimes"), "spec.imagePullPolicy"),
    ("pool name", _with("workerPools.0.name", "Bad_Name"), "spec.workerPools[0].name"),
    ("duplicate pool", _with("workerPools.1.name", "default"), "spec.workerPools"),
    ("external redis without secret", _with("redis", {"mode": "external"}), "spec.redis.external"),
    ("reserved above max", _with("database.reservedConnections", 200), "spec.database.reservedConnections"),
    ("static path without slash", _with("nginx.staticUrlPath", "static"), "spec.nginx.staticUrlPath"),
    ("body size syntax", _with("nginx.clientMaxBodySize", "ten megs"), "spec.nginx.clientMaxBodySize"),
    ("gzip level", _with("nginx.gzipLevel", 11), "spec.nginx.gzipLevel"),
    ("tls without host", _with("ingress", {"tlsSecretName": "x"}), "spec.ingress.tlsSecretName"),
    ("celery app missing", _with("celeryApp", _DELETE), "spec.celeryApp"),
    ("unknown field", _with("web.gunicron", {}), "spec.web.gunicron"),
    ("wrong type", _with("beat", {"enabled": "yes"}), "spec.beat.enabled"),
    ("empty migration command", _with("migrations.command", []), "spec.migrations.command"),
]


@pytest.mark.parametrize("spec,field", [(s, f) for _, s, f in INVALID], ids=[d for d, _, _ in INVALID])
def test_invalid_spec_names_the_field(spec, field):
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert field in [e.path for e in info.value.errors], str(info.value)


def test_generated_crd_is_valid_yaml_with_one_version():
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert [v["name"] for v in doc["spec"]["versions"]] == ["v1alpha1"]


# -- every bound the model declares reaches the CRD (read from api.py's source, not through field()) -----

BOUND_KEYWORDS = {"minimum": "minimum", "maximum": "maximum", "pattern": "pattern", "enum": "enum",
                  "max_length": "maxLength", "min_length": "minLength", "min_items": "minItems",
                  "max_items": "maxItems"}


def _declared_bounds() -> dict[tuple[str, str], dict]:
    """(class, attribute) -> the bounds written in its field(...) call in api.py."""
    import ast

    from flaskapp_operator import api

    def value(node):
        return getattr(api, node.id) if isinstance(node, ast.Name) else ast.literal_eval(node)

    declared = {}
    for cls in ast.parse(open(api.__file__).read()).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            call = getattr(stmt, "value", None)
            if isinstance(stmt, ast.AnnAssign) and isinstance(call, ast.Call) and getattr(call.func, "id", "") == "field":
                bounds = {k.arg: value(k.value) for k in call.keywords if k.arg in BOUND_KEYWORDS}
                if bounds:
                    declared[(cls.name, stmt.target.id)] = bounds
    return declared


def _model_properties(cls, schema, path="spec"):
    """(class, attribute, CRD property, path) for every field of the model, nested ones included."""
    import dataclasses
    import typing

    from flaskapp_operator.schema import json_name

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        prop = schema["properties"][json_name(f)]
        yield cls.__name__, f.name, prop, f"{path}.{json_name(f)}"
        for tp in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(tp):
                node = prop["items"] if prop.get("type") == "array" else prop
                yield from _model_properties(tp, node, f"{path}.{json_name(f)}")


def test_every_declared_bound_is_in_the_crd():
    from flaskapp_operator.api import FlaskAppSpec

    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    declared = _declared_bounds()
    seen, missing = set(), []
    for cls, attr, prop, path in _model_properties(FlaskAppSpec, spec):
        for keyword, want in declared.get((cls, attr), {}).items():
            seen.add((cls, attr))
            got = prop.get(BOUND_KEYWORDS[keyword])
            if got != (list(want) if keyword == "enum" else want):
                missing.append(f"{path}: {keyword}={want!r}, CRD has {got!r}")
    assert missing == []
    assert seen == set(declared), f"declared but never reached: {set(declared) - seen}"


@pytest.mark.parametrize("path,value", [
    ("database.pool.maxOverflow", -1),          # SQLAlchemy reads -1 as unlimited overflow
    ("database.reservedConnections", -100),     # would make `available` exceed maxConnections
    ("nginx.microCacheSeconds", -1),            # nginx refuses proxy_cache_valid ... -1s
    ("web.gunicorn.keepaliveSeconds", -5),
])
def test_negative_values_are_refused_by_the_parser(path, value):
    with pytest.raises(SpecError) as err:
        parse_spec(full_spec_with(path, value))
    assert f"spec.{path}" in str(err.value) and ">= 0" in str(err.value)


def full_spec_with(path: str, value) -> dict:
    """The full sample's spec with one field (a dotted path) set."""
    spec = copy.deepcopy(load_sample("full")["spec"])
    node = spec
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return spec


@pytest.mark.parametrize("path,value,field", [
    ("image", "my image:1", "spec.image"),
    ("redis.image", "Redis 7", "spec.redis.image"),
    ("env", [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}], "spec.env[0].valueFrom"),
    ("envFrom", [{"prefix": "X_"}], "spec.envFrom[0]"),
    ("envFrom", [{"configMapRef": "a", "secretRef": "b"}], "spec.envFrom[0]"),
    ("nginx.staticDir", "/app/../etc", "spec.nginx.staticDir"),
    ("redis.cache", {"memory": "1Ki", "cpu": "50m"}, "spec.redis.cache.memory"),
    ("web.resources.limits.cpu", "0", "spec.web.resources.limits.cpu"),
    ("web.resources.requests.memory", "0.0Mi", "spec.web.resources.requests.memory"),
    ("web.resources", {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, "spec.web.resources.requests.cpu"),
    ("nginx.resources", {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}},
     "spec.nginx.resources.requests.memory"),
])
def test_what_kubernetes_or_the_program_would_refuse_later_is_refused_now(path, value, field):
    with pytest.raises(SpecError) as err:
        parse_spec(full_spec_with(path, value))
    assert field in str(err.value)


def test_image_references_that_are_valid_parse():
    for image in ("localhost/flaskapp-operator/example:local", "localhost:5000/team/app:v1.2",
                  "ghcr.io/org/app@sha256:" + "a" * 64, "app", "registry.example.com/a/b_c/d-e:1.0-rc.1"):
        spec = copy.deepcopy(load_sample("minimal")["spec"])
        spec["image"] = image
        assert parse_spec(spec).image == image


def test_every_default_satisfies_its_own_bounds():
    """The API server checks defaults against the schema when the CRD is created: a default outside its own
    pattern or bounds makes the whole CRD invalid."""
    import dataclasses
    import re

    from flaskapp_operator.api import FlaskAppSpec

    def walk(cls):
        for f in dataclasses.fields(cls):
            yield cls, f
            tp = typing.get_type_hints(cls)[f.name]
            for inner in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(inner):
                    yield from walk(inner)

    import typing
    bad = []
    for cls, f in walk(FlaskAppSpec):
        if f.default is dataclasses.MISSING or f.default is None:
            continue
        meta, value = f.metadata, f.default
        if "pattern" in meta and isinstance(value, str) and not re.search(meta["pattern"], value):
            bad.append(f"{cls.__name__}.{f.name}: {value!r} !~ {meta['pattern']}")
        if isinstance(value, int) and not isinstance(value, bool):
            if ("minimum" in meta and value < meta["minimum"]) or ("maximum" in meta and value > meta["maximum"]):
                bad.append(f"{cls.__name__}.{f.name}: {value} outside its bounds")
    assert bad == []
