"""A public Flask app, run unchanged behind the rendered configuration: real gunicorn, real PostgreSQL with a
small max_connections, its own migration command as the migration Job runs it, and the in-process agent mounted
as the pod mounts it. Under concurrent load the connections, sampled from pg_stat_activity, stay within the plan
only because of the agent: with spec.agent off the same app, same load, opens more than the plan gave it.

The bound is recomputed from the rendered objects (gunicorn's --workers in GUNICORN_CMD_ARGS times pool_size +
max_overflow in SQLALCHEMY_ENGINE_OPTIONS), not with the tuning engine's formula."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
import requests

from localcluster.publicapps import FLASK_CACHING_HELLO, FLASK_CELERY, FLASKR, PublicApp
from testsupport.stack import REDIS_PASSWORD, VENV_BIN, Stack, find

pytestmark = pytest.mark.workload
CLIENTS = 16
REQUESTS = 400


def flaskr_document(agent: bool) -> dict:
    return {
        "apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp",
        "metadata": {"name": "flaskr", "namespace": "workload"},
        "spec": {
            "image": "registry.example/flaskr:2.5.1", "wsgi": FLASKR.wsgi,
            "web": {"replicas": 1, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "gunicorn": {"workerClass": "gthread", "workers": 3, "threads": 4}},
            "database": {"secretName": "flaskr-db", "maxConnections": 10, "reservedConnections": 3},
            "migrations": {"command": ["flask", "--app", "flaskr", "init-db"]},
            "monitoring": {"enabled": True},
            "agent": {"enabled": agent},
        },
    }


def per_pod_bound(stack: Stack) -> int:
    """Connections one web pod may hold, from what was rendered."""
    env = stack.env_of("-web")
    workers = int(re.search(r"--workers=(\d+)", env["GUNICORN_CMD_ARGS"]).group(1))
    plan = json.loads(env["SQLALCHEMY_ENGINE_OPTIONS"])
    return workers * (plan["pool_size"] + plan["max_overflow"])


def run_migration(stack: Stack) -> None:
    """The migration Job's container, as a local process: its command, its env, the app's directory."""
    job = find(stack.rendered.objects, "Job", "")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = stack.env_of(job["metadata"]["name"], kind="Job")
    command = [str(VENV_BIN / container["command"][0]), *container["command"][1:]]
    subprocess.run(command, env={**os.environ, **env}, cwd=stack.app_dir, check=True, capture_output=True,
                   timeout=120)


class ConnectionSampler(threading.Thread):
    """The app user's connections in pg_stat_activity, every 20 ms, from a superuser session."""

    def __init__(self, port: int, user: str):
        super().__init__(daemon=True)
        self.port, self.user, self.peak, self.samples = port, user, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            while not self.done.is_set():
                count = conn.execute("select count(*) from pg_stat_activity where usename = %s",
                                     (self.user,)).fetchone()[0]
                self.peak, self.samples = max(self.peak, count), self.samples + 1
                self.done.wait(0.02)


def drive(stack: Stack, path_of=lambda i: "/", requests_count: int = REQUESTS) -> tuple[int, int, dict[int, int]]:
    """CLIENTS concurrent clients, requests_count requests straight to gunicorn, the i-th for path_of(i) (by
    default the index: one query each, a session per request); returns (peak connections, failed requests,
    statuses)."""
    sampler = ConnectionSampler(stack.ports["postgres"], "shop")
    sampler.start()
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def one(i):
        try:
            status = requests.get(stack.gunicorn_url + path_of(i), timeout=60).status_code
        except requests.RequestException:
            status = 0
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(requests_count)))
    deadline = time.monotonic() + 5
    while sampler.samples < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    sampler.done.set()
    sampler.join(10)
    return sampler.peak, sum(n for s, n in statuses.items() if s != 200), statuses


