"""The watch-fed cache: what a pass reads instead of the API server, and its memory of the pass's own writes."""

from __future__ import annotations

import json

from flaskapp_operator.cache import WRITE_MEMORY_SECONDS, WatchCache, pack
from flaskapp_operator.ownership import FIELD_MANAGER, not_ours, owns_replicas
from flaskapp_operator.naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def obj(kind: str, name: str, version: str, app: str = "shop", ns: str = "default", **extra) -> dict:
    return {"apiVersion": "v1", "kind": kind, **extra,
            "metadata": {"name": name, "namespace": ns, "resourceVersion": version,
                         "labels": {INSTANCE_LABEL: app, MANAGED_BY_LABEL: MANAGED_BY}}}


def test_children_and_pods_are_kept_by_app_until_deleted():
    cache = WatchCache()
    cache.watched_child("Deployment", obj("Deployment", "shop-web", "1"))
    cache.watched_child("Service", obj("Service", "shop-web", "2"))
    cache.watched_child("Deployment", obj("Deployment", "blog-web", "3", app="blog"))
    cache.watched_child("Deployment", obj("Deployment", "shop-web", "4", ns="other"))
    cache.watched_child("Pod", obj("Pod", "shop-web-abc", "5"))
    assert set(cache.children("default", "shop")) == {("Deployment", "shop-web"), ("Service", "shop-web")}
    assert [p["metadata"]["name"] for p in cache.pods("default", "shop")] == ["shop-web-abc"]
    cache.watched_child("Deployment", obj("Deployment", "shop-web", "6", spec={"replicas": 3}))
    assert cache.children("default", "shop")[("Deployment", "shop-web")]["spec"] == {"replicas": 3}
    cache.child_gone("Deployment", obj("Deployment", "shop-web", "7"))
    cache.child_gone("Pod", obj("Pod", "shop-web-abc", "8"))
    assert set(cache.children("default", "shop")) == {("Service", "shop-web")}
    assert cache.pods("default", "shop") == []
    unlabelled = obj("ConfigMap", "x", "9")
    del unlabelled["metadata"]["labels"][INSTANCE_LABEL]
    cache.watched_child("ConfigMap", unlabelled)  # not a child of any app: ignored
    assert cache.sizes()["objects"] == 3  # shop's Service, blog's and the other namespace's Deployments


def test_a_pass_reads_its_own_writes_until_the_watch_moves_past_them():
    clock = Clock()
    cache = WatchCache(clock=clock)
    cache.watched_child("Deployment", obj("Deployment", "shop-web", "10", spec={"image": "v1"}))
    cache.wrote(obj("Deployment", "shop-web", "11", spec={"image": "v2"}))
    # The watch has not delivered our write yet: the pass sees what it wrote, not the stale copy.
    assert cache.children("default", "shop")[("Deployment", "shop-web")]["spec"] == {"image": "v2"}
    # A later event (ours, or a controller's status write after it) replaces the memory of the write.
    cache.watched_child("Deployment", obj("Deployment", "shop-web", "12", spec={"image": "v2"}, status={"ready": 1}))
    assert cache.children("default", "shop")[("Deployment", "shop-web")]["status"] == {"ready": 1}

    assert cache._written == {}  # forgotten as soon as the watch moves on: the memory stays small
    cache.wrote(obj("Deployment", "shop-web", "12", spec={"image": "v2"}))  # its event came before the answer
    assert cache._written == {}
    # A created object is seen before its first event; a deleted one is gone before its DELETED event.
    cache.wrote(obj("ConfigMap", "shop-nginx", "13"))
    cache.deleted(cache.children("default", "shop")[("Deployment", "shop-web")])
    assert set(cache.children("default", "shop")) == {("ConfigMap", "shop-nginx")}


def test_pods_keep_what_their_status_is_judged_on():
    from flaskapp_operator.observe import pod_problems, stuck_pods
    import datetime

    pod = obj("Pod", "shop-web-abc", "50", spec={"nodeName": "n1", "containers": [{"name": "gunicorn", "image": "x"}]},
              status={"containerStatuses": [{"name": "gunicorn", "restartCount": 0,
                                             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}}}]})
    pod["metadata"]["labels"]["app.kubernetes.io/component"] = "web"
    pod["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    cache = WatchCache()
    cache.watched_child("Pod", pod)
    (cached,) = cache.pods("default", "shop")
    assert "containers" not in cached["spec"]
    now = datetime.datetime(2026, 1, 1, 0, 5, tzinfo=datetime.timezone.utc)
    assert pod_problems([cached]) == pod_problems([pod]) and pod_problems([cached])
    assert stuck_pods([cached], now) == stuck_pods([pod], now)


def test_the_memory_of_a_write_expires_when_no_event_comes():
    clock = Clock()
    cache = WatchCache(clock=clock)
    cache.watched_child("Service", obj("Service", "shop-web", "20", spec={"port": 80}))
    cache.wrote(obj("Service", "shop-web", "21", spec={"port": 8080}))  # its event lost (a watch re-list)
    assert cache.children("default", "shop")[("Service", "shop-web")]["spec"] == {"port": 8080}
    clock.now += WRITE_MEMORY_SECONDS + 1
    assert cache.children("default", "shop")[("Service", "shop-web")]["spec"] == {"port": 80}


def test_the_flaskapp_and_its_status_patch():
    cache = WatchCache()
    app = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "spec": {"image": "a"},
           "metadata": {"name": "shop", "namespace": "default", "resourceVersion": "30"}}
    cache.watched_flaskapp(app)
    cache.wrote({**app, "metadata": {**app["metadata"], "resourceVersion": "31"}, "status": {"phase": "Ready"}})
    assert cache.flaskapp("default", "shop")["status"] == {"phase": "Ready"}
    assert cache.flaskapp_keys() == [("default", "shop")]
    assert "FlaskApp" not in {kind for kind, _ in cache.children("default", "shop")}
    cache.flaskapp_gone("default", "shop")
    assert cache.flaskapp("default", "shop") is None and cache.flaskapp_keys() == []


