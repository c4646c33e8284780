"""The knobs of issue 14 as they land in the rendered objects: pod blocks (merged with spec.pod), the default
spread, probes, Celery's broker-free heartbeat, ingress hosts and cert-manager, identity, and what is refused.
Every check reads the rendered objects; none calls the builders' own helpers."""

from __future__ import annotations

import copy

import pytest

from testsupport.samples import POD_BLOCK_REJECTED, load_sample, patched
from flaskapp_operator.api import RESERVED_CONTAINER_NAMES, RESERVED_MOUNT_PATHS, RESERVED_VOLUME_NAMES
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError

FIXED = {"redis_password": "golden-password", "uid": "00000000-0000-4000-8000-000000000000"}


def objects(doc: dict) -> list[dict]:
    return render(doc, **FIXED).objects


def workload(objs: list[dict], name: str) -> dict:
    return next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job") and o["metadata"]["name"] == name)


def template(objs: list[dict], name: str) -> dict:
    return workload(objs, name)["spec"]["template"]


def minimal(**spec) -> dict:
    doc = load_sample("minimal")
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def test_the_reserved_names_cover_every_container_volume_and_mount_the_operator_writes():
    doc = load_sample("full")
    for block in ("pod", "web", "nginx", "beat", "redis", "migrations"):  # only the operator's own remain
        (doc["spec"][block] if block != "pod" else doc["spec"]).pop("pod", None)
    for pool in doc["spec"]["workerPools"]:
        pool.pop("pod", None)
    for obj in objects(doc):
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["name"] in RESERVED_CONTAINER_NAMES, (obj["metadata"]["name"], c["name"])
            for m in c.get("volumeMounts", []):
                assert any(m["mountPath"] == r or m["mountPath"].startswith(r.rstrip("/") + "/")
                           for r in (*RESERVED_MOUNT_PATHS, "/data", "/etc/flaskapp")), m
        for v in pod["volumes"]:
            assert v["name"] in RESERVED_VOLUME_NAMES, (obj["metadata"]["name"], v["name"])


