"""Child object names (DNS labels of at most 63 characters) and the labels every object carries."""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
VERSION_LABEL = "app.kubernetes.io/version"
# Every label the operator sets on its objects and pods: a FlaskApp's pod blocks may not set them.
OPERATOR_LABELS = (NAME_LABEL, INSTANCE_LABEL, COMPONENT_LABEL, MANAGED_BY_LABEL, PART_OF_LABEL, VERSION_LABEL)
MANAGED_BY = "flaskapp-operator"


# A StatefulSet's pods carry `controller-revision-hash: <name>-<10 characters>`, a label value (at most 63): a longer
# StatefulSet name creates no pod at all (kubernetes/kubernetes#64023).
STATEFULSET_NAME_MAX = 52


def child_name(app: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """`<app>-<suffix>`, shortened with a stable hash when it would exceed `limit` (63) characters."""
    full = f"{app}-{suffix}" if suffix else app
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    keep = limit - len(digest) - 1 - (len(suffix) + 1 if suffix else 0)
    head = app[:keep].rstrip("-")
    return f"{head}-{digest}-{suffix}" if suffix else f"{head}-{digest}"


def selector_labels(app: str, component: str) -> dict[str, str]:
    """Immutable Deployment selectors: only what never changes for the life of the object."""
    return {NAME_LABEL: "flaskapp", INSTANCE_LABEL: app, COMPONENT_LABEL: component}


def labels(app: str, component: str, version: str | None = None) -> dict[str, str]:
    out = {**selector_labels(app, component), MANAGED_BY_LABEL: MANAGED_BY, PART_OF_LABEL: app}
    if version:
        out[VERSION_LABEL] = version
    return out


def instance_selector(app: str) -> str:
    """Label selector matching every child of one FlaskApp."""
    return f"{INSTANCE_LABEL}={app},{MANAGED_BY_LABEL}={MANAGED_BY}"


def image_version(image: str) -> str | None:
    """The image tag as a label value (at most 63 of [A-Za-z0-9._-]), or None."""
    ref = image.split("@", 1)[0]
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else None
    if not tag:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", tag)[:63].strip("-._")
    return cleaned or None
