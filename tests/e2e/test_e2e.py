"""End to end on real pods, one ordered story: install the chart (the operator runs as a pod), apply the
example FlaskApp against a real PostgreSQL, follow its life through the ingress controller, roll it under
load, break it, police its network, and delete it. Every figure is measured here, never assumed."""

from __future__ import annotations

import ast
import base64
import copy
import datetime
import hashlib
import json
import subprocess
import threading
import time
from collections import Counter

import pytest
import requests
import yaml

from testsupport.kube import ROOT, new_namespace, wait_ready, wait_until

SHOP = yaml.safe_load((ROOT / "tests" / "e2e" / "shop.yaml").read_text())
POSTGRES = list(yaml.safe_load_all((ROOT / "tests" / "e2e" / "postgres.yaml").read_text()))
CHART = ROOT / "charts" / "flaskapp-operator"
HOST = "shop.local"
REPORT = ROOT / "build" / "e2e-report.json"
STATE: dict = {"report": {}}


def helm(kube, *args):
    result = subprocess.run([kube.helm_bin, *args], capture_output=True, text=True, env=kube.env(), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def record(key: str, value) -> None:
    """Figures for the closing note and docs/performance.md, written as the story goes."""
    STATE["report"][key] = value
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(STATE["report"], indent=1, sort_keys=True))


def flaskapp(target, name: str = "shop", **changes) -> dict:
    """The e2e FlaskApp with the images and ingress class of the cluster under test."""
    app = copy.deepcopy(SHOP)
    app["metadata"]["name"] = name
    spec = app["spec"]
    spec["image"] = target.example_image
    for sidecar in spec["web"]["pod"]["sidecars"]:
        sidecar["image"] = target.example_image
    spec["ingress"]["className"] = target.ingress_class
    if target.nginx_image:
        spec["nginx"]["image"] = target.nginx_image
    if target.redis_image:
        spec["redis"]["image"] = target.redis_image
    if target.monitoring_images:
        spec["monitoring"]["images"] = dict(target.monitoring_images)
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return app


def conditions(kube, ns, name="shop") -> dict:
    app = kube.get("flaskapp", name, ns) or {}
    return {c["type"]: c for c in app.get("status", {}).get("conditions", [])}


def dump(kube, ns):
    for args in (["get", "flaskapp,deploy,pods,jobs", "-n", ns, "-o", "wide"],
                 ["get", "flaskapp", "-n", ns, "-o", 'jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}{"\\n"}{end}'],
                 ["get", "events", "-n", ns],
                 ["logs", "-n", "flaskapp-system", "-l", "app.kubernetes.io/name=flaskapp-operator", "--prefix",
                  "--tail=60"]):
        print(kube.kubectl(*args, check=False).stdout)


DEFAULT_DENY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}


def get(target, path, **kw):
    headers = {"Host": HOST, **kw.pop("headers", {})}
    return requests.get(target.ingress_url + path, headers=headers, timeout=30, **kw)


class SteadyLoad:
    """Requests through the ingress at a steady pace from two threads, each with its own keep-alive
    connection, bypassing the micro-cache (a cookie) so that every request reaches gunicorn."""

    def __init__(self, target, path="/hello", threads=2, pause=0.02):
        self.target, self.path, self.pause = target, path, pause
        self.outcomes: Counter = Counter()
        self.served_by: Counter = Counter()  # web pod name -> requests it answered
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        session = requests.Session()
        while not self._stop.is_set():
            try:
                r = session.get(self.target.ingress_url + self.path, headers={"Host": HOST},
                                cookies={"session": "load"}, timeout=10)
                outcome = "ok" if r.status_code == 200 else f"http {r.status_code}"
                if outcome == "ok" and "pod" in r.json():
                    self.served_by[r.json()["pod"]] += 1
            except requests.RequestException as exc:
                outcome = f"error {type(exc).__name__}"
            self.outcomes[outcome] += 1
            if outcome != "ok" and len(self.failures) < 20:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {outcome}")
            time.sleep(self.pause)

    def __enter__(self):
        for t in self._threads:
            t.start()
        wait_until(lambda: self.outcomes["ok"] >= 10, 30, what="load flowing")
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(15)

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k != "ok")


