"""spec.redis.cache.engine memcached: Debian's memcached started with the rendered command, the example app's
Flask-Caching configured only by the rendered env (CACHE_TYPE, CACHE_MEMCACHED_SERVERS), all on loopback."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import requests
import yaml

from testsupport.samples import patched
from testsupport.stack import WORKLOAD_APP, Stack


@pytest.fixture(scope="module")
def memcached_stack():
    if shutil.which("memcached") is None:
        pytest.fail("missing memcached: run `make debs` (make test does it)")
    doc = patched(yaml.safe_load(WORKLOAD_APP.read_text()), "shop", {
        "redis.cache": {"engine": "memcached", "memory": "64Mi"}, "workerPools": [], "database": None})
    doc["metadata"]["namespace"] = "workload"
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-memcached-"))
    workdir.chmod(0o755)
    s = Stack(workdir, document=doc).start(with_postgres=False, with_celery=False)
    yield s
    s.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def memcached_stats(port: int) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += s.recv(65536)
    return {parts[1]: parts[2] for line in data.decode().splitlines() if (parts := line.split()) and parts[0] == "STAT"}


def test_flask_caching_stores_in_the_rendered_memcached(memcached_stack):
    stack = memcached_stack
    env = stack.env_of("-web")
    assert env["CACHE_TYPE"] == "MemcachedCache" and "CACHE_REDIS_URL" not in env
    assert env["CACHE_MEMCACHED_SERVERS"] == f"127.0.0.1:{stack.ports['memcached']}"
    stats = memcached_stats(stack.ports["memcached"])
    assert int(stats["limit_maxbytes"]) == 48 * 1024 * 1024  # 75 % of the 64 Mi container limit
    before = int(stats["get_hits"])
    # Two different cookies: nginx's micro-cache steps aside, so both reach gunicorn; Flask-Caching answers the
    # second from memcached with the first one's body.
    a = requests.get(stack.url + "/expensive", cookies={"c": "1"}, timeout=30)
    b = requests.get(stack.url + "/expensive", cookies={"c": "2"}, timeout=30)
    assert a.status_code == b.status_code == 200
    assert a.json()["computed_at"] == b.json()["computed_at"]
    after = memcached_stats(stack.ports["memcached"])
    assert int(after["get_hits"]) > before and int(after["curr_items"]) >= 1
