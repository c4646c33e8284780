"""One list-then-watch per child kind (and pods), feeding the WatchCache: client-go's reflector pattern.

kopf stays the framework for FlaskApps (the primary resource). Children and pods arrive in tens of events per
FlaskApp while it comes up (pods turning ready, Deployments' status): through kopf, each event took a worker
task, a per-object memory and the handler machinery, which at 300 FlaskApps was the operator's main CPU cost
and grew its memory with every object ever seen (py-spy, make bench). Here an event is one JSON decode in a
watch thread, an update of the cache and, when the object is news (not the echo of our own write), a request
for a pass of its FlaskApp.

Protocol (Kubernetes API concepts, "Efficient detection of changes"): LIST (paginated) with our label
selector, then WATCH from the list's resourceVersion with bookmarks; a watch that ends is resumed from the last
version seen; 410 Gone (the version is too old) or any error lists again, replacing what the cache holds of
that kind. A kind the cluster does not serve (a CRD not installed) counts as listed and empty, and is tried
again later; so does a kind the operator's RBAC forbids (logged as an error): passes are never held back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines  # the official client's line splitter of a watch stream

from .cache import WatchCache

log = logging.getLogger(__name__)

# The API server ends a watch after this; it is resumed at once (a stalled connection is noticed by the
# client's read timeout a little later).
WATCH_SECONDS = 300
READ_TIMEOUT_SECONDS = WATCH_SECONDS + 30
LIST_PAGE = 500
RETRY_SECONDS = (1, 2, 5, 10, 30)

Notify = Callable[[str, str, str], None]  # (kind, namespace, FlaskApp name): the object changed


class Expired(Exception):
    """410 Gone: the resourceVersion to resume from is older than the API server keeps."""


@dataclass
class KindWatch:
    """List-then-watch of one kind in one namespace (or all), in a thread of its own."""

    api: client.ApiClient
    cache: WatchCache
    api_version: str
    kind: str
    plural: str
    namespace: Optional[str]
    selector: str
    notify: Notify
    listed: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    # A kind not served (a CRD not installed yet) is listed again after this long, as the renderer asks again.
    absent_retry_seconds: float = 300.0

    @property
    def path(self) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{root}/namespaces/{self.namespace}/{self.plural}" if self.namespace else f"{root}/{self.plural}"

    def run(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            try:
                version = self._list()
                failures = 0
                while not self.stopped.is_set():
                    version = self._watch(version)
            except Expired:
                continue  # list again at once
            except ApiException as exc:
                if exc.status in (403, 404):  # not served (yet), or not allowed: empty, and asked again later
                    if exc.status == 403:  # passes go on (a kind they cannot see is treated as empty)
                        log.error("cannot list %s (forbidden): the operator's RBAC must allow list and watch",
                                  self.path)
                    for app in self.cache.replace_kind(self.kind, self.namespace, []):
                        self.notify(self.kind, *app)
                    self.listed.set()
                    self.stopped.wait(self.absent_retry_seconds)
                    continue
                failures += 1
                log.warning("watch of %s failed (%d in a row): %s", self.path, failures, exc.reason)
            except Exception as exc:  # noqa: BLE001 - connection lost, API server restarting: list again
                failures += 1
                log.warning("watch of %s failed (%d in a row): %s", self.path, failures, exc)
            self.stopped.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])

    def _typed(self, body: dict) -> dict:
        """A listed item carries no apiVersion and kind (its list does): prune() needs them."""
        body["apiVersion"], body["kind"] = self.api_version, self.kind
        return body

    def _get(self, params: list[tuple[str, str]], timeout: float):
        return self.api.call_api(self.path, "GET", query_params=[("labelSelector", self.selector), *params],
                                 header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                                 _preload_content=False, _request_timeout=(30, timeout))[0]

    def _list(self) -> str:
        items, params = [], [("limit", str(LIST_PAGE))]
        while True:
            page = json.loads(self._get(params, 60).data)
            items += [self._typed(item) for item in page.get("items") or []]
            token = page["metadata"].get("continue")
            if not token:
                break
            params = [("limit", str(LIST_PAGE)), ("continue", token)]
        changed = self.cache.replace_kind(self.kind, self.namespace, items)
        if self.listed.is_set():  # a list again: what changed while no watch ran (the first: every app's own)
            for app in changed:
                self.notify(self.kind, *app)
        self.listed.set()
        return page["metadata"]["resourceVersion"]

    def _watch(self, version: str) -> str:
        try:
            response = self._get([("watch", "true"), ("resourceVersion", version), ("allowWatchBookmarks", "true"),
                                  ("timeoutSeconds", str(WATCH_SECONDS))], READ_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 410:  # said before the stream starts, or as its first event (below)
                raise Expired() from exc
            raise
        try:
            for line in iter_resp_lines(response):
                if self.stopped.is_set():
                    break
                event = json.loads(line)
                body = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if body.get("code") == 410:
                        raise Expired()
                    raise ApiException(status=body.get("code"), reason=body.get("message"))
                version = body.get("metadata", {}).get("resourceVersion") or version
                if event.get("type") == "BOOKMARK":
                    continue
                body = self._typed(body)
                app = (self.cache.child_gone(self.kind, body) if event["type"] == "DELETED"
                       else self.cache.watched_child(self.kind, body))
                if app is not None:
                    self.notify(self.kind, *app)
        finally:
            response.release_conn()
        return version


class ChildWatches:
    """Every child kind (and pods) of every watched namespace: started once, listed before the first pass."""

    def __init__(self, api: client.ApiClient, cache: WatchCache, kinds: Sequence[tuple[str, str, str]],
                 namespaces: Sequence[str], selector: str, notify: Notify, absent_retry_seconds: float = 300.0):
        self.watches = [KindWatch(api, cache, api_version, kind, plural, namespace, selector, notify,
                                  absent_retry_seconds=absent_retry_seconds)
                        for api_version, kind, plural in kinds for namespace in (list(namespaces) or [None])]

    def start(self) -> None:
        for watch in self.watches:
            threading.Thread(target=watch.run, name=f"watch-{watch.kind.lower()}", daemon=True).start()

    def wait_listed(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        return all(w.listed.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                   for w in self.watches)

    def stop(self) -> None:
        for watch in self.watches:
            watch.stopped.set()