def start_pod(kube, ns, name, image, command, labels=None, env=()) -> str:
    """A one-shot pod under the restricted Pod Security Standard."""
    kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{"name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                                         "command": command, "env": list(env),
                                         "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                       "limits": {"memory": "64Mi"}},
                                         "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}]}}, ns)
    return name


def pod_output(kube, ns, name, timeout=120) -> str:
    """The log of a one-shot pod once it has ended; the pod is then deleted."""
    wait_until(lambda: kube.get("pod", name, ns)["status"].get("phase") in ("Succeeded", "Failed"), timeout,
               what=f"pod {name} done")
    logs = kube.kubectl("logs", name, "-n", ns).stdout
    kube.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
    return logs.strip()


# -- install and apply ------------------------------------------------------------------------------------


@pytest.mark.order(1)
def test_install_chart_runs_the_operator_as_a_pod(kube, target, local_operator):
    repo, tag = target.operator_image.rsplit(":", 1)
    started = time.monotonic()
    helm(kube, "upgrade", "--install", "flaskapp-operator", str(CHART), "-n", "flaskapp-system", "--create-namespace",
         "--set", f"image.repository={repo}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=IfNotPresent",
         # The Prometheus of the monitoring tests (order 8), which does not exist before them: BudgetGuaranteed is
         # Unknown (PrometheusUnreachable) until then, and then reads the agent's reports.
         "--set", f"prometheus.url={PROMETHEUS_URL}", "--set", "prometheus.intervalSeconds=10",
         "--wait", "--timeout", "180s")
    kube.wait_crd_established()
    deploy = kube.get("deployment", "flaskapp-operator", "flaskapp-system")
    assert deploy["status"].get("availableReplicas") == 2  # one leads, one stands by
    wait_until(lambda: lease_holder(kube), 60, what="a replica holds the Lease")
    if target.real_pods:
        pods = kube.get("pods", namespace="flaskapp-system", selector="app.kubernetes.io/name=flaskapp-operator")
        for pod in pods["items"]:
            statuses = pod["status"]["containerStatuses"]
            assert statuses[0]["ready"] and statuses[0]["state"].get("running"), statuses
        record("operator_pod_ready_seconds", round(time.monotonic() - started, 1))


@pytest.mark.order(2)
def test_apply_example_app_with_real_postgresql_until_ready(kube, target, local_operator):
    db = copy.deepcopy(POSTGRES)
    db[1]["spec"]["template"]["spec"]["containers"][0]["image"] = target.postgres_image
    kube.apply(db)
    kube.kubectl("rollout", "status", "deployment/postgres", "-n", "e2e-db", "--timeout=180s")
    ns = STATE["ns"] = new_namespace(kube, "e2e")
    # As many production namespaces do: nothing in or out unless a policy allows it. The FlaskApp's own
    # policies must let every tier work (every later test runs under this).
    kube.apply(DEFAULT_DENY, ns)
    kube.kubectl("create", "secret", "generic", "shop-db", "-n", ns,
                 "--from-literal=url=postgresql+psycopg://shop:shop@postgres.e2e-db.svc:5432/shop")
    started = time.monotonic()
    kube.apply(flaskapp(target), ns)
    wait_ready(kube, ns, "shop", 420, on_timeout=lambda: dump(kube, ns))
    record("apply_to_ready_seconds", round(time.monotonic() - started, 1))


@pytest.mark.order(3)
def test_children_and_status(kube, target):
    ns = STATE["ns"]
    app = kube.get("flaskapp", "shop", ns)
    status = app["status"]
    assert status["observedGeneration"] == app["metadata"]["generation"]
    assert status["url"] == "http://shop.local/" and status["workerPools"] == "1/1"
    assert status["tuning"]["budget"]["feasible"] is True
    names = {d["metadata"]["name"] for d in kube.get("deployments", namespace=ns)["items"]}
    assert names == {"shop-web", "shop-nginx", "shop-worker-default", "shop-beat", "shop-redis-cache", "shop-flower"}
    # The broker keeps its volume: a StatefulSet.
    assert [s["metadata"]["name"] for s in kube.get("statefulsets", namespace=ns)["items"]] == ["shop-redis-broker"]
    assert kube.get("ingress", "shop", ns)["spec"]["rules"][0]["host"] == HOST
    # No Prometheus yet: the agent's reports cannot be read, and status says so rather than guessing.
    budget = budget_condition(kube, ns, "shop")
    assert budget["status"] == "Unknown", budget
    assert budget["reason"] == ("PrometheusUnreachable" if target.real_pods else "NoPrometheus"), budget


@pytest.mark.order(3)
def test_web_pods_are_spread_and_share_an_extra_volume_with_a_sidecar(kube, real_pods):
    ns = STATE["ns"]
    template = kube.get("deployment", "shop-web", ns)["spec"]["template"]["spec"]
    assert [c["topologyKey"] for c in template["topologySpreadConstraints"]] == \
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    pods = [p for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web")["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 2
    for pod in pods:  # the soft spread never leaves a pod pending on a cluster with one node and no zones
        statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
        assert statuses["gunicorn"]["ready"] and statuses["uploads-reader"]["state"].get("running"), statuses
        name = pod["metadata"]["name"]
        # What the app writes under its mount, the sidecar reads from its own: one volume, two containers.
        kube.kubectl("exec", name, "-n", ns, "-c", "gunicorn", "--", "python3", "-c",
                     f"open('/srv/uploads/hello.txt', 'w').write('{name}')")
        read = kube.kubectl("exec", name, "-n", ns, "-c", "uploads-reader", "--", "python3", "-c",
                            "print(open('/uploads/hello.txt').read())").stdout.strip()
        assert read == name
        # The sidecar's mount is read-only; the root filesystem of both is too.
        refused = kube.kubectl("exec", name, "-n", ns, "-c", "uploads-reader", "--", "python3", "-c",
                               "open('/uploads/x', 'w')", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr


@pytest.mark.order(3)
def test_migration_job_really_ran(kube, real_pods):
    ns = STATE["ns"]
    jobs = kube.get("jobs", namespace=ns, selector="app.kubernetes.io/component=migrations")["items"]
    assert len(jobs) == 1 and jobs[0]["status"].get("succeeded") == 1
    # The Job's row is in the real database, read back by the web tier.
    rows = get(real_pods, "/migrations", cookies={"c": "1"}).json()["migrations"]
    assert len(rows) == 1 and rows[0].startswith(jobs[0]["metadata"]["name"])


# -- the running stack, through the ingress controller ----------------------------------------------------


@pytest.mark.order(4)
def test_static_file_from_nginx_with_cache_headers_and_gzip(real_pods):
    r = wait_until(lambda: (x := get(real_pods, "/static/app.css", headers={"Accept-Encoding": "gzip"}))
                   .status_code == 200 and x, 120, what="static file through the ingress")
    assert "max-age=" in r.headers["Cache-Control"]
    assert r.headers.get("Content-Encoding") == "gzip"
    source = (ROOT / "examples" / "flask-shop" / "static" / "app.css").read_bytes()
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(source).digest()  # requests un-gzips
    # Served by nginx from disk, not by gunicorn: Flask would not gzip.
    assert int(r.raw.headers.get("Content-Length", len(source))) < len(source)


@pytest.mark.order(4)
def test_micro_cache_hits_on_repeat_and_flask_caching_uses_redis(real_pods):
    first = get(real_pods, "/expensive")
    second = wait_until(lambda: (x := get(real_pods, "/expensive")).headers.get("X-Cache-Status") == "HIT" and x,
                        20, what="micro-cache HIT")
    assert first.status_code == second.status_code == 200
    # With a cookie nginx bypasses its cache; Flask-Caching in the cache Redis still answers the same body.
    a = get(real_pods, "/expensive", cookies={"c": "1"})
    b = get(real_pods, "/expensive", cookies={"c": "2"})
    assert a.headers.get("X-Cache-Status") == "BYPASS"
    assert a.json()["computed_at"] == b.json()["computed_at"]


def task_round_trip(kube, ns, real_pods, report_key: str, seconds: float = 120) -> None:
    """Sends tasks through the web pod until one's result comes back (the web waits 20 s for each), for at
    most `seconds`; the tries it took, the time and the workers' restarts go to the report."""
    started, tries, answer = time.monotonic(), 0, None
    while time.monotonic() - started < seconds:
        tries += 1
        answer = get(real_pods, "/task", cookies={"c": "1"})
        if answer.status_code == 200:
            break
        time.sleep(1)
    workers = kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=worker-default")["items"]
    restarts = sum(c["restartCount"] for p in workers for c in p["status"].get("containerStatuses", []))
    record(report_key, {"tries": tries, "seconds": round(time.monotonic() - started, 1), "worker_restarts": restarts})
    if answer.status_code != 200:  # what the worker, the web pod and the broker were doing
        dump(kube, ns)
        for selector, container in (("app.kubernetes.io/component=worker-default", "celery"),
                                    ("app.kubernetes.io/component=web", "gunicorn"),
                                    ("app.kubernetes.io/component=redis-broker", "redis")):
            print(kube.kubectl("logs", "-n", ns, "-l", selector, "-c", container, "--tail=40", "--prefix",
                               check=False).stdout)
    assert answer.json() == {"result": 5}, f"{answer.status_code} after {tries} tries"


@pytest.mark.order(4)
def test_celery_task_round_trips_through_the_broker_pod(kube, real_pods):
    """A task sent by the web pod runs on a worker pod and its result comes back (the web waits 20 s for it).
    A Celery worker on Redis can hang with its connection open (celery/celery#1847, #2464); its heartbeat
    then stops and the liveness probe restarts it, so the round trip is given one such restart (about a
    minute). How many tries it took, and the worker's restarts, go to the report."""
    task_round_trip(kube, STATE["ns"], real_pods, "task_round_trip")


RESTORE_TRIES = 8
RESTORE_SECONDS = 40  # pod start and one stalled connection (10 s) included; a hung worker restarts after 45-70 s


def set_pool_replicas(kube, ns: str, replicas: int) -> None:
    kube.kubectl("patch", "flaskapp", "shop", "-n", ns, "--type=json",
                 "-p", f'[{{"op": "replace", "path": "/spec/workerPools/0/replicas", "value": {replicas}}}]')


def broker_queue_length(kube, ns: str, queue: str = "celery") -> int:
    """LLEN of the queue's list in the broker pod (Celery's Redis transport keeps a queue as a list); the broker is
    a StatefulSet when durable (the default), a Deployment otherwise."""
    broker = kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=redis-broker")["items"][0]
    out = kube.kubectl("exec", "-n", ns, broker["metadata"]["name"], "-c", "redis", "--", "sh", "-c",
                       f"if command -v valkey-cli >/dev/null; then valkey-cli llen {queue}; "
                       f"else redis-cli llen {queue}; fi").stdout
    return int(out.strip())


@pytest.mark.order(4)
def test_a_pool_restored_from_zero_takes_the_waiting_tasks_within_seconds_every_time(kube, real_pods):
    """Tasks queued while a pool is at zero; the pool restored: its new worker takes them within seconds, on
    every try, without a restart (a worker that hangs on its broker connection is only restarted by its liveness
    probe after about a minute). The time of each try, from the replicas patch to an empty queue, goes to the
    report."""
    ns, times, restarts = STATE["ns"], [], 0
    workers = "app.kubernetes.io/component=worker-default"
    try:
        for _ in range(RESTORE_TRIES):
            set_pool_replicas(kube, ns, 0)
            wait_until(lambda: not kube.get("pods", namespace=ns, selector=workers)["items"], 120,
                       what="the worker pool at zero")
            queued = requests.post(real_pods.ingress_url + "/tasks?n=5", headers={"Host": HOST},
                                   cookies={"c": "1"}, timeout=30)
            assert queued.status_code == 200, queued.text
            assert broker_queue_length(kube, ns) >= 5
            started = time.monotonic()
            set_pool_replicas(kube, ns, 1)
            wait_until(lambda: broker_queue_length(kube, ns) == 0, 180, interval=0.5,
                       what="the restored worker to take the waiting tasks")
            times.append(round(time.monotonic() - started, 1))
            pods = kube.get("pods", namespace=ns, selector=workers)["items"]
            restarts += sum(c["restartCount"] for p in pods for c in p["status"].get("containerStatuses", []))
    finally:
        record("pool_restored_from_zero", {"tries": len(times), "seconds": times, "worker_restarts": restarts})
        set_pool_replicas(kube, ns, 1)
    assert max(times) < RESTORE_SECONDS and restarts == 0, f"{times}, {restarts} restarts"


@pytest.mark.order(4)
def test_app_sees_exactly_the_env_contract(kube, real_pods):
    """Every variable of the contract as the web pod sees it, against the rendered ConfigMap and Secrets
    read from the cluster (secret values compared by digest)."""
    ns = STATE["ns"]
    seen = get(real_pods, "/env", cookies={"c": "1"}).json()
    deploy = kube.get("deployment", "shop-web", ns)
    container = deploy["spec"]["template"]["spec"]["containers"][0]  # gunicorn
    expected: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            data = kube.get("configmap", source["configMapRef"]["name"], ns)["data"]
            expected.update({source.get("prefix", "") + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        ref = var.get("valueFrom", {})
        if "value" in var:
            expected[var["name"]] = var["value"]
        elif "configMapKeyRef" in ref:
            expected[var["name"]] = kube.get("configmap", ref["configMapKeyRef"]["name"], ns)["data"][
                ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            secret = kube.get("secret", ref["secretKeyRef"]["name"], ns)["data"][ref["secretKeyRef"]["key"]]
            expected[var["name"]] = "sha256:" + hashlib.sha256(base64.b64decode(secret)).hexdigest()
    contract = {k: v for k, v in expected.items() if k in seen}
    assert contract == {k: v for k, v in seen.items() if v is not None}
    assert {"WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "SQLALCHEMY_ENGINE_OPTIONS", "DATABASE_URL", "CACHE_REDIS_URL",
            "CELERY_BROKER_URL"} <= contract.keys()
    assert int(seen["WEB_CONCURRENCY"]) == kube.get("flaskapp", "shop", ns)["status"]["tuning"]["web"]["workers"]
    assert json.loads(seen["SQLALCHEMY_ENGINE_OPTIONS"])["pool_size"] >= 1


# -- change under load --------------------------------------------------------------------------------------


@pytest.mark.order(5)
def test_scale_under_load_fails_no_request(kube, real_pods):
    ns = STATE["ns"]
    with SteadyLoad(real_pods) as load:
        kube.kubectl("scale", "flaskapp/shop", "-n", ns, "--replicas=3")
        wait_until(lambda: kube.get("deployment", "shop-web", ns)["status"].get("readyReplicas") == 3, 240,
                   what="3 web pods ready")
        wait_until(lambda: kube.get("flaskapp", "shop", ns)["status"]["webReplicas"] == 3, 60, what="status follows")
    record("scale_requests", dict(load.outcomes))
    assert load.failed == 0, load.failures


@pytest.mark.order(6)
def test_image_update_rolls_every_tier_under_load_with_no_failed_request(kube, target, real_pods):
    ns = STATE["ns"]
    new_image = tag_second_image(target)
    before = {p["metadata"]["name"] for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web")["items"]}
    nginx_before = {p["metadata"]["name"] for p in kube.get("pods", namespace=ns,
                                                            selector="app.kubernetes.io/component=nginx")["items"]}
    with SteadyLoad(real_pods) as load:
        started = time.monotonic()
        kube.apply(flaskapp(target, **{"image": new_image, "web.replicas": 3}), ns)
        try:
            wait_until(lambda: all(c["image"] == new_image for d in ("shop-web", "shop-worker-default", "shop-beat")
                                   for c in kube.get("deployment", d, ns)["spec"]["template"]["spec"]["containers"][:1]),
                       300, what="new image in every app tier")
        except AssertionError:
            dump(kube, ns)
            raise
        wait_ready(kube, ns, "shop", 300, on_timeout=lambda: dump(kube, ns))
        rolled = time.monotonic() - started
    after = {p["metadata"]["name"] for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web")["items"]
             if not p["metadata"].get("deletionTimestamp")}  # old pods may still be draining
    assert len(after) == 3 and not before & after, "the web pods were replaced"
    # nginx rolled too (its init container copies the static files of the new image): both tiers at once.
    nginx_after = {p["metadata"]["name"] for p in kube.get("pods", namespace=ns,
                                                           selector="app.kubernetes.io/component=nginx")["items"]
                   if not p["metadata"].get("deletionTimestamp")}
    assert nginx_after and not nginx_before & nginx_after, "the nginx pods were replaced"
    jobs = kube.get("jobs", namespace=ns, selector="app.kubernetes.io/component=migrations")["items"]
    assert any(j["spec"]["template"]["spec"]["containers"][0]["image"] == new_image and j["status"].get("succeeded")
               for j in jobs), "the new image's migration ran first"
    record("rollout_requests", dict(load.outcomes))
    record("rollout_seconds", round(rolled, 1))
    assert load.failed == 0, load.failures
    # The new pods share the traffic within seconds: nginx's connections to the web Service serve 20
    # requests for at most 5 s, so kube-proxy spreads new ones over every ready pod. (Measured once the old
    # pods have finished draining: until then a kept-alive connection may still reach one, rightly.)
    wait_until(lambda: not before & {p["metadata"]["name"] for p in kube.get(
        "pods", namespace=ns, selector="app.kubernetes.io/component=web")["items"]}, 120, what="old web pods gone")
    with SteadyLoad(real_pods, threads=6) as share:
        wait_until(lambda: sum(share.served_by.values()) >= 1500, 120, what="1500 requests answered")
    shares = {pod: round(n / sum(share.served_by.values()), 3) for pod, n in share.served_by.items()}
    record("web_pod_shares_after_rollout", {"requests": dict(share.outcomes), "shares": shares})
    assert share.failed == 0, share.failures
    assert set(shares) == after, shares  # every new pod served, and only new pods
    assert min(shares.values()) >= 0.15, shares  # a fair share is 1/3


def tag_second_image(target) -> str:
    """A second reference to the example image: an update the cluster must roll out."""
    repo = target.example_image.rsplit(":", 1)[0]
    new = f"{repo}:e2e-v2"
    target.tag_image(target.example_image, new)
    return new


# -- recovery -----------------------------------------------------------------------------------------------


@pytest.mark.order(7)
def test_deleted_pod_and_killed_container_recover(kube, real_pods):
    ns = STATE["ns"]
    pods = kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web")["items"]
    victim = pods[0]["metadata"]["name"]
    kube.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
    wait_until(lambda: len([p for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web")["items"]
                            if p["metadata"]["name"] != victim and all(
                                c["ready"] for c in p["status"].get("containerStatuses", []))]) == 3,
               120, what="a replacement web pod ready")
    # Kill a container's main process the hard way: the kubelet restarts it in place.
    pod = kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=redis-broker")["items"][0]
    status = pod["status"]["containerStatuses"][0]
    restarts = status["restartCount"]
    real_pods.kill_container(pod)
    wait_until(lambda: (s := kube.get("pod", pod["metadata"]["name"], ns)["status"]["containerStatuses"][0])
               ["restartCount"] > restarts and s["ready"], 120, what="broker container restarted and ready")
    wait_until(lambda: conditions(kube, ns)["Ready"]["status"] == "True", 120, what="FlaskApp Ready again")
    # The web's and the worker's broker connections died with it: Celery reconnects them with a backoff
    # (celery/celery#8030), so a task may fail until both are back. Recovery within a bounded time is the claim.
    task_round_trip(kube, ns, real_pods, "task_round_trip_after_broker_restart")


@pytest.mark.order(7)
def test_queued_tasks_survive_a_broker_restart_on_its_volume(kube, real_pods):
    """No worker runs; tasks are queued; the broker pod is deleted and comes back on the same
    PersistentVolumeClaim; a worker starts: every task runs."""
    ns = STATE["ns"]

    def set_workers(n: int) -> None:
        kube.kubectl("patch", "flaskapp", "shop", "-n", ns, "--type=json",
                     "-p", json.dumps([{"op": "replace", "path": "/spec/workerPools/0/replicas", "value": n}]))

    claim = kube.get("pvc", "data-shop-redis-broker-0", ns)
    assert claim["status"]["phase"] == "Bound", claim["status"]
    set_workers(0)
    wait_until(lambda: not kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=worker-default")["items"],
               120, what="no worker pod")
    try:
        r = requests.post(real_pods.ingress_url + "/tasks?n=20", headers={"Host": HOST}, timeout=30)
        assert r.status_code == 200, r.text
        ids = r.json()["ids"]
        old = kube.get("pod", "shop-redis-broker-0", ns)["metadata"]["uid"]
        kube.kubectl("delete", "pod", "shop-redis-broker-0", "-n", ns)
        wait_until(lambda: (p := kube.get("pod", "shop-redis-broker-0", ns)) and p["metadata"]["uid"] != old
                   and all(c["ready"] for c in p["status"].get("containerStatuses", [{"ready": False}])),
                   180, what="a new broker pod ready")
        assert kube.get("pvc", "data-shop-redis-broker-0", ns)["metadata"]["uid"] == claim["metadata"]["uid"]
    finally:
        set_workers(1)

    def states() -> list:
        return [get(real_pods, f"/tasks/{i}", cookies={"c": "1"}).json() for i in ids]
    done = wait_until(lambda: (s := states()) and all(x["state"] == "SUCCESS" for x in s) and s, 180,
                      what="every queued task run")
    assert [x["result"] for x in done] == [2 * i for i in range(20)]
    record("durable_broker", {"queued": len(ids), "ran_after_broker_restart": len(done)})
    wait_until(lambda: conditions(kube, ns)["Ready"]["status"] == "True", 180, what="FlaskApp Ready again")


# -- the pooler ---------------------------------------------------------------------------------------------

# Run in a web pod: 36 requests from 12 threads at once to its own gunicorn (3 workers x 4 threads), each holding a
# database connection 0.3 s; prints the status codes.
def load_script(url: str, clients: int, count: int) -> str:
    """Python run inside a web pod (`kubectl exec ... python3 -c`): `count` GETs of `url`, `clients` at a time;
    prints the status codes (or errors) as JSON."""
    return f"""
import concurrent.futures, json, urllib.request
def one(_):
    try:
        return urllib.request.urlopen({url!r}, timeout=60).status
    except Exception as exc:
        return str(exc)
with concurrent.futures.ThreadPoolExecutor({clients}) as pool:
    print(json.dumps(list(pool.map(one, range({count})))))
"""


POOL_LOAD = load_script("http://127.0.0.1:8000/db?sleep=0.3", 12, 36)


@pytest.mark.order(4)
def test_pgbouncer_serves_more_clients_than_its_server_pool(kube, target, real_pods):
    """spec.database.pooler on real pods: the web tier's processes (2 pods x 3 workers x 4 threads, pools of 4 + 2)
    go through PgBouncer, whose server pool is what the budget allows (maxConnections 12 - 2 reserved, 1 replica
    + 1 surge pod: 5 each); PostgreSQL never sees more than that from it, and every request is answered."""
    ns = STATE["ns"]
    kube.kubectl("create", "secret", "generic", "orders-db", "-n", ns,
                 "--from-literal=url=postgresql+psycopg://shop:shop@postgres.e2e-db.svc:5432/shop")
    app = flaskapp(target, "orders")
    spec = app["spec"]
    for key in ("workerPools", "beat", "migrations", "monitoring", "celeryApp"):
        spec.pop(key, None)
    spec["web"] = {"replicas": 2, "gunicorn": {"workerClass": "gthread", "workers": 3, "threads": 4},
                   "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}}, "healthCheckPath": "/healthz"}
    spec["nginx"]["replicas"] = 1
    spec["ingress"] = {"enabled": False}
    spec["database"] = {"secretName": "orders-db", "maxConnections": 12, "reservedConnections": 2,
                        "pooler": {"enabled": True, "replicas": 1,
                                   **({"image": target.pooler_image} if target.pooler_image else {})}}
    kube.apply(app, ns)
    wait_ready(kube, ns, "orders", 300, on_timeout=lambda: dump(kube, ns))
    status = kube.get("flaskapp", "orders", ns)["status"]["tuning"]
    ini = base64.b64decode(kube.get("secret", "orders-pooler", ns)["data"]["pgbouncer.ini"]).decode()
    per_pod = int(next(line.split("=")[1] for line in ini.splitlines() if line.startswith("max_db_connections")))
    assert per_pod == status["pooler"]["poolSize"] and 2 * per_pod <= 10
    pooler_ip = kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=pooler,"
                                                        "app.kubernetes.io/instance=orders")["items"][0]["status"]["podIP"]
    web = kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web,"
                                                  "app.kubernetes.io/instance=orders")["items"][0]["metadata"]["name"]

    def server_connections() -> int:
        out = kube.kubectl("exec", "-n", "e2e-db", "deploy/postgres", "--", "psql", "-U", "shop", "-tAc",
                           f"select count(*) from pg_stat_activity where client_addr = '{pooler_ip}'", check=False)
        return int(out.stdout.strip() or 0)

    load = subprocess.Popen([kube.kubectl_bin, "exec", web, "-n", ns, "-c", "gunicorn", "--", "python3", "-c",
                             POOL_LOAD], stdout=subprocess.PIPE, text=True, env=kube.env())
    peak = 0
    while load.poll() is None:
        peak = max(peak, server_connections())
    codes = json.loads(load.stdout.read())
    record("pooler", {"requests": len(codes), "ok": codes.count(200), "server_connections_peak": peak,
                      "pool_per_pod": per_pod})
    assert codes == [200] * 36, codes
    assert 1 <= peak <= per_pod, peak
    kube.kubectl("delete", "flaskapp", "orders", "-n", ns, "--wait=true", "--timeout=120s")


# Drives one web pod's gunicorn from inside it (the NetworkPolicy admits only nginx to the web port from outside):
# the index page, one query each, 16 at a time, long enough for pg_stat_activity to be sampled many times.
FLASKR_REQUESTS = 1500
FLASKR_LOAD = load_script("http://127.0.0.1:8000/", 16, FLASKR_REQUESTS)


@pytest.mark.order(4)
def test_a_public_app_unchanged_stays_within_its_connection_plan(kube, target, real_pods):
    """Flask-SQLAlchemy 2.5.1's examples/flaskr, taken unchanged from its sdist, in an image of its own: it never
    reads SQLALCHEMY_ENGINE_OPTIONS (SQLAlchemy's default pool: 5 + 10 per process). Its init-db command runs as
    the migration Job; under load on both web pods (2 workers x 4 threads each) PostgreSQL sees at most the
    plan's connections for the running pods, because the operator's agent lowered every engine."""
    ns = STATE["ns"]
    for statement in ("CREATE ROLE flaskr LOGIN PASSWORD 'flaskr'", "CREATE DATABASE flaskr OWNER flaskr"):
        kube.kubectl("exec", "-n", "e2e-db", "deploy/postgres", "--", "psql", "-U", "shop", "-d", "shop", "-c", statement)
    kube.kubectl("create", "secret", "generic", "flaskr-db", "-n", ns,
                 "--from-literal=url=postgresql+psycopg://flaskr:flaskr@postgres.e2e-db.svc:5432/flaskr")
    app = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": "flaskr"}, "spec": {
        "image": target.flaskr_image, "imagePullPolicy": "IfNotPresent", "wsgi": "flaskr:create_app()",
        "web": {"replicas": 2, "gunicorn": {"workerClass": "gthread", "workers": 2, "threads": 4},
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}},
        "database": {"secretName": "flaskr-db", "maxConnections": 10, "reservedConnections": 2},
        "migrations": {"command": ["flask", "--app", "flaskr", "init-db"]},
        # Its static files live in its package (nginx's init container copies them from the image).
        "nginx": {"replicas": 1, "staticDir": "/app/flaskr/static",
                  **({"image": target.nginx_image} if target.nginx_image else {})},
        # Redis, not the default Valkey: a user's choice of engine keeps working.
        "redis": {"cache": {"memory": "32Mi", "cpu": "50m"}, "image": target.redis_compat_image},
        "ingress": {"enabled": False}}}
    kube.apply(app, ns)
    try:
        check_flaskr_within_its_plan(kube, ns)
    finally:  # the later tests count the namespace's web pods
        kube.kubectl("delete", "flaskapp", "flaskr", "-n", ns, "--wait=true", "--timeout=120s", check=False)


def check_flaskr_within_its_plan(kube, ns: str) -> None:
    wait_ready(kube, ns, "flaskr", 300, on_timeout=lambda: dump(kube, ns))
    web = next(t for t in kube.get("flaskapp", "flaskr", ns)["status"]["tuning"]["connections"] if t["tier"] == "web")
    per_pod = web["processesPerPod"] * (web["poolSize"] + web["maxOverflow"])
    assert per_pod < 2 * 4  # the plan is below what the app's threads would open on their own
    pods = [p["metadata"]["name"] for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=web,"
                                                    "app.kubernetes.io/instance=flaskr")["items"]]
    assert len(pods) == 2

    def connections() -> int:
        out = kube.kubectl("exec", "-n", "e2e-db", "deploy/postgres", "--", "psql", "-U", "shop", "-d", "shop", "-tAc",
                           "select count(*) from pg_stat_activity where usename = 'flaskr'", check=False)
        return int(out.stdout.strip() or 0)

    loads = [subprocess.Popen([kube.kubectl_bin, "exec", pod, "-n", ns, "-c", "gunicorn", "--", "python3", "-c",
                               FLASKR_LOAD], stdout=subprocess.PIPE, text=True, env=kube.env()) for pod in pods]
    peak = samples = 0
    while any(load.poll() is None for load in loads):
        peak, samples = max(peak, connections()), samples + 1
    codes = [c for load in loads for c in json.loads(load.stdout.read())]
    logs = kube.kubectl("logs", pods[0], "-n", ns, "-c", "gunicorn").stdout
    record("public_app_flaskr", {"requests": len(codes), "ok": codes.count(200), "connections_peak": peak,
                                 "plan_for_running_pods": 2 * per_pod, "samples": samples})
    assert codes == [200] * (2 * FLASKR_REQUESTS), Counter(map(str, codes))
    assert samples >= 3 and 1 <= peak <= 2 * per_pod, (peak, per_pod)
    assert "flaskapp-agent: engine postgresql+psycopg@postgres.e2e-db.svc:5432/flaskr lowered to the connection plan" in logs


# -- Gateway API ------------------------------------------------------------------------------------------

ROUTE_HOST = "routed.e2e.test"


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A certificate for `host` and its key (PEM), for the Gateway's HTTPS listener."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def gateway(ns: str, gateway_class: str, tls_secret: str) -> dict:
    """A Gateway with a plain and a TLS listener for ROUTE_HOST, admitting routes of its own namespace."""
    same = {"namespaces": {"from": "Same"}}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "e2e", "namespace": ns},
            "spec": {"gatewayClassName": gateway_class, "listeners": [
                {"name": "http", "protocol": "HTTP", "port": 80, "hostname": ROUTE_HOST, "allowedRoutes": same},
                {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": ROUTE_HOST, "allowedRoutes": same,
                 "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": tls_secret}]}}]}}


