"""The in-process agent on the oldest library versions the README lists as supported and on the newest (this
suite's own): the same script, in a fresh interpreter, with the agent loaded from the rendered ConfigMap. The
oldest set is installed from PyPI into a virtualenv cached by its pinned list. The same script and checks run on
every supported CPython in test_agent_interpreters.py."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from testsupport.agentvolume import mount_agent
from flaskapp_operator.render import render
from localcluster.publicapps import CACHE

pytestmark = pytest.mark.workload

OLDEST = ("Flask==2.2.5", "Werkzeug==2.2.3", "Flask-SQLAlchemy==2.5.1", "SQLAlchemy==1.4.54", "Flask-Caching==1.11.1",
          "celery==5.3.6", "psycopg2-binary==2.9.10")
# The suite's own versions (its venv: pyproject's workload extras, SQLAlchemy as it resolved there), pinned for the
# interpreters of test_agent_interpreters.py.
NEWEST = tuple(f"{name}=={metadata.version(name)}" for name in (
    "Flask", "Werkzeug", "Flask-SQLAlchemy", "SQLAlchemy", "Flask-Caching", "celery", "psycopg", "psycopg-binary"))
LIBRARIES = {"oldest": OLDEST, "newest": NEWEST}
DRIVERS = {"oldest": "psycopg2", "newest": "psycopg"}  # the newest set has psycopg 3, not psycopg2
PLAN = {"pool_size": 2, "max_overflow": 1, "pool_timeout": 7, "pool_recycle": 99, "pool_pre_ping": True}

SCRIPT = textwrap.dedent("""
    import json, socket, sys
    import celery.signals, flask, flask_caching, flask_sqlalchemy, sqlalchemy
    from flask import Flask
    from flask_caching import Cache
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("unchanged")
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db = SQLAlchemy(app)
    cache = Cache(app)
    with app.app_context():
        engine = db.get_engine() if flask_sqlalchemy.__version__.startswith("2.") else db.engine
        pool = engine.pool
    lite = sqlalchemy.create_engine("sqlite://")

    @app.route("/items/<int:count>")
    def items(count):
        with lite.connect() as c:
            for _ in range(count):
                c.execute(sqlalchemy.text("select 1"))
        cache.get("nothing")
        return "ok"

    app.test_client().get("/items/12")
    print(json.dumps({
        "versions": [flask.__version__, sqlalchemy.__version__, flask_sqlalchemy.__version__, celery.__version__],
        "pool": [type(pool).__name__, pool.size(), pool._max_overflow, pool._timeout],
        "uri": app.config["SQLALCHEMY_DATABASE_URI"], "cache": type(cache.cache).__name__,
        "celery_hooked": any(r for r in celery.signals.task_prerun.receivers),
        "python": sys.version.split()[0],
    }))
