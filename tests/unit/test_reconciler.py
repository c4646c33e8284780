"""Scheduling of passes: one at a time per FlaskApp however many wait, and failures back off."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import kopf
import pytest
from kubernetes.client.rest import ApiException

from flaskapp_operator import reconciler as module
from flaskapp_operator.reconciler import RETRY_MAX_SECONDS, Reconciler


def test_passes_of_one_app_never_overlap_however_many_wait(monkeypatch):
    running, most = [0], [0]
    guard = threading.Lock()

    def slow_pass(cluster, namespace, name, pacer=None):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1

    monkeypatch.setattr(module, "reconcile", slow_pass)
    r = Reconciler(workers=8)

    async def burst():
        # Waves that start while earlier waiters are still queued on the lock.
        first = [asyncio.create_task(r.reconcile_now("ns", "app")) for _ in range(3)]
        await asyncio.sleep(0.06)
        second = [asyncio.create_task(r.reconcile_now("ns", "app")) for _ in range(3)]
        await asyncio.gather(*first, *second)

    asyncio.run(burst())
    assert most[0] == 1
    assert r._locks == {} and r._lock_users == {}


def test_failures_back_off_exponentially_up_to_a_cap_and_reset_on_success(monkeypatch):
    outcome = {"fail": True}

    def flaky(cluster, namespace, name, pacer=None):
        if outcome["fail"]:
            raise ApiException(status=500, reason="boom")

    monkeypatch.setattr(module, "reconcile", flaky)
    r = Reconciler(workers=1)
    r._executor = ThreadPoolExecutor(1)
    delays = []

    async def attempts(n):
        for _ in range(n):
            with pytest.raises(kopf.TemporaryError) as err:
                await r.reconcile_now("ns", "app")
            delays.append(err.value.delay)

    asyncio.run(attempts(12))
    assert delays[:4] == [1, 2, 4, 8]
    assert max(delays) == RETRY_MAX_SECONDS and delays[-1] == RETRY_MAX_SECONDS
    outcome["fail"] = False
    asyncio.run(r.reconcile_now("ns", "app"))
    assert r.retry_delay(("ns", "app")) == 1


async def _settled(r: Reconciler) -> None:
    """Until no pass is due (timers) nor running (tasks)."""
    while r.pending or r._tasks:
        if r._tasks:
            await asyncio.wait(set(r._tasks), timeout=5)
        else:
            await asyncio.sleep(0.01)


def test_an_earlier_request_brings_a_later_pass_forward_and_only_one_pass_runs(monkeypatch):
    """A resync spread over its interval schedules an app's pass up to 30 s away: a child event meanwhile must
    not wait for it (nor cause a second pass when the resync's turn comes)."""
    passes = []

    def record(cluster, namespace, name, pacer=None):
        passes.append(time.monotonic())

    monkeypatch.setattr(module, "reconcile", record)
    monkeypatch.setattr(module.metrics.APP_STATES, "record", lambda *args: None)
    r = Reconciler(workers=1)
    r._cluster = object()  # leading: requests are served

    async def scenario():
        asked = time.monotonic()
        r.request("ns", "app", delay=30, trigger="resync")
        r.request("ns", "app", delay=0.05, trigger="Deployment")
        r.request("ns", "app", delay=1, trigger="Pod")  # later than the pending one: served by it
        while not passes:
            await asyncio.sleep(0.01)
        await _settled(r)  # the superseded 30 s timer was cancelled: nothing is left to wait for
        return asked

    asked = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert len(passes) == 1 and passes[0] - asked < 5
    assert r.pending == 0


def test_requests_during_a_running_pass_queue_one_more_pass_not_one_each(monkeypatch):
    """Child events keep coming while a slow pass runs (an operator behind its work): one pass waits for it and
    reads everything that happened meanwhile; more would only repeat it."""
    release, passes = threading.Event(), []

    def slow(cluster, namespace, name, pacer=None):
        passes.append(time.monotonic())
        if len(passes) == 1:
            release.wait(10)

    monkeypatch.setattr(module, "reconcile", slow)
    monkeypatch.setattr(module.metrics.APP_STATES, "record", lambda *args: None)
    r = Reconciler(workers=2)
    r._cluster = object()

    async def scenario():
        r.request("ns", "app", delay=0)
        while not passes:  # the first pass runs (and blocks)
            await asyncio.sleep(0.01)
        for _ in range(5):  # five bursts of events, each after the previous request turned into a waiting pass
            r.request("ns", "app", delay=0)
            while r.pending:
                await asyncio.sleep(0.01)
        release.set()
        await _settled(r)

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert len(passes) == 2


def test_a_resync_skips_an_app_that_just_passed_and_takes_it_the_next_round(monkeypatch):
    """While a fleet comes up, child events pass every app again and again: a resync on top only repeats them.
    An app that passed within half an interval waits for the next round, so none goes two rounds unchecked."""

    class Cache:
        apps = [("ns", "busy"), ("ns", "idle"), ("ns", "gone")]

        def flaskapp_keys(self):
            return list(self.apps)

    cache = Cache()
    r = Reconciler(workers=1, cache=cache)
    rounds: list[set] = []
    monkeypatch.setattr(r, "request", lambda namespace, name, delay, trigger: rounds[-1].add(name))

    async def scenario():
        loop = asyncio.get_running_loop()
        r._passed = {("ns", "busy"): loop.time() + 0.95, ("ns", "gone"): loop.time()}  # busy: just before round 1
        cache.apps = [("ns", "busy"), ("ns", "idle")]  # "gone" was deleted
        rounds.append(set())
        resync = asyncio.create_task(r._resync_forever(1.0))
        while len(rounds) < 3:
            before = len(rounds[-1])
            await asyncio.sleep(0.05)
            if before == 0 and rounds[-1]:  # a round scheduled its passes: collect the next one apart
                await asyncio.sleep(0.5)
                rounds.append(set())
        resync.cancel()

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert rounds[0] == {"idle"}  # busy passed within half an interval
    assert rounds[1] == {"busy", "idle"}  # its pass is now older than that
    assert ("ns", "gone") not in r._passed


def test_only_passes_asked_by_something_else_than_the_resync_excuse_an_app_from_a_round(monkeypatch):
    """An idle app's only passes are the resync's: they must not make it skip every other round."""
    monkeypatch.setattr(module, "reconcile", lambda cluster, namespace, name, pacer=None: None)
    monkeypatch.setattr(module.metrics.APP_STATES, "record", lambda *args: None)
    r = Reconciler(workers=1)
    r._cluster = object()

    async def scenario():
        r.request("ns", "idle", delay=0, trigger="resync")
        r.request("ns", "busy", delay=0, trigger="Deployment")
        await _settled(r)

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert set(r._passed) == {("ns", "busy")}
