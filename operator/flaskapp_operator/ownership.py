"""Which objects are ours, and whether a live object still holds what we applied: pure functions of objects.

A reconcile that changes nothing must send no write: each applied object carries the hash of what we applied,
and an object is re-applied only when that hash differs or the live object no longer contains what we want
(someone edited or deleted it).
"""

from __future__ import annotations

from typing import Any, Optional

from kubernetes.utils.quantity import parse_quantity

from .builders.common import checksum

FIELD_MANAGER = "flaskapp-operator"
HANDOVER_MANAGER = "flaskapp-operator-handover"  # holds spec.replicas of autoscaled Deployments for the HPA
APPLIED_HASH = "flaskapp.dev/applied-hash"


def not_ours(obj: dict, owner_uid: str) -> bool:
    """An object as a dry-run apply of ours would leave it: it existed before us if it has another owner
    or fields managed by anyone but us (status writers aside)."""
    owners = obj["metadata"].get("ownerReferences") or []
    foreign_owner = any(o.get("uid") != owner_uid for o in owners)
    foreign_fields = any(m.get("manager") not in (FIELD_MANAGER, HANDOVER_MANAGER) and not m.get("subresource")
                         for m in obj["metadata"].get("managedFields") or [])
    return foreign_owner or foreign_fields


def owned_by(obj: dict, owner_uid: str) -> bool:
    return any(o.get("uid") == owner_uid for o in obj["metadata"].get("ownerReferences") or [])


def owns_replicas(obj: dict) -> bool:
    """Whether our field manager's server-side apply owns spec.replicas of this live object."""
    return any(m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
               and "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})
               for m in obj["metadata"].get("managedFields") or [])


def autoscaler_minimums(objects: list[dict]) -> dict[str, int]:
    """minReplicas of each autoscaled Deployment, by name: an HPA's, or a KEDA ScaledObject's minReplicaCount
    (0 for a pool that scales to zero: no pod is then what ready means)."""
    fields = {"HorizontalPodAutoscaler": "minReplicas", "ScaledObject": "minReplicaCount"}
    return {o["spec"]["scaleTargetRef"]["name"]: o["spec"].get(fields[o["kind"]], 1)
            for o in objects if o["kind"] in fields}


def with_applied_hash(obj: dict) -> dict:
    annotations = dict(obj["metadata"].get("annotations") or {})
    annotations[APPLIED_HASH] = checksum(obj)[:16]
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


# Maps whose values are resource quantities: the API server stores them canonically ("0.5" as "500m",
# "1024Mi" as "1Gi"), so they are compared by value.
QUANTITY_MAPS = ("limits", "requests")


def contains(live: Any, desired: Any, quantity_map: bool = False) -> bool:
    """True when every field we set is present, with the same value, in the live object."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and (_same_quantity(live[k], v) if quantity_map
                           else contains(live[k], v, quantity_map=k in QUANTITY_MAPS))
            for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(lv, dv) for lv, dv in zip(live, desired))
    return live == desired or (desired == {} and live is None)


def _same_quantity(live: Any, desired: Any) -> bool:
    if live == desired:
        return True
    try:
        return parse_quantity(live) == parse_quantity(desired)
    except (ValueError, TypeError):
        return False


def up_to_date(live: Optional[dict], desired: dict) -> bool:
    if live is None:
        return False
    live_hash = (live["metadata"].get("annotations") or {}).get(APPLIED_HASH)
    return live_hash == desired["metadata"]["annotations"][APPLIED_HASH] and contains(live, desired)
