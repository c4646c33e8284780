"""Malformed documents: the CLI and the operator's parser answer with a named field, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from testsupport.samples import load_sample
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=12))
KEYS = st.one_of(st.none(), st.integers(-5, 5), st.booleans(), st.text(max_size=10),
                 st.sampled_from(["name", "spec", "metadata", "image", "wsgi", "web", "env", "labels", "value"]))
ANY_YAML = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)


def _set(doc: dict, path: list, value) -> dict:
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return doc


SAMPLE_PATHS = [["metadata"], ["metadata", "name"], ["metadata", "namespace"], ["spec"], ["spec", "web"],
                ["spec", "env"], ["spec", "monitoring", "labels"], ["spec", "ingress", "annotations"],
                ["spec", "pod"], ["spec", "pod", "tolerations"], ["spec", "workerPools"], ["spec", "database"],
                ["spec", "redis"], ["spec", "nginx"], ["spec", "agent"], ["spec", "web", "resources"]]


@settings(max_examples=200, deadline=None)
@given(document=ANY_YAML)
def test_any_yaml_document_is_refused_with_a_field_or_rendered(document):
    try:
        render(document, redis_password="pw")
    except SpecError as exc:
        assert exc.errors and all(e.path for e in exc.errors)


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(SAMPLE_PATHS), value=ANY_YAML)
def test_a_sample_with_any_value_anywhere_is_refused_with_a_field_or_rendered(path, value):
    document = _set(load_sample("full"), path, value)
    try:
        render(document, redis_password="pw")
    except SpecError as exc:
        assert exc.errors and all(e.path for e in exc.errors)


@pytest.mark.parametrize("text,message", [
    ("- a\n- b\n", "(document): a FlaskApp is a YAML mapping, got list"),
    ("apiVersion: flaskapp.dev/v1alpha1\nkind: FlaskApp\nmetadata: [1]\nspec: {}\n", "metadata: must be an object"),
    ("apiVersion: flaskapp.dev/v1alpha1\nkind: FlaskApp\nmetadata: {name: 123}\nspec: {}\n",
     "metadata.name: must be a string"),
    ("apiVersion: flaskapp.dev/v1alpha1\nkind: FlaskApp\nmetadata: {name: x}\n"
     "spec: {image: a/b:1, wsgi: 'app:app', monitoring: {labels: {null: a}}}\n", "spec.monitoring.labels: keys must be strings"),
    ("", "holds no FlaskApp"),
    ("apiVersion: flaskapp.dev/v1alpha1\nkind: FlaskApp\nmetadata: {name: x}\nspec: {image: a/b:1, wsgi: 'app:app'}\n"
     "---\napiVersion: flaskapp.dev/v1alpha1\nkind: FlaskApp\nmetadata: {name: x}\nspec: {image: a/b:2, wsgi: 'app:app'}\n",
     "a second document with this name"),
])
def test_the_cli_refuses_malformed_input_in_one_line_with_exit_2(tmp_path, text, message):
    path = tmp_path / "app.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "flaskapp_operator.cli", "render", "-f", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["1shop", "shop.v2", "Shop", "shop-", "s" * 64, "default"])
def test_names_no_child_could_carry_are_refused(name):
    doc = load_sample("minimal")
    doc["metadata"]["name"] = name
    with pytest.raises(SpecError) as refused:
        render(doc, redis_password="pw")
    assert [e.path for e in refused.value.errors] == ["metadata.name"]
    assert "DNS-1035" in str(refused.value)


def test_the_crd_refuses_the_same_names():
    from flaskapp_operator import api
    from flaskapp_operator.crd import crd

    rules = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    assert {"rule": api.NAME_LABEL_CEL, "message": api.NAME_LABEL_MESSAGE} in rules


def test_a_long_name_keeps_the_broker_statefulset_within_52_characters():
    """The StatefulSet controller labels its pods `controller-revision-hash: <name>-<10 characters>`: a name
    above 52 creates no pod (kubernetes/kubernetes#64023). The Service keeps the full name."""
    doc = load_sample("full")
    doc["metadata"]["name"] = "a" * 63
    objects = render(doc, redis_password="pw").objects
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    assert len(sts["metadata"]["name"]) <= 52 and len(sts["metadata"]["name"]) + 11 <= 63
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == sts["spec"]["serviceName"])
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "redis-broker"
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in obj["metadata"].get("labels", {}).values())


@pytest.mark.parametrize("resources,field", [
    ({"limits": {"memory": "1500m"}}, "spec.web.resources.limits.memory"),
    ({"requests": {"cpu": "1.5Gi"}}, "spec.web.resources.requests.cpu"),
    ({"requests": {"cpu": "0.0001"}}, "spec.web.resources.requests.cpu"),
])
def test_sizes_no_container_runs_with_are_refused(resources, field):
    doc = load_sample("minimal")
    doc["spec"].setdefault("web", {})["resources"] = resources
    with pytest.raises(SpecError) as refused:
        render(doc, redis_password="pw")
    assert [e.path for e in refused.value.errors] == [field]


def test_a_memory_quantity_in_exponent_form_is_accepted_as_kubernetes_does():
    doc = load_sample("minimal")
    doc["spec"].setdefault("web", {})["resources"] = {"limits": {"memory": "1e9", "cpu": "1"}}
    web = next(o for o in render(doc, redis_password="pw").objects if o["metadata"]["name"].endswith("-web")
               and o["kind"] == "Deployment")
    assert web["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1e9"
