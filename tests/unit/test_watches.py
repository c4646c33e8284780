"""The list-then-watch protocol of watches.py on scripted API answers: pages, events, bookmarks, 410 Gone."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from flaskapp_operator.cache import WatchCache
from flaskapp_operator.naming import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from flaskapp_operator.watches import Expired, KindWatch


def deployment(name: str, version: str, app: str = "shop") -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version,
                         "labels": {INSTANCE_LABEL: app, MANAGED_BY_LABEL: MANAGED_BY}}}


class Response:
    def __init__(self, body=None, events=()):
        self.data = json.dumps(body).encode() if body is not None else b""
        self.events = events

    def stream(self, amt=None, decode_content=False):
        for event in self.events:  # split across chunks, as a stream may be
            line = json.dumps(event).encode() + b"\n"
            yield line[:7]
            yield line[7:]

    def release_conn(self):
        pass


class Api:
    """Answers GETs in order, and records their query parameters."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked: list[dict] = []

    def call_api(self, path, method, query_params=(), **_):
        self.asked.append(dict(query_params))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, 200, {}


def watch(api) -> tuple[KindWatch, WatchCache, list]:
    cache, notes = WatchCache(), []
    return KindWatch(api, cache, "apps/v1", "Deployment", "deployments", "ns", "sel",
                     lambda *a: notes.append(a)), cache, notes


def test_a_listing_follows_its_pages_and_a_watch_resumes_from_the_last_version_seen():
    api = Api(Response({"metadata": {"continue": "next"}, "items": [deployment("shop-web", "5")]}),
              Response({"metadata": {"resourceVersion": "9"}, "items": [deployment("blog-web", "6", "blog")]}),
              Response(events=[{"type": "MODIFIED", "object": deployment("shop-web", "10")},
                               {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}]))
    kind, cache, notes = watch(api)
    assert kind._list() == "9" and kind.listed.is_set() and notes == []
    assert api.asked[1]["continue"] == "next" and api.asked[0]["labelSelector"] == "sel"
    assert cache.children("ns", "blog")[("Deployment", "blog-web")]["apiVersion"] == "apps/v1"
    assert kind._watch("9") == "12"  # the bookmark's version: the next watch starts there
    assert api.asked[2]["resourceVersion"] == "9" and api.asked[2]["allowWatchBookmarks"] == "true"
    assert notes == [("Deployment", "ns", "shop")]
    assert cache.children("ns", "shop")[("Deployment", "shop-web")]["metadata"]["resourceVersion"] == "10"


@pytest.mark.parametrize("answer", [
    Response(events=[{"type": "ADDED", "object": deployment("shop-web", "10")},
                     {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}]),
    ApiException(status=410, reason="Gone"),
], ids=["in the stream", "before it"])
def test_a_version_too_old_ends_the_watch_for_a_new_listing(answer):
    kind, cache, _ = watch(Api(answer))
    with pytest.raises(Expired):
        kind._watch("1")


def test_a_kind_not_served_counts_as_listed_and_empty_so_passes_are_not_held():
    api = Api(ApiException(status=404, reason="Not Found"))
    kind, cache, _ = watch(api)
    kind.stopped.wait = lambda seconds: kind.stopped.set()  # stop instead of waiting to ask again
    kind.run()
    assert kind.listed.is_set() and cache.sizes()["objects"] == 0
