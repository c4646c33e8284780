"""Valkey is the managed cache and broker's default engine, and Redis still works: the rendered server command and
probe take whichever the image has. The session's stack runs Valkey (every other workload test talks to it: Celery,
Flask-Caching, the exporter, the probes); here a second stack with only redis-server on its PATH runs the same
cache and task round trips."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis
import requests

from testsupport.stack import REDIS_PASSWORD, Stack

pytestmark = pytest.mark.workload


def server_of(stack: Stack, component: str) -> dict:
    return redis.Redis(port=stack.ports[component], password=REDIS_PASSWORD).info("server")


def test_the_default_stack_runs_valkey(stack):
    for component in ("redis-cache", "redis-broker"):
        info = server_of(stack, component)
        assert info.get("server_name") == "valkey" and info.get("valkey_version"), info


def test_the_readiness_probe_authenticates_with_valkey_cli(stack):
    """The probe's own command, as the kubelet runs it: the CLI the image has, the password from the env."""
    container = next(o for o in stack.rendered.objects if o["kind"] == "Deployment"
                     and o["metadata"]["name"].endswith("-redis-cache"))["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["exec"]["command"]
    script = probe[-1].replace("-p 6379", f"-p {stack.ports['redis-cache']}")
    env = {**os.environ, **{e["name"]: REDIS_PASSWORD for e in container["env"]}}
    assert subprocess.run([*probe[:-1], script], env=env, timeout=10).returncode == 0
    del env["REDISCLI_AUTH"], env["VALKEYCLI_AUTH"]
    assert subprocess.run([*probe[:-1], script], env=env, timeout=10, capture_output=True).returncode != 0


@pytest.fixture
def redis_only_stack():
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-redis-"))
    workdir.chmod(0o755)
    path = workdir / "bin"
    path.mkdir()
    for program in ("sh", "redis-server", "redis-cli"):
        (path / program).symlink_to(shutil.which(program))
    stack = Stack(workdir, server_path=str(path)).start()
    yield stack
    stack.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_a_redis_image_still_works(redis_only_stack):
    stack = redis_only_stack
    for component in ("redis-cache", "redis-broker"):
        info = server_of(stack, component)
        assert "valkey_version" not in info and info["redis_version"], info
    first = requests.get(stack.url + "/expensive", cookies={"c": "1"}, timeout=30).json()
    assert requests.get(stack.url + "/expensive", cookies={"c": "1"}, timeout=30).json() == first
    task = requests.get(stack.url + "/task", cookies={"c": "1"}, timeout=60)
    assert task.status_code == 200 and task.json() == {"result": 5}
