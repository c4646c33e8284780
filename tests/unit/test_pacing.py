"""Rollout pacing: a new operator release's templates roll across FlaskApps in waves of at most N apps.

Real renders of the minimal sample, reconciled against in-memory clusters whose Deployments become ready only
when the test says so; "a new release" is the same render with one more pod-template annotation.
"""

from __future__ import annotations

import copy

import pytest

from testsupport.samples import load_sample
from testsupport.memorycluster import MemoryCluster
from flaskapp_operator import plan as plan_module
from flaskapp_operator.kinds import key_of
from flaskapp_operator.ownership import up_to_date, with_applied_hash
from flaskapp_operator.pacing import AUTO_UPGRADE, RolloutPacer, inputs_hash, upgrades
from flaskapp_operator.reconcile import reconcile

RELEASE = "example.com/release"  # what the "new release" adds to every pod template


class RollingCluster(MemoryCluster):
    """Applies as the API server does (the applied hash kept, generation bumped on spec changes); Deployments
    are ready only once `settle()` runs, as if their pods had rolled."""

    def __init__(self, app):
        super().__init__(app, {})
        self.events: list[str] = []

    def apply(self, desired, live, owner_uid):
        changed = [obj for obj in map(with_applied_hash, desired) if not up_to_date(live.get(key_of(obj)), obj)]
        for obj in changed:
            before = self.live.get(key_of(obj))
            obj = copy.deepcopy(obj)
            generation = (before or {}).get("metadata", {}).get("generation", 0)
            obj["metadata"]["generation"] = generation + (before is None or before.get("spec") != obj.get("spec"))
            obj["status"] = (before or {}).get("status", {})
            live[key_of(obj)] = self.live[key_of(obj)] = obj
            self.applied.append(key_of(obj))
        return [key_of(o) for o in changed]

    def settle(self):
        for obj in self.live.values():
            if obj["kind"] == "Deployment":
                n = obj["spec"].get("replicas", 1)
                obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": n,
                                 "updatedReplicas": n, "availableReplicas": n, "readyReplicas": n}

    def get_flaskapp(self, namespace, name):
        return {**self.app, "status": copy.deepcopy(self.status)}

    def post_event(self, body, kind, reason, message):
        self.events.append(reason)

    def template(self, name="hello-web"):
        return self.live[("Deployment", name)]["spec"]["template"]["metadata"].get("annotations", {})


def new_release(monkeypatch):
    real = plan_module.render

    def render(*args, **kwargs):
        rendered = real(*args, **kwargs)
        for obj in rendered.objects:
            if obj["kind"] in ("Deployment", "StatefulSet"):
                meta = obj["spec"]["template"]["metadata"]
                meta["annotations"] = {**meta.get("annotations", {}), RELEASE: "2"}
        return rendered
    monkeypatch.setattr(plan_module, "render", render)


def fleet(n: int, pacer: RolloutPacer) -> list[RollingCluster]:
    clusters = []
    for i in range(n):
        app = load_sample("minimal")
        app["metadata"].update(name="hello", namespace=f"ns{i}", uid=f"uid-{i}", generation=1)
        cluster = RollingCluster(app)
        reconcile(cluster, f"ns{i}", "hello", pacer)
        cluster.settle()
        reconcile(cluster, f"ns{i}", "hello", pacer)
        assert cluster.status["conditions"][0]["status"] == "True"
        clusters.append(cluster)
    return clusters


def rolling_now(clusters) -> int:
    """Apps with pods of the new release not yet ready: what the pacer must keep at most N of."""
    return sum(1 for c in clusters if c.template().get(RELEASE) == "2" and any(
        o["status"].get("observedGeneration") != o["metadata"]["generation"]
        for o in c.live.values() if o["kind"] == "Deployment"))


def test_a_new_release_rolls_in_waves_of_at_most_n_apps_each_ready_before_the_next(monkeypatch):
    pacer = RolloutPacer(max_rolling=2)
    clusters = fleet(5, pacer)
    new_release(monkeypatch)
    rounds = 0
    while pacer.completed < 5:  # each round: every app gets a pass, then the pods rolled so far become ready
        rounds += 1
        for i, c in enumerate(clusters):
            reconcile(c, f"ns{i}", "hello", pacer)
            assert rolling_now(clusters) <= 2
        queued = [c for c in clusters if (c.status.get("upgrade") or "").startswith("queued")]
        assert all(c.template().get(RELEASE) is None for c in queued)  # queued apps keep their pods
        assert all(c.status["conditions"][0]["status"] == "True" for c in queued)  # and stay Ready
        for c in clusters:
            c.settle()
        assert rounds <= 4
    # Waves {0, 1}, {2, 3}, {4}: each starts in the pass where the one before it is found Ready.
    assert rounds == 4 and pacer.counts()["rolling"] == 0
    assert all("Upgraded" in c.events and not c.status.get("upgrade") for c in clusters)
    assert sum("UpgradeQueued" in c.events for c in clusters) == 3


