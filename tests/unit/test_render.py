"""The renderer: golden files of the samples, Kubernetes schema validity, restricted pods, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import kubernetes_validate
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
import yaml

from testsupport.samples import ROOT, SAMPLES, load_sample
from flaskapp_operator.api import RESERVED_CONTAINER_NAMES
from flaskapp_operator.render import render

GOLDEN = ROOT / "tests" / "golden"
KUBERNETES_SCHEMA_VERSION = "1.35.0"  # the version the local control plane runs
FIXED = {"redis_password": "golden-password", "uid": "00000000-0000-4000-8000-000000000000"}
SAMPLE_NAMES = sorted(p.stem for p in SAMPLES.glob("*.yaml"))


def rendered_yaml(name: str) -> str:
    """The render, with the agent's ConfigMap holding a digest of each source file instead of the file: the
    package's own tests cover its code, and a golden file stays a review of what the renderer decides."""
    objects = render(load_sample(name), **FIXED).objects
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-agent"):
            obj["data"] = {key: "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16] + f" ({len(text)} bytes)"
                           for key, text in obj["data"].items()}
    return yaml.safe_dump_all(objects, sort_keys=False, width=120)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_golden(name):
    path = GOLDEN / f"{name}.yaml"
    actual = rendered_yaml(name)
    if os.environ.get("UPDATE_GOLDEN"):
        changed = not path.exists() or path.read_text() != actual
        path.write_text(actual)
        # Writing is not checking: never report a pass for what was just written.
        pytest.skip(f"golden {name} {'rewritten: review the diff' if changed else 'unchanged'} (UPDATE_GOLDEN)")
    assert path.exists(), "no golden file: run `make golden`"
    assert actual == path.read_text(), f"render of {name} changed: review, then `make golden`"


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_object_validates_against_the_kubernetes_schema(name):
    for obj in render(load_sample(name), **FIXED).objects:
        if obj["apiVersion"].startswith(("monitoring.coreos.com/", "keda.sh/")):
            continue  # a CRD's kinds: the integration suite has the API server check them against its CRDs
        kubernetes_validate.validate(obj, KUBERNETES_SCHEMA_VERSION, strict=True)


def _pod_specs(objects):
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"], True
        elif obj["kind"] == "Job":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"], False


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_pod_is_restricted_with_probes_and_requests(name):
    for pod_name, pod, long_running in _pod_specs(render(load_sample(name), **FIXED).objects):
        assert pod["securityContext"]["runAsNonRoot"] is True, pod_name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod_name
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]  # the user's sidecars too: PSS "restricted" is filled in for them
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], c["name"]
            if c["name"] in RESERVED_CONTAINER_NAMES:  # written by the operator: bounded memory and disk
                assert c["resources"]["limits"]["memory"], (pod_name, c["name"])
                assert c["resources"]["requests"]["ephemeral-storage"], (pod_name, c["name"])
                assert c["resources"]["limits"]["ephemeral-storage"], (pod_name, c["name"])
        for volume in pod["volumes"]:
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (pod_name, volume["name"])
        for c in pod["containers"]:
            if long_running and c["name"] in RESERVED_CONTAINER_NAMES:  # a Job's pod runs to completion
                # gunicorn without a liveness path: readiness only (the same check would restart busy pods);
                # PgBouncer, memcached: readiness only (a TCP liveness would repeat it; they exit on fatal errors).
                assert "livenessProbe" in c or ("readinessProbe" in c and c["name"] in ("gunicorn", "pgbouncer",
                                                                                        "memcached")), \
                    (pod_name, c["name"])
                if "livenessProbe" in c and "readinessProbe" in c:
                    handler = lambda p: {k: v for k, v in p.items() if k in ("httpGet", "tcpSocket", "exec")}
                    assert handler(c["livenessProbe"]) != handler(c["readinessProbe"]), (pod_name, c["name"])


def test_labels_owner_references_and_config_checksum():
    objects = render(load_sample("full"), **FIXED).objects
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "shop"
        assert labels["app.kubernetes.io/managed-by"] == "flaskapp-operator"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == FIXED["uid"]
    web = next(o for o in objects if o["metadata"]["name"] == "shop-web")
    assert "flaskapp.dev/config-checksum" in web["spec"]["template"]["metadata"]["annotations"]


def _checksum(doc: dict, component: str) -> str:
    objects = render(doc, **FIXED).objects
    dep = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(component))
    return dep["spec"]["template"]["metadata"]["annotations"]["flaskapp.dev/config-checksum"]


def test_a_config_change_changes_the_pod_template():
    doc = load_sample("full")
    before = _checksum(doc, "-web")
    doc["spec"]["web"]["gunicorn"]["timeoutSeconds"] = 60
    assert _checksum(doc, "-web") != before


