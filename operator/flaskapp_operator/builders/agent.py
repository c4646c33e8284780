"""The in-process agent (spec.agent): the package `flaskapp_agent` shipped in a ConfigMap, mounted read-only
into every container that runs the app's Python, and loaded by its `sitecustomize` from the front of
PYTHONPATH — the way OpenTelemetry's operator injects Python auto-instrumentation. No change to the image.

What the agent does inside the process is described in the package itself (operator/flaskapp_agent).
"""

from __future__ import annotations

import functools
from importlib import resources

from .common import metadata
from .context import Context

AGENT_PACKAGE = "flaskapp_agent"
AGENT_DIR = "/etc/flaskapp/agent"
VOLUME = "flaskapp-agent"
# The package's sitecustomize, mounted at the top of AGENT_DIR under the name Python's `site` imports.
SITECUSTOMIZE_SOURCE = "_sitecustomize.py"


@functools.lru_cache(maxsize=1)
def agent_files() -> tuple[tuple[str, str, str], ...]:
    """(ConfigMap key, path under AGENT_DIR, source) of every file of the agent, in a stable order. A
    ConfigMap key cannot hold '/', so the package's files are keyed `flaskapp_agent.<file>` and placed by
    the volume's `items`."""
    package = resources.files(AGENT_PACKAGE)
    out = []
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".py"):
            continue
        if entry.name == SITECUSTOMIZE_SOURCE:
            out.append(("sitecustomize.py", "sitecustomize.py", entry.read_text()))
        else:
            out.append((f"{AGENT_PACKAGE}.{entry.name}", f"{AGENT_PACKAGE}/{entry.name}", entry.read_text()))
    return tuple(out)


def enabled(ctx: Context) -> bool:
    return ctx.spec.agent.enabled


def agent_configmap(ctx: Context) -> list[dict]:
    if not enabled(ctx):
        return []
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(ctx, ctx.child("agent"), "agent"),
             "data": {key: source for key, _, source in agent_files()}}]


def agent_volume(ctx: Context) -> dict:
    return {"name": VOLUME, "configMap": {"name": ctx.child("agent"),
                                          "items": [{"key": key, "path": path} for key, path, _ in agent_files()]}}


AGENT_MOUNT = {"name": VOLUME, "mountPath": AGENT_DIR, "readOnly": True}


def python_path(ctx: Context) -> str:
    """The agent first, then a PYTHONPATH the user gave in spec.env (a Dockerfile's ENV PYTHONPATH is replaced
    by any value the container spec sets: such an image repeats it in spec.env)."""
    user = next((e.value for e in ctx.spec.env if e.name == "PYTHONPATH" and e.value), None)
    return f"{AGENT_DIR}:{user}" if user else AGENT_DIR