@pytest.mark.order(4)
def test_a_gateway_serves_the_app_through_its_route_over_http_and_https(kube, target, real_pods, tmp_path):
    """spec.route on a real Gateway controller (Traefik's Kubernetes Gateway provider, Gateway API v1.4 CRDs):
    the FlaskApp is Ready only once Traefik accepted its HTTPRoute, then serves through the Gateway's HTTP and
    HTTPS listeners (certificate from a Secret, checked by curl against that certificate); a route to a Gateway
    that does not exist leaves it not Ready, naming the Gateway."""
    ns = STATE["ns"]
    cert, key = self_signed(ROUTE_HOST)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    kube.kubectl("create", "secret", "tls", "routed-tls", "-n", ns, f"--cert={tmp_path / 'cert.pem'}",
                 f"--key={tmp_path / 'key.pem'}")
    kube.apply(gateway(ns, target.gateway_class, "routed-tls"), ns)
    app = small_app(target, "routed", **{"route": {"enabled": True, "parentRefs": [{"name": "e2e"}],
                                                  "hostnames": [ROUTE_HOST]}})
    kube.apply(app, ns)
    node_ip = requests.utils.urlparse(real_pods.ingress_url).hostname
    try:
        wait_ready(kube, ns, "routed", 300, on_timeout=lambda: dump(kube, ns))
        status = kube.get("flaskapp", "routed", ns)["status"]
        assert status["url"] == f"http://{ROUTE_HOST}/"
        route = kube.get("httproute", "routed", ns)
        accepted = {c["type"]: c["status"] for p in route["status"]["parents"] for c in p["conditions"]}
        assert accepted["Accepted"] == "True" and accepted["ResolvedRefs"] == "True", route["status"]

        def curl(scheme: str, port: int) -> subprocess.CompletedProcess:
            return subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{ROUTE_HOST}:{port}:{node_ip}",
                                   "--cacert", str(tmp_path / "cert.pem"), "-o", "/dev/null", "-w", "%{http_code}",
                                   f"{scheme}://{ROUTE_HOST}/hello"], capture_output=True, text=True, timeout=30)
        # Traefik applies a new route within a moment of accepting it.
        for scheme, port in (("http", 80), ("https", 443)):
            served = wait_until(lambda: (r := curl(scheme, port)).stdout == "200" and r, 60, interval=1,
                                what=f"the app through the Gateway's {scheme} listener")
            record(f"gateway_{scheme}", served.stdout)

        kube.kubectl("patch", "flaskapp", "routed", "-n", ns, "--type=merge",
                     "-p", json.dumps({"spec": {"route": {"parentRefs": [{"name": "no-such-gateway"}]}}}))

        def not_accepted():
            ready = conditions(kube, ns, "routed").get("Ready", {})
            return ready if ready.get("status") == "False" and ready.get("reason") == "RouteNotAccepted" else None
        ready = wait_until(not_accepted, 120, interval=2, what="Ready False for a route no Gateway accepted")
        assert f"Gateway {ns}/no-such-gateway" in ready["message"], ready
    finally:  # the later tests count the namespace's web pods
        kube.kubectl("delete", "flaskapp", "routed", "-n", ns, "--wait=true", "--timeout=120s", check=False)
        kube.kubectl("delete", "gateway", "e2e", "-n", ns, check=False)


