"""The example Flask app our samples and e2e deploy: it consumes the env contract of flaskapp-operator.

gunicorn "app:create_app()" serves it; "celery --app app.celery_app worker" runs its tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

from celery import Celery
from flask import Flask, jsonify, make_response, request, url_for
from flask_caching import Cache
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

db = SQLAlchemy()
cache = Cache()


def make_celery() -> Celery:
    app = Celery("shop", broker=os.environ.get("CELERY_BROKER_URL", "memory://"),
                 backend=os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://"))
    app.conf.update(
        worker_concurrency=int(os.environ.get("CELERY_WORKER_CONCURRENCY", "1")),
        worker_prefetch_multiplier=int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "1")),
        task_acks_late=os.environ.get("CELERY_TASK_ACKS_LATE", "false") == "true",
        task_reject_on_worker_lost=os.environ.get("CELERY_TASK_REJECT_ON_WORKER_LOST", "false") == "true",
        broker_connection_retry_on_startup=True,
    )
    return app


celery_app = make_celery()

# Every variable of flaskapp-operator's env contract (README, "The env contract"). Values that carry
# credentials are reported as SHA-256 digests by /env, never in clear.
CONTRACT = ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "SQLALCHEMY_ENGINE_OPTIONS", "DATABASE_URL", "CACHE_TYPE",
            "CACHE_REDIS_URL", "CACHE_DEFAULT_TIMEOUT", "CACHE_KEY_PREFIX", "CELERY_BROKER_URL",
            "CELERY_RESULT_BACKEND", "CELERY_WORKER_CONCURRENCY", "CELERY_WORKER_PREFETCH_MULTIPLIER",
            "CELERY_TASK_ACKS_LATE", "CELERY_WORKER_MAX_TASKS_PER_CHILD", "CDN_URL", "CACHE_MEMCACHED_SERVERS")
SECRET_VALUED = ("DATABASE_URL", "CACHE_REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


@celery_app.task(name="shop.add")
def add(x: int, y: int) -> int:
    return x + y


@celery_app.task(name="shop.sleep")
def sleep(seconds: float) -> float:
    """A long task: a worker's warm shutdown must let it finish."""
    time.sleep(seconds)
    return seconds


def migrate() -> None:
    """The release step the FlaskApp's migration Job runs: records that it ran, for this image."""
    app = create_app()
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS shop_migrations (id serial PRIMARY KEY, "
                          "hostname text NOT NULL, at timestamptz NOT NULL DEFAULT now())"))
        conn.execute(text("INSERT INTO shop_migrations (hostname) VALUES (:h)"), {"h": os.uname().nodename})


