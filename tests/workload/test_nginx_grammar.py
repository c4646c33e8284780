"""Every spec value written into nginx.conf either renders a configuration that the real nginx accepts (`nginx -t`)
with no directive of its own, or is refused naming its field. Generated values (hypothesis) of the fields that
reach the file as text, with the characters nginx's parser and PCRE give a meaning."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError

pytestmark = pytest.mark.workload

NGINX_SYNTAX = " \t\n;{}\"'#$\\/.*()[]^?+|~%@:,=!-_aZ09"
BASE = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": "grammar", "namespace": "t"},
        "spec": {"image": "registry.example/app:1", "wsgi": "app:app", "monitoring": {"enabled": True}}}


@pytest.fixture(scope="module")
def nginx_check(nginx_scratch):
    """Render with these nginx fields and run `nginx -t` on the result (None when the parser refused them)."""
    addresses, nginx_t = nginx_scratch

    def check(nginx: dict) -> tuple[str, subprocess.CompletedProcess] | None:
        document = {**BASE, "spec": {**BASE["spec"], "nginx": nginx}}
        try:
            rendered = render(document, redis_password="pw", addresses=addresses)
        except SpecError as error:
            assert all(e.path.startswith("spec.nginx.") for e in error.errors), error
            return None
        conf = next(o for o in rendered.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith(
            "-nginx-conf"))["data"]["nginx.conf"]
        return conf, nginx_t(conf)
    return check


def shape(conf: str) -> tuple[int, int, int]:
    """What an injected directive would change: the lines, the blocks and the statements of the file (outside
    its quoted strings, where a regex's braces are text)."""
    unquoted = re.sub(r'"(\\.|[^"\\])*"', '""', conf)
    return unquoted.count("\n"), unquoted.count("{"), len(re.findall(r";\s*(#.*)?$", unquoted, re.M))


@pytest.fixture(scope="module")
def default_shape(nginx_check):
    conf, result = nginx_check({})
    assert result.returncode == 0, result.stderr
    return shape(conf)


def accepted_as_text_or_refused(nginx_check, default_shape, nginx: dict) -> None:
    """Refused by the parser, or nginx -t accepts the file and nothing of the value became syntax."""
    checked = nginx_check(nginx)
    if checked is None:
        return
    conf, result = checked
    assert result.returncode == 0, (nginx, result.stderr)
    assert shape(conf) == default_shape, nginx


def test_the_default_configuration_passes_nginx_t(default_shape):
    assert default_shape[1] > 10


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(st.text(NGINX_SYNTAX, min_size=1, max_size=24),
                      st.lists(st.text(NGINX_SYNTAX, min_size=1, max_size=8), min_size=1, max_size=3).map(
                          lambda parts: "/" + "/".join(parts) + "/")))
def test_a_static_url_path_is_valid_for_nginx_or_refused(nginx_check, default_shape, path):
    accepted_as_text_or_refused(nginx_check, default_shape, {"staticUrlPath": path})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.one_of(st.text(NGINX_SYNTAX + "{}8,", min_size=1, max_size=24),
                         st.sampled_from([r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$", r"-[0-9a-f]{20}\.\w+$", r"(?i)\.[A-F0-9]{8}\.",
                                          r"\p{L}+\.\d{6,}", "(unbalanced", "[z-a]", r"a{2,1}", "x\\"])))
def test_a_fingerprint_pattern_is_valid_for_nginx_or_refused(nginx_check, default_shape, pattern):
    accepted_as_text_or_refused(nginx_check, default_shape, {"fingerprintPattern": pattern})


@pytest.mark.parametrize("value", ["/static/", "/assets/v2/", "/_static/", "/s.1/", "/%7Euser/", "/a(b)/"])
def test_common_static_prefixes_are_accepted_and_served_by_nginx_t(nginx_check, value):
    conf, result = nginx_check({"staticUrlPath": value})
    assert result.returncode == 0, result.stderr
    assert f"location {value} {{" in conf


@pytest.mark.parametrize("value", ["/", "/a b/", "/a;/", "/a{/", "/../", "/./x/", "/a/ { return 200; } location /b/",
                                   "/$host/", "/a#/", "static/"])
def test_static_prefixes_nginx_would_misread_are_refused(nginx_check, value):
    assert nginx_check({"staticUrlPath": value}) is None
