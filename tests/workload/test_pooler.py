"""PgBouncer as the operator renders it, between the example app and PostgreSQL, all real processes on loopback:
many more client connections than the server allows, all requests answered, the server never above the
pool PgBouncer's own config file declares."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from testsupport.samples import patched
from testsupport.stack import PG_BIN, WORKLOAD_APP, Stack

MAX_CONNECTIONS, RESERVED = 8, 3  # 5 for the app: PgBouncer (1 pod, 2 at a rollout's peak) gets 2 per pod


@pytest.fixture(scope="module")
def pooled_stack():
    if shutil.which("pgbouncer") is None:
        pytest.fail("missing pgbouncer: run `make debs` (make test does it)")
    doc = patched(yaml.safe_load(WORKLOAD_APP.read_text()), "shop", {
        "database.pooler": {"enabled": True, "replicas": 1},
        "database.maxConnections": MAX_CONNECTIONS, "database.reservedConnections": RESERVED,
        "web.gunicorn.workers": 4, "web.gunicorn.threads": 4})
    doc["metadata"]["namespace"] = "workload"
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-pooler-"))
    workdir.chmod(0o755)
    s = Stack(workdir, document=doc).start(with_celery=False)
    yield s
    s.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def concurrently(work, count: int) -> None:
    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def server_connections(stack: Stack) -> int:
    out = subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(stack.ports["postgres"]), "-U", "postgres",
                          "-tAc", "select count(*) from pg_stat_activity where usename = 'shop'"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def client_connections(stack: Stack) -> int:
    port = stack.ports["pooler"]
    return sum(1 for pid in stack.gunicorn_worker_pids() for c in psutil.Process(pid).net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_many_clients_share_the_pool_and_the_server_stays_within_it(pooled_stack):
    stack = pooled_stack
    config = configparser.ConfigParser(comment_prefixes=(";",), inline_comment_prefixes=(";",), interpolation=None)
    config.read_string((stack.workdir / "pgbouncer" / "pgbouncer.ini").read_text())  # as PgBouncer reads it
    per_pod = int(config["pgbouncer"]["max_db_connections"])
    assert per_pod * 2 <= MAX_CONNECTIONS - RESERVED  # 1 replica + 1 surge pod
    env = stack.env_of("-web")
    assert f"127.0.0.1:{stack.ports['pooler']}" in env["DATABASE_URL"]

    peaks = {"server": 0, "clients": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peaks["server"] = max(peaks["server"], server_connections(stack))
            peaks["clients"] = max(peaks["clients"], client_connections(stack))
            time.sleep(0.05)

    codes: list[int] = []

    def hammer():
        for _ in range(6):  # > 5 runs of the same query per connection: psycopg would prepare it
            codes.append(requests.get(stack.gunicorn_url + "/db?sleep=0.1", timeout=60).status_code)

    sampler = threading.Thread(target=sample)
    sampler.start()
    concurrently(hammer, 24)
    stop.set()
    sampler.join()
    assert codes == [200] * len(codes), f"{len([c for c in codes if c != 200])} failed: see {stack.log('gunicorn')}"
    assert 1 <= peaks["server"] <= per_pod, peaks
    assert peaks["clients"] > per_pod, f"the load never needed more clients than server connections: {peaks}"


def test_psycopg_prepares_break_transaction_pooling_unless_turned_off_as_rendered(pooled_stack):
    """Why the rendered connect_args: psycopg 3 prepares a query on its 6th run; under transaction pooling the next
    transaction may land on another server connection, where that statement does not exist."""
    import json

    import psycopg

    stack = pooled_stack
    url = stack.env_of("-web")["DATABASE_URL"]
    rendered_args = json.loads(stack.env_of("-web")["SQLALCHEMY_ENGINE_OPTIONS"])["connect_args"]

    def errors_with(**connect_args) -> int:
        failures: list[str] = []

        def client():
            with psycopg.connect(url, **connect_args) as conn:
                for i in range(12):
                    try:
                        conn.execute("SELECT pg_sleep(0.01), %s::int", (i,))
                        conn.commit()
                    except psycopg.Error as exc:
                        failures.append(str(exc))
                        conn.rollback()

        concurrently(client, 6)
        return len(failures)

    assert errors_with() > 0, "the default prepares did not break: the control shows nothing"
    assert errors_with(**rendered_args) == 0