# -- network policy -----------------------------------------------------------------------------------------

# Connects to host:port for up to 30 s: the policy engine admits a new pod once its address is in the
# engine's sets (eventually), and refuses (kube-router: REJECT) or drops (timeout) everyone else.
PROBE = """
import socket, sys, time
deadline, outcome = time.monotonic() + 30, "never tried"
while time.monotonic() < deadline:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
        print("connected"); sys.exit(0)
    except socket.timeout:
        outcome = "blocked (timeout)"
    except ConnectionRefusedError:
        outcome = "blocked (refused)"
    except OSError as exc:
        outcome = f"error {exc}"
    time.sleep(1)
print(outcome)
"""


@pytest.mark.order(8)
def test_network_policies_admit_each_tier_only_from_its_caller(kube, target, real_pods):
    """The app has run under a default-deny namespace policy all along (tests 2-7). Here, who reaches what:
    a pod of another namespace reaches nginx (the public entry) and nothing else; a pod with the web tier's
    labels reaches Redis (the policy engine selects by label)."""
    ns = STATE["ns"]
    outside = new_namespace(kube, "e2e-outside")
    targets = {"nginx": ("shop-nginx", 80), "gunicorn": ("shop-web", 8000),
               "redis-cache": ("shop-redis-cache", 6379), "redis-broker": ("shop-redis-broker", 6379)}
    pods = {("outsider", what): (outside, start_pod(kube, outside, f"probe-{what}", target.example_image,
                                                     ["python", "-c", PROBE, f"{svc}.{ns}.svc", str(port)]))
            for what, (svc, port) in targets.items()}
    web_labels = {"app.kubernetes.io/name": "flaskapp", "app.kubernetes.io/instance": "shop",
                  "app.kubernetes.io/component": "web"}
    pods.update({("web tier", what): (ns, start_pod(kube, ns, f"probe-web-{what}", target.example_image,
                                                    ["python", "-c", PROBE, targets[what][0], "6379"], web_labels))
                 for what in ("redis-cache", "redis-broker")})
    results = {key: pod_output(kube, where, name) for key, (where, name) in pods.items()}
    record("network_policy", {f"{who} -> {what}": r for (who, what), r in results.items()})
    assert results[("outsider", "nginx")] == "connected", results
    for what in ("gunicorn", "redis-cache", "redis-broker"):
        assert results[("outsider", what)].startswith("blocked"), results
    assert results[("web tier", "redis-cache")] == "connected", results
    assert results[("web tier", "redis-broker")] == "connected", results
    kube.kubectl("delete", "namespace", outside, "--wait=false")