""")


def oldest_python() -> Path:
    """A virtualenv with the oldest supported libraries, cached by their pinned list."""
    key = hashlib.sha256("\n".join(OLDEST).encode() + sys.version.encode()).hexdigest()[:12]
    venv = CACHE.parent / "venvs" / f"agent-oldest-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *OLDEST], check=True, timeout=900)
        (venv / ".installed").touch()
    return python


def run_agent_script(python: list[str], libraries: str, tmp_path: Path, path: tuple[str, ...] = ()) -> dict:
    """SCRIPT in a fresh `python` (an argv prefix) with the agent from the rendered ConfigMap first on PYTHONPATH
    (then `path`), finding the set `libraries`: the pool lowered to the plan, the URI and cache type set, Celery
    hooked, the per-endpoint metrics and the N+1 warning. Returns what the script printed."""
    doc = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": "versions"},
           "spec": {"image": "registry.example/app:1", "wsgi": "app:app", "monitoring": {"enabled": True}}}
    objects = render(doc, redis_password="pw").objects
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "versions-web")
    agent = mount_agent(objects, web["spec"]["template"]["spec"], tmp_path / "agent")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(agent), *path]),
           "PYTHONDONTWRITEBYTECODE": "1",
           "DATABASE_URL": f"postgresql+{DRIVERS[libraries]}://u:p@db.internal:5432/app",
           "SQLALCHEMY_ENGINE_OPTIONS": json.dumps(PLAN), "CACHE_TYPE": "SimpleCache",
           "FLASKAPP_AGENT_STATSD": "127.0.0.1:%d" % receiver.getsockname()[1]}
    proc = subprocess.run([*python, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    pins = dict(pin.split("==") for pin in LIBRARIES[libraries])
    assert result["versions"] == [pins["Flask"], pins["SQLAlchemy"], pins["Flask-SQLAlchemy"], pins["celery"]]
    assert result["pool"] == ["QueuePool", PLAN["pool_size"], PLAN["max_overflow"], PLAN["pool_timeout"]]
    assert result["uri"] == env["DATABASE_URL"] and result["cache"] == "SimpleCache"
    assert result["celery_hooked"]
    metrics = ""
    while "flaskapp.request.duration" not in metrics:  # the engine-lowered counter comes first
        metrics += receiver.recv(65536).decode() + "\n"
    receiver.close()
    assert "flaskapp.agent.engines_lowered:1|c|" in metrics
    assert "flaskapp.request.queries:12|h|#route:/items/<int:count>,method:GET" in metrics
    assert "flaskapp.request.n_plus_one:1|c|#route:/items/<int:count>" in metrics
    assert "flaskapp.cache.lookups:1|c|#route:/items/<int:count>,method:GET,result:miss" in metrics
    assert "flaskapp-agent: N+1 suspect in GET /items/<int:count>" in proc.stderr
    return result


@pytest.mark.parametrize("libraries", ["oldest", "newest"])
def test_the_agent_works_on_the_supported_library_versions(libraries, tmp_path):
    python = oldest_python() if libraries == "oldest" else Path(sys.executable)
    run_agent_script([str(python)], libraries, tmp_path)


LIMIT_SCRIPT = textwrap.dedent("""
    import json, os, threading, time
    import sqlalchemy
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    url, port = os.environ["DATABASE_URL"], int(os.environ["DATABASE_PORT"])
    engines = [sqlalchemy.create_engine(url, poolclass=NullPool), sqlalchemy.create_engine(url)]
    # Another server name (not limited); autocommit: pg_stat_activity is a snapshot per transaction.
    monitor = sqlalchemy.create_engine(os.environ["MONITOR_URL"], isolation_level="AUTOCOMMIT")
    peak, server_peak, errors, stop = [0], [0], [], threading.Event()

    def sockets_to_server():
        \"\"\"This process's established TCP connections to the server's port, from /proc (not the agent's count).\"\"\"
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = set()
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            for line in open(table).readlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    found.add(fields[9])
        return found

    def sample():
        with monitor.connect() as c:
            ours = sockets_to_server()  # the monitor's own connection
            while not stop.is_set():
                peak[0] = max(peak[0], len(sockets_to_server() - ours))
                n = c.execute(text("select count(*) from pg_stat_activity where usename = 'shop'")).scalar()
                server_peak[0] = max(server_peak[0], n)

    def work(i):
        for j in range(30):
            try:
                with engines[(i + j) % 2].connect() as c:
                    c.execute(text("select pg_sleep(0.005)"))
            except Exception as error:
                errors.append(repr(error))

    sampler = threading.Thread(target=sample)
    sampler.start()
    time.sleep(0.2)  # the sampler has taken note of its own connection
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    print(json.dumps({"peak": peak[0], "server_peak": server_peak[0], "errors": errors[:3],
                      "version": sqlalchemy.__version__}))
""")


@pytest.mark.parametrize("libraries", ["oldest", "newest"])
def test_the_connection_limit_holds_on_the_supported_library_versions(libraries, stack, tmp_path):
    """Eight threads over a NullPool engine and a pooled one to the same real PostgreSQL: the process holds at most
    the plan's pool_size + max_overflow connections at once (its TCP sockets to the server, counted from /proc),
    and every query is served (idle pooled connections are closed for the waiters), on SQLAlchemy 1.4 with psycopg2
    and 2.x with psycopg 3. (pg_stat_activity's peak is reported too: a closed connection's server process is
    counted until it has exited, which a loaded machine can delay past the agent's 25 ms linger.)"""
    doc = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": "versions"},
           "spec": {"image": "registry.example/app:1", "wsgi": "app:app"}}
    objects = render(doc, redis_password="pw").objects
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "versions-web")
    agent = mount_agent(objects, web["spec"]["template"]["spec"], tmp_path / "agent")
    python = oldest_python() if libraries == "oldest" else Path(sys.executable)
    driver = DRIVERS[libraries]
    port = stack.ports["postgres"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(agent), "PYTHONDONTWRITEBYTECODE": "1",
           "DATABASE_URL": f"postgresql+{driver}://shop:shop@127.0.0.1:{port}/shop",
           "MONITOR_URL": f"postgresql+{driver}://postgres@localhost:{port}/postgres",
           "DATABASE_PORT": str(port), "SQLALCHEMY_ENGINE_OPTIONS": json.dumps(PLAN)}
    proc = subprocess.run([str(python), "-c", LIMIT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    print(f"connection limit on {libraries} libraries: {result}", proc.stderr)
    assert result["errors"] == []
    assert 1 <= result["peak"] <= PLAN["pool_size"] + PLAN["max_overflow"], result
    assert "together held to the plan's 3 connections" in proc.stderr