def test_nginx_conf_has_the_promised_settings():
    objects = render(load_sample("full"), **FIXED).objects
    conf = next(o for o in objects if o["metadata"]["name"] == "shop-nginx-conf")["data"]["nginx.conf"]
    for directive in ("gzip on;", "proxy_cache_valid 200 301 302 1s;", "proxy_buffering on;",
                      "keepalive ", 'max-age=31536000, immutable"', "client_max_body_size 10m;",
                      "if ($skip_microcache)", "proxy_http_version 1.1;"):
        assert directive in conf, directive


def test_managed_redis_policies():
    objects = render(load_sample("full"), **FIXED).objects
    args = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["args"]
            for o in objects if o["kind"] in ("Deployment", "StatefulSet") and "redis" in o["metadata"]["name"]}
    assert "allkeys-lru" in args["shop-redis-cache"] and "noeviction" in args["shop-redis-broker"]


def test_the_broker_is_durable_and_the_cache_ephemeral_and_no_password_is_on_a_command_line():
    objects = render(load_sample("full"), **FIXED).objects
    broker = next(o for o in objects if o["metadata"]["name"] == "shop-redis-broker" and o["kind"] == "StatefulSet")
    cache = next(o for o in objects if o["metadata"]["name"] == "shop-redis-cache" and o["kind"] == "Deployment")
    broker_args = broker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert broker_args[broker_args.index("--appendonly") + 1] == "yes"
    assert broker_args[broker_args.index("--appendfsync") + 1] == "everysec"
    claim = broker["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    cache_args = cache["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cache_args[cache_args.index("--appendonly") + 1] == "no"
    assert {"emptyDir": {"sizeLimit": "256Mi"}, "name": "data"} in cache["spec"]["template"]["spec"]["volumes"]
    pdb = next(o for o in objects if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == "shop-redis-broker")
    assert pdb["spec"]["minAvailable"] == 1
    for workload in (broker, cache):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        assert FIXED["redis_password"] not in json.dumps([container["command"], container["args"],
                                                           container.get("env", [])])


def test_env_contract_is_complete():
    objects = render(load_sample("full"), **FIXED).objects
    web = next(o for o in objects if o["metadata"]["name"] == "shop-web")
    names = {e["name"] for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert names >= {"WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "SQLALCHEMY_ENGINE_OPTIONS", "DATABASE_URL",
                     "CACHE_TYPE", "CACHE_REDIS_URL", "CACHE_DEFAULT_TIMEOUT", "CELERY_BROKER_URL",
                     "CELERY_RESULT_BACKEND", "CDN_URL"}
    worker = next(o for o in objects if o["metadata"]["name"] == "shop-worker-default")
    names = {e["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"CELERY_WORKER_CONCURRENCY", "CELERY_WORKER_PREFETCH_MULTIPLIER"} <= names
    cm = next(o for o in objects if o["metadata"]["name"] == "shop-env")
    options = json.loads(cm["data"]["web.SQLALCHEMY_ENGINE_OPTIONS"])
    assert set(options) == {"pool_size", "max_overflow", "pool_recycle", "pool_pre_ping", "pool_timeout"}


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flaskapp_operator.cli", *args], input=stdin,
                          capture_output=True, text=True)


def test_cli_render_prints_the_objects():
    result = _cli("render", "-f", str(SAMPLES / "full.yaml"))
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout)}
    assert {"Deployment", "Service", "ConfigMap", "Ingress", "Job", "HorizontalPodAutoscaler"} <= kinds


def test_cli_invalid_input_names_the_field_and_exits_2():
    doc = load_sample("minimal")
    doc["spec"]["web"] = {"gunicorn": {"workers": "many"}}
    result = _cli("render", "-f", "-", stdin=yaml.safe_dump(doc))
    assert result.returncode == 2
    assert "spec.web.gunicorn.workers" in result.stderr


def test_cli_infeasible_budget_exits_3_with_the_numbers():
    doc = load_sample("full")
    doc["spec"]["database"]["maxConnections"] = 20
    result = _cli("render", "-f", "-", stdin=yaml.safe_dump(doc))
    assert result.returncode == 3
    assert "connection budget exceeded" in result.stderr and "maxConnections 20" in result.stderr
    assert result.stdout == ""


def test_a_new_app_image_does_not_restart_redis():
    doc = load_sample("full")

    def redis_templates(d):
        return [o["spec"]["template"] for o in render(d, **FIXED).objects
                if o["kind"] in ("Deployment", "StatefulSet") and "redis" in o["metadata"]["name"]]

    before = redis_templates(doc)
    doc["spec"]["image"] = "ghcr.io/flaskapp-operator/example:9.9.9"
    assert redis_templates(doc) == before


def test_a_new_redis_password_restarts_redis_and_its_clients_together():
    """A deleted Redis Secret gets a new password: the pods holding the old one (Redis and every app tier)
    roll; nginx, which never talks to Redis, does not."""
    def templates(password):
        objects = render(load_sample("full"), redis_password=password, uid=FIXED["uid"]).objects
        return {o["metadata"]["name"]: o["spec"]["template"]["metadata"].get("annotations", {})
                for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    before, after = templates("one"), templates("two")
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"shop-redis-cache", "shop-redis-broker", "shop-web", "shop-worker-default",
                       "shop-worker-reports", "shop-beat"}
    assert not any("one" in json.dumps(a) or "two" in json.dumps(a) for a in after.values())


def test_a_config_change_rolls_only_the_tiers_it_reaches():
    def checksums(doc):
        objects = render(doc, **FIXED).objects
        return {o["metadata"]["name"]: o["spec"]["template"]["metadata"].get("annotations", {})
                for o in objects if o["kind"] == "Deployment"}
    base = load_sample("full")
    changed = json.loads(json.dumps(base))
    changed["spec"]["workerPools"][1]["concurrency"] = 3  # the `reports` pool only
    before, after = checksums(base), checksums(changed)
    assert {n for n in before if before[n] != after[n]} == {"shop-worker-reports"}
    timeout = json.loads(json.dumps(base))
    timeout["spec"]["web"]["gunicorn"]["timeoutSeconds"] = 45  # web only (nginx follows its own conf)
    after = checksums(timeout)
    assert {n for n in before if before[n] != after[n]} == {"shop-web", "shop-nginx"}


def test_a_name_with_a_worker_segment_is_refused():
    from flaskapp_operator.schema import SpecError

    doc = load_sample("minimal")
    doc["metadata"]["name"] = "shop-worker"
    with pytest.raises(SpecError) as err:
        render(doc, **FIXED)
    assert "metadata.name" in str(err.value)


_label = st.from_regex(r"[a-z]{1,4}(-[a-z]{1,4}){0,2}", fullmatch=True)
# Names built to meet: one app's name extended by what its children's suffixes start with, pools named
# like other tiers.
_extension = st.sampled_from(["", "-worker", "-worker-a", "-redis", "-nginx", "-migrate", "-web", "-x"])
_pool = st.one_of(st.sampled_from(["web", "env", "beat", "nginx", "redis", "redis-cache", "a-web", "conf"]), _label)


@st.composite
def _apps(draw):
    base = draw(_label)
    names = {base + draw(_extension) for _ in range(draw(st.integers(2, 4)))} | {base}
    return [(name, draw(st.lists(_pool, max_size=3, unique=True))) for name in sorted(names)]


@settings(max_examples=300, deadline=None)
@given(_apps())
def test_valid_apps_in_one_namespace_never_render_the_same_child(apps):
    """Any set of valid FlaskApps (names and pool names drawn freely): no two render an object of the same
    kind and name, so no app can ever be asked to write another's child."""
    from flaskapp_operator.schema import SpecError

    seen: dict = {}
    for name, pools in apps:
        doc = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": name},
               "spec": {"image": "app:1", "wsgi": "app:app", "celeryApp": "app.celery",
                        "workerPools": [{"name": p} for p in pools], "beat": {"enabled": True},
                        "migrations": {"command": ["true"]}, "database": {"secretName": "db", "maxConnections": 10000}}}
        try:
            objects = render(doc, **FIXED).objects
        except SpecError:
            continue  # refused before anything is applied
        for obj in objects:
            key = (obj["kind"], obj["metadata"]["name"])
            assert seen.setdefault(key, name) == name, f"{key} rendered by {seen[key]} and {name}"


def test_cli_render_says_what_the_budget_capped_and_when_the_pooler_url_is_a_placeholder():
    sample = str(SAMPLES / "autopilot.yaml")
    placeholder = _cli("render", "-f", sample)
    assert placeholder.returncode == 0, placeholder.stderr
    assert "placeholder database URL" in placeholder.stderr and "orders-db" in placeholder.stderr
    given = _cli("render", "-f", sample, "--database-url", "postgresql://orders:pw@db.example:5432/orders")
    assert "placeholder" not in given.stderr
    secret = next(d for d in yaml.safe_load_all(given.stdout) if d["kind"] == "Secret"
                  and d["metadata"]["name"] == "orders-pooler")
    assert "db.example" in base64.b64decode(secret["data"]["pgbouncer.ini"]).decode()
    full = yaml.safe_load((SAMPLES / "full.yaml").read_text())
    full["spec"]["web"]["autoscaling"]["maxReplicas"] = 60
    capped = _cli("render", "-f", "-", stdin=yaml.safe_dump(full))
    assert capped.returncode == 0 and "web 60 -> 22" in capped.stderr, capped.stderr
