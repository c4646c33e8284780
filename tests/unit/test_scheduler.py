"""Scheduling of passes: one at a time per FlaskApp however many wait, coalesced requests, back-off, resyncs.

The scheduler runs on an event loop whose clock is virtual (looptime): a timer 30 s away fires as soon as the loop
has nothing else to do, so these tests never wait on the wall clock; passes run in the scheduler's real threads.
"""

from __future__ import annotations

import asyncio
import threading

import kopf
import looptime
import pytest
from kubernetes.client.rest import ApiException

from flaskapp_operator import metrics
from flaskapp_operator.cache import WatchCache
from flaskapp_operator.scheduler import RETRY_MAX_SECONDS, Scheduler


class Cache(WatchCache):
    """A watch cache that has listed: these FlaskApps (namespace, name), nothing else."""

    def __init__(self, apps=()):
        super().__init__()
        self.apps = list(apps)

    def flaskapp_keys(self):
        return list(self.apps)


def scheduler(run_pass, workers: int = 1, cache: Cache | None = None) -> Scheduler:
    made = Scheduler(cache or Cache(), connect=lambda write_guard: object(), workers=workers, run_pass=run_pass)
    made.cache_ready.set()
    return made


def run(scenario, timeout: float = 600):
    """Run a scenario on a fresh loop with a virtual clock starting at 0 (timeout: in that clock's seconds)."""
    loop = looptime.new_event_loop(start=0, _enabled=True)
    try:
        return loop.run_until_complete(asyncio.wait_for(scenario(), timeout))
    finally:
        loop.close()


class PassLog:
    """A scheduler's pass that records when (on the scheduler's loop clock) and for which app it ran; the first
    `failures` passes fail as an API server error would."""

    def __init__(self, failures: int = 0):
        self.failures, self.passes, self.loop = failures, [], None

    def __call__(self, cluster, namespace, name, pacer=None):
        self.passes.append((self.loop.time(), name))
        if len(self.passes) <= self.failures:
            raise ApiException(status=500, reason="boom")


@pytest.fixture(autouse=True)
def no_app_states(monkeypatch):
    monkeypatch.setattr(metrics.APP_STATES, "record", lambda *args: None)


def test_passes_of_one_app_never_overlap_however_many_wait():
    running, most, entered = [0], [0], threading.Semaphore(0)
    guard, release = threading.Lock(), threading.Event()

    def slow_pass(cluster, namespace, name, pacer=None):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        entered.release()
        release.wait(10)
        with guard:
            running[0] -= 1

    r = scheduler(slow_pass, workers=8)

    async def burst():
        first = [asyncio.create_task(r.reconcile_now("ns", "app")) for _ in range(3)]
        await asyncio.get_running_loop().run_in_executor(None, entered.acquire)  # the first pass runs
        second = [asyncio.create_task(r.reconcile_now("ns", "app")) for _ in range(3)]  # while 2 wait
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*first, *second)

    run(burst)
    assert most[0] == 1
    assert r.tracked_apps == 0


def test_failures_back_off_exponentially_up_to_a_cap_and_reset_on_success():
    outcome = {"fail": True}

    def flaky(cluster, namespace, name, pacer=None):
        if outcome["fail"]:
            raise ApiException(status=500, reason="boom")

    r = scheduler(flaky)
    delays = []

    async def attempts():
        for _ in range(12):
            with pytest.raises(kopf.TemporaryError) as err:
                await r.reconcile_now("ns", "app")
            delays.append(err.value.delay)
        outcome["fail"] = False
        await r.reconcile_now("ns", "app")

    run(attempts)
    assert delays[:4] == [1, 2, 4, 8]
    assert max(delays) == RETRY_MAX_SECONDS and delays[-1] == RETRY_MAX_SECONDS
    assert r.retry_delay(("ns", "app")) == 1 and r.tracked_apps == 0


def test_a_failed_background_pass_is_retried_after_its_delay():
    log = PassLog(failures=2)
    r = scheduler(log)

    async def scenario():
        log.loop = asyncio.get_running_loop()
        r.start(log.loop, resync_seconds=3600)
        r.request("ns", "app", delay=0, trigger="Deployment")
        while len(log.passes) < 3:
            await asyncio.sleep(0.01)
        await r.settled()
        await r.stop()

    run(scenario)
    calls = [at for at, _ in log.passes]
    assert len(calls) == 3
    assert calls[1] - calls[0] == pytest.approx(1, abs=0.05) and calls[2] - calls[1] == pytest.approx(2, abs=0.05)


