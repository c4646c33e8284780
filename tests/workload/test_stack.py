"""The rendered configuration, run with real nginx, gunicorn, redis, celery and postgresql, does what
the operator promises."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import threading
import time

import signal

import psutil
import pytest
import redis
import requests

from testsupport.kube import wait_until
from testsupport.stack import PG_BIN, REDIS_PASSWORD, find


def get(stack, path, **kw):
    return requests.get(stack.url + path, timeout=30, **kw)


# -- static files ---------------------------------------------------------------------------------------

def test_static_files_come_from_nginx_revalidated_unless_fingerprinted(stack):
    before = stack.gunicorn_requests("/static/app.css")
    r = get(stack, "/static/app.css", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    # No content hash in the name: a deploy that changes it must reach returning users.
    assert r.headers["Cache-Control"] == "public, max-age=60, must-revalidate" and r.headers.get("ETag")
    assert r.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in r.headers["Vary"]
    assert "text/css" in r.headers["Content-Type"]
    assert r.text.startswith("/* example shop styles */")
    assert stack.gunicorn_requests("/static/app.css") == before, "gunicorn never saw the static request"


def test_fingerprinted_static_files_are_immutable_for_a_year(stack):
    """A bundler's hashed name (app.3f2a9c1b.css) never changes content: cached for a year, immutable."""
    (stack.workdir / "static" / "app.3f2a9c1b.css").write_text("body{}\n")
    r = get(stack, "/static/app.3f2a9c1b.css")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for unhashed in ("/static/app.js", "/static/logo.svg"):
        assert "immutable" not in get(stack, unhashed).headers["Cache-Control"]


def test_static_revalidation_answers_304(stack):
    first = get(stack, "/static/app.js")
    assert first.status_code == 200
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert get(stack, "/static/app.js", headers={"If-None-Match": etag}).status_code == 304
    assert get(stack, "/static/app.js", headers={"If-Modified-Since": modified}).status_code == 304


