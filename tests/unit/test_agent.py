"""The in-process agent, loaded as a pod loads it: the rendered ConfigMap written where its volume mounts,
PYTHONPATH as rendered, a fresh interpreter per case running real SQLAlchemy, Flask, Flask-SQLAlchemy,
Flask-Caching and Celery. Nothing connects to a database: pools are sized when the engine is created."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testsupport.agentvolume import mount_agent
from testsupport.samples import ROOT, load_sample
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError

FIXED = {"redis_password": "pw", "uid": "u1"}
BUDGETED = "postgresql+psycopg://shop:pw@db.internal:5432/shop"
OTHER = "postgresql+psycopg://shop:pw@analytics.internal:5432/shop"


def _web(objects):
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-web"))
    return deployment["spec"]["template"]["spec"]


def _plan(objects) -> dict:
    """The plan as rendered into the env ConfigMap: what the agent must enforce."""
    env = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env"))
    return json.loads(env["data"]["web.SQLALCHEMY_ENGINE_OPTIONS"])


@pytest.fixture(scope="module")
def rendered():
    doc = load_sample("minimal")
    doc["spec"]["database"] = {"secretName": "db", "maxConnections": 20, "reservedConnections": 2}
    doc["spec"]["monitoring"] = {"enabled": True}
    return render(doc, **FIXED).objects


@pytest.fixture
def agent_env(rendered, tmp_path):
    """The web container's agent-related env, the volume mounted under tmp_path."""
    pod = _web(rendered)
    agent_dir = mount_agent(rendered, pod, tmp_path / "agent")
    container = pod["containers"][0]
    rendered_env = {e["name"]: e.get("value") for e in container["env"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASKAPP_", "CACHE_", "SQLALCHEMY_"))}
    env.update(PYTHONPATH=rendered_env["PYTHONPATH"].replace("/etc/flaskapp/agent", str(agent_dir)),
               DATABASE_URL=BUDGETED, SQLALCHEMY_ENGINE_OPTIONS=json.dumps(_plan(rendered)),
               CACHE_TYPE="RedisCache", CACHE_REDIS_URL="redis://:pw@cache.internal:6379/0",
               CACHE_KEY_PREFIX="hello:", CACHE_DEFAULT_TIMEOUT="300", PYTHONDONTWRITEBYTECODE="1")
    return env


def run(code: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_the_web_pod_mounts_the_agent_first_on_pythonpath(rendered):
    container = _web(rendered)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["PYTHONPATH"]["value"] == "/etc/flaskapp/agent"
    assert {"name": "flaskapp-agent", "mountPath": "/etc/flaskapp/agent", "readOnly": True} in container["volumeMounts"]


def test_engines_for_the_budgeted_server_get_the_plan_and_others_are_left_alone(rendered, agent_env):
    plan = _plan(rendered)
    proc = run(f"""
        import json, sqlalchemy
        from sqlalchemy import engine_from_config
        from sqlalchemy.pool import NullPool
        default = sqlalchemy.create_engine({BUDGETED!r})
        small = sqlalchemy.create_engine({BUDGETED!r}, pool_size=1, max_overflow=0)
        from_config = engine_from_config({{"sqlalchemy.url": {BUDGETED!r}, "sqlalchemy.pool_size": "50"}})
        other = sqlalchemy.create_engine({OTHER!r})
        null = sqlalchemy.create_engine({BUDGETED!r}, poolclass=NullPool)
        own_connect = sqlalchemy.create_engine({BUDGETED!r}, creator=lambda: None)
        connector = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: None)  # Cloud SQL's way
        local = sqlalchemy.create_engine("sqlite://", creator=lambda: None)
        def shape(e):
            p = e.pool
            return [type(p).__name__, p.size() if hasattr(p, "size") else None, getattr(p, "_max_overflow", None),
                    getattr(p, "_timeout", None), getattr(p, "_recycle", None), getattr(p, "_pre_ping", None)]
        print(json.dumps({{n: shape(e) for n, e in [("default", default), ("small", small),
                          ("from_config", from_config), ("other", other), ("null", null)]}}))
    """, agent_env)
    shapes = json.loads(proc.stdout)
    expected = ["QueuePool", plan["pool_size"], plan["max_overflow"], plan["pool_timeout"], plan["pool_recycle"],
                plan["pool_pre_ping"]]
    assert shapes["default"] == expected
    assert shapes["from_config"] == expected
    assert shapes["small"][:3] == ["QueuePool", 1, 0]  # smaller than the plan: the app's choice stays
    assert shapes["other"][:3] == ["QueuePool", 5, 10]  # SQLAlchemy's defaults: not the budgeted server
    assert shapes["null"][0] == "NullPool"
    assert "lowered to the connection plan: pool_size 5 -> %d" % plan["pool_size"] in proc.stderr
    # NullPool and the second, third... engine: no pool size to lower, held by the process's connection limit
    # (tests/workload/test_unpooled_engines.py shows it under load); connections from the app's own creator=
    # cannot be, and are reported.
    assert "NOT bounded by the connection plan: NullPool" not in proc.stderr
    assert "more than one engine to db.internal:5432 in this process: together held to the plan's %d connections" % (
        plan["pool_size"] + plan["max_overflow"]) in proc.stderr
    assert "NOT bounded by the connection plan: a creator= was passed" in proc.stderr
    # A creator= engine whose URL names no server: reported for the budgeted kind of server, not for SQLite.
    assert "engine postgresql+psycopg (no host in its URL) is NOT bounded" in proc.stderr
    assert "sqlite (no host" not in proc.stderr


def test_flask_sqlalchemy_and_flask_caching_get_the_plan_without_app_code(agent_env, rendered):
    plan = _plan(rendered)
    proc = run("""
        import json
        from flask import Flask
        from flask_caching import Cache
        from flask_sqlalchemy import SQLAlchemy
        app = Flask("unchanged")
        app.config["CACHE_KEY_PREFIX"] = "mine:"  # set by the app: kept
        db = SQLAlchemy(app)
        cache = Cache(app)
        with app.app_context():
            pool = db.engine.pool
            print(json.dumps([type(cache.cache).__name__, app.config["CACHE_KEY_PREFIX"],
                              app.config["CACHE_DEFAULT_TIMEOUT"], str(db.engine.url.host), pool.size(),
                              pool._max_overflow]))
    """, agent_env)
    backend, prefix, timeout, host, size, overflow = json.loads(proc.stdout)
    assert backend == "RedisCache" and prefix == "mine:" and timeout == 300
    assert host == "db.internal" and (size, overflow) == (plan["pool_size"], plan["max_overflow"])


def test_every_request_is_measured_by_url_rule_and_an_n_plus_one_is_counted(agent_env):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    agent_env = {**agent_env, "FLASKAPP_AGENT_STATSD": "127.0.0.1:%d" % receiver.getsockname()[1],
                 "FLASKAPP_AGENT_N_PLUS_ONE": "5", "DATABASE_URL": "sqlite://"}
    proc = run("""
        import sqlalchemy
        from flask import Flask
        engine = sqlalchemy.create_engine("sqlite://")
        app = Flask("unchanged")
        @app.route("/post/<int:post_id>")
        def post(post_id):
            with engine.connect() as c:
                for author in range(6):  # one query per author: an N+1
                    c.execute(sqlalchemy.text("select :a"), {"a": author})
            return "ok"
        client = app.test_client()
        client.get("/post/1"); client.get("/post/2"); client.get("/no/such/path")
    """, agent_env)
    metrics = "\n".join(datagrams(receiver))
    assert metrics.count("flaskapp.request.duration:") == 3
    assert "#route:/post/<int:post_id>,method:GET,status:2xx" in metrics  # the rule, never /post/1
    assert "/post/1" not in metrics and "/no/such/path" not in metrics
    assert "route:(unmatched),method:GET,status:4xx" in metrics
    assert metrics.count("flaskapp.request.queries:6|h|") == 2
    assert "flaskapp.request.queries:0" not in metrics  # a request without SQL sends no statement count
    assert metrics.count("flaskapp.request.n_plus_one:1|c|#route:/post/<int:post_id>") == 2
    assert proc.stderr.count("N+1 suspect in GET /post/<int:post_id>") == 1  # once per interval


def datagrams(receiver: socket.socket) -> list[str]:
    """Every datagram the agent sent (it flushes its batch when the process exits, before run() returns)."""
    received = []
    receiver.settimeout(1)
    try:
        while True:
            received.append(receiver.recv(65536).decode())
    except socket.timeout:
        pass
    finally:
        receiver.close()
    return received


def test_metrics_are_batched_into_few_datagrams(agent_env):
    """One sendto for many requests under load (statsd_exporter splits a datagram at newlines), all delivered."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    agent_env = {**agent_env, "FLASKAPP_AGENT_STATSD": "127.0.0.1:%d" % receiver.getsockname()[1]}
    run("""
        from flask import Flask
        app = Flask("unchanged")
        app.add_url_rule("/hello", "hello", lambda: "hi")
        client = app.test_client()
        for _ in range(500):
            client.get("/hello")
    """, agent_env)
    received = datagrams(receiver)
    assert sum(d.count("flaskapp.request.duration:") for d in received) == 500
    assert len(received) < 100, len(received)
    assert all(len(d.encode()) <= 4096 for d in received)


def test_the_image_sitecustomize_still_runs(agent_env, tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    (image / "sitecustomize.py").write_text("import os\nos.environ['IMAGE_SITECUSTOMIZE'] = 'ran'\n")
    env = {**agent_env, "PYTHONPATH": agent_env["PYTHONPATH"] + os.pathsep + str(image)}
    proc = run("import os, sys; print(os.environ.get('IMAGE_SITECUSTOMIZE'), 'flaskapp_agent' in sys.modules)", env)
    assert proc.stdout.split() == ["ran", "True"]


def test_the_agent_fails_open(agent_env):
    """A plan the agent cannot read: one line on stderr, and the app runs exactly as without the agent."""
    env = {**agent_env, "SQLALCHEMY_ENGINE_OPTIONS": "{not json"}
    proc = run(f"""
        import sqlalchemy
        print(sqlalchemy.create_engine({BUDGETED!r}).pool.size())
    """, env)
    assert proc.stdout.strip() == "5"
    assert proc.stderr.count("flaskapp-agent: not started") == 1


def test_a_hook_that_fails_leaves_the_library_working(agent_env, tmp_path):
    """An error inside a hook is logged once and the library works as without the agent: here a Flask-Caching
    backend whose `get` cannot be wrapped (a class with __slots__)."""
    (tmp_path / "slotcache.py").write_text(textwrap.dedent("""
        class SlotCache:
            __slots__ = ("data",)
            def __init__(self): self.data = {}
            def get(self, key): return self.data.get(key)
            def set(self, key, value, timeout=None): self.data[key] = value; return True
        def factory(app, config, args, kwargs):
            return SlotCache()
    """))
    env = {**agent_env, "FLASKAPP_AGENT_STATSD": "127.0.0.1:9", "CACHE_TYPE": "slotcache.factory"}
    proc = run("""
        import flask_caching
        from flask import Flask
        for name in ("one", "two"):
            app = Flask(name)
            cache = flask_caching.Cache(app)
            with app.app_context():
                cache.set("k", 1)
                print(cache.get("k"))
    """, env, cwd=tmp_path)
    assert proc.stdout.split() == ["1", "1"]
    assert proc.stderr.count("flaskapp-agent: cache metrics disabled after an error (AttributeError") == 1


def test_the_agent_is_python_3_9_syntax_and_standard_library_only():
    agent = ROOT / "operator" / "flaskapp_agent"
    proc = subprocess.run([str(Path(sys.executable).parent / "vermin"), "--no-tips", "--violations", "--target=3.9-",
                           "--eval-annotations", str(agent)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stdlib = set(sys.stdlib_module_names) | {"flaskapp_agent"}
    for path in agent.glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] == ["import"] or (words[:1] == ["from"] and not words[1].startswith(".")):
                top = words[1].split(".")[0]
                # Library modules are imported inside hooks only, after the app imported them.
                assert top in stdlib or line.startswith((" ", "\t")), f"{path.name}: {line}"


@pytest.mark.parametrize("name,entry", [
    ("SQLALCHEMY_ENGINE_OPTIONS", {"value": '{"pool_size": 50, "max_overflow": 50}'}),
    ("DATABASE_URL", {"valueFrom": {"secretKeyRef": {"name": "other", "key": "url"}}}),
    ("GUNICORN_CMD_ARGS", {"value": "--workers=9"}),
    ("CACHE_TYPE", {"value": "SimpleCache"}),
])
def test_an_env_entry_that_takes_an_operator_variable_is_refused(name, entry):
    doc = load_sample("minimal")
    doc["spec"]["database"] = {"secretName": "db", "maxConnections": 20}
    doc["spec"]["env"] = [{"name": "FINE", "value": "1"}, {"name": name, **entry}]
    with pytest.raises(SpecError) as refused:
        render(doc, **FIXED)
    assert [e.path for e in refused.value.errors] == ["spec.env[1].name"]
    assert name in str(refused.value)


def test_a_user_pythonpath_follows_the_agent():
    doc = load_sample("minimal")
    doc["spec"]["env"] = [{"name": "PYTHONPATH", "value": "/app/src"}]
    env = {e["name"]: e for e in _web(render(doc, **FIXED).objects)["containers"][0]["env"]}
    assert env["PYTHONPATH"]["value"] == "/etc/flaskapp/agent:/app/src"


def test_agent_disabled_renders_no_trace_of_it():
    doc = load_sample("minimal")
    doc["spec"]["agent"] = {"enabled": False}
    doc["spec"]["env"] = [{"name": "PYTHONPATH", "value": "/app/src"}]
    objects = render(doc, **FIXED).objects
    text = json.dumps(objects)
    assert "flaskapp-agent" not in text and "FLASKAPP_AGENT" not in text
    env = {e["name"]: e for e in _web(objects)["containers"][0]["env"]}
    assert env["PYTHONPATH"]["value"] == "/app/src"
