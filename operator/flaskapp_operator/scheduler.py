"""The scheduler of passes (controller-runtime's work queue, in asyncio): one pass at a time per FlaskApp,
bursts of requests coalesced into one, a periodic resync, retries with exponential back-off.

Passes run reconcile.reconcile in a thread pool (the kubernetes client blocks); the event loop only keeps the
timers. Standing by (leader election), it schedules nothing and keeps no client that could write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import kopf
from kubernetes.client.rest import ApiException

from . import metrics
from .cache import WatchCache
from .kube import Cluster
from .leader import LeaderElection
from .memory import release_free_memory
from .pacing import RolloutPacer
from .reconcile import reconcile

log = logging.getLogger(__name__)

# A failed pass is retried after 1, 2, 4 ... seconds, at most 5 minutes apart (reset by a success).
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
# Exit status of a replica that lost the Lease: it restarts as a standby (EX_TEMPFAIL).
LEADERSHIP_LOST_EXIT = 75

PassFunction = Callable[[Cluster, str, str, Optional[RolloutPacer]], Optional[dict]]


class Scheduler:
    def __init__(self, cache: WatchCache, connect: Callable[[Optional[Callable[[], bool]]], Cluster],
                 workers: int = 16, debounce_seconds: float = 1.5, max_rolling_upgrades: int = 2,
                 election: Optional[LeaderElection] = None, run_pass: PassFunction = reconcile):
        """connect(write_guard): the Cluster passes use once this replica leads (write_guard: whether it still
        does). run_pass: one pass over one FlaskApp (reconcile.reconcile; tests give their own)."""
        self.workers = workers
        self.cache = cache
        self.debounce_seconds = debounce_seconds
        self._connect = connect
        self._run_pass = run_pass
        # Set by the first watch event of any kind: kopf calls event handlers only once every index (the cache)
        # holds its first listing. Passes wait for it when they read the cache.
        self.cache_ready = asyncio.Event()
        self.election = election  # when set, passes start only once this replica leads
        self.on_leadership_lost: Callable[[], None] = lambda: os._exit(LEADERSHIP_LOST_EXIT)
        self.pacer: Optional[RolloutPacer] = RolloutPacer(max_rolling_upgrades) if max_rolling_upgrades else None
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="reconcile")
        self._cluster: Optional[Cluster] = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._lock_users: dict[tuple[str, str], int] = {}  # holders and waiters: the lock lives while > 0
        self._failures: dict[tuple[str, str], int] = {}
        # Apps with a requested pass waiting behind a running one: at most one waits per app (while the
        # operator is behind, bursts of child events used to queue a pass each).
        self._queued: set[tuple[str, str]] = set()
        # app -> its next pass: when, and the loop's timer that starts it (a timer, not a sleeping task: at idle
        # every app has one pending, and a task with its coroutine weighs ~1.9 KB against the timer's ~0.3 KB)
        self._pending: dict[tuple[str, str], tuple[float, asyncio.TimerHandle]] = {}
        # app -> when a pass not asked by the resync last succeeded (loop time): such apps skip a resync round
        self._passed: dict[tuple[str, str], float] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._tasks: set[asyncio.Task] = set()  # passes (and the wait for leadership)
        self._resync: Optional[asyncio.Task] = None

    def start(self, loop: asyncio.AbstractEventLoop, resync_seconds: float) -> None:
        self._loop = loop
        if self.election is None:
            self._begin(resync_seconds)
        else:  # the watches (and the cache) run meanwhile: a standby takes over warm
            self._spawn(self._lead_then_begin(resync_seconds))

    def _begin(self, resync_seconds: float) -> None:
        guard = self.election.leading if self.election is not None else None
        self._cluster = self._connect(guard)
        self._resync = asyncio.get_running_loop().create_task(self._resync_forever(resync_seconds))
        for namespace, name in self.cache.flaskapp_keys():  # events seen while standing by were not acted on
            self.request(namespace, name, delay=0, trigger="leadership")

    async def _lead_then_begin(self, resync_seconds: float) -> None:
        election = self.election
        await asyncio.get_running_loop().run_in_executor(None, election.wait_for_leadership)
        threading.Thread(target=election.keep_leading, args=(self.on_leadership_lost,), name="leader-election",
                         daemon=True).start()
        self._begin(resync_seconds)

    async def stop(self) -> None:
        for _, timer in self._pending.values():
            timer.cancel()
        self._pending.clear()  # a cancelled timer must not stand in for a later request
        for task in [*self._tasks, *([self._resync] if self._resync else [])]:
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reconcile_now(self, namespace: str, name: str) -> None:
        """Reconcile now (after any pass already running for this app); a failure raises kopf.TemporaryError
        with the delay after which request() retries it."""
        key = (namespace, name)
        await self.cache_ready.wait()
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            async with lock:
                self._queued.discard(key)  # this pass reads the cache from now: a later change needs another
                started, outcome = time.perf_counter(), "error"
                try:
                    status = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._run_pass, self._cluster, namespace, name, self.pacer)
                    outcome = "success"
                except (ApiException, OSError) as exc:  # OSError: refused/reset while the API server restarts
                    delay = self._failed(key, exc)
                    raise kopf.TemporaryError(f"reconcile failed, retrying in {delay:.0f}s: {exc}",
                                              delay=delay) from exc
                finally:
                    metrics.RECONCILES.labels(outcome).inc()
                    metrics.RECONCILE_SECONDS.labels(outcome).observe(time.perf_counter() - started)
                metrics.APP_STATES.record(namespace, name, status)
                self._failures.pop(key, None)
                for waiting in self.pacer.waiting() if self.pacer is not None else ():  # a slot is free
                    self.request(*waiting, delay=0, trigger="upgrade-slot")
        finally:
            # Dropped only when no pass holds or awaits it: a waiter keeps its lock (one pass at a time).
            self._lock_users[key] -= 1
            if self._lock_users[key] == 0:
                del self._lock_users[key], self._locks[key]

    async def settled(self) -> None:
        """Until no pass is due (timers) nor running (tasks): what a clean shutdown, or a test, waits for."""
        while self._pending or self._tasks:
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            else:
                await asyncio.sleep(min(due for due, _ in self._pending.values()) - asyncio.get_running_loop().time())

    @property
    def tracked_apps(self) -> int:
        """Apps holding per-app state (locks, failure counts): none once their passes are done and succeeded."""
        return len(self._locks | self._lock_users) + len(self._failures)

    @property
    def loop(self) -> Optional[asyncio.AbstractEventLoop]:
        return self._loop

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def started(self) -> bool:
        return self._cluster is not None

    def retry_delay(self, key: tuple[str, str]) -> float:
        return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, self._failures.get(key, 0) - 1))

    def _failed(self, key: tuple[str, str], exc: Exception) -> float:
        metrics.FAILURES.labels(metrics.failure_reason(exc)).inc()
        self._failures[key] = self._failures.get(key, 0) + 1
        delay = self.retry_delay(key)
        log.warning("reconcile of %s/%s failed (%d in a row), retrying in %.0fs: %s", *key, self._failures[key],
                    delay, exc)
        return delay

    def request(self, namespace: str, name: str, delay: Optional[float] = None, trigger: str = "retry") -> None:
        """Ask for a pass within `delay` seconds; requests arriving before it starts are served by that one pass,
        and an earlier request brings a later one forward (a child event does not wait for a resync's slot).
        `trigger`: what asked (a child kind, FlaskApp, resync, upgrade slot, retry), counted in
        flaskapp_operator_triggers_total."""
        key = (namespace, name)
        if self._cluster is None:  # standing by (or not started)
            return
        if delay is None:
            delay = self.debounce_seconds
        metrics.TRIGGERS.labels(trigger).inc()
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        scheduled = self._pending.get(key)
        if scheduled is not None:
            if scheduled[0] <= due:
                return
            scheduled[1].cancel()  # brought forward
        self._pending[key] = (due, loop.call_at(due, self._due, key, trigger))

    def _due(self, key: tuple[str, str], trigger: str) -> None:
        del self._pending[key]  # from here on, a request schedules the next pass
        self._spawn(self._pass(key, trigger))

    async def _pass(self, key: tuple[str, str], trigger: str) -> None:
        if key in self._queued:  # a pass of this app already waits for the running one, and will see this too
            return
        self._queued.add(key)
        try:
            await self.reconcile_now(*key)
        except kopf.TemporaryError:
            self.request(*key, delay=self.retry_delay(key))
        except Exception as exc:  # noqa: BLE001 - a background pass must never die silently
            self.request(*key, delay=self._failed(key, exc))
        else:
            if trigger != "resync":  # the resync's own passes do not excuse an app from the next round
                self._passed[key] = asyncio.get_running_loop().time()
        finally:
            self._queued.discard(key)

    async def _resync_forever(self, interval: float) -> None:
        """Level-based safety net: every FlaskApp is checked periodically; a no-op pass writes nothing."""
        while True:
            await asyncio.sleep(interval)
            apps = self.cache.flaskapp_keys()  # the watch keeps the list: no request
            release_free_memory()  # what the previous round of passes freed
            # An app that passed within the last half interval for another reason (its children's events
            # while it comes up or rolls) is checked next round: every app still passes at least once in two
            # intervals, an idle one in each, and a fleet coming up is not also resynced (at 1,000 new apps
            # with a 30 s resync, resyncs were most of the operator's passes, on the cores the API server
            # needs).
            recent = asyncio.get_running_loop().time() - interval / 2
            self._passed = {app: self._passed[app] for app in apps if app in self._passed}  # deleted apps go
            due = [app for app in apps if self._passed.get(app, recent) <= recent]
            # Spread over the interval, not one burst of N passes that a spec change would queue behind.
            for i, (namespace, name) in enumerate(due):
                self.request(namespace, name, delay=self.debounce_seconds + i * interval / max(len(due), 1),
                             trigger="resync")
