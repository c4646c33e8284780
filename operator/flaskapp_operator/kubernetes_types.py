"""Kubernetes' own field types (Container, Volume, Affinity, ...) inside the FlaskApp API.

The schemas are those of the pinned Kubernetes release, vendored as structural CRD schemas in
kubernetes_schemas.json (`make kubernetes-schemas`, hack/vendor_kubernetes_schemas.py). The same schema goes
into the CRD (the API server validates) and, through jsonschema, checks a spec the CLI or the operator
parses: one definition, the same field-named errors either way.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema


@functools.cache
def _vendored() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("kubernetes_schemas.json").read_text())


def kubernetes_version() -> str:
    return _vendored()["kubernetesVersion"]


def crd_schema(kind: str) -> dict[str, Any]:
    """The structural schema of a core/v1 type, for the CRD (a fresh copy: callers may annotate it)."""
    return json.loads(json.dumps(_vendored()["schemas"][kind]))


def _as_json_schema(node: Any) -> Any:
    """The CRD dialect in JSON Schema terms: int-or-string is a type union; an object with declared
    properties and no x-kubernetes-preserve-unknown-fields admits nothing else (the API server prunes
    unknown fields silently; we name them instead, as `kubectl --validate=strict` does)."""
    if not isinstance(node, dict):
        return node
    out = {k: ({p: _as_json_schema(v) for p, v in val.items()} if k == "properties" else _as_json_schema(val))
           for k, val in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft7Validator(_as_json_schema(crd_schema(kind)))


def _path(base: str, parts: Any) -> str:
    out = base
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validation_errors(kind: str, value: Any, path: str) -> list[tuple[str, str]]:
    """(field path, message) for each way `value` is not a valid `kind`."""
    errors = []
    for error in sorted(_validator(kind).iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        where = _path(path, error.absolute_path)
        if error.validator == "additionalProperties":
            known = set(error.schema.get("properties", {}))
            for unknown in sorted(set(error.instance) - known):
                errors.append((f"{where}.{unknown}", "unknown field"))
        elif error.validator == "required":
            missing = error.message.split("'")[1]
            errors.append((f"{where}.{missing}", "required field is missing"))
        else:
            errors.append((where, error.message))
    return errors