def create_app() -> Flask:
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", "sqlite://"),
        # Pool sizes computed by the operator's connection budget, used as they are; without a database
        # the in-memory SQLite fallback has no pool to size.
        SQLALCHEMY_ENGINE_OPTIONS=json.loads(os.environ.get("SQLALCHEMY_ENGINE_OPTIONS", "{}"))
        if "DATABASE_URL" in os.environ else {},
        CACHE_TYPE=os.environ.get("CACHE_TYPE", "SimpleCache"),
        CACHE_REDIS_URL=os.environ.get("CACHE_REDIS_URL"),
        # A comma-separated host:port list in the env; Flask-Caching wants a list.
        CACHE_MEMCACHED_SERVERS=[s for s in os.environ.get("CACHE_MEMCACHED_SERVERS", "").split(",") if s],
        CACHE_DEFAULT_TIMEOUT=int(os.environ.get("CACHE_DEFAULT_TIMEOUT", "300")),
        CACHE_KEY_PREFIX=os.environ.get("CACHE_KEY_PREFIX", "shop:"),
        CDN_URL=os.environ.get("CDN_URL", ""),
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    )
    db.init_app(app)
    cache.init_app(app)

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.get("/expensive")
    @cache.cached(timeout=60)
    def expensive():
        # Stands for a slow query or render: 50 ms of work, then cached in Redis by Flask-Caching.
        time.sleep(0.05)
        digest = hashlib.sha256(b"report").hexdigest()
        return jsonify(report=digest, computed_at=time.time(), pid=os.getpid())

    @app.get("/uncached")
    def uncached():
        time.sleep(0.05)
        return jsonify(report=hashlib.sha256(b"report").hexdigest(), computed_at=time.time())

    @app.get("/api/items")
    def items():
        rows = [{"id": i, "name": f"item {i}", "description": "a product of the example shop " * 3,
                 "price": round(i * 1.25, 2), "tags": ["example", "shop", f"t{i % 7}"]} for i in range(300)]
        return jsonify(items=rows)

    @app.get("/hello")
    def hello():
        # `pod`: which web pod answered (the e2e suite measures each pod's share of the traffic).
        return jsonify(hello="world", pid=os.getpid(), pod=socket.gethostname())

    @app.get("/me")
    def me():
        # Personalised: must never be served from a shared cache.
        user = request.cookies.get("user") or request.headers.get("Authorization", "anonymous")
        return jsonify(user=user, at=time.time())

    @app.get("/whoami")
    def whoami():
        # Anonymous by request, but answers vary by host and credentials: a shared cache must key and
        # bypass correctly (the micro-cache tests read it).
        return jsonify(host=request.host, api_key=request.headers.get("X-Api-Key"),
                       token=request.headers.get("X-Shop-Token"), user=request.cookies.get("user"),
                       authorization=request.headers.get("Authorization"), at=time.time())

    @app.get("/whereami")
    def whereami():
        # What the app believes about the request: behind the generated edge these come from the trusted
        # proxy's forwarded headers (scheme, host, client address), never from the client itself.
        return jsonify(url=request.url, scheme=request.scheme, host=request.host, remote_addr=request.remote_addr,
                       external_url=url_for("whereami", _external=True))

    @app.route("/notice/<key>", methods=["GET", "PUT"])
    def notice(key: str):
        # Anonymous readers GET, an editor PUTs (with credentials, so never cached): the micro-cache
        # staleness test measures how long readers keep seeing the old text.
        if request.method == "PUT":
            cache.set(f"notice:{key}", request.get_data(as_text=True), timeout=0)
        return jsonify(text=cache.get(f"notice:{key}"), at=time.time())

    @app.get("/login")
    def login():
        # Sets a session cookie: a response no shared cache may store.
        response = jsonify(at=time.time())
        response.set_cookie("session", f"s-{time.time()}")
        return response

    def stamped(**headers: str):
        """A fresh timestamp with the given response headers: shows whether a cache answered."""
        response = jsonify(at=time.time())
        response.headers.update({k.replace("_", "-"): v for k, v in headers.items()})
        return response

    # Answers a shared cache must not store, each for its own reason.
    app.add_url_rule("/private", "private", lambda: stamped(Cache_Control="private"))
    app.add_url_rule("/no-store", "no_store", lambda: stamped(Cache_Control="no-store"))
    app.add_url_rule("/vary-star", "vary_star", lambda: stamped(Vary="*"))
    # Declares its own freshness: the micro-cache keeps it that long instead of its default second.
    app.add_url_rule("/cacheable", "cacheable", lambda: stamped(Cache_Control="public, max-age=30"))

    @app.post("/upload")
    def upload():
        return jsonify(received=len(request.get_data()))

    @app.get("/slow")
    def slow():
        time.sleep(float(request.args.get("seconds", "1")))
        return jsonify(slept=request.args.get("seconds", "1"))

    @app.get("/db")
    def database():
        seconds = float(request.args.get("sleep", "0"))
        with db.engine.connect() as conn:
            if seconds:
                conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
            value = conn.execute(text("SELECT 1")).scalar()
        return jsonify(value=value)

    @app.get("/db/each/<int:count>")
    def database_each(count: int):
        # One query per item, the way a lazy relationship walks a list: an N+1 that the operator's in-process
        # agent counts against this endpoint (spec.agent.nPlusOneThreshold).
        with db.engine.connect() as conn:
            values = [conn.execute(text("SELECT :i + 1"), {"i": i}).scalar() for i in range(min(count, 100))]
        return jsonify(values=values)

    @app.get("/pool")
    def pool():
        p = db.engine.pool
        return jsonify(pool_size=p.size(), max_overflow=p._max_overflow, pool_recycle=p._recycle,
                       pool_pre_ping=p._pre_ping, pool_timeout=p._timeout, pid=os.getpid())

    @app.get("/task")
    def task():
        return jsonify(result=add.delay(2, 3).get(timeout=20))

    @app.post("/tasks")
    def enqueue():
        # Queues n tasks without waiting for them (the durable-broker test queues while no worker runs).
        return jsonify(ids=[add.delay(i, i).id for i in range(int(request.args.get("n", "10")))])

    @app.get("/tasks/<task_id>")
    def task_result(task_id: str):
        result = celery_app.AsyncResult(task_id)
        return jsonify(state=result.state, result=result.result if result.successful() else None)

    @app.get("/env")
    def env():
        def shown(key: str):
            value = os.environ.get(key)
            if value is None or key not in SECRET_VALUED:
                return value
            return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
        return jsonify({k: shown(k) for k in CONTRACT})

    @app.get("/migrations")
    def migrations():
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT hostname FROM shop_migrations ORDER BY id")).scalars().all()
        return jsonify(migrations=rows)

    @app.get("/")
    def index():
        response = make_response(f'<html><head><link rel="stylesheet" href="{app.config["CDN_URL"]}/static/app.css">'
                                 f'</head><body><h1>Example shop</h1></body></html>')
        return response

    return app