# -- monitoring: a real Prometheus scrapes the app and an alert fires -----------------------------------------


def scrape_configs(pod_monitor: dict) -> list[dict]:
    """The scrape jobs the Prometheus Operator generates from a PodMonitor (one per endpoint: pods of its
    namespace selected by its labels, the named port, the endpoint's relabelings)."""
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    ns = pod_monitor["metadata"]["namespace"]
    jobs = []
    for i, endpoint in enumerate(pod_monitor["spec"]["podMetricsEndpoints"]):
        keep = [{"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{k.replace('.', '_').replace('/', '_').replace('-', '_')}"],
                 "regex": v} for k, v in selector.items()]
        keep.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                     "regex": endpoint["port"]})
        keep.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running"})
        identity = [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"target_label": "endpoint", "replacement": endpoint["port"]}]
        own = [{"source_labels": r["sourceLabels"], "target_label": r["targetLabel"]} for r in endpoint["relabelings"]]
        jobs.append({"job_name": f"podMonitor/{ns}/{pod_monitor['metadata']['name']}/{i}",
                     "scrape_interval": endpoint["interval"], "metrics_path": endpoint["path"],
                     "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [ns]}}],
                     "relabel_configs": keep + identity + own})
    return jobs


PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"  # the Service of prometheus_objects()


def budget_condition(kube, ns: str, name: str) -> dict:
    app = kube.get("flaskapp", name, ns)
    return next((c for c in app["status"].get("conditions", []) if c["type"] == "BudgetGuaranteed"), {})