def test_an_earlier_request_brings_a_later_pass_forward_and_only_one_pass_runs():
    """A resync spread over its interval schedules an app's pass up to 30 s away: a child event meanwhile must
    not wait for it (nor cause a second pass when the resync's turn comes)."""
    passes = []
    r = scheduler(lambda cluster, namespace, name, pacer=None: passes.append(name))

    async def scenario():
        loop = asyncio.get_running_loop()
        r.start(loop, resync_seconds=3600)
        r.request("ns", "app", delay=30, trigger="resync")
        r.request("ns", "app", delay=0.05, trigger="Deployment")
        r.request("ns", "app", delay=1, trigger="Pod")  # later than the pending one: served by it
        await r.settled()  # the superseded 30 s timer was cancelled: nothing is left to wait for
        finished = loop.time()
        await r.stop()
        return finished

    finished = run(scenario)
    assert passes == ["app"] and finished < 1
    assert r.pending == 0


def test_requests_during_a_running_pass_queue_one_more_pass_not_one_each():
    """Child events keep coming while a slow pass runs (an operator behind its work): one pass waits for it and
    reads everything that happened meanwhile; more would only repeat it."""
    release, started, passes = threading.Event(), threading.Event(), []

    def slow(cluster, namespace, name, pacer=None):
        passes.append(name)
        started.set()
        if len(passes) == 1:
            release.wait(10)

    r = scheduler(slow, workers=2)

    async def scenario():
        loop = asyncio.get_running_loop()
        r.start(loop, resync_seconds=3600)
        r.request("ns", "app", delay=0)
        await loop.run_in_executor(None, started.wait)  # the first pass runs (and blocks)
        for _ in range(5):  # five bursts of events, each after the previous request turned into a waiting pass
            r.request("ns", "app", delay=0)
            while r.pending:
                await asyncio.sleep(0)
        release.set()
        await r.settled()
        await r.stop()

    run(scenario)
    assert len(passes) == 2


def test_a_resync_skips_an_app_that_just_passed_and_takes_it_the_next_round():
    """While a fleet comes up, child events pass every app again and again: a resync on top only repeats them.
    An app that passed within half an interval waits for the next round, so none goes two rounds unchecked."""
    log = PassLog()
    r = scheduler(log, cache=Cache([("ns", "busy"), ("ns", "idle")]))

    async def scenario():
        loop = log.loop = asyncio.get_running_loop()
        r.start(loop, resync_seconds=100)  # passes both at once (nothing was acted on while standing by)
        await r.settled()
        await asyncio.sleep(60)
        r.request("ns", "busy", delay=0, trigger="Deployment")  # at 60 s: within half an interval of round 1
        await r.settled()
        await asyncio.sleep(280 - loop.time())  # rounds at 100 and 200 s, each spread over its interval
        await r.stop()

    run(scenario)
    round1 = {name for at, name in log.passes if 100 <= at < 200}
    round2 = {name for at, name in log.passes if 200 <= at < 300}
    assert round1 == {"idle"}  # busy passed within half an interval
    assert {"busy", "idle"} <= round2  # its pass is now older than that


def test_only_passes_asked_by_something_else_than_the_resync_excuse_an_app_from_a_round():
    """An idle app's only passes are the resync's: they must not make it skip every other round."""
    log = PassLog()
    r = scheduler(log, cache=Cache([("ns", "idle"), ("ns", "busy")]))

    async def scenario():
        loop = log.loop = asyncio.get_running_loop()
        r.start(loop, resync_seconds=100)
        await r.settled()
        await asyncio.sleep(99 - loop.time())
        r.request("ns", "busy", delay=0, trigger="Deployment")
        await asyncio.sleep(380 - loop.time())  # rounds at 100, 200, 300 s, each spread over its interval
        await r.stop()

    run(scenario)
    idle_rounds = {int(at // 100) for at, name in log.passes if name == "idle" and at >= 100}
    busy_rounds = {int(at // 100) for at, name in log.passes if name == "busy" and at >= 100}
    assert idle_rounds == {1, 2, 3}  # every round: its own resync passes excuse it from none
    assert 1 not in busy_rounds and {2, 3} <= busy_rounds
