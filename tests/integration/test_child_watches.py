"""The operator's list-then-watch of children (watches.py) against the real API server: events reach the cache
and name their FlaskApp, and a new listing drops what was deleted while no watch ran."""

from __future__ import annotations

import threading

import pytest
from kubernetes import config

from flaskapp_operator.cache import WatchCache
from flaskapp_operator.naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from flaskapp_operator.watches import ChildWatches, KindWatch
from testsupport.kube import wait_until

SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}"


def config_map(name: str, app: str, namespace: str, value: str = "1", ours: bool = True) -> dict:
    labels = {INSTANCE_LABEL: app, **({MANAGED_BY_LABEL: MANAGED_BY} if ours else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": value},
            "metadata": {"name": name, "namespace": namespace, "labels": labels}}


@pytest.fixture
def api(kube):
    return config.new_client_from_config(config_file=str(kube.kubeconfig))


class Notes:
    def __init__(self):
        self.apps: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, kind, namespace, app):
        with self.lock:
            self.apps.append((kind, namespace, app))

    def seen(self, app: str) -> bool:
        with self.lock:
            return any(a[2] == app for a in self.apps)


def test_events_fill_the_cache_and_name_their_app_only_for_our_objects(kube, api, namespace):
    kube.apply([config_map("shop-a", "shop", namespace), config_map("other", "x", namespace, ours=False)])
    cache, notes = WatchCache(), Notes()
    watches = ChildWatches(api, cache, [("v1", "ConfigMap", "configmaps")], [namespace], SELECTOR, notes)
    watches.start()
    try:
        assert watches.wait_listed(30)
        assert set(cache.children(namespace, "shop")) == {("ConfigMap", "shop-a")}
        assert cache.children(namespace, "shop")[("ConfigMap", "shop-a")]["apiVersion"] == "v1"  # prune needs it
        assert notes.apps == []  # the first listing asks for nothing: the FlaskApps' own listing does

        kube.apply([config_map("blog-a", "blog", namespace), config_map("shop-a", "shop", namespace, "2")])
        wait_until(lambda: notes.seen("blog") and notes.seen("shop"), 30, what="watch events")
        assert cache.children(namespace, "shop")[("ConfigMap", "shop-a")]["data"] == {"v": "2"}
        kube.kubectl("delete", "configmap", "shop-a", "-n", namespace)
        wait_until(lambda: cache.children(namespace, "shop") == {}, 30, what="the deletion")
        assert cache.children(namespace, "x") == {}  # not ours: never listed nor watched
    finally:
        watches.stop()


def test_a_new_listing_drops_what_went_away_while_no_watch_ran(kube, api, namespace):
    kube.apply([config_map("shop-a", "shop", namespace), config_map("shop-b", "shop", namespace)])
    cache, notes = WatchCache(), Notes()
    watch = KindWatch(api, cache, "v1", "ConfigMap", "configmaps", namespace, SELECTOR, notes)
    version = watch._list()
    assert set(cache.children(namespace, "shop")) == {("ConfigMap", "shop-a"), ("ConfigMap", "shop-b")}
    # No watch runs while shop-b is deleted (after a 410 Gone, or a lost connection: tests/unit/test_watches.py):
    # the next listing finds it gone and names the app.
    kube.kubectl("delete", "configmap", "shop-b", "-n", namespace)
    assert watch._list() != version
    assert set(cache.children(namespace, "shop")) == {("ConfigMap", "shop-a")}
    assert notes.apps == [("ConfigMap", namespace, "shop")]
