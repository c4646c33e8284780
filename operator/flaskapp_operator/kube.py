"""The only module that reads and writes the cluster for a pass: server-side apply of children, pruning, status,
Events; reads come from the watch cache (cache.py), which the watches keep current.

A reconcile that changes nothing must send no write (kopf-in-production #7): see ownership.py for how an
unchanged object is recognised.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import threading
import time
from typing import Any, Callable, Optional

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from . import api
from .agentreports import AgentReport
from .cache import WatchCache
from .kinds import (GATEWAY_API, GATEWAY_KINDS, KEDA_API, KEDA_KINDS, MONITORING_API, MONITORING_KINDS, POD_KINDS, Key,
                    Kind, key_of)
from .ownership import (FIELD_MANAGER, HANDOVER_MANAGER, autoscaler_minimums, not_ours, owned_by, owns_replicas,
                        up_to_date, with_applied_hash)

log = logging.getLogger(__name__)

# Answers that no retry will change: the object itself is refused (validation, admission, quota).
REFUSED = (400, 403, 422)


class ApplyRefused(Exception):
    """The API server refused a rendered object; its message names the field."""

    def __init__(self, key: Key, exc: ApiException):
        self.key = key
        try:
            self.detail = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            self.detail = exc.reason
        super().__init__(f"the API server refused {key[0]}/{key[1]}: {self.detail}")


class NameConflict(Exception):
    """A child's name is taken by an object this FlaskApp does not own (a user's, another FlaskApp's)."""

    def __init__(self, key: Key, existing: dict):
        self.key = key
        owners = [f"{o.get('kind')}/{o.get('name')}" for o in existing["metadata"].get("ownerReferences") or []]
        held = f"owned by {', '.join(owners)}" if owners else "not owned by this FlaskApp"
        super().__init__(f"{key[0]}/{key[1]} already exists, {held}: rename or delete it (it is never taken over)")


def _plain(_client: Any, body: dict) -> dict:
    """The dynamic client's answer as its decoded JSON, not wrapped in a ResourceInstance only to be turned back
    into a dict (to_dict()) on every apply."""
    return body


