"""Rollout pacing across FlaskApps: an operator release that renders pods differently rolls apps in waves.

A workload (Deployment, StatefulSet) needs an *upgrade* when applying it would roll its pods (its pod template
is not contained in the live one) although nothing the render reads has changed since it was last applied: the
same FlaskApp spec and metadata, Secrets and served APIs (the inputs hash each workload carries), and the live
object still holds our last apply (otherwise someone edited it: drift, repaired at once). So only a new
operator release's templates are paced; a spec change, a rotated Secret or drift rolls at once, as before.

At most `max_rolling` FlaskApps roll upgrades at a time. An app holds its slot until it is Ready again, so a
release that breaks apps stops its own waves after the first few. An app annotated
`flaskapp.dev/auto-upgrade: "false"` keeps its pods until its spec changes. Slots live in the leader's memory:
after a failover, apps already rolling finish on their own and new waves start from an empty count.
"""

from __future__ import annotations

import threading
from typing import Optional

from .builders.common import checksum
from .kinds import Key, key_of
from .ownership import APPLIED_HASH, contains, with_applied_hash

INPUTS_HASH = "flaskapp.dev/inputs-hash"
AUTO_UPGRADE = "flaskapp.dev/auto-upgrade"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Annotations that change with every spec change anyway, or that we read ourselves.
_IGNORED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def inputs_hash(body: dict, **inputs) -> str:
    """Everything a render reads besides the operator's own code: the FlaskApp's spec, labels and annotations,
    and the other inputs (Redis password, database URL, served APIs)."""
    meta = body.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _IGNORED_ANNOTATIONS}
    return checksum({"spec": body.get("spec"), "labels": meta.get("labels") or {}, "annotations": annotations,
                     **inputs})[:16]


def with_inputs_hash(objects: list[dict], digest: str) -> list[dict]:
    """The workloads carry the inputs they were rendered from (on the object, not the pod template)."""
    return [{**o, "metadata": {**o["metadata"], "annotations": {**(o["metadata"].get("annotations") or {}),
                                                               INPUTS_HASH: digest}}}
            if o["kind"] in WORKLOAD_KINDS else o for o in objects]


def upgrades(desired: list[dict], live: dict[Key, dict], digest: str) -> list[Key]:
    """Workloads whose pods would roll only because this release renders them differently."""
    out = []
    for obj in desired:
        before = live.get(key_of(obj))
        if obj["kind"] not in WORKLOAD_KINDS or before is None:
            continue
        annotations = before["metadata"].get("annotations") or {}
        if annotations.get(INPUTS_HASH) != digest:
            continue  # the inputs changed (or an earlier release applied it): roll now
        if contains((before.get("spec") or {}).get("template"), obj["spec"]["template"]):
            continue  # no pod would roll
        if annotations.get(APPLIED_HASH) == with_applied_hash(obj)["metadata"]["annotations"][APPLIED_HASH]:
            continue  # our last apply was edited away: drift, repaired now
        out.append(key_of(obj))
    return out


def auto_upgrade(body: dict) -> bool:
    return ((body.get("metadata") or {}).get("annotations") or {}).get(AUTO_UPGRADE, "true").lower() != "false"


class RolloutPacer:
    """Which FlaskApps may roll an upgrade now; thread-safe (passes run in a thread pool)."""

    def __init__(self, max_rolling: int):
        if max_rolling < 1:
            raise ValueError("at least one FlaskApp must be allowed to roll an upgrade")
        self.max_rolling = max_rolling
        self._lock = threading.Lock()
        self._rolling: set[tuple[str, str]] = set()
        self._queued: set[tuple[str, str]] = set()
        self._held: set[tuple[str, str]] = set()
        self.completed = 0

    def decide(self, app: tuple[str, str], upgrading: bool, opted_out: bool) -> Optional[str]:
        """"rolling" (a slot is this app's), "queued" (no slot free), "held" (opted out) or None (nothing to do)."""
        with self._lock:
            if not upgrading:
                self._queued.discard(app)
                self._held.discard(app)
                return "rolling" if app in self._rolling else None  # a slot is kept until the app is Ready
            if opted_out:
                self._held.add(app)
                self._queued.discard(app)
                return "held"
            self._held.discard(app)
            if app in self._rolling or len(self._rolling) < self.max_rolling:
                self._rolling.add(app)
                self._queued.discard(app)
                return "rolling"
            self._queued.add(app)
            return "queued"

    def finish(self, app: tuple[str, str]) -> bool:
        """The app is Ready on the new templates: its slot frees. True if it held one."""
        with self._lock:
            if app not in self._rolling:
                return False
            self._rolling.discard(app)
            self.completed += 1
            return True

    def forget(self, app: tuple[str, str]) -> None:
        """The FlaskApp is gone."""
        with self._lock:
            self._rolling.discard(app)
            self._queued.discard(app)
            self._held.discard(app)

    def waiting(self) -> list[tuple[str, str]]:
        """Queued apps, when a slot is free for one of them (the scheduler asks them for a pass)."""
        with self._lock:
            return sorted(self._queued) if len(self._rolling) < self.max_rolling else []

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"rolling": len(self._rolling), "queued": len(self._queued), "held": len(self._held),
                    "completed": self.completed}
