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