def test_a_broken_release_stops_after_the_first_wave(monkeypatch):
    pacer = RolloutPacer(max_rolling=2)
    clusters = fleet(5, pacer)
    new_release(monkeypatch)
    for _ in range(3):  # the first wave never becomes ready: no other app is touched
        for i, c in enumerate(clusters):
            reconcile(c, f"ns{i}", "hello", pacer)
    assert sum(c.template().get(RELEASE) == "2" for c in clusters) == 2


def test_an_app_that_opted_out_keeps_its_pods_until_its_spec_changes(monkeypatch):
    pacer = RolloutPacer(max_rolling=5)
    (cluster,) = fleet(1, pacer)
    cluster.app["metadata"]["annotations"] = {AUTO_UPGRADE: "false"}
    reconcile(cluster, "ns0", "hello", pacer)  # the annotation is an input: the inputs hash moves on, nothing rolls
    new_release(monkeypatch)
    reconcile(cluster, "ns0", "hello", pacer)
    assert cluster.template().get(RELEASE) is None and cluster.status["upgrade"].startswith("held")
    assert "UpgradeHeld" in cluster.events and pacer.counts()["held"] == 1
    cluster.app["spec"]["web"] = {"replicas": 3}
    cluster.app["metadata"]["generation"] = 2
    reconcile(cluster, "ns0", "hello", pacer)
    assert cluster.template().get(RELEASE) == "2" and not cluster.status.get("upgrade")


def test_a_spec_change_rolls_at_once_even_with_every_slot_taken(monkeypatch):
    pacer = RolloutPacer(max_rolling=1)
    clusters = fleet(3, pacer)
    new_release(monkeypatch)
    for i, c in enumerate(clusters):
        reconcile(c, f"ns{i}", "hello", pacer)
    assert [c.status["upgrade"].split(":")[0] for c in clusters] == ["rolling", "queued", "queued"]
    # A spec change of a queued app is the user's: its pods roll now, new templates included.
    clusters[1].app["spec"]["web"] = {"replicas": 3}
    reconcile(clusters[1], "ns1", "hello", pacer)
    assert clusters[1].live[("Deployment", "hello-web")]["spec"]["replicas"] == 3
    assert clusters[1].template().get(RELEASE) == "2"


def test_only_a_release_change_counts_as_an_upgrade():
    app = load_sample("minimal")
    app["metadata"].update(namespace="ns", uid="u", generation=1)
    digest = inputs_hash(app, redis_password="pw")
    web = {"kind": "Deployment", "metadata": {"name": "hello-web", "annotations": {}},
           "spec": {"template": {"metadata": {"annotations": {"a": "1"}}, "spec": {}}}}
    live = with_applied_hash(web)
    live["metadata"]["annotations"]["flaskapp.dev/inputs-hash"] = digest
    new = copy.deepcopy(web)
    new["spec"]["template"]["metadata"]["annotations"]["a"] = "2"
    assert upgrades([new], {key_of(web): live}, digest) == [key_of(web)]
    assert upgrades([new], {key_of(web): live}, "other inputs") == []  # inputs changed: not paced
    assert upgrades([web], {key_of(web): live}, digest) == []  # nothing would roll
    edited = copy.deepcopy(live)
    edited["spec"]["template"]["metadata"]["annotations"]["a"] = "edited"
    assert upgrades([web], {key_of(web): edited}, digest) == []  # drift: repaired at once
    assert inputs_hash(app, redis_password="pw") != inputs_hash(app, redis_password="other")


def test_a_second_pass_applies_nothing_with_or_without_redis():
    """The inputs hash on the workloads is stable: the Redis password counts only where a Secret keeps it."""
    for engine in ("redis", "memcached"):
        app = load_sample("minimal")
        app["spec"]["redis"] = {"cache": {"engine": engine}}
        app["metadata"].update(namespace="ns", uid="u", generation=1)
        cluster = RollingCluster(app)
        reconcile(cluster, "ns", "hello", RolloutPacer(1))
        first = len(cluster.applied)
        reconcile(cluster, "ns", "hello", RolloutPacer(1))
        assert first and len(cluster.applied) == first, engine


def test_the_pacer_needs_a_slot():
    with pytest.raises(ValueError):
        RolloutPacer(0)
