"""Schedules reconciles: one at a time per FlaskApp, coalesced bursts, a periodic resync, retries."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .kube import Cluster
from .reconcile import reconcile

log = logging.getLogger(__name__)

# Child events come in bursts (pods of a rollout turning ready one by one): one pass after the burst.
# Measured with 100 FlaskApps at once (make bench): fewer passes finish sooner than eager ones.
DEBOUNCE_SECONDS = float(os.environ.get("FLASKAPP_DEBOUNCE_SECONDS", "1.5"))
RETRY_SECONDS = 5.0


def load_kube_config() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


class Reconciler:
    def __init__(self, workers: int = 16):
        self.workers = workers
        self.namespaces: tuple[str, ...] = ()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="reconcile")
        self._cluster: Optional[Cluster] = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pending: set[tuple[str, str]] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._tasks: set[asyncio.Task] = set()

    def start(self, loop: asyncio.AbstractEventLoop, resync_seconds: float) -> None:
        self._loop = loop
        self._cluster = Cluster(load_kube_config())
        self._spawn(self._resync_forever(resync_seconds))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reconcile_now(self, namespace: str, name: str) -> None:
        """Reconcile now (after any pass already running for this app); kopf retries what fails."""
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, reconcile, self._cluster,
                                                                 namespace, name)
            except ApiException as exc:
                raise kopf.TemporaryError(f"API error {exc.status} {exc.reason}", delay=RETRY_SECONDS) from exc
            except OSError as exc:  # connection refused/reset while the API server restarts
                raise kopf.TemporaryError(f"API unreachable: {exc}", delay=RETRY_SECONDS) from exc
        if not lock.locked() and key not in self._pending:
            self._locks.pop(key, None)

    def request(self, namespace: str, name: str, delay: float = DEBOUNCE_SECONDS) -> None:
        """Ask for a pass soon; requests arriving before it starts are served by that one pass."""
        key = (namespace, name)
        if key in self._pending:
            return
        self._pending.add(key)
        self._spawn(self._later(key, delay))

    async def _later(self, key: tuple[str, str], delay: float) -> None:
        await asyncio.sleep(delay)
        self._pending.discard(key)
        try:
            await self.reconcile_now(*key)
        except Exception as exc:  # noqa: BLE001 - a background pass must never die silently
            log.warning("reconcile of %s/%s failed, retrying in %ss: %s", *key, RETRY_SECONDS, exc)
            self.request(*key, delay=RETRY_SECONDS)

    async def _resync_forever(self, interval: float) -> None:
        """Level-based safety net: every FlaskApp is checked periodically; a no-op pass writes nothing."""
        while True:
            await asyncio.sleep(interval)
            try:
                apps = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._cluster.list_flaskapps, self.namespaces)
            except Exception as exc:  # noqa: BLE001
                log.warning("resync listing failed: %s", exc)
                continue
            for app in apps:
                self.request(app["metadata"]["namespace"], app["metadata"]["name"])
