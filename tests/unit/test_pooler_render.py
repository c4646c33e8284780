"""The PgBouncer tier as rendered: what the server sees is recomputed from the objects (PgBouncer's own
config in its Secret, its Deployment's replicas and surge), independently of the tuning engine."""

from __future__ import annotations

import base64
import configparser
import json
import math
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testsupport.samples import load_sample, patched
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError

URL = "postgresql+psycopg://shop:s%40cret%22@db.example:5433/shop?sslmode=verify-full&application_name=shop"


def pooled(patch: dict | None = None, url: str = URL):
    doc = patched(load_sample("full"), "shop", {"database.pooler": {"enabled": True}, **(patch or {})})
    return render(doc, redis_password="pw", database_url=url)


def by_key(objects):
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def pooler_files(objects) -> dict[str, str]:
    secret = by_key(objects)[("Secret", "shop-pooler")]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def ini(objects) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",), comment_prefixes=(";",), interpolation=None)
    parser.read_string(pooler_files(objects)["pgbouncer.ini"])
    return parser


def server_connections_from_objects(objects) -> int:
    """PgBouncer's max_db_connections per pod x its pods at a rolling update's peak, plus every tier that
    still connects to the server directly (its DATABASE_URL from the user's Secret)."""
    objs = by_key(objects)
    pooler = objs[("Deployment", "shop-pooler")]
    surge = pooler["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert surge == "25%"
    pods = pooler["spec"]["replicas"] + math.ceil(pooler["spec"]["replicas"] * 0.25)
    per_pod = int(ini(objects)["pgbouncer"]["max_db_connections"])
    direct = 0
    env = objs[("ConfigMap", "shop-env")]["data"]
    for o in objects:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            ref = next((e["valueFrom"]["secretKeyRef"] for e in c.get("env", []) if e["name"] == "DATABASE_URL"), None)
            if ref and ref["name"] == "shop-db":
                component = o["metadata"]["labels"]["app.kubernetes.io/component"]
                opts = json.loads(env[f"{component}.SQLALCHEMY_ENGINE_OPTIONS"])
                assert o["kind"] == "Job", f"{component} bypasses the pooler"
                direct += opts["pool_size"] + opts["max_overflow"]
    return pods * per_pod + direct


def test_the_app_connects_to_pgbouncer_which_connects_to_the_server():
    r = pooled()
    files = pooler_files(r.objects)
    app_url = urlsplit(files["url"])
    assert (app_url.scheme, app_url.hostname, app_url.port, app_url.path) == (
        "postgresql+psycopg", "shop-pooler.default.svc", 6432, "/shop")
    assert "sslmode" not in app_url.query and "application_name=shop" in app_url.query
    assert (app_url.username, app_url.password) == ("shop", "s%40cret%22")  # still percent-encoded
    config = ini(r.objects)
    assert config["databases"]["shop"] == "host='db.example' port=5433 dbname='shop' user='shop'"  # quoted
    assert config["pgbouncer"]["pool_mode"] == "transaction"
    assert config["pgbouncer"]["server_tls_sslmode"] == "verify-full"
    assert files["userlist.txt"] == '"shop" "s@cret"""\n'  # the quote doubled (auth_file format)
    objs = by_key(r.objects)
    web_env = objs[("Deployment", "shop-web")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shop-pooler", "key": "url"}}} in web_env
    job = next(o for o in r.objects if o["kind"] == "Job")
    job_env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}}} in job_env
    assert ("Service", "shop-pooler") in objs and ("PodDisruptionBudget", "shop-pooler") in objs


def test_transaction_mode_turns_psycopg_prepares_off_and_session_mode_keeps_them():
    env = by_key(pooled().objects)[("ConfigMap", "shop-env")]["data"]
    assert json.loads(env["web.SQLALCHEMY_ENGINE_OPTIONS"])["connect_args"] == {"prepare_threshold": None}
    assert json.loads(env["web.SQLALCHEMY_ENGINE_OPTIONS"])["pool_pre_ping"] is True
    assert "connect_args" not in json.loads(env["migrations.SQLALCHEMY_ENGINE_OPTIONS"])  # direct
    for patch, url in (({"database.pooler": {"enabled": True, "poolMode": "session"}}, URL),
                       ({"database.pooler": {"enabled": True, "preparedStatements": True}}, URL),
                       ({}, "postgresql+psycopg2://shop:pw@db/shop")):  # psycopg2 never prepares
        env = by_key(pooled(patch, url).objects)[("ConfigMap", "shop-env")]["data"]
        assert "connect_args" not in json.loads(env["web.SQLALCHEMY_ENGINE_OPTIONS"])
    plain = by_key(pooled({}, "postgresql://shop:pw@db/shop").objects)[("ConfigMap", "shop-env")]["data"]
    assert "connect_args" in json.loads(plain["web.SQLALCHEMY_ENGINE_OPTIONS"])  # SQLAlchemy 2.1: psycopg
    prepared = ini(pooled({"database.pooler": {"enabled": True, "preparedStatements": True}}).objects)
    assert prepared["pgbouncer"]["max_prepared_statements"] == "200"


