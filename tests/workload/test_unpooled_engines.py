"""Engines that no pool size bounds — a NullPool engine and a second engine to the same server, the shapes of apps
not written for the operator — held together to the plan's connections per process by the agent's connection
limit, against a real PostgreSQL under concurrent load. What the processes hold is counted from the kernel's socket
table (pg_stat_activity, reported beside it, also counts a closed connection until its server process has exited);
the bound is recomputed from the rendered objects; the control without the agent shows the same app exceeding it."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from testsupport.stack import Stack
from test_public_apps import drive, flaskr_document, per_pod_bound

pytestmark = pytest.mark.workload
REQUESTS = 300

# An app in the style many are written: its own engines from DATABASE_URL, none of the operator's variables read.
APP = '''
import os

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

app = Flask(__name__)
unpooled = create_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
reports = create_engine(os.environ["DATABASE_URL"])  # a second engine, SQLAlchemy's default pool of 5 + 10


def sleep_on(engine):
    with engine.connect() as connection:
        connection.execute(text("select pg_sleep(0.02)"))


@app.get("/unpooled")
def on_unpooled():
    sleep_on(unpooled)
    return "ok"


@app.get("/reports")
def on_reports():
    sleep_on(reports)
    return "ok"


@app.get("/nested/<int:count>")
def on_nested(count):
    """count connections held at once (a request that needs more than one)."""
    with unpooled.connect() as connection:
        connection.execute(text("select 1"))
        if count > 1:
            on_nested(count - 1)
    return "ok"
'''


def engines_document(agent: bool) -> dict:
    document = copy.deepcopy(flaskr_document(agent))
    document["metadata"]["name"] = "engines"
    document["spec"]["wsgi"] = "engines:app"
    del document["spec"]["migrations"]
    return document


@pytest.fixture
def engines_stack():
    stacks = []

    def start(agent: bool) -> Stack:
        workdir = Path(tempfile.mkdtemp(prefix="flaskapp-engines-"))
        workdir.chmod(0o755)
        app_dir = workdir / "app"
        app_dir.mkdir()
        (app_dir / "engines.py").write_text(APP)
        stack = Stack(workdir, document=engines_document(agent), app_dir=app_dir, static_dir=app_dir,
                      url_scheme="postgresql+psycopg")
        stacks.append(stack)
        return stack.start(with_celery=False)

    yield start
    for stack in stacks:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


class ProcessSockets(threading.Thread):
    """Each gunicorn worker's established TCP connections to PostgreSQL, from the kernel's socket table (psutil),
    every few milliseconds: what the processes hold, whatever pg_stat_activity still shows of closed ones."""

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        self.port, self.pids = stack.ports["postgres"], stack.gunicorn_worker_pids()
        self.peak_per_process = self.peak_total = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            counts = []
            for pid in self.pids:
                try:
                    sockets = psutil.Process(pid).net_connections("tcp")
                except psutil.Error:
                    continue
                counts.append(sum(1 for c in sockets if c.raddr and c.raddr.port == self.port
                                  and c.status == psutil.CONN_ESTABLISHED))
            self.peak_per_process = max([self.peak_per_process, *counts])
            self.peak_total = max(self.peak_total, sum(counts))
            self.done.wait(0.005)


def alternating(i: int) -> str:
    return "/unpooled" if i % 2 else "/reports"


def test_a_nullpool_engine_and_a_second_engine_share_the_plans_connections(engines_stack):
    stack = engines_stack(agent=True)
    bound = per_pod_bound(stack)
    plan = json.loads(stack.env_of("-web")["SQLALCHEMY_ENGINE_OPTIONS"])
    held = ProcessSockets(stack)
    held.start()
    peak, _, statuses = drive(stack, alternating, REQUESTS)
    held.done.set()
    held.join(10)
    print(f"two unbounded engines with the agent: held {held.peak_total} (per process at most "
          f"{held.peak_per_process}), pg_stat_activity peak {peak} (plan for one pod: {bound}), {statuses}")
    assert statuses == {200: REQUESTS}, statuses
    assert 1 <= held.peak_per_process <= plan["pool_size"] + plan["max_overflow"], held.peak_per_process
    assert held.peak_total <= bound, (held.peak_total, bound)
    log = stack.log("gunicorn").read_text()
    assert "together held to the plan's" in log
    assert "is NOT bounded" not in log, log[-3000:]
    # A request that needs more connections at once than a process may hold is served at once (waiting could only
    # end in pool_timeout), and reported.
    started = time.monotonic()
    nested = plan["pool_size"] + plan["max_overflow"] + 1
    assert requests.get(f"{stack.gunicorn_url}/nested/{nested}", timeout=60).status_code == 200
    assert time.monotonic() - started < plan.get("pool_timeout", 30)
    deadline = time.monotonic() + 10
    while "nested connections" not in stack.log("gunicorn").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "a request or task took a second connection while holding one" in stack.log("gunicorn").read_text()


def test_without_the_agent_the_same_engines_exceed_the_plan(engines_stack):
    stack = engines_stack(agent=False)
    bound = per_pod_bound(stack)
    peak, _, statuses = drive(stack, alternating, REQUESTS)
    print(f"two unbounded engines without the agent: peak {peak} connections (plan for one pod: {bound}), "
          f"{statuses}")
    assert peak > bound, (peak, bound, statuses)