def prometheus_objects(target, app_ns: str, config: dict, rules: dict) -> list[dict]:
    meta = {"name": "prometheus", "namespace": "monitoring"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "prometheus", "namespace": app_ns},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "prometheus", "namespace": app_ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"prometheus.yml": yaml.safe_dump(config), "rules.yaml": yaml.safe_dump(rules)}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": {"app": "prometheus"}, "ports": [{"name": "web", "port": 9090, "targetPort": "web"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, "labels": {"app": "prometheus"}}, "spec": {
            "serviceAccountName": "prometheus",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "prometheus", "image": target.prometheus_image, "imagePullPolicy": "IfNotPresent",
                "args": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/data",
                         "--web.listen-address=:9090"],
                "ports": [{"name": "web", "containerPort": 9090}],
                "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}, "periodSeconds": 2},
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"},
                                 {"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "prometheus"}}, {"name": "data", "emptyDir": {}}]}},
    ]


def start_prometheus(kube, target, ns: str, rendered: list[dict]):
    """A real Prometheus in the `monitoring` namespace (the one the metrics ports are open to) with the scrape jobs
    the Prometheus Operator would make of every rendered PodMonitor and the rendered PrometheusRules; returns a
    function that reads its HTTP API."""
    scrape = [job for o in rendered if o["kind"] == "PodMonitor" for job in scrape_configs(o)]
    groups = [group for o in rendered if o["kind"] == "PrometheusRule" for group in o["spec"]["groups"]]
    config = {"global": {"evaluation_interval": "10s"}, "rule_files": ["/etc/prometheus/rules.yaml"],
              "scrape_configs": scrape}
    # A previous test's monitoring namespace may still be there (terminating, or left by a test that failed).
    kube.kubectl("delete", "namespace", "monitoring", "--ignore-not-found", "--wait=true", "--timeout=180s",
                 check=False)
    kube.kubectl("create", "namespace", "monitoring")
    kube.apply(prometheus_objects(target, ns, config, {"groups": groups}))
    ready = kube.kubectl("wait", "--for=condition=Ready", "pod/prometheus", "-n", "monitoring", "--timeout=120s",
                         check=False, timeout=150)
    if ready.returncode != 0:
        print(kube.kubectl("describe", "pod", "prometheus", "-n", "monitoring", check=False).stdout)
        print(kube.kubectl("logs", "prometheus", "-n", "monitoring", "--tail=40", check=False).stdout)
    assert ready.returncode == 0, ready.stderr
    ip = kube.get("pod", "prometheus", "monitoring")["status"]["podIP"]

    def api(path, **params):
        return requests.get(f"http://{ip}:9090/api/v1/{path}", params=params, timeout=10).json()["data"]
    return api


@pytest.mark.order(8)
def test_prometheus_scrapes_every_tier_and_an_alert_fires_when_the_pool_stops(kube, target, real_pods):
    """A real Prometheus in the `monitoring` namespace (the one the metrics ports are open to) with the scrape
    jobs the Prometheus Operator would make of the rendered PodMonitor, and the rendered PrometheusRule:
    every exporter is up through the NetworkPolicies, and stopping the worker pool while tasks wait fires
    FlaskAppQueueNotConsumed end to end."""
    from flaskapp_operator.render import render

    ns = STATE["ns"]
    rendered = render(kube.get("flaskapp", "shop", ns), redis_password="unused").objects
    api = start_prometheus(kube, target, ns, rendered)

    for _ in range(20):
        get(real_pods, "/hello")
    pods = kube.get("pods", namespace=ns, selector="app.kubernetes.io/instance=shop")["items"]
    expected = {(p["metadata"]["labels"]["app.kubernetes.io/component"], port["name"])
                for p in pods if p["status"].get("phase") == "Running"
                for c in p["spec"]["containers"] for port in c.get("ports", []) if port["name"].endswith("-metrics")}
    # (Worker pods run a statsd_exporter for the in-process agent's per-task metrics.)
    assert {tier for tier, _ in expected} == {"web", "nginx", "redis-cache", "redis-broker", "flower", "worker-default"}

    def all_up():
        active = api("targets")["activeTargets"]
        up = {(t["labels"]["tier"], t["labels"]["endpoint"]) for t in active if t["health"] == "up"}
        return up if up >= expected and all(t["health"] == "up" for t in active) else None
    up = wait_until(all_up, 120, interval=2, what="every exporter scraped through the NetworkPolicies")
    record("prometheus_targets_up", sorted(f"{t}/{p}" for t, p in up))
    def requests_counted():  # scraped every 30 s: a scrape may land while the 20 requests are being counted
        result = api("query", query=f'sum(gunicorn_requests_total{{namespace="{ns}"}})')["result"]
        return result if result and float(result[0]["value"][1]) >= 20 else None
    wait_until(requests_counted, 90, interval=2, what="gunicorn's 20 requests in Prometheus")

    # The in-process agent, with no line of the app's code for it: per-endpoint latency by URL rule, statements
    # per request, an N+1 suspect, and per-task runtime, all in the real Prometheus.
    for _ in range(3):
        get(real_pods, "/db/each/12", cookies={"c": "1"})
    get(real_pods, "/task", cookies={"c": "1"})

    def agent_series(query, at_least: float = 1):
        """The query's result once its first value reaches `at_least` (the exporters are scraped every 30 s)."""
        def reached():
            result = api("query", query=query)["result"]
            return result if result and float(result[0]["value"][1]) >= at_least else None
        return reached
    by_rule = wait_until(agent_series(f'sum by (route) (flaskapp_request_duration_seconds_count{{namespace="{ns}",'
                                      f'tier="web",route="/db/each/<int:count>"}})', 3), 90, interval=2,
                         what="per-endpoint requests from the agent in Prometheus")
    assert float(by_rule[0]["value"][1]) >= 3
    n_plus_one = wait_until(agent_series(f'sum(flaskapp_request_n_plus_one_total{{namespace="{ns}",'
                                         f'route="/db/each/<int:count>"}})', 3), 90, interval=2,
                            what="the N+1 suspect in Prometheus")
    assert float(n_plus_one[0]["value"][1]) >= 3
    queries = api("query", query=f'sum(flaskapp_request_queries_sum{{namespace="{ns}",route="/db/each/<int:count>"}})')
    assert float(queries["result"][0]["value"][1]) >= 36
    tasks = wait_until(agent_series(f'sum by (task) (flaskapp_task_duration_seconds_count{{namespace="{ns}",'
                                    f'tier="worker-default",state="SUCCESS"}})'), 90, interval=2,
                       what="per-task metrics from the worker pods' agent")
    # The operator reads the agent's reports from this Prometheus (PROMETHEUS_URL, set at install): every
    # engine of the example app is held to the plan.
    budget = wait_until(lambda: (c := budget_condition(kube, ns, "shop")).get("status") == "True" and c, 120,
                        interval=2, what="BudgetGuaranteed read from Prometheus")
    assert budget["reason"] == "EveryEngineBounded" and PROMETHEUS_URL in budget["message"], budget
    record("agent_series", {"route_requests": by_rule[0]["value"][1], "n_plus_one": n_plus_one[0]["value"][1],
                            "tasks": {t["metric"]["task"]: t["value"][1] for t in tasks}})
    assert any(t["metric"]["task"].endswith(".add") for t in tasks), tasks
    assert not api("query", query=f'flaskapp_request_duration_seconds_count{{namespace="{ns}",route="/db/each/12"}}')[
        "result"]  # never the raw path

    # The end-to-end alert: no worker for the default queue while tasks wait in it.
    kube.kubectl("patch", "flaskapp", "shop", "-n", ns, "--type=json",
                 "-p", '[{"op": "replace", "path": "/spec/workerPools/0/replicas", "value": 0}]')
    wait_until(lambda: not kube.get("pods", namespace=ns, selector="app.kubernetes.io/component=worker-default")["items"],
               120, what="the worker pool stopped")
    stopped = time.monotonic()
    queued = requests.post(real_pods.ingress_url + "/tasks?n=5", headers={"Host": HOST}, cookies={"c": "1"}, timeout=30)
    assert queued.status_code == 200, queued.text

    def firing():
        return [a for a in api("alerts")["alerts"]
                if a["labels"]["alertname"] == "FlaskAppQueueNotConsumed" and a["state"] == "firing"]

    def evidence():
        for query in (f'redis_key_size{{namespace="{ns}",key="celery"}}', f'flower_worker_online{{namespace="{ns}"}}'):
            print(query, api("query", query=query)["result"])
    # Flower's path fires 2 min after the pool stops; the stalled-queue path (Flower missed the workers'
    # goodbye) 3 + 2 min after.
    alerts = wait_until(firing, 420, interval=5, what="FlaskAppQueueNotConsumed firing", on_timeout=evidence)
    record("alert_fired_seconds_after_pool_stopped", round(time.monotonic() - stopped, 1))
    assert alerts[0]["labels"]["queue"] == "celery" and alerts[0]["labels"]["namespace"] == ns
    assert "kubectl get pods" in alerts[0]["annotations"]["runbook"]

    kube.kubectl("patch", "flaskapp", "shop", "-n", ns, "--type=json",
                 "-p", '[{"op": "replace", "path": "/spec/workerPools/0/replicas", "value": 1}]')
    wait_until(lambda: not firing(), 240, interval=5, what="the alert to resolve once the pool is back")
    kube.kubectl("delete", "namespace", "monitoring", "--wait=false")
    # The story goes on with a Ready app (a restored worker may hang at start, celery/celery#1847, until its
    # liveness probe restarts it: it is ready only once its event loop has beaten).
    wait_ready(kube, ns, "shop", 300, on_timeout=lambda: dump(kube, ns))


