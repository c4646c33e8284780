"""The agent's ConfigMap volume as the kubelet mounts it: each `items` entry written at its path under a
directory, read-only. Used by the unit tests (a subprocess per case) and the workload tests (real gunicorn)."""

from __future__ import annotations

import stat
from pathlib import Path

from flaskapp_operator.builders.agent import AGENT_DIR, VOLUME


def mount_agent(objects: list[dict], pod_spec: dict, target: Path) -> Path:
    """Write the pod's agent volume (from the rendered ConfigMap it names) under `target`; returns the
    directory that stands for AGENT_DIR. Fails when the pod has no agent volume or mount."""
    volume = next(v for v in pod_spec["volumes"] if v["name"] == VOLUME)
    mounts = [m for c in pod_spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == VOLUME]
    assert mounts and all(m["mountPath"] == AGENT_DIR and m.get("readOnly") for m in mounts), mounts
    configmap = next(o for o in objects if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"] == volume["configMap"]["name"])
    for item in volume["configMap"]["items"]:
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(configmap["data"][item["key"]])
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return target
