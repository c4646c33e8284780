"""Every FlaskApp and its children in memory, fed by the operator's watches: a pass reads no API.

Without it, each pass listed ten kinds (and the app's pods) from the API server: with a resync every minute,
1,000 idle FlaskApps cost over 10,000 LIST requests a minute. The watches the operator opens anyway (one per
kind, filtered by our managed-by label) fill this cache: FlaskApps through a kopf index, children and pods through
watches.py; passes start once every kind's first listing is in: no pass ever sees a half-filled cache.

Entries are slimmed (managedFields reduced to what ownership checks read, pods to their status) and kept as
JSON compressed against a reference of their kind: a few hundred bytes per object. A pass's own writes are remembered (compressed too) until the watch
delivers the next event of the object ("read your writes"): the pass after an apply does not apply again from a
copy a watch event behind; that event, the echo of our own write, asks for no pass.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Optional

from .naming import INSTANCE_LABEL

Key = tuple[str, str]  # (kind, name)
AppKey = tuple[str, str]  # (namespace, FlaskApp name)

# How long a write of ours stands in for the watched copy when no event about the object comes (an apply that
# changed nothing): afterwards the watched copy is trusted again.
WRITE_MEMORY_SECONDS = 30.0


def slim(body: dict) -> dict:
    """What a pass reads of an object: managedFields keep only who manages what at the top (ownership checks)
    and whether our apply owns spec.replicas (the HPA handover); everything else is kept as is."""
    meta = dict(body.get("metadata") or {})
    managed = []
    for entry in meta.get("managedFields") or []:
        kept = {k: entry[k] for k in ("manager", "operation", "subresource") if entry.get(k)}
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            kept["fieldsV1"] = {"f:spec": {"f:replicas": {}}}
        managed.append(kept)
    meta["managedFields"] = managed
    return {**body, "metadata": meta}


def slim_pod(body: dict) -> dict:
    """What observe.py reads of a pod (its tier, whether and why its containers run): not its spec."""
    meta = body.get("metadata") or {}
    return {"kind": "Pod",
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "resourceVersion", "creationTimestamp",
                                              "deletionTimestamp") if k in meta},
            "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
            "status": body.get("status") or {}}


# zlib preset dictionaries (RFC 1950's FDICT), one per kind: objects of one kind share most of their text (keys,
# labels, our pod templates), so each is stored as its difference from a reference: about 190 bytes instead of 820
# for a rendered child (measured on the samples' renders). The reference is our own render of a small FlaskApp
# for the kinds it has, else the first object of the kind packed; set once, never changed.
_dictionaries: dict[str, bytes] = {}
_dictionaries_lock = threading.Lock()
ZLIB_WINDOW = 32768  # what of a dictionary zlib can refer to
REFERENCE_APP = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp",
                 "metadata": {"name": "reference", "namespace": "reference", "uid": "reference"},
                 "spec": {"image": "registry.example/app:1", "wsgi": "app:create_app()"}}


# Children whose text is nearly the same in every app and too large to share a window with the rest of their kind
# (the agent's ConfigMap holds its ~25 KB source) have a dictionary of their own, chosen by their name's suffix.
OWN_DICTIONARY_SUFFIXES = {("ConfigMap", "-agent")}


def _dictionary_key(kind: str, name: str) -> str:
    return next((kind + suffix for k, suffix in OWN_DICTIONARY_SUFFIXES if k == kind and name.endswith(suffix)), kind)


def _reference(key: str, raw: bytes) -> bytes:
    """The reference text of a dictionary key: every object of the kind in the reference render, in order."""
    reference = _dictionaries.get(key)
    if reference is None:
        with _dictionaries_lock:
            if not _dictionaries:
                from .render import render  # the renderer does not import the cache: no cycle

                for obj in render(REFERENCE_APP, redis_password="reference").objects:  # every one of a kind
                    own = _dictionary_key(obj["kind"], obj["metadata"]["name"])
                    _dictionaries[own] = _dictionaries.get(own, b"") + json.dumps(slim(obj), separators=(",", ":")).encode()
            reference = _dictionaries.setdefault(key, raw)
    return reference


# An object longer than zlib's window cannot refer to the start of a dictionary as long as itself: it is packed in
# chunks, each against the part of the reference around the same offset (the agent's ConfigMap, ~40 KB, is the same
# text in every app but its name and labels).
CHUNK = 16384
_CHUNK_LEAD = 4096  # how far past the chunk's own offset its dictionary reaches (names shift the text a little)
_LENGTH = struct.Struct(">I")
_CHUNKED = b"\x00"  # first byte of a chunked packing; a zlib stream never starts with it


def _chunk_dictionary(reference: bytes, offset: int) -> bytes:
    end = offset + CHUNK + _CHUNK_LEAD
    return reference[max(0, end - ZLIB_WINDOW):end]


def pack(body: dict) -> bytes:
    raw = json.dumps(slim(body), separators=(",", ":")).encode()
    reference = _reference(_dictionary_key(body.get("kind", ""), body.get("metadata", {}).get("name", "")), raw)
    if len(raw) <= CHUNK:  # one zlib stream: its first byte is 0x78 (RFC 1950 CMF for a 32 KB window)
        compressor = zlib.compressobj(1, zdict=reference[-ZLIB_WINDOW:])
        return compressor.compress(raw) + compressor.flush()
    out = [_CHUNKED]
    for offset in range(0, len(raw), CHUNK):
        compressor = zlib.compressobj(1, zdict=_chunk_dictionary(reference, offset))
        packed = compressor.compress(raw[offset:offset + CHUNK]) + compressor.flush()
        out += [_LENGTH.pack(len(packed)), packed]
    return b"".join(out)


def unpack(packed: bytes, kind: str, name: str = "") -> dict:
    reference = _dictionaries[_dictionary_key(kind, name)]
    if not packed.startswith(_CHUNKED):
        decompressor = zlib.decompressobj(zdict=reference[-ZLIB_WINDOW:])
        return json.loads(decompressor.decompress(packed) + decompressor.flush())
    raw, position = b"", len(_CHUNKED)
    while position < len(packed):
        (size,) = _LENGTH.unpack_from(packed, position)
        position += _LENGTH.size
        decompressor = zlib.decompressobj(zdict=_chunk_dictionary(reference, len(raw)))
        raw += decompressor.decompress(packed[position:position + size]) + decompressor.flush()
        position += size
    return json.loads(raw)


@dataclass(frozen=True)
class _Entry:
    version: str
    packed: bytes


@dataclass(frozen=True)
class _Written:
    packed: Optional[bytes]  # None: we deleted it
    version: Optional[str]  # the resourceVersion our write returned
    watched_version: Optional[str]  # the watched copy's resourceVersion when we wrote (None: not watched yet)
    at: float


class WatchCache:
    """Thread-safe: kopf's event loop writes (watch events), reconcile threads read and record their writes."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._apps: dict[AppKey, _Entry] = {}
        self._children: dict[AppKey, dict[Key, _Entry]] = {}  # by owning app, every kind but Pod
        self._pods: dict[AppKey, dict[str, _Entry]] = {}
        self._written: dict[AppKey, dict[Key, _Written]] = {}  # by app: our last write of each object

    # -- fed by the watches --------------------------------------------------------------------------------

    def watched_flaskapp(self, body: dict) -> None:
        meta = body["metadata"]
        app_key = (meta["namespace"], meta["name"])
        with self._lock:
            self._apps[app_key] = _Entry(meta.get("resourceVersion", ""), pack({**body, "kind": "FlaskApp"}))
            self._forget_write(app_key, ("FlaskApp", meta["name"]))  # the watch has moved past our write

    def flaskapp_gone(self, namespace: str, name: str) -> None:
        with self._lock:
            self._apps.pop((namespace, name), None)
            self._forget_write((namespace, name), ("FlaskApp", name))

    def watched_child(self, kind: str, body: dict) -> Optional[AppKey]:
        """A watch event's object: returns its FlaskApp, or None when the event tells nothing new (the echo of
        our own write, or no FlaskApp label)."""
        app_key = _app_of(body)
        if app_key is None:
            return None
        key: Any = body["metadata"]["name"] if kind == "Pod" else (kind, body["metadata"]["name"])
        entry = _entry(kind, body)
        with self._lock:
            if kind == "Pod":
                self._pods.setdefault(app_key, {})[key] = entry
                return app_key
            self._children.setdefault(app_key, {})[key] = entry
            written = self._written.get(app_key, {}).get(key)
            self._forget_write(app_key, key)  # the watch has moved past it
            return None if written is not None and written.version == entry.version else app_key

    def child_gone(self, kind: str, body: dict) -> Optional[AppKey]:
        app_key = _app_of(body)
        if app_key is None:
            return None
        name = body["metadata"]["name"]
        with self._lock:
            stores: dict[AppKey, dict[Any, _Entry]] = self._pods if kind == "Pod" else self._children
            store = stores.get(app_key, {})
            store.pop(name if kind == "Pod" else (kind, name), None)
            if not store:
                stores.pop(app_key, None)
            self._forget_write(app_key, (kind, name))
        return app_key

    def replace_kind(self, kind: str, namespace: Optional[str], bodies: list[dict]) -> set[AppKey]:
        """A full listing of one kind (in one namespace, or all): replaces what is held of it; returns the
        FlaskApps whose objects of that kind changed, appeared or went away meanwhile."""
        fresh: dict[AppKey, dict[Any, _Entry]] = {}
        for body in bodies:
            app_key = _app_of(body)
            if app_key is not None:
                key = body["metadata"]["name"] if kind == "Pod" else (kind, body["metadata"]["name"])
                fresh.setdefault(app_key, {})[key] = _entry(kind, body)
        changed = set()
        with self._lock:
            stores: dict[AppKey, dict[Any, _Entry]] = self._pods if kind == "Pod" else self._children
            for app_key in [a for a in stores if namespace is None or a[0] == namespace]:
                store, new = stores[app_key], fresh.pop(app_key, {})
                old = {k: e.version for k, e in store.items() if kind == "Pod" or k[0] == kind}
                if old != {k: e.version for k, e in new.items()}:
                    changed.add(app_key)
                for k in old.keys() - new.keys():
                    del store[k]
                store.update(new)
                if not store:
                    del stores[app_key]
            for app_key, new in fresh.items():
                stores.setdefault(app_key, {}).update(new)
                changed.add(app_key)
        return changed

    # -- read by a pass ------------------------------------------------------------------------------------

    def flaskapp_keys(self) -> list[AppKey]:
        with self._lock:
            return sorted(self._apps)

    def flaskapp(self, namespace: str, name: str) -> Optional[dict]:
        with self._lock:
            return self._current((namespace, name), ("FlaskApp", name), self._apps.get((namespace, name)))

    def children(self, namespace: str, app: str) -> dict[Key, dict]:
        app_key = (namespace, app)
        with self._lock:
            watched = self._children.get(app_key, {})
            keys = set(watched) | {k for k in self._written.get(app_key, {}) if k[0] != "FlaskApp"}
            live = {key: self._current(app_key, key, watched.get(key)) for key in keys}
            return {key: obj for key, obj in live.items() if obj is not None}

    def pods(self, namespace: str, app: str) -> list[dict]:
        with self._lock:
            return [unpack(e.packed, "Pod") for e in self._pods.get((namespace, app), {}).values()]

    def _current(self, app_key: AppKey, key: Key, entry: Optional[_Entry]) -> Optional[dict]:
        """The watched copy, or our own later write while the watch has not moved since."""
        written = self._written.get(app_key, {}).get(key)
        if written is not None:
            watched_version = entry.version if entry else None
            if watched_version == written.watched_version and self._clock() - written.at < WRITE_MEMORY_SECONDS:
                return unpack(written.packed, *key) if written.packed is not None else None
            self._forget_write(app_key, key)
        return unpack(entry.packed, *key) if entry else None

    def _forget_write(self, app_key: AppKey, key: Key) -> None:
        writes = self._written.get(app_key)
        if writes is not None:
            writes.pop(key, None)
            if not writes:
                del self._written[app_key]

    # -- a pass's own writes -------------------------------------------------------------------------------

    def wrote(self, body: dict) -> None:
        """A child as the API server returned it from our apply, or the FlaskApp from our status patch."""
        meta = body["metadata"]
        app_key = (meta["namespace"], meta["name"]) if body["kind"] == "FlaskApp" else _app_of(body)
        if app_key is not None:
            self._remember(app_key, (body["kind"], meta["name"]), body)

    def deleted(self, live: dict) -> None:
        """A child we deleted (as it was before)."""
        app_key = _app_of(live)
        if app_key is not None:
            self._remember(app_key, (live["kind"], live["metadata"]["name"]), None)

    def _remember(self, app_key: AppKey, key: Key, body: Optional[dict]) -> None:
        packed = pack(body) if body is not None else None
        with self._lock:
            entry = (self._apps.get(app_key) if key[0] == "FlaskApp" else self._children.get(app_key, {}).get(key))
            if body is not None and entry is not None and entry.version == body["metadata"].get("resourceVersion"):
                return  # the watch delivered this very write already
            self._written.setdefault(app_key, {})[key] = _Written(
                packed, body["metadata"].get("resourceVersion") if body is not None else None,
                entry.version if entry else None, self._clock())

    def sizes(self) -> dict[str, int]:
        """Objects held and their compressed bytes (the operator's metrics)."""
        with self._lock:
            entries = [*self._apps.values(), *(e for store in self._children.values() for e in store.values()),
                       *(e for store in self._pods.values() for e in store.values())]
            return {"objects": len(entries), "bytes": sum(len(e.packed) for e in entries)}


def _entry(kind: str, body: dict) -> _Entry:
    return _Entry(body["metadata"].get("resourceVersion", ""),
                  pack(slim_pod(body) if kind == "Pod" else {**body, "kind": kind}))


def _app_of(body: dict) -> Optional[AppKey]:
    meta = body["metadata"]
    app = (meta.get("labels") or {}).get(INSTANCE_LABEL)
    return (meta["namespace"], app) if app else None