# Flask's Celery example, from inside its web pod: queue add(20, 22) through its own view, read the result back.
CELERY_ROUND_TRIP = """
import json, time, urllib.parse, urllib.request
base = "http://127.0.0.1:8000/tasks/"
queued = json.load(urllib.request.urlopen(base + "add", urllib.parse.urlencode({"a": 20, "b": 22}).encode(), 30))
deadline = time.monotonic() + 120
while True:
    result = json.load(urllib.request.urlopen(base + "result/" + queued["result_id"], timeout=30))
    if result["ready"] or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(result))
"""
# Flask-Caching's example, from inside its web pod: the same memoized view twice.
CACHED_TWICE = """
import urllib.request
print([urllib.request.urlopen("http://127.0.0.1:8000/api/add/1/2", timeout=30).read().decode() for _ in range(2)])
"""


def public_app(target, name: str, image: str, wsgi: str, **spec) -> dict:
    """A public app's FlaskApp on the real node: one small pod per tier, monitored, no ingress."""
    small = {"requests": {"cpu": "50m", "memory": "128Mi"}}
    return {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": name}, "spec": {
        "image": image, "imagePullPolicy": "IfNotPresent", "wsgi": wsgi,
        "web": {"replicas": 1, "gunicorn": {"workers": 1}, "resources": small},
        "nginx": {"replicas": 1, **({"image": target.nginx_image} if target.nginx_image else {})},
        "redis": {"cache": {"memory": "32Mi", "cpu": "50m"}, "broker": {"memory": "32Mi", "cpu": "50m"},
                  **({"image": target.redis_image} if target.redis_image else {})},
        "monitoring": {"enabled": True, **({"images": dict(target.monitoring_images)} if target.monitoring_images else {})},
        "ingress": {"enabled": False}, **spec}}


@pytest.mark.order(8)
def test_public_celery_and_caching_apps_unchanged_are_measured_on_real_pods(kube, target, real_pods):
    """Flask 3.1.3's examples/celery and Flask-Caching 2.5.1's examples/hello.py, each taken unchanged from its
    sdist into an image of its own (localcluster/publicapps.py): the Celery app's task runs on the managed broker
    whatever its code says (redis://localhost), and the in-process agent's per-task and per-endpoint series, and
    the cache lookups per endpoint, reach a real Prometheus with no line of the apps' code for them."""
    from flaskapp_operator.render import render

    ns = STATE["ns"]
    apps = [
        public_app(target, "tasks", target.flask_celery_image, "task_app:create_app()",
                   celeryApp="make_celery:celery_app", env=[{"name": "PYTHONPATH", "value": "src"}],
                   workerPools=[{"name": "default", "concurrency": 1, "replicas": 1,
                                 "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}}],
                   beat={"enabled": False}),
        public_app(target, "hello", target.flask_caching_image, "hello:app"),
    ]
    rendered = [o for app in apps
                for o in render({**app, "metadata": {"name": app["metadata"]["name"], "namespace": ns}},
                                redis_password="unused").objects]
    try:
        for app in apps:
            kube.apply(app, ns)
        api = start_prometheus(kube, target, ns, rendered)
        for app in apps:
            wait_ready(kube, ns, app["metadata"]["name"], 300, on_timeout=lambda: dump(kube, ns))

        def web_pod(name: str) -> str:
            return kube.get("pods", namespace=ns, selector=f"app.kubernetes.io/component=web,"
                            f"app.kubernetes.io/instance={name}")["items"][0]["metadata"]["name"]

        def run_in(name: str, script: str) -> str:
            return kube.kubectl("exec", web_pod(name), "-n", ns, "-c", "gunicorn", "--", "python3", "-c", script,
                                timeout=180).stdout

        result = json.loads(run_in("tasks", CELERY_ROUND_TRIP))
        assert result == {"ready": True, "successful": True, "value": 42}, result
        answers = ast.literal_eval(run_in("hello", CACHED_TWICE).strip())
        assert answers[0] == answers[1], answers

        def series(query):
            return lambda: api("query", query=query)["result"]
        tasks = wait_until(series(f'sum(flaskapp_task_duration_seconds_count{{namespace="{ns}",flaskapp="tasks",'
                                  f'task="task_app.tasks.add",state="SUCCESS"}})'), 120, interval=2,
                           what="the Celery example's task in Prometheus")
        requests_by_rule = wait_until(series(
            f'sum(flaskapp_request_duration_seconds_count{{namespace="{ns}",flaskapp="tasks",'
            f'route="/tasks/result/<id>"}})'), 120, interval=2, what="the Celery example's endpoint in Prometheus")
        hits = wait_until(series(f'sum(flaskapp_cache_lookups_total{{namespace="{ns}",flaskapp="hello",'
                                 f'route="/api/add/<int:a>/<int:b>",result="hit"}})'), 120, interval=2,
                          what="Flask-Caching's example's cache hits in Prometheus")
        record("public_apps_measured", {"celery_task_runs": tasks[0]["value"][1],
                                        "celery_result_requests": requests_by_rule[0]["value"][1],
                                        "cache_hits": hits[0]["value"][1]})
        assert float(tasks[0]["value"][1]) >= 1 and float(hits[0]["value"][1]) >= 1
    finally:  # the later tests count the namespace's web pods
        for app in apps:
            kube.kubectl("delete", "flaskapp", app["metadata"]["name"], "-n", ns, "--wait=true", "--timeout=120s",
                         check=False)
        kube.kubectl("delete", "namespace", "monitoring", "--wait=false", check=False)


# -- failures only real pods show ---------------------------------------------------------------------------


def small_app(target, name: str, **changes) -> dict:
    """The e2e app without database, workers, ingress or monitoring, one web pod."""
    app = flaskapp(target, name, **changes)
    spec = app["spec"]
    for section in ("workerPools", "migrations", "database"):
        spec.pop(section, None)
    spec.pop("celeryApp", None)
    spec["beat"] = {"enabled": False}
    spec["ingress"] = {"enabled": False}
    spec["monitoring"] = {"enabled": False}
    spec["web"] = {**spec["web"], "replicas": 1}
    return app


FAILURES = {
    # name: (changes, expected reason, a word the message must hold)
    "bad-image": ({"image": "localhost/flaskapp-e2e/does-not-exist:1"}, "WebImagePullBackOff", "web"),
    "crash-web": ({"wsgi": "app:no_such_factory()"}, "WebCrashLoopBackOff", "exit"),
    # The smallest memory the API allows, then more data than fits (FILLER): killed again and again.
    "oom-redis": ({"redis.cache": {"memory": "8Mi", "cpu": "50m"}}, "RedisCacheOOMKilled", "memory"),
}


# Writes 8 KiB values into the cache Redis without end, reconnecting after each kill. Redis evicts above its
# maxmemory (75 % of the limit), but its resident memory (allocator, buffers) outgrows the 8 MiB limit.
FILLER = """
import os, time, redis
r = redis.Redis(host=os.environ["REDIS_HOST"], password=os.environ["REDIS_PASSWORD"], socket_timeout=3)
i = 0
while True:
    try:
        r.set(f"fill-{i}", os.urandom(8192)); i += 1
    except redis.RedisError:
        time.sleep(0.5)
"""


@pytest.mark.order(9)
def test_failures_end_degraded_naming_tier_and_cause_without_disturbing_a_healthy_app(kube, target, real_pods):
    ns = STATE["ns"]
    healthy_before = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
                      for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/instance=shop")["items"]
                      if p["status"].get("containerStatuses") and p["status"].get("phase") == "Running"}
    started = time.monotonic()
    for name, (changes, _, _) in FAILURES.items():
        kube.apply(small_app(target, name, **changes), ns)
    wait_until(lambda: kube.get("secret", "oom-redis-redis", ns), 60, what="the Redis password Secret")
    filler = start_pod(kube, ns, "oom-redis-filler", target.example_image, ["python", "-c", FILLER],
                       # The web tier's labels: its policy lets it out to its app's Redis (default-deny here).
                       {"app.kubernetes.io/name": "flaskapp", "app.kubernetes.io/instance": "oom-redis",
                        "app.kubernetes.io/component": "web"},
                       env=[{"name": "REDIS_HOST", "value": "oom-redis-redis-cache"},
                            {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
                                "name": "oom-redis-redis", "key": "password"}}}])
    seen = {}
    for name, (_, reason, word) in FAILURES.items():
        # Each app ends Degraded with this reason (a first observation may name another failing tier of
        # the same cause, e.g. nginx, whose init container also runs the app image).
        degraded = wait_until(lambda: (c := conditions(kube, ns, name).get("Degraded", {})).get("status") == "True"
                              and c.get("reason") == reason and c, max(1.0, 120 - (time.monotonic() - started)),
                              what=f"{name} Degraded with {reason}")
        seen[name] = {"reason": degraded["reason"], "message": degraded["message"],
                      "seconds": round(time.monotonic() - started, 1)}
        assert word in degraded["message"].lower(), seen[name]
        assert conditions(kube, ns, name)["Ready"]["status"] == "False"
    record("failures", seen)
    assert max(s["seconds"] for s in seen.values()) <= 120, seen
    # The healthy app in the same namespace: still Ready, same pods, no restart, still serving.
    ready = conditions(kube, ns)["Ready"]
    assert ready["status"] == "True", ready
    healthy_after = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
                     for p in kube.get("pods", namespace=ns, selector="app.kubernetes.io/instance=shop")["items"]
                     if p["metadata"]["name"] in healthy_before}
    assert healthy_after == healthy_before
    assert get(real_pods, "/hello", cookies={"c": "1"}).status_code == 200
    kube.kubectl("delete", "pod", filler, "-n", ns, "--wait=false")
    for name in FAILURES:
        kube.kubectl("delete", "flaskapp", name, "-n", ns, "--wait=false")


