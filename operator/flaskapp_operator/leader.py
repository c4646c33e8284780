"""Leader election on a coordination.k8s.io Lease: of several operator replicas, one reconciles.

The protocol is client-go's (k8s.io/client-go/tools/leaderelection, "leaderelection.go"): the holder renews
the Lease every `retry_seconds`; a candidate takes it over only after seeing the same record unchanged for
`lease_seconds` on its own clock (no trust in other machines' clocks), and every update carries the
resourceVersion it read, so two candidates can never both win. A leader that has not renewed within
`renew_deadline` (shorter than `lease_seconds`) stops writing at once (`leading()` fences every write) and its
process exits: by the time a standby may take over, the old leader has gone quiet. A leader that stops cleanly
(SIGTERM: a rolling update) releases the Lease, and a standby takes over within `retry_seconds`.

kopf's own peering is not used: it pauses other operators cooperatively but gives no exclusive write guarantee
(kopf docs/peering.rst).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    lease_seconds: float = 8.0  # a standby takes over after seeing no renewal this long
    renew_deadline: float = 5.0  # a leader that could not renew this long stops writing and exits
    retry_seconds: float = 1.0  # renew (leader) or try (standby) this often

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline < self.lease_seconds:
            raise ValueError("leader election needs 0 < retry < renew deadline < lease duration")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class LeaderElection:
    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, identity: str,
                 timing: Timing = Timing(), clock: Callable[[], float] = time.monotonic):
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.timing, self._clock = timing, clock
        self._observed: Optional[str] = None  # resourceVersion of the record last seen
        self._observed_at = 0.0
        self._renewed_at: Optional[float] = None  # when we last held the Lease, on our clock
        self._stopped = threading.Event()

    def leading(self) -> bool:
        """Whether this replica may write now: it renewed the Lease within the renew deadline."""
        renewed = self._renewed_at
        return (renewed is not None and not self._stopped.is_set()
                and self._clock() - renewed < self.timing.renew_deadline)

    def try_acquire_or_renew(self) -> bool:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create()
        spec = lease.spec or client.V1LeaseSpec()
        if lease.metadata.resource_version != self._observed:
            self._observed, self._observed_at = lease.metadata.resource_version, self._clock()
        holder = spec.holder_identity or ""
        duration = spec.lease_duration_seconds or self.timing.lease_seconds
        if holder not in ("", self.identity) and self._clock() - self._observed_at < duration:
            return False  # held by another replica that renewed recently enough
        now = _now()
        lease.spec = client.V1LeaseSpec(
            holder_identity=self.identity, lease_duration_seconds=int(self.timing.lease_seconds), renew_time=now,
            acquire_time=spec.acquire_time if holder == self.identity else now,
            lease_transitions=(spec.lease_transitions or 0) + (0 if holder == self.identity else 1))
        try:
            updated = self.api.replace_namespaced_lease(self.name, self.namespace, lease)  # carries resourceVersion
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first
                return False
            raise
        self._took(updated, previous=holder)
        return True

    def _create(self) -> bool:
        now = _now()
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                              spec=client.V1LeaseSpec(holder_identity=self.identity, acquire_time=now, renew_time=now,
                                                      lease_duration_seconds=int(self.timing.lease_seconds),
                                                      lease_transitions=0))
        try:
            created = self.api.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._took(created, previous="")
        return True

    def _took(self, lease: client.V1Lease, previous: str) -> None:
        if self._renewed_at is None or not self.leading():
            log.info("leader election: %s holds Lease %s/%s (before: %s)", self.identity, self.namespace, self.name,
                     previous or "nobody")
        self._observed, self._observed_at = lease.metadata.resource_version, self._clock()
        self._renewed_at = self._clock()

    def wait_for_leadership(self) -> None:
        """Block until this replica holds the Lease."""
        announced = False
        while not self._stopped.is_set():
            try:
                if self.try_acquire_or_renew():
                    return
            except (ApiException, OSError) as exc:
                log.warning("leader election: could not read or take the Lease: %s", exc)
            if not announced:
                log.info("leader election: standing by while another replica holds Lease %s/%s", self.namespace,
                         self.name)
                announced = True
            self._stopped.wait(self.timing.retry_seconds)

    def keep_leading(self, on_lost: Callable[[], None]) -> None:
        """Renew until stopped; call on_lost (which must end the process) once the renew deadline passes."""
        while not self._stopped.wait(self.timing.retry_seconds):
            try:
                self.try_acquire_or_renew()
            except (ApiException, OSError) as exc:
                log.warning("leader election: renewal failed: %s", exc)
            if not self.leading() and not self._stopped.is_set():
                log.error("leader election: Lease %s/%s not renewed for %.0f s: stopping", self.namespace, self.name,
                          self.timing.renew_deadline)
                on_lost()
                return

    def release(self) -> None:
        """Stop writing, then hand the Lease back so that a standby takes over at its next try."""
        was_leading = self.leading()
        self._stopped.set()
        if not was_leading:
            return
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                lease.spec.lease_duration_seconds = 1
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("leader election: released Lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError) as exc:
            log.warning("leader election: could not release the Lease (a standby takes over when it expires): %s",
                        exc)