class Cluster:
    """Reads and writes of one operator process, over a shared, thread-safe API client. Reads of FlaskApps,
    children and pods come from the watch cache; only a user's Secret and a stuck pod's Events are asked of the
    API server."""

    def __init__(self, api_client: client.ApiClient, cache: WatchCache, discovery_ttl_seconds: float = 300.0,
                 agent_reports: Optional[Callable[[str, str], AgentReport]] = None):
        self.api_client = api_client
        # What Prometheus last said of an app's agent reports (prometheus.py); None: not read.
        self.agent_reports = agent_reports
        self.cache = cache
        # How long an answer about served APIs is kept: CRDs installed later are picked up within this time.
        self.discovery_ttl_seconds = discovery_ttl_seconds
        self._dynamic: Optional[DynamicClient] = None
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], Any] = {}
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self._discovered: dict[str, tuple[float, bool]] = {}  # optional API -> (when asked, served)

    def agent_report(self, namespace: str, name: str) -> Optional[AgentReport]:
        return self.agent_reports(namespace, name) if self.agent_reports is not None else None

    def monitoring_api(self) -> bool:
        """Whether PodMonitor and PrometheusRule are served; asked at most every discovery_ttl_seconds."""
        return self._serves(MONITORING_API, MONITORING_KINDS)

    def keda_api(self) -> bool:
        """Whether KEDA's ScaledObject and TriggerAuthentication are served (same cache)."""
        return self._serves(KEDA_API, KEDA_KINDS)

    def gateway_api(self) -> bool:
        """Whether Gateway API's HTTPRoute is served (same cache)."""
        return self._serves(GATEWAY_API, GATEWAY_KINDS)

    def _serves(self, api_version: str, kinds: tuple[Kind, ...]) -> bool:
        with self._lock:
            known = self._discovered.get(api_version)
            if known and time.monotonic() - known[0] < self.discovery_ttl_seconds:
                return known[1]
        group, version = api_version.split("/")
        try:
            served = {r.kind for r in self.custom.get_api_resources(group, version).resources}
        except ApiException as exc:
            if exc.status != 404:
                raise
            served = set()
        answer = all(kind in served for _, kind, _ in kinds)
        with self._lock:
            known = self._discovered.get(api_version)
            if known and known[1] != answer:
                self._dynamic = None  # discovery again: the kinds came or went
                self._resources.clear()
            self._discovered[api_version] = (time.monotonic(), answer)
        return answer

    def resource(self, api_version: str, kind: str) -> Any:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = DynamicClient(self.api_client)  # discovery: once per process
            if (api_version, kind) not in self._resources:
                self._resources[(api_version, kind)] = self._dynamic.resources.get(api_version=api_version,
                                                                                   kind=kind)
            return self._resources[(api_version, kind)]

    # -- reads ------------------------------------------------------------------------------------------

    def get_flaskapp(self, namespace: str, name: str) -> Optional[dict]:
        return self.cache.flaskapp(namespace, name)

    def list_children(self, namespace: str, app: str) -> dict[Key, dict]:
        return self.cache.children(namespace, app)

    def list_pods(self, namespace: str, app: str) -> list[dict]:
        """The app's pods, read-only: their container states tell why a tier does not become ready."""
        return self.cache.pods(namespace, app)

    def get_secret(self, namespace: str, name: str) -> Optional[dict]:
        """A Secret the user owns (the database URL a pooler needs), or None when it does not exist."""
        try:
            return self.resource("v1", "Secret").get(namespace=namespace, name=name).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pod_events(self, namespace: str, pod_names: list[str]) -> dict[str, list[dict]]:
        """Events of the given pods (asked only for pods stuck before their containers start)."""
        events = self.resource("v1", "Event")
        return {name: events.get(namespace=namespace, field_selector=f"involvedObject.kind=Pod,"
                                 f"involvedObject.name={name}").to_dict()["items"] for name in pod_names}

    # -- writes -----------------------------------------------------------------------------------------

    def apply(self, desired: list[dict], live: dict[Key, dict], owner_uid: str) -> list[Key]:
        """Server-side apply what is missing or differs, all or nothing: no object this FlaskApp does not
        own is taken over (NameConflict), and if the API server refuses one object (validation, admission),
        nothing is left written and ApplyRefused names it. Updates `live` with the results."""
        changed = [obj for obj in map(with_applied_hash, desired) if not up_to_date(live.get(key_of(obj)), obj)]
        if changed and all(key_of(obj) not in live for obj in changed):
            return self._create(changed, live, owner_uid, autoscaler_minimums(desired))
        for obj in changed:
            existing = live.get(key_of(obj))
            if existing is not None and not owned_by(existing, owner_uid):
                raise NameConflict(key_of(obj), existing)
            # Changes to running objects are first checked by the API server (dryRun=All, admission
            # included): a refused one leaves every object as it was.
            checked = self._server_side_apply(obj, dry_run=True)
            # `live` holds what carries our labels; a same-named object without them shows in the dry run's
            # answer (no extra read): another owner, or fields someone else manages.
            if existing is None and not_ours(checked, owner_uid):
                raise NameConflict(key_of(obj), checked)
        minimums = autoscaler_minimums(desired)
        for obj in changed:
            self._apply_one(obj, live, minimums)
        return [key_of(obj) for obj in changed]

    def _create(self, new: list[dict], live: dict[Key, dict], owner_uid: str, minimums: dict[str, int]) -> list[Key]:
        """Objects none of which exists yet with our labels (a new FlaskApp, a pool added): instead of a dry run
        of each, a GET finds a name taken by someone else's object (as `kubectl apply` does), and a refusal
        deletes what this pass created, so that nothing is left. Half the API server's work of a dry run per
        object: a fleet of new FlaskApps came up 1.6x slower than `kubectl apply` of the same objects with dry
        runs, 1.2x without (make bench, 300 apps). Pods' kinds come last: a refusal of any other object is
        undone before a pod exists, and NetworkPolicies are in place before the first pod starts.

        The GETs ask for resourceVersion 0: the API server answers from its watch cache, without a read from
        etcd (0.5 ms of API server and etcd CPU per GET instead of 1.4 ms, measured on the local control plane),
        at the price of a cache that may lag etcd by milliseconds. An object someone creates under the same
        name within that lag, or between this GET and our apply, is missed; the same race `kubectl apply` has
        between its GET and its create."""
        for obj in new:
            found = self._get(obj, resource_version="0")
            if found is not None and not_ours(found, owner_uid):
                raise NameConflict(key_of(obj), found)
        created: list[dict] = []
        try:
            for obj in sorted(new, key=lambda o: o["kind"] in POD_KINDS):
                self._apply_one(obj, live, minimums)
                created.append(obj)
        except ApplyRefused:
            undone = {key_of(obj): live.pop(key_of(obj)) for obj in reversed(created)}
            self.prune(set(), undone, owner_uid)
            raise
        return [key_of(obj) for obj in created]

    def _get(self, obj: dict, resource_version: Optional[str] = None) -> Optional[dict]:
        try:
            return self.resource(obj["apiVersion"], obj["kind"]).get(
                name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"], serializer=_plain,
                resource_version=resource_version)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _apply_one(self, obj: dict, live: dict[Key, dict], minimums: dict[str, int]) -> None:
        before = live.get(key_of(obj))
        if obj["kind"] == "Deployment" and key_of(obj)[1] in minimums and before and owns_replicas(before):
            # replicas -> autoscaling: hand spec.replicas over first, or dropping it from our apply
            # would reset the Deployment to 1 pod until the HPA acts. At least the autoscaler's minimum: an
            # HPA never scales a target up from 0 replicas (make soak found a tier scaled to 0 left there).
            self._hand_over_replicas(obj, max(before["spec"].get("replicas", 1), minimums[key_of(obj)[1]]))
        if obj["kind"] == "Deployment" and before is None and key_of(obj)[1] in minimums:
            # A new autoscaled Deployment starts at the autoscaler's minimum, not at 1; the field is
            # handed over at once, so our later applies (without it) leave it to the HPA.
            minimum = minimums[key_of(obj)[1]]
            self._server_side_apply({**obj, "spec": {"replicas": minimum, **obj["spec"]}})
            live[key_of(obj)] = self._hand_over_replicas(obj, minimum)
        else:
            live[key_of(obj)] = self._server_side_apply(obj)
        self.cache.wrote(live[key_of(obj)])

    def _hand_over_replicas(self, obj: dict, replicas: int) -> dict:
        """Set spec.replicas as a field manager of its own, which the HPA then shares (Kubernetes docs,
        "Server-Side Apply: Transferring ownership"): our own applies leave the field out from then on."""
        return self.resource("apps/v1", "Deployment").server_side_apply(
            body={"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
                  "spec": {"replicas": replicas}},
            name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"],
            field_manager=HANDOVER_MANAGER, force_conflicts=True, serializer=_plain)

    def _server_side_apply(self, obj: dict, dry_run: bool = False) -> dict:
        resource = self.resource(obj["apiVersion"], obj["kind"])
        try:
            return resource.server_side_apply(body=obj, name=obj["metadata"]["name"],
                                              namespace=obj["metadata"]["namespace"], field_manager=FIELD_MANAGER,
                                              force_conflicts=True, dry_run="All" if dry_run else None,
                                              serializer=_plain)
        except ApiException as exc:
            if exc.status in REFUSED:
                raise ApplyRefused(key_of(obj), exc) from exc
            raise

    def prune(self, keep: set[Key], live: dict[Key, dict], owner_uid: str) -> list[Key]:
        """Delete children this FlaskApp owns that are no longer rendered (a pool removed, beat off)."""
        pruned = []
        for key, obj in list(live.items()):
            if key in keep or not owned_by(obj, owner_uid):
                continue
            resource = self.resource(obj["apiVersion"], obj["kind"])
            try:
                resource.delete(name=key[1], namespace=obj["metadata"]["namespace"],
                                body={"propagationPolicy": "Background"})
            except ApiException as exc:
                if exc.status != 404:
                    raise
            self.cache.deleted(obj)
            del live[key]
            pruned.append(key)
        return pruned

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        patched = self.custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, namespace, api.PLURAL,
                                                                    name, {"status": status})
        self.cache.wrote(patched)

    def post_event(self, flaskapp: dict, event_type: str, reason: str, message: str) -> None:
        meta = flaskapp["metadata"]
        now = datetime.datetime.now(datetime.timezone.utc)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(api_version=f"{api.GROUP}/{api.VERSION}", kind=api.KIND,
                                                     name=meta["name"], namespace=meta["namespace"],
                                                     uid=meta["uid"]),
            type=event_type, reason=reason, message=message[:1024], first_timestamp=now, last_timestamp=now,
            count=1, source=client.V1EventSource(component=FIELD_MANAGER), reporting_component=FIELD_MANAGER,
            reporting_instance=FIELD_MANAGER)
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:  # an Event is informative: never fail a reconcile for it
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"],
                        exc.reason)


def secret_value(secret: Optional[dict], key: str) -> Optional[str]:
    data = (secret or {}).get("data") or {}
    return base64.b64decode(data[key]).decode() if key in data else None