# -- the operator's own availability ----------------------------------------------------------------------------


def operator_pods(kube) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in kube.get("pods", namespace="flaskapp-system",
                                                        selector="app.kubernetes.io/name=flaskapp-operator")["items"]
            if not p["metadata"].get("deletionTimestamp")}


def lease_holder(kube) -> str:
    lease = kube.get("lease", "flaskapp-operator", "flaskapp-system") or {}
    return ((lease.get("spec") or {}).get("holderIdentity") or "").split("/")[0]


@pytest.mark.order(9)
def test_the_standby_operator_pod_takes_over_when_the_leader_is_killed(kube, real_pods):
    """The chart runs two operator pods; killing the leader's process (SIGKILL: no Lease release) hands over to
    the standby, which applies a spec change made right after the kill, within 15 s."""
    ns = STATE["ns"]
    pods = operator_pods(kube)
    assert len(pods) == 2, list(pods)
    leader = lease_holder(kube)
    assert leader in pods, (leader, list(pods))
    standby = next(name for name in pods if name != leader)
    started = time.monotonic()
    real_pods.kill_container(pods[leader])
    kube.kubectl("patch", "flaskapp", "shop", "-n", ns, "--type=merge", "-p", '{"spec":{"nginx":{"replicas":2}}}')
    wait_until(lambda: lease_holder(kube) == standby, 60, interval=0.2, what="the standby holds the Lease")
    took_over = time.monotonic() - started
    wait_until(lambda: kube.get("deployment", "shop-nginx", ns)["spec"]["replicas"] == 2, 60, interval=0.2,
               what="the new leader applies the change")
    applied = time.monotonic() - started
    record("operator_failover", {"lease_taken_seconds": round(took_over, 1), "change_applied_seconds": round(applied, 1)})
    assert applied <= 15, (took_over, applied)
    # The killed pod comes back (restarted container or a new pod) and stands by.
    wait_until(lambda: len([p for p in operator_pods(kube).values() if all(
        c.get("ready") for c in p["status"].get("containerStatuses", []))]) == 2, 120, what="two operator pods ready")
    assert lease_holder(kube) == standby
    wait_ready(kube, ns, "shop", 300, on_timeout=lambda: dump(kube, ns))


UPGRADE_SLOTS = 2  # the chart's rolloutPacing.maxConcurrentApps
CHECKSUM = "flaskapp.dev/config-checksum"


def event_times(kube, ns: str, reason: str) -> dict[str, datetime.datetime]:
    """When each FlaskApp got its first Event of this reason (the API server's record, 1 s resolution)."""
    times = {}
    for e in kube.get("events", namespace=ns)["items"]:
        if e["involvedObject"]["kind"] == "FlaskApp" and e["reason"] == reason:
            at = datetime.datetime.fromisoformat((e.get("firstTimestamp") or e["eventTime"]).replace("Z", "+00:00"))
            name = e["involvedObject"]["name"]
            times[name] = min(at, times.get(name, at))
    return times


@pytest.mark.order(9)
def test_a_new_operator_release_rolls_apps_in_waves_on_real_pods(kube, target, real_pods):
    """Three small apps whose web Deployments look as an earlier operator release left them (another pod-template
    checksum and applied hash, the same inputs hash): the operator rolls them to new, ready pods, never more than
    the chart's two apps at a time, and at least one app waits for a slot."""
    ns = STATE["ns"]
    names = [f"wave-{i}" for i in range(3)]
    for name in names:
        kube.apply(small_app(target, name), ns)
    for name in names:
        wait_ready(kube, ns, name, 300, on_timeout=lambda: dump(kube, ns))

    def template(name):
        return kube.get("deployment", f"{name}-web", ns)["spec"]["template"]["metadata"]["annotations"][CHECKSUM]

    current = {name: template(name) for name in names}
    for name in names:
        kube.kubectl("patch", "deployment", f"{name}-web", "-n", ns, "--type=merge", "-p", json.dumps(
            {"metadata": {"annotations": {"flaskapp.dev/applied-hash": "0123456789abcdef"}},
             "spec": {"template": {"metadata": {"annotations": {CHECKSUM: "rendered-by-an-earlier-release"}}}}}))
    wait_until(lambda: set(event_times(kube, ns, "Upgraded")) >= set(names), 300, interval=2,
               what="every app Upgraded")
    started, done = event_times(kube, ns, "UpgradeStarted"), event_times(kube, ns, "Upgraded")
    queued = sorted(set(event_times(kube, ns, "UpgradeQueued")) & set(names))
    rolling_at_once = max(sum(1 for n in names if started[n] <= started[m] < done[n]) for m in names)
    record("upgrade_waves", {"queued": queued, "most_rolling_at_once": rolling_at_once,
                             "seconds": round((max(done.values()) - min(started.values())).total_seconds(), 1)})
    assert queued and rolling_at_once <= UPGRADE_SLOTS, (queued, started, done)
    for name in names:  # real pods of the new templates, ready
        assert template(name) == current[name]
        pods = [p for p in kube.get("pods", namespace=ns, selector=f"app.kubernetes.io/instance={name},"
                                                                  "app.kubernetes.io/component=web")["items"]
                if not p["metadata"].get("deletionTimestamp")]
        assert pods and all(p["metadata"]["annotations"][CHECKSUM] == current[name] and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) for p in pods)
        kube.kubectl("delete", "flaskapp", name, "-n", ns, "--wait=false")


# -- delete --------------------------------------------------------------------------------------------------


@pytest.mark.order(10)
def test_delete_garbage_collects_every_child(kube):
    ns = STATE["ns"]
    kube.kubectl("delete", "flaskapp", "shop", "-n", ns)
    wait_until(lambda: kube.get("deployments,statefulsets,services,configmaps,secrets,jobs,ingresses,"
                                "networkpolicies,poddisruptionbudgets,pods",
                                namespace=ns, selector="app.kubernetes.io/instance=shop")["items"] == [], 180,
               what="children and pods garbage-collected")
    # The broker's volume goes with it (the StatefulSet's PVC retention policy), and nothing else deletes it.
    wait_until(lambda: not [c for c in kube.get("pvc", namespace=ns)["items"]
                            if c["metadata"]["name"] == "data-shop-redis-broker-0"], 180, what="the broker's PVC deleted")


@pytest.mark.order(11)
def test_uninstall_chart_keeps_the_crd(kube):
    helm(kube, "uninstall", "flaskapp-operator", "-n", "flaskapp-system", "--wait")
    assert kube.get("deployment", "flaskapp-operator", "flaskapp-system") is None
    assert kube.get("crd", "flaskapps.flaskapp.dev") is not None
    kube.kubectl("delete", "namespace", STATE["ns"], "--wait=false", check=False)
    kube.kubectl("delete", "namespace", "e2e-db", "--wait=false", check=False)