def test_spec_pod_is_inherited_and_the_tier_block_adds_or_replaces():
    objs = objects(load_sample("full"))
    web, nginx, reports = template(objs, "shop-web"), template(objs, "shop-nginx"), template(objs, "shop-worker-reports")
    broker, beat = template(objs, "shop-redis-broker"), template(objs, "shop-beat")
    for t in (web, nginx, reports, broker, beat):  # placement and metadata: every tier
        assert t["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert {"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"} in t["spec"]["tolerations"]
        assert t["metadata"]["labels"]["team"] == "shop" and t["metadata"]["annotations"]["cost-center"] == "shop"
        assert t["spec"]["automountServiceAccountToken"] is False
    # The tier's own tolerations are added to the defaults; its affinity is its own.
    assert len(reports["spec"]["tolerations"]) == 2 and "nodeAffinity" in reports["spec"]["affinity"]
    assert "affinity" not in web["spec"]
    assert beat["metadata"]["labels"]["schedule-owner"] == "shop-team"
    assert web["spec"]["priorityClassName"] == "shop-web" and "priorityClassName" not in nginx["spec"]
    # Volumes, mounts and init containers of spec.pod go to the app tiers only.
    for t, has in ((web, True), (reports, True), (beat, True), (nginx, False), (broker, False)):
        names = {v["name"] for v in t["spec"]["volumes"]}
        assert ("settings" in names) is has
        assert ("wait-for-settings" in {c["name"] for c in t["spec"].get("initContainers", [])}) is has
        assert any(m["mountPath"] == "/etc/shop" for m in t["spec"]["containers"][0]["volumeMounts"]) is has
    # The web block's own volume, mount (on gunicorn, the main container) and sidecar.
    assert {"name": "uploads", "emptyDir": {"sizeLimit": "1Gi"}} in web["spec"]["volumes"]
    assert web["spec"]["containers"][0]["name"] == "gunicorn"
    assert {"name": "uploads", "mountPath": "/app/uploads"} in web["spec"]["containers"][0]["volumeMounts"]
    sidecar = next(c for c in web["spec"]["containers"] if c["name"] == "uploads-sync")
    # PSS "restricted" filled in where the user said nothing; what they said is kept.
    assert sidecar["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                          "runAsNonRoot": True, "readOnlyRootFilesystem": True}


def test_operator_labels_win_and_the_migration_job_gets_its_block():
    objs = objects(load_sample("full"))
    job = next(o for o in objs if o["kind"] == "Job")
    assert job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    web = template(objs, "shop-web")
    assert web["metadata"]["labels"]["app.kubernetes.io/component"] == "web"


def test_a_changed_migration_pod_is_a_new_job():
    """Job templates are immutable: any change of the rendered template must give the Job a new name."""
    base = load_sample("full")
    changed = patched(base, "shop", {"migrations.pod": {"annotations": {"x": "y"}}})
    name = lambda doc: next(o for o in objects(doc) if o["kind"] == "Job")["metadata"]["name"]
    assert name(base) != name(changed)
    assert name(base) == name(copy.deepcopy(base))


def _spread_keys(t: dict) -> list[str]:
    return [c["topologyKey"] for c in t["spec"].get("topologySpreadConstraints", [])]


def test_replicated_tiers_spread_softly_over_nodes_and_zones_and_single_ones_do_not():
    objs = objects(minimal(workerPools=[{"name": "one", "replicas": 1}, {"name": "many", "replicas": 3}],
                           celeryApp="app.celery", beat={"enabled": True}))
    for name in ("hello-web", "hello-nginx", "hello-worker-many"):
        t = template(objs, name)
        constraints = t["spec"]["topologySpreadConstraints"]
        assert _spread_keys(t) == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        component = t["metadata"]["labels"]["app.kubernetes.io/component"]
        for c in constraints:
            assert c["whenUnsatisfiable"] == "ScheduleAnyway" and c["maxSkew"] == 1
            # It counts this tier's pods only, and of one ReplicaSet only (a rolling update's old pods aside).
            assert c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
            assert c["matchLabelKeys"] == ["pod-template-hash"]
    for name in ("hello-worker-one", "hello-beat", "hello-redis-cache"):
        assert _spread_keys(template(objs, name)) == []
    # A tier with a PDB and the spread: one pod at a time may be evicted, so a node drain never takes more.
    pdbs = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "PodDisruptionBudget"}
    assert pdbs["hello-web"] == {"maxUnavailable": 1, "selector": workload(objs, "hello-web")["spec"]["selector"]}


def test_given_spread_constraints_replace_the_default():
    nginx = template(objects(load_sample("full")), "shop-nginx")
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in nginx["spec"]["topologySpreadConstraints"]] == \
        [("topology.kubernetes.io/zone", "DoNotSchedule")]
    web = template(objects(load_sample("full")), "shop-web")  # autoscaled: the default spread
    assert _spread_keys(web) == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]