def test_images_are_not_gzipped_but_svg_is(stack):
    r = get(stack, "/static/logo.svg", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "image/svg+xml" in r.headers["Content-Type"]
    # Below gzip_min_length (256 bytes) compression would only add overhead.
    assert "Content-Encoding" not in r.headers


# -- micro-cache ----------------------------------------------------------------------------------------

def test_micro_cache_serves_repeated_anonymous_requests(stack):
    time.sleep(1.1)  # a fresh 1 s window
    before = stack.gunicorn_requests("/uncached")
    statuses = [get(stack, "/uncached").headers.get("X-Cache-Status") for _ in range(20)]
    assert statuses[0] in ("MISS", "EXPIRED")
    assert statuses.count("HIT") >= 15
    assert stack.gunicorn_requests("/uncached") - before <= 2


@pytest.mark.parametrize("personal", [{"cookies": {"user": "alice"}}, {"headers": {"Authorization": "Bearer alice"}}],
                         ids=["cookie", "authorization"])
def test_micro_cache_never_stores_personalised_responses(stack, personal):
    time.sleep(1.1)
    before = stack.gunicorn_requests("/me")
    for _ in range(3):
        r = get(stack, "/me", **personal)
        assert r.headers["X-Cache-Status"] == "BYPASS" and r.json()["user"] != "anonymous"
    # gunicorn logs a request after answering it: wait for the three lines, then check there are no more.
    wait_until(lambda: stack.gunicorn_requests("/me") - before >= 3, 10, what="gunicorn's access log")
    assert stack.gunicorn_requests("/me") - before == 3
    # Not stored either: the next anonymous request does not see alice.
    assert get(stack, "/me").json()["user"] == "anonymous"


def test_micro_cache_keys_by_host_and_bypasses_api_keys(stack):
    """Two hosts behind one host-less Ingress never share an entry; API-key clients never get a cached
    answer meant for someone else (both seen live before: a.test's body served to b.test, k1's to k2)."""
    time.sleep(1.1)  # a fresh micro-cache window
    a = get(stack, "/whoami", headers={"Host": "a.test"}).json()
    b = get(stack, "/whoami", headers={"Host": "b.test"}).json()
    assert (a["host"], b["host"]) == ("a.test", "b.test")
    again = get(stack, "/whoami", headers={"Host": "a.test"})
    assert again.headers["X-Cache-Status"] == "HIT" and again.json() == a  # each host has its own entry
    k1 = get(stack, "/whoami", headers={"Host": "k.test", "X-Api-Key": "k1"})
    k2 = get(stack, "/whoami", headers={"Host": "k.test", "X-Api-Key": "k2"})
    assert k1.headers["X-Cache-Status"] == k2.headers["X-Cache-Status"] == "BYPASS"
    assert (k1.json()["api_key"], k2.json()["api_key"]) == ("k1", "k2")
    assert get(stack, "/whoami", headers={"Host": "k.test"}).json()["api_key"] is None


@pytest.mark.parametrize("path", ["/login", "/private", "/no-store", "/vary-star"],
                         ids=["set-cookie", "cache-control-private", "cache-control-no-store", "vary-star"])
def test_micro_cache_never_stores_what_the_app_marks_personal(stack, path):
    time.sleep(1.1)
    first = get(stack, path)
    second = get(stack, path)
    assert second.headers["X-Cache-Status"] != "HIT" and first.json()["at"] != second.json()["at"]


def test_micro_cache_keeps_what_the_app_declares_cacheable_for_its_max_age(stack):
    first = get(stack, "/cacheable").json()
    time.sleep(1.5)  # past the micro-cache's own 1 s: the app's max-age=30 governs
    later = get(stack, "/cacheable")
    assert later.headers["X-Cache-Status"] == "HIT" and later.json() == first


def test_gzip_on_json_responses(stack):
    plain = get(stack, "/api/items", headers={"Accept-Encoding": "identity", "Cookie": "nocache=1"})
    r = requests.get(stack.url + "/api/items", headers={"Accept-Encoding": "gzip", "Cookie": "nocache=1"},
                     stream=True, timeout=30)
    body = r.raw.read()
    assert r.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == plain.json()
    assert len(body) < 0.3 * len(plain.content)


# -- redis ----------------------------------------------------------------------------------------------

def _redis(stack, component):
    return redis.Redis(host="127.0.0.1", port=stack.ports[component], password=REDIS_PASSWORD)


def test_flask_caching_hits_the_cache_redis(stack):
    cache, broker = _redis(stack, "redis-cache"), _redis(stack, "redis-broker")
    first = get(stack, "/expensive", cookies={"c": "1"}).json()  # bypass nginx: Flask-Caching's turn
    second = get(stack, "/expensive", cookies={"c": "1"}).json()
    assert first["computed_at"] == second["computed_at"], "the second answer came from Redis"
    assert any(k.startswith(b"shop:") for k in cache.keys("*"))
    assert not any(k.startswith(b"shop:") for k in broker.keys("*"))
    assert cache.info("stats")["keyspace_hits"] >= 1


def test_eviction_policies(stack):
    cache, broker = _redis(stack, "redis-cache"), _redis(stack, "redis-broker")
    assert cache.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    assert broker.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    maxmemory = int(cache.config_get("maxmemory")["maxmemory"])
    assert maxmemory == stack.rendered.tuning.redis_cache_maxmemory == int(16 * 2**20 * 0.75)
    value = b"x" * 65536
    pipe = cache.pipeline(transaction=False)
    for i in range(2 * maxmemory // len(value)):
        pipe.set(f"fill:{i}", value)
    pipe.execute()  # no OOM: the cache evicts
    assert cache.info("stats")["evicted_keys"] > 0
    assert cache.info("memory")["used_memory"] <= maxmemory * 1.1
    with pytest.raises(redis.exceptions.ResponseError, match="used memory > 'maxmemory'"):  # OOM
        for i in range(2 * maxmemory // len(value)):
            broker.set(f"fill:{i}", value)  # the broker refuses rather than drop queued tasks
    broker.flushall()


# -- celery ---------------------------------------------------------------------------------------------

def test_celery_task_round_trips_through_the_broker(stack):
    r = requests.get(stack.url + "/task", cookies={"c": "1"}, timeout=60)
    assert r.status_code == 200 and r.json() == {"result": 5}
    env = stack.env_of("-worker-default")
    assert env["CELERY_WORKER_CONCURRENCY"] == "2"
    log = stack.log("celery").read_text()
    assert "concurrency: 2 (prefork)" in log


def test_queued_tasks_survive_a_broker_crash(stack):
    """No worker runs; tasks are queued; the broker is killed (SIGKILL) and started again on its data
    directory, as its volume would be; then a worker starts: every task runs. The cache, ephemeral by
    design, comes back empty."""
    from celery import Celery

    env = stack.env_of("-web")
    client = Celery("queue-test", broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    stack.stop_process("celery")
    cache = _redis(stack, "redis-cache")
    cache.set("ephemeral", "1")
    try:
        results = [client.send_task("shop.add", (i, i)) for i in range(50)]
        broker = _redis(stack, "redis-broker")
        assert broker.llen("celery") == 50  # queued, nobody consuming
        stack.restart_redis("redis-broker", signal.SIGKILL)
        stack.restart_redis("redis-cache", signal.SIGKILL)
        assert _redis(stack, "redis-broker").llen("celery") == 50
        assert _redis(stack, "redis-cache").get("ephemeral") is None
    finally:
        stack.start_celery()
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(50)]


# -- database pools -------------------------------------------------------------------------------------

def test_sqlalchemy_engine_has_the_tuned_pool(stack):
    expected = json.loads(stack.env_of("-web")["SQLALCHEMY_ENGINE_OPTIONS"])
    got = get(stack, "/pool", cookies={"c": "1"}).json()
    for key in ("pool_size", "max_overflow", "pool_recycle", "pool_pre_ping", "pool_timeout"):
        assert got[key] == expected[key], key
    tier = stack.rendered.tuning.tier("web")
    assert (got["pool_size"], got["max_overflow"]) == (tier.pool_size, tier.max_overflow)


def test_connections_under_load_stay_within_the_computed_ceiling(stack):
    tier = stack.rendered.tuning.tier("web")
    ceiling = tier.pool_size + tier.max_overflow
    pg_port = stack.ports["postgres"]
    workers = stack.gunicorn_worker_pids()
    assert len(workers) == tier.processes_per_pod
    peak_per_process = {pid: 0 for pid in workers}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for pid in workers:
                conns = [c for c in psutil.Process(pid).net_connections("tcp")
                         if c.raddr and c.raddr.port == pg_port and c.status == psutil.CONN_ESTABLISHED]
                peak_per_process[pid] = max(peak_per_process[pid], len(conns))
            time.sleep(0.02)

    def hammer():
        for _ in range(8):
            requests.get(stack.gunicorn_url + "/db?sleep=0.2", timeout=60)

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=hammer) for _ in range(4 * tier.processes_per_pod * tier.threads_per_process)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    stop.set()
    sampler.join()
    assert max(peak_per_process.values()) <= ceiling, peak_per_process
    assert max(peak_per_process.values()) >= min(ceiling, tier.threads_per_process), "the load reached the pools"
    total = subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres",
                            "-tAc", "select count(*) from pg_stat_activity where usename = 'shop'"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert int(total) <= tier.processes_per_pod * ceiling


# -- limits and timeouts --------------------------------------------------------------------------------

def test_request_body_limit(stack):
    ok = requests.post(stack.url + "/upload", data=b"a" * 512 * 1024, timeout=30)
    assert ok.status_code == 200 and ok.json() == {"received": 512 * 1024}
    too_big = requests.post(stack.url + "/upload", data=b"a" * (2 * 1024 * 1024), timeout=30)
    assert too_big.status_code == 413  # client_max_body_size 1m, answered by nginx


def test_nginx_gives_up_on_a_hung_request_after_the_proxy_timeout(stack):
    conf = find(stack.rendered.objects, "ConfigMap", "-nginx-conf")["data"]["nginx.conf"]
    assert "proxy_read_timeout 7s;" in conf  # gunicorn timeout 2 s + 5 s
    assert get(stack, "/slow?seconds=0.5", cookies={"c": "1"}).status_code == 200
    started = time.monotonic()
    r = get(stack, "/slow?seconds=10", cookies={"c": "1"})
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and 6 <= elapsed < 9.5


def test_gunicorn_runs_the_tuned_processes(stack):
    tuning = stack.rendered.tuning.web
    assert len(stack.gunicorn_worker_pids()) == tuning.workers == 3  # 2 x 1 CPU + 1
    assert stack.env_of("-web")["WEB_CONCURRENCY"] == "3"


def test_text_assets_are_precompressed_and_served_as_is(stack):
    assert (stack.workdir / "static" / "app.css.gz").exists()
    assert not (stack.workdir / "static" / "logo.svg.gz").exists()  # below 1 KiB: not worth it
    r = requests.get(stack.url + "/static/app.css", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=30)
    assert r.raw.read(decode_content=False) == (stack.workdir / "static" / "app.css.gz").read_bytes()
