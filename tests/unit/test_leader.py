"""Leader election on a Lease, against an in-memory Lease API with the API server's optimistic concurrency."""

from __future__ import annotations

import copy

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from flaskapp_operator.leader import LeaderElection, Timing
from flaskapp_operator.metrics import CountingApiClient

TIMING = Timing(lease_seconds=8, renew_deadline=5, retry_seconds=1)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class LeaseApi:
    """read/create/replace of one Lease; replace refuses a stale resourceVersion with 409, as the API server does."""

    def __init__(self):
        self.lease = None
        self.version = 0
        self.down = False

    def _check(self):
        if self.down:
            raise ApiException(status=503, reason="unavailable")

    def read_namespaced_lease(self, name, namespace):
        self._check()
        if self.lease is None:
            raise ApiException(status=404, reason="NotFound")
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace, body):
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name, namespace, body):
        self._check()
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def _store(self, body):
        self.version += 1
        body = copy.deepcopy(body)
        body.metadata.resource_version = str(self.version)
        self.lease = body
        return copy.deepcopy(body)


def candidates(n=2):
    api, clock = LeaseApi(), Clock()
    return api, clock, [LeaderElection(api, "ops", "flaskapp-operator", f"replica-{i}", TIMING, clock) for i in range(n)]


def test_one_leads_the_other_stands_by_while_the_lease_is_renewed():
    api, clock, (a, b) = candidates()
    assert a.try_acquire_or_renew() and a.leading()
    for _ in range(30):  # 30 s of renewals every second: b never takes over
        clock.now += 1
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew() and not b.leading()
    assert api.lease.spec.holder_identity == "replica-0" and api.lease.spec.lease_transitions == 0


def test_a_standby_takes_over_only_after_the_lease_duration_on_its_own_clock():
    api, clock, (a, b) = candidates()
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b sees the record now
    clock.now += TIMING.lease_seconds - 0.5
    assert not b.try_acquire_or_renew()
    assert not a.leading()  # past its renew deadline: a is fenced long before b may take over
    clock.now += 1
    assert b.try_acquire_or_renew() and b.leading()
    assert api.lease.spec.holder_identity == "replica-1" and api.lease.spec.lease_transitions == 1
    # The old leader comes back: it sees a record it has not seen before, so it waits a full lease again.
    assert not a.try_acquire_or_renew() and not a.leading()


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win():
    api, clock, (a, b, c) = candidates(3)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew(), c.try_acquire_or_renew()
    clock.now += TIMING.lease_seconds + 1
    stale = api.read_namespaced_lease("flaskapp-operator", "ops")
    real_read = api.read_namespaced_lease
    api.read_namespaced_lease = lambda name, namespace: copy.deepcopy(stale)  # both read the same record
    won = [b.try_acquire_or_renew(), c.try_acquire_or_renew()]
    api.read_namespaced_lease = real_read
    assert won == [True, False]
    assert api.lease.spec.holder_identity == "replica-1"


def test_a_leader_that_cannot_renew_is_fenced_and_stops():
    api, clock, (a,) = candidates(1)
    a.try_acquire_or_renew()
    api.down = True
    lost = []

    def on_lost():
        lost.append(clock.now)
        a._stopped.set()

    a._stopped.wait = lambda seconds: (setattr(clock, "now", clock.now + seconds), a._stopped.is_set())[1]
    a.keep_leading(on_lost)
    assert lost and lost[0] - 100.0 >= TIMING.renew_deadline and not a.leading()


def test_a_released_lease_is_taken_at_the_next_try():
    api, clock, (a, b) = candidates()
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.leading()
    assert b.try_acquire_or_renew() and api.lease.spec.holder_identity == "replica-1"


def test_timing_must_leave_the_old_leader_time_to_stop():
    with pytest.raises(ValueError):
        Timing(lease_seconds=5, renew_deadline=5, retry_seconds=1)


def test_fenced_writes_never_reach_the_server(monkeypatch):
    sent = []
    monkeypatch.setattr(client.ApiClient, "request", lambda self, method, url, *a, **kw: sent.append(method))
    allowed = {"now": False}
    api_client = CountingApiClient(client.Configuration(), write_guard=lambda: allowed["now"])
    api_client.request("GET", "http://x/api/v1/pods")
    with pytest.raises(ApiException) as refused:
        api_client.request("PATCH", "http://x/api/v1/namespaces/a/pods/b")
    assert refused.value.status == 503 and sent == ["GET"]
    allowed["now"] = True
    api_client.request("PATCH", "http://x/api/v1/namespaces/a/pods/b")
    assert sent == ["GET", "PATCH"]