def start_public(app: PublicApp, document: dict, static: str | None = None, celery: bool = False) -> Stack:
    source = app.source()
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-public-"))
    workdir.chmod(0o755)
    static_dir = source / static if static else workdir / "no-static-files"
    static_dir.mkdir(exist_ok=True)
    # The Secret's URL names psycopg 3, the driver the app's image would install.
    stack = Stack(workdir, document=document, app_dir=source, static_dir=static_dir, url_scheme="postgresql+psycopg")
    stack.start(with_postgres="database" in document["spec"], with_celery=celery)
    return stack


def sign_up_and_post(stack: Stack) -> None:
    """A user registers, logs in and writes a post: the tables the migration created work."""
    with requests.Session() as s:
        form = {"username": "ada", "password": "lovelace"}
        assert s.post(stack.gunicorn_url + "/auth/register", data=form, timeout=30).status_code == 200
        assert s.post(stack.gunicorn_url + "/auth/login", data=form, timeout=30).status_code == 200
        s.post(stack.gunicorn_url + "/create", data={"title": "Hello", "body": "from flaskr"}, timeout=30)
        assert "from flaskr" in s.get(stack.gunicorn_url + "/", timeout=30).text


@pytest.fixture
def public_stack():
    stacks = []

    def start(*args, **kwargs) -> Stack:
        stack = start_public(*args, **kwargs)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