def test_web_probes_follow_the_spec_and_liveness_never_copies_readiness():
    gunicorn = template(objects(load_sample("full")), "shop-web")["spec"]["containers"][0]
    assert gunicorn["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 10,
                                          "timeoutSeconds": 2, "failureThreshold": 3}
    assert gunicorn["livenessProbe"] == {"tcpSocket": {"port": 8000}, "initialDelaySeconds": 5, "periodSeconds": 10,
                                         "timeoutSeconds": 2, "failureThreshold": 6}
    assert gunicorn["startupProbe"] == {"tcpSocket": {"port": 8000}, "initialDelaySeconds": 1, "periodSeconds": 2,
                                        "timeoutSeconds": 1, "failureThreshold": 90}
    plain = template(objects(minimal()), "hello-web")["spec"]["containers"][0]
    assert "tcpSocket" in plain["readinessProbe"] and "livenessProbe" not in plain
    with_path = template(objects(minimal(web={"probes": {"liveness": {"path": "/livez", "timeoutSeconds": 3}}})),
                         "hello-web")["spec"]["containers"][0]
    assert with_path["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert with_path["livenessProbe"]["timeoutSeconds"] == 3 and with_path["livenessProbe"]["failureThreshold"] == 6


def test_celery_runs_under_the_heartbeat_script_with_broker_free_probes_and_its_grace_period():
    objs = objects(load_sample("full"))
    script = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shop-celery-probe")
    assert "celeryd_init" in script["data"]["celery_probe.py"]
    for name, mode in (("shop-worker-default", "worker"), ("shop-beat", "beat")):
        t = template(objs, name)
        c = t["spec"]["containers"][0]
        assert c["command"][:3] == ["python3", "/etc/flaskapp/celery/celery_probe.py", mode]
        assert c["command"][3:5] == ["--app", "app.celery_app"]
        probes = [c[p] for p in ("livenessProbe", "readinessProbe", "startupProbe") if p in c]
        for probe in probes:  # a file check: nothing in them talks to the broker
            assert probe["exec"]["command"][:3] == ["python3", "-S", "/etc/flaskapp/celery/celery_probe.py"]
            assert "inspect" not in " ".join(probe["exec"]["command"])
        assert {"name": "celery-probe", "mountPath": "/etc/flaskapp/celery", "readOnly": True} in c["volumeMounts"]
    assert template(objs, "shop-worker-default")["spec"]["terminationGracePeriodSeconds"] == 120
    assert template(objs, "shop-worker-reports")["spec"]["terminationGracePeriodSeconds"] == 30
    beat = template(objs, "shop-beat")["spec"]["containers"][0]
    assert beat["command"][beat["command"].index("--max-interval") + 1] == "30"
    assert beat["resources"]["requests"]["memory"] == "192Mi" and beat["resources"]["limits"]["memory"] == "256Mi"


def test_no_broker_runs_when_nothing_uses_it():
    objs = objects(load_sample("minimal"))
    assert not [o for o in objs if "redis-broker" in o["metadata"]["name"]]
    web = template(objs, "hello-web")["spec"]["containers"][0]
    names = {e["name"] for e in web["env"]}
    assert "CACHE_REDIS_URL" in names and not names & {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    secret = next(o for o in objs if o["kind"] == "Secret")
    assert "broker-url" not in secret["data"]
    # beat alone needs it.
    objs = objects(minimal(celeryApp="app.celery", beat={"enabled": True}))
    assert workload(objs, "hello-redis-broker")["kind"] == "StatefulSet"


def test_ingress_hosts_paths_and_cert_manager_issuer():
    ingress = next(o for o in objects(load_sample("full")) if o["kind"] == "Ingress")
    rules = ingress["spec"]["rules"]
    assert [r["host"] for r in rules] == ["shop.example.com", "www.shop.example.com"]
    for r in rules:
        assert [(p["path"], p["pathType"]) for p in r["http"]["paths"]] == [("/", "Prefix")]
        assert r["http"]["paths"][0]["backend"]["service"]["name"] == "shop-nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com", "www.shop.example.com"], "secretName": "shop-tls"}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"

    def annotations_and_tls(issuer: dict, **ingress_spec) -> tuple[dict, list]:
        ing = next(o for o in objects(minimal(ingress={"host": "a.example.com", "issuerRef": issuer, **ingress_spec}))
                   if o["kind"] == "Ingress")
        return ing["metadata"].get("annotations", {}), ing["spec"].get("tls")

    annotations, tls = annotations_and_tls({"name": "ca"})
    assert annotations == {"cert-manager.io/issuer": "ca"}
    assert tls == [{"hosts": ["a.example.com"], "secretName": "hello-tls"}]  # where cert-manager stores it
    annotations, _ = annotations_and_tls({"name": "pca", "kind": "AWSPCAClusterIssuer", "group": "awspca.cert-manager.io"})
    assert annotations == {"cert-manager.io/issuer": "pca", "cert-manager.io/issuer-kind": "AWSPCAClusterIssuer",
                           "cert-manager.io/issuer-group": "awspca.cert-manager.io"}
    exact = next(o for o in objects(minimal(ingress={"paths": [{"path": "/api", "pathType": "Exact"}]}))
                 if o["kind"] == "Ingress")
    assert exact["spec"]["rules"] == [{"http": {"paths": [{"path": "/api", "pathType": "Exact", "backend": {
        "service": {"name": "hello-nginx", "port": {"name": "http"}}}}]}}]