@settings(max_examples=150, deadline=None)
@given(max_connections=st.integers(10, 3000), reserved=st.integers(0, 9), replicas=st.integers(1, 20),
       web_max=st.integers(2, 300), pool_size=st.one_of(st.none(), st.integers(1, 200)),
       migrations=st.booleans())
def test_the_server_never_sees_more_than_the_budget_however_many_clients(max_connections, reserved, replicas,
                                                                           web_max, pool_size, migrations):
    pooler = {"enabled": True, "replicas": replicas, **({"poolSize": pool_size} if pool_size else {})}
    patch = {"database.pooler": pooler, "database.maxConnections": max_connections,
             "database.reservedConnections": reserved, "web.autoscaling.maxReplicas": web_max}
    if not migrations:
        patch["migrations"] = None
    r = pooled(patch)
    available = max_connections - reserved
    server = server_connections_from_objects(r.objects)
    assert server == r.tuning.budget.peak_connections
    if r.feasible:
        assert server <= available
        # Not capped: the clients may far exceed the server's connections.
        assert by_key(r.objects)[("HorizontalPodAutoscaler", "shop-web")]["spec"]["maxReplicas"] == web_max
        clients = r.tuning.report()["pooler"]["clientConnectionsAtPeak"]
        assert int(ini(r.objects)["pgbouncer"]["max_client_conn"]) >= clients
        if pool_size is None:  # the largest pools that fit: one more per pod would not
            pods = replicas + math.ceil(replicas * 0.25)
            assert server + pods > available
    else:
        assert server > available and "PgBouncer" in r.tuning.budget.message


@pytest.mark.parametrize("url,problem", [
    ("mysql://u:p@db/shop", "postgresql://"),
    ("postgresql://db/shop", "no user"),
    ("postgresql://u:p@db/", "no database name"),
    ("postgresql://u:p@db:port/shop", "port"),
])
def test_a_url_the_pooler_cannot_use_is_refused_naming_the_secret(url, problem):
    with pytest.raises(SpecError) as err:
        pooled(url=url)
    assert "Secret shop-db key url" in str(err.value) and problem in str(err.value)


def test_the_pooler_and_the_migration_reach_the_port_the_database_url_names():
    """networkPolicy.databasePort defaults to 5432; a URL on another port would leave PgBouncer (and the migration,
    which connects directly) blocked by their own egress policy."""
    objects = by_key(pooled(url="postgresql://shop:pw@db.example:5433/shop").objects)
    for name in ("shop-pooler", "shop-migrations"):
        ports = [p["port"] for rule in objects[("NetworkPolicy", name)]["spec"]["egress"] for p in rule["ports"]]
        assert 5433 in ports and 5432 not in ports, (name, ports)


def test_session_pooling_with_more_client_connections_than_server_pools_is_infeasible():
    """Recomputed from the rendered objects: the app's client connections at peak (gunicorn workers x the engine
    plan per pod, at the autoscaler's maximum) against PgBouncer's pools (pods x default_pool_size)."""
    for mode in ("transaction", "session"):
        r = pooled({"database.pooler.poolMode": mode, "database.pooler.replicas": 1, "database.maxConnections": 30})
        objects = by_key(r.objects)
        config = ini(r.objects)
        serving = objects[("Deployment", "shop-pooler")]["spec"]["replicas"] * int(config["pgbouncer"]["default_pool_size"])
        env = objects[("ConfigMap", "shop-env")]["data"]
        plan = json.loads(env["web.SQLALCHEMY_ENGINE_OPTIONS"])
        web = (objects[("HorizontalPodAutoscaler", "shop-web")]["spec"]["maxReplicas"] * int(env["web.WEB_CONCURRENCY"])
               * (plan["pool_size"] + plan["max_overflow"]))
        assert web > serving  # the web tier alone, at its maximum, opens more client connections than that
        assert r.feasible == (mode == "transaction"), r.tuning.report()["budget"]["message"]