def test_slimmed_entries_answer_the_ownership_checks_like_the_full_object():
    managed = [
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {
            "f:spec": {"f:containers": {"k:{\"name\":\"gunicorn\"}": {".": {}, "f:image": {}}}}}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "fieldsV1": {"f:status": {"f:replicas": {}}}},
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
    ]
    full = obj("Deployment", "shop-web", "40", spec={"replicas": 2})
    full["metadata"]["managedFields"] = managed
    full["metadata"]["ownerReferences"] = [{"uid": "u1", "kind": "FlaskApp", "name": "shop"}]
    cache = WatchCache()
    cache.watched_child("Deployment", full)
    cached = cache.children("default", "shop")[("Deployment", "shop-web")]
    assert owns_replicas(cached) is owns_replicas(full) is True
    assert not_ours(cached, "u1") is not_ours(full, "u1") is True  # kubectl-edit manages a field
    full["metadata"]["managedFields"] = managed[:2]
    cache.watched_child("Deployment", full)
    cached = cache.children("default", "shop")[("Deployment", "shop-web")]
    assert not_ours(cached, "u1") is not_ours(full, "u1") is False
    assert len(pack(full)) < len(json.dumps(full))


def test_the_echo_of_our_own_write_asks_for_no_pass_but_anyone_elses_change_does():
    cache = WatchCache()
    assert cache.watched_child("Service", obj("Service", "shop-web", "1")) == ("default", "shop")
    cache.wrote(obj("Service", "shop-web", "2"))
    assert cache.watched_child("Service", obj("Service", "shop-web", "2")) is None  # our apply, delivered
    assert cache.watched_child("Service", obj("Service", "shop-web", "3")) == ("default", "shop")  # someone else
    assert cache.watched_child("Pod", obj("Pod", "shop-web-abc", "4")) == ("default", "shop")


def test_a_new_listing_replaces_one_kind_and_names_the_apps_that_changed_meanwhile():
    """After a watch gap (410 Gone, a lost connection) the kind is listed again: objects deleted meanwhile
    leave the cache, and only the FlaskApps whose objects of that kind changed are named for a pass."""
    cache = WatchCache()
    for body in (obj("Deployment", "shop-web", "1"), obj("Deployment", "blog-web", "2", app="blog"),
                 obj("Deployment", "news-web", "3", app="news"), obj("Deployment", "shop-web", "4", ns="other"),
                 obj("Service", "shop-web", "5")):
        cache.watched_child(body["kind"], body)
    cache.watched_child("Pod", obj("Pod", "blog-web-abc", "6", app="blog"))

    changed = cache.replace_kind("Deployment", "default", [
        obj("Deployment", "shop-web", "1"),  # unchanged
        obj("Deployment", "blog-web", "7", app="blog"),  # changed
        obj("Deployment", "wiki-web", "8", app="wiki"),  # new; news-web was deleted meanwhile
    ])
    assert changed == {("default", "blog"), ("default", "news"), ("default", "wiki")}
    assert set(cache.children("default", "shop")) == {("Deployment", "shop-web"), ("Service", "shop-web")}
    assert cache.children("default", "news") == {}
    assert set(cache.children("other", "shop")) == {("Deployment", "shop-web")}  # another namespace's watch
    assert [p["metadata"]["name"] for p in cache.pods("default", "blog")] == ["blog-web-abc"]  # another kind
    assert cache.replace_kind("Pod", None, []) == {("default", "blog")} and cache.pods("default", "blog") == []


def test_children_are_stored_as_their_difference_from_a_reference_of_their_kind():
    """A preset zlib dictionary per kind: a rendered child takes a fraction of its plain compressed size, and
    reads back exactly as slimmed."""
    import copy
    import zlib

    from testsupport.samples import load_sample
    from flaskapp_operator.cache import slim, unpack
    from flaskapp_operator.render import render

    app = load_sample("minimal")
    app["metadata"].update(name="shop", namespace="default", uid="u1")
    plain = packed = 0
    for child in render(app, redis_password="pw").objects:
        child = copy.deepcopy(child)
        child["metadata"]["resourceVersion"] = "7"
        raw = json.dumps(slim(child), separators=(",", ":")).encode()
        plain, packed = plain + len(zlib.compress(raw, 1)), packed + len(pack(child))
        assert unpack(pack(child), child["kind"], child["metadata"]["name"]) == slim(child)
    assert packed < 0.5 * plain, (packed, plain)
