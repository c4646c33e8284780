"""Celery's probes without the broker (issue 14): a real worker and beat under the rendered probe script, a
real Redis broker stopped and started, processes frozen with SIGSTOP. The probes are run exactly as the
rendered exec commands say; what they must tell is checked against what was done to the processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from testsupport.stack import scratch_stack
from testsupport.waiting import wait_until

pytestmark = pytest.mark.workload

WORKER = "-worker-default"


@pytest.fixture(scope="module")
def probe_stack():
    """A stack of its own (the broker goes down here), with beat enabled."""
    with scratch_stack("flaskapp-probes-", {"beat": {"enabled": True}, "monitoring": {"enabled": False}},
                       with_postgres=False, with_celery=False) as s:
        yield s


def heartbeat_age(state: Path) -> float:
    path = state / "celery.heartbeat"
    return time.time() - path.stat().st_mtime if path.exists() else float("inf")


def max_age(stack, probe: str) -> float:
    container = next(o for o in stack.rendered.objects if o["metadata"]["name"].endswith(WORKER)
                     and o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return float(container[probe]["exec"]["command"][-1])


def test_a_worker_is_ready_once_connected_and_stays_alive_through_a_broker_outage(probe_stack):
    s = probe_stack
    state = s.start_celery("worker", WORKER)
    wait_until(lambda: s.probe(WORKER, "readinessProbe", state) == 0, 60, what="the worker to be ready")
    assert s.probe(WORKER, "livenessProbe", state) == 0

    s.stop_process("redis-broker")
    # Not ready while the broker is away (the consumer lost its connection) ...
    wait_until(lambda: s.probe(WORKER, "readinessProbe", state) != 0, 30, what="readiness to fail without the broker")
    # ... and still alive once the heartbeat is older than liveness allows: restarting would not help.
    wait_until(lambda: heartbeat_age(state) > max_age(s, "livenessProbe") + 1, 60, what="the heartbeat to go stale")
    assert s.probe(WORKER, "livenessProbe", state) == 0
    assert s.procs["worker"].poll() is None

    s._start_redis("redis-broker")
    wait_until(lambda: s.probe(WORKER, "readinessProbe", state) == 0, 60, what="readiness once the broker is back")
    # Connected again: it takes and runs tasks.
    from celery import Celery
    client = Celery(broker=s.env_of(WORKER)["CELERY_BROKER_URL"], backend=s.env_of(WORKER)["CELERY_RESULT_BACKEND"])
    assert client.send_task("shop.add", args=(2, 3)).get(timeout=30) == 5


def test_a_wedged_worker_fails_liveness_and_recovers_when_it_moves_again(probe_stack):
    s = probe_stack
    state = s.workdir / "worker-tmp"
    if "worker" not in s.procs:
        state = s.start_celery("worker", WORKER)
    wait_until(lambda: s.probe(WORKER, "readinessProbe", state) == 0, 60, what="the worker to be ready")
    pid = s.procs["worker"].pid  # the main process: its event loop touches the heartbeat
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: s.probe(WORKER, "livenessProbe", state) != 0, 3 * max_age(s, "livenessProbe"),
                   what="liveness to fail for a frozen worker")
        assert s.probe(WORKER, "readinessProbe", state) != 0
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: s.probe(WORKER, "livenessProbe", state) == 0, 30, what="liveness once it runs again")


def test_warm_shutdown_finishes_the_running_task(probe_stack):
    """SIGTERM (what the kubelet sends at termination) reaches Celery through the probe script: the running
    task completes and its result is stored before the worker exits."""
    s = probe_stack
    state = s.workdir / "worker-tmp"
    if "worker" not in s.procs:
        state = s.start_celery("worker", WORKER)
    wait_until(lambda: s.probe(WORKER, "readinessProbe", state) == 0, 60, what="the worker to be ready")
    from celery import Celery
    env = s.env_of(WORKER)
    client = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    result = client.send_task("shop.sleep", args=(4,))
    wait_until(lambda: _active(client), 30, what="the task to start")
    proc = s.procs.pop("worker")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # to the worker process only, as the kubelet signals PID 1
    proc.wait(60)
    assert result.get(timeout=10) == 4
    grace = next(o for o in s.rendered.objects if o["metadata"]["name"].endswith(WORKER) and o["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert time.monotonic() - started < grace, "the warm shutdown outlasted the pod's grace period"


def _active(client) -> bool:
    replies = client.control.inspect(timeout=1).active() or {}
    return any(tasks for tasks in replies.values())


def test_beat_is_alive_while_it_ticks_and_not_when_frozen(probe_stack):
    s = probe_stack
    state = s.start_celery("beat", "-beat")
    wait_until(lambda: s.probe("-beat", "startupProbe", state) == 0, 60, what="beat's first tick")
    assert s.probe("-beat", "livenessProbe", state) == 0
    pid = s.procs["beat"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # A frozen beat stops ticking: with a 3-second allowance (not the rendered 90) that shows quickly.
        wait_until(lambda: s.probe("-beat", "livenessProbe", state, "3") != 0, 30, what="beat's liveness to fail")
    finally:
        os.kill(pid, signal.SIGCONT)
    # Its next tick comes within --max-interval.
    wait_until(lambda: s.probe("-beat", "livenessProbe", state, "3") == 0, 45, what="beat to tick again")