def test_service_account_annotations_uid_and_token_per_tier():
    objs = objects(load_sample("full"))
    sa = next(o for o in objs if o["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/shop"}
    objs = objects(minimal(securityContext={"runAsUser": 20000, "runAsGroup": 20001, "fsGroup": 20002},
                           web={"pod": {"automountServiceAccountToken": True}}))
    web = template(objs, "hello-web")["spec"]
    assert web["securityContext"]["runAsUser"] == 20000 and web["securityContext"]["runAsGroup"] == 20001
    assert web["securityContext"]["fsGroup"] == 20002 and web["automountServiceAccountToken"] is True
    assert template(objs, "hello-nginx")["spec"]["automountServiceAccountToken"] is False
    assert template(objs, "hello-nginx")["spec"]["securityContext"]["runAsUser"] == 101  # the nginx image's user


def test_pod_blocks_leave_the_connection_budget_alone():
    """The budget counts processes from replicas and autoscaler maxima, which no pod block changes."""
    bare = load_sample("full")
    bare["spec"].pop("pod")
    for tier in ("web", "nginx", "beat", "redis", "migrations"):
        bare["spec"][tier].pop("pod", None)
    for pool in bare["spec"]["workerPools"]:
        pool.pop("pod", None)
    assert render(bare, **FIXED).tuning.report() == render(load_sample("full"), **FIXED).tuning.report()


@pytest.mark.parametrize("case,patch,field", POD_BLOCK_REJECTED, ids=[c for c, _, _ in POD_BLOCK_REJECTED])
def test_the_parser_refuses_what_the_api_server_refuses_naming_the_field(case, patch, field):
    with pytest.raises(SpecError) as err:
        render(patched(load_sample("full"), case, patch), **FIXED)
    assert any(e.path == field or e.path.startswith(field) for e in err.value.errors), err.value


def _model_fields(cls, data, used: set, declared: set) -> None:
    """Every (class, field) of the model reachable from `cls` into `declared`, and those `data` (a list of the
    objects at that place in the sample) sets into `used`."""
    import dataclasses
    import typing

    from flaskapp_operator.schema import _unwrap_optional, json_name

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name, (tp, _) = json_name(f), _unwrap_optional(hints[f.name])
        declared.add(f"{cls.__name__}.{name}")
        values = [d[name] for d in data if isinstance(d, dict) and name in d]
        if values:
            used.add(f"{cls.__name__}.{name}")
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            _model_fields(typing.get_args(tp)[0], [i for v in values for i in v], used, declared)
        elif dataclasses.is_dataclass(tp):
            _model_fields(tp, values, used, declared)


def test_the_full_sample_sets_every_field_of_the_api_somewhere():
    from flaskapp_operator.api import FlaskAppSpec

    used, declared = set(), set()
    _model_fields(FlaskAppSpec, [load_sample("full")["spec"]], used, declared)
    # What one sample cannot show beside what it shows: fixed web replicas (the sample autoscales; the minimal
    # sample has them), an external Redis (the sample runs the managed one), fixed pool sizes (they bypass the
    # budget the sample demonstrates), a storage class (cluster-specific), and liveness/startup paths (the
    # example app has one health path, which readiness uses), queue-length autoscaling (it needs KEDA, which the
    # clusters the sample runs on in the suite do not all have; tests/unit/test_keda_render.py covers it).
    exclusive = {"PoolAutoscaling.queueLength", "PoolAutoscaling.cooldownSeconds", "PoolAutoscaling.pollingSeconds",
                 "NetworkPolicies.autoscalerFrom",  # only with queueLength
                 # A route needs the Gateway API, which the sample's clusters do not all serve (test_route.py).
                 "FlaskAppSpec.route", "Route.enabled", "Route.parentRefs", "Route.hostnames", "Route.paths", "Route.annotations",
                 "RouteParent.name", "RouteParent.namespace", "RouteParent.sectionName", "RouteParent.port",
                 "RoutePath.path", "RoutePath.type",
                 "Web.replicas", "Redis.external", "ExternalRedis.secretName", "ExternalRedis.cacheUrlKey",
                 "ExternalRedis.brokerUrlKey", "PoolOverrides.size", "PoolOverrides.maxOverflow",
                 "RedisBroker.storageClassName", "WebLivenessProbe.path", "WebStartupProbe.path"}
    assert sorted(declared - used - exclusive) == []