def test_flaskr_unchanged_stays_within_the_connection_plan_with_the_agent(public_stack):
    stack = public_stack(FLASKR, flaskr_document(agent=True), static="flaskr/static")
    run_migration(stack)
    sign_up_and_post(stack)
    bound = per_pod_bound(stack)
    peak, failed, statuses = drive(stack)
    print(f"flaskr with the agent: peak {peak} connections (plan for one pod: {bound}), statuses {statuses}")
    assert failed == 0, statuses
    assert 1 <= peak <= bound, (peak, bound)
    assert "lowered to the connection plan: pool_size 5 -> " in stack.log("gunicorn").read_text()
    # Per-endpoint metrics in the web pod's statsd_exporter: the URL rule, its statements, no raw paths.
    # (The exporter handles UDP datagrams asynchronously: wait until it has counted the load's requests.)
    deadline = time.monotonic() + 30
    while True:
        metrics = requests.get(stack.metrics_url("statsd-exporter", "web"), timeout=10).text
        served = re.search(r'flaskapp_request_duration_seconds_count\{method="GET",route="/",status="2xx"\} (\S+)',
                           metrics)
        if (served and float(served.group(1)) >= REQUESTS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served and float(served.group(1)) >= REQUESTS, metrics[-3000:]
    assert re.search(r'flaskapp_request_queries_count\{method="GET",route="/"\} \d', metrics)
    assert 'method="POST",route="/auth/register"' in metrics


def test_flaskr_unchanged_exceeds_the_plan_without_the_agent(public_stack):
    """The control: the same app and load with spec.agent off opens more connections than the plan counts for
    one pod (SQLAlchemy's default pool of 5 + 10 per process; only the threads limit it)."""
    stack = public_stack(FLASKR, flaskr_document(agent=False), static="flaskr/static")
    run_migration(stack)
    bound = per_pod_bound(stack)
    peak, failed, statuses = drive(stack)
    print(f"flaskr without the agent: peak {peak} connections (plan for one pod: {bound}), statuses {statuses}")
    assert peak > bound, (peak, bound, statuses)


def wait_for_metric(url: str, pattern: str, timeout: float = 30) -> re.Match:
    """The first match of `pattern` in the exporter's metrics, waiting while the exporter takes in datagrams."""
    deadline = time.monotonic() + timeout
    while True:
        text = requests.get(url, timeout=10).text
        found = re.search(pattern, text)
        if found or time.monotonic() > deadline:
            assert found, f"{pattern} not in {url}:\n{text[-3000:]}"
            return found
        time.sleep(0.2)


def test_flasks_celery_example_unchanged_runs_its_tasks_on_the_managed_broker(public_stack):
    document = {
        "apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp",
        "metadata": {"name": "tasks", "namespace": "workload"},
        "spec": {
            "image": "registry.example/flask-celery:3.1.3", "wsgi": FLASK_CELERY.wsgi,
            "celeryApp": "make_celery:celery_app",
            "web": {"replicas": 1, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            "workerPools": [{"name": "default", "concurrency": 2, "replicas": 1}],
            "monitoring": {"enabled": True},
            # The package lives under src/ (the image would `pip install .`): a relative PYTHONPATH, after the agent's.
            "env": [{"name": "PYTHONPATH", "value": "src"}],
        },
    }
    stack = public_stack(FLASK_CELERY, document, celery=True)
    assert stack.env_of("-web")["PYTHONPATH"].endswith(":src")
    queued = requests.post(stack.gunicorn_url + "/tasks/add", data={"a": 20, "b": 22}, timeout=30)
    assert queued.status_code == 200, queued.text
    result_id = queued.json()["result_id"]
    deadline = time.monotonic() + 60
    while not (result := requests.get(f"{stack.gunicorn_url}/tasks/result/{result_id}", timeout=30).json())["ready"]:
        assert time.monotonic() < deadline, f"task {result_id} not done: " + stack.log("celery").read_text()[-3000:]
        time.sleep(0.2)
    assert result == {"ready": True, "successful": True, "value": 42}
    # The task went through the managed broker, whatever the app's code says (redis://localhost).
    assert "redis://:**@127.0.0.1:%d" % stack.ports["redis-broker"] in stack.log("celery").read_text()
    # Per-task metrics from the worker pod's own statsd_exporter, per-endpoint from the web pod's.
    wait_for_metric(stack.metrics_url("statsd-exporter", "worker-default"),
                    r'flaskapp_task_duration_seconds_count\{state="SUCCESS",task="task_app.tasks.add"\} 1')
    wait_for_metric(stack.metrics_url("statsd-exporter", "web"),
                    r'flaskapp_request_duration_seconds_count\{method="GET",route="/tasks/result/<id>",status="2xx"\}')


def test_flask_cachings_example_unchanged_is_measured_and_keeps_its_own_cache(public_stack):
    document = {
        "apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp",
        "metadata": {"name": "hello", "namespace": "workload"},
        "spec": {"image": "registry.example/flask-caching-hello:2.5.1", "wsgi": FLASK_CACHING_HELLO.wsgi,
                 "web": {"replicas": 1, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                         "gunicorn": {"workers": 1}},
                 "monitoring": {"enabled": True}},
    }
    stack = public_stack(FLASK_CACHING_HELLO, document)
    first = requests.get(stack.gunicorn_url + "/api/add/1/2", timeout=30).text
    assert requests.get(stack.gunicorn_url + "/api/add/1/2", timeout=30).text == first  # memoized
    url = stack.metrics_url("statsd-exporter", "web")
    rule = 'route="/api/add/<int:a>/<int:b>"'  # (the exporter sorts labels: method, result, route)
    # Lookups of the backend (memoize also reads its version keys): the second request hit where the first missed.
    misses = wait_for_metric(url, r'flaskapp_cache_lookups_total\{method="GET",result="miss",%s\} (\d+)' % rule)
    hits = wait_for_metric(url, r'flaskapp_cache_lookups_total\{method="GET",result="hit",%s\} (\d+)' % rule)
    assert int(misses.group(1)) >= 1 and int(hits.group(1)) >= 1
    # hello.cfg sets CACHE_TYPE = SimpleCache: the app's own choice is kept (the agent only fills keys the app
    # leaves unset), so the managed cache Redis holds nothing.
    cache = redis.Redis(port=stack.ports["redis-cache"], password=REDIS_PASSWORD)
    assert cache.dbsize() == 0
