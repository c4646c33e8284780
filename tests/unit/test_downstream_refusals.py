"""What only the operator's parser can see (the CRD cannot express it): a regex PCRE refuses, two containers of
one pod on one port. Refused by the CLI and the operator naming the field; the API server admits these specs
and the operator reports InvalidSpec. And a sidecar that would keep the migration Job from completing runs as a
native sidecar there."""

from __future__ import annotations

import pytest

from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError
from testsupport.samples import load_sample, patched

SIDECAR = {"name": "proxy", "image": "registry.example/proxy:1", "ports": [{"containerPort": 8000}]}


@pytest.mark.parametrize("patch, field, words", [
    ({"nginx.fingerprintPattern": "(unbalanced"}, "spec.nginx.fingerprintPattern", "missing closing parenthesis"),
    ({"nginx.fingerprintPattern": "[z-a]"}, "spec.nginx.fingerprintPattern", "range out of order"),
    ({"web.port": 9102, "monitoring.enabled": True}, "spec.web.port", "9102/TCP of the web pods"),
    ({"pod.sidecars": [SIDECAR]}, "spec.pod.sidecars", "8000/TCP of the web pods"),
    ({"nginx.pod.sidecars": [{**SIDECAR, "ports": [{"containerPort": 8081}]}], "monitoring.enabled": True},
     "spec.nginx.pod.sidecars", "8081/TCP of the nginx pods"),
    ({"web.pod.sidecars": [{**SIDECAR, "ports": [{"containerPort": 9125, "protocol": "UDP"}]}],
      "monitoring.enabled": True}, "spec.web.pod.sidecars", "9125/UDP"),
])
def test_refused_naming_the_field(patch, field, words):
    with pytest.raises(SpecError) as refused:
        render(patched(load_sample("full"), "shop", patch), redis_password="pw")
    assert any(e.path == field and words in e.message for e in refused.value.errors), refused.value


def test_a_sidecar_on_another_port_and_protocol_is_accepted():
    doc = patched(load_sample("full"), "shop", {
        "pod.sidecars": [{**SIDECAR, "ports": [{"containerPort": 8000, "protocol": "UDP"}, {"containerPort": 7000}]}]})
    render(doc, redis_password="pw")


def test_the_migration_jobs_sidecars_are_native_sidecars_and_other_tiers_keep_them_as_containers():
    doc = patched(load_sample("full"), "shop", {"pod.sidecars": [{**SIDECAR, "ports": [{"containerPort": 7000}]}]})
    objects = render(doc, redis_password="pw").objects
    job = next(o for o in objects if o["kind"] == "Job")["spec"]["template"]["spec"]
    assert [c["name"] for c in job["containers"]] == ["migrate"]
    native = [c for c in job["initContainers"] if c["name"] == "proxy"]
    assert native and native[0]["restartPolicy"] == "Always"
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "shop-web")
    assert "proxy" in [c["name"] for c in web["spec"]["template"]["spec"]["containers"]]
