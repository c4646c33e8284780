"""Vendor the Kubernetes pod field schemas the FlaskApp API embeds (`make kubernetes-schemas`).

Reads the core/v1 OpenAPI v3 document of the pinned Kubernetes release (from its Go module, cached by
`localcluster build`) and writes operator/flaskapp_operator/kubernetes_schemas.json: each type fully inlined
as a *structural* CRD schema, the rules of apiextensions.k8s.io/v1 ("Specifying a structural schema"):

- no `$ref` (CRDs cannot reference) and no `allOf` wrappers: references are inlined;
- IntOrString and Quantity become `x-kubernetes-int-or-string`, an embedded ObjectMeta an open object;
- `default`s are dropped (the API server defaults them in the Deployment it receives, not in our spec),
  except on the keys of `x-kubernetes-list-type: map` lists, which must be required or defaulted;
- nested descriptions are dropped: with them the CRD passes a megabyte (the field's own description, in
  api.py, is what `kubectl explain` shows; the nested fields keep their names and types).

An integration test regenerates the file and fails when the committed one is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "operator" / "flaskapp_operator" / "kubernetes_schemas.json"
CORE = "io.k8s.api.core.v1."
TYPES = ("Affinity", "Container", "Toleration", "TopologySpreadConstraint", "Volume", "VolumeMount")
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"x-kubernetes-int-or-string": True},
    # The quantity grammar (k8s.io/apimachinery resource.Quantity), as controller-gen writes it into CRDs.
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "x-kubernetes-int-or-string": True,
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)"
                   r"|(\.[0-9]+))))?$"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {"type": "object",
                                                        "x-kubernetes-preserve-unknown-fields": True},
}
# Bounds Kubernetes enforces in its own validation but does not publish in the OpenAPI document: a container's and
# a volume's name are DNS labels (at most 63 characters). Declaring them lets the API server bound the cost of the
# CRD's CEL rules that compare these names; a mount path gets a generous bound for the same reason.
TIGHTENED = {("Container", "name"): {"maxLength": 63}, ("Volume", "name"): {"maxLength": 63},
             ("VolumeMount", "mountPath"): {"maxLength": 1024}}
DROPPED = {"description", "default", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key",
           "x-kubernetes-unions"}


def structural(schemas: dict[str, Any], node: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(schemas, node["$ref"].rsplit("/", 1)[1], seen)
    if "allOf" in node and len(node["allOf"]) == 1:
        return structural(schemas, node["allOf"][0], seen)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key == "properties":
            out[key] = {name: structural(schemas, prop, seen) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(schemas, value, seen)
        else:
            out[key] = value
    return out


def _resolve(schemas: dict[str, Any], name: str, seen: tuple[str, ...]) -> dict[str, Any]:
    if name in SPECIAL:
        return dict(SPECIAL[name])
    if name in seen:
        raise ValueError(f"recursive type {name}: not expressible in a CRD schema")
    schema = schemas[name]
    out = structural(schemas, schema, seen + (name,))
    for prop_name, prop in schema.get("properties", {}).items():
        keys = _map_keys(schemas, prop)
        item = out["properties"][prop_name].get("items", {})
        for key in keys:  # list-map keys keep their defaults (protocol: TCP), or the CRD is refused
            default = _default_of(schemas, _item_schema(schemas, prop), key)
            if default is not None and key not in item.get("required", ()):
                item["properties"][key]["default"] = default
    return out


def _map_keys(schemas: dict[str, Any], prop: dict[str, Any]) -> list[str]:
    return prop.get("x-kubernetes-list-map-keys", []) if prop.get("x-kubernetes-list-type") == "map" else []


def _item_schema(schemas: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    items = prop.get("items", {})
    if "allOf" in items:
        items = items["allOf"][0]
    return schemas[items["$ref"].rsplit("/", 1)[1]] if "$ref" in items else items


def _default_of(schemas: dict[str, Any], item: dict[str, Any], key: str) -> Any:
    return item.get("properties", {}).get(key, {}).get("default")


def vendor(openapi: dict[str, Any], kubernetes_version: str) -> dict[str, Any]:
    schemas = openapi["components"]["schemas"]
    out = {name: _resolve(schemas, CORE + name, ()) for name in TYPES}
    for (kind, prop), bounds in TIGHTENED.items():
        out[kind]["properties"][prop].update(bounds)
    return {"kubernetesVersion": kubernetes_version, "schemas": out}


def rendered(openapi_path: Path, kubernetes_version: str) -> str:
    return json.dumps(vendor(json.loads(openapi_path.read_text()), kubernetes_version), indent=1,
                      sort_keys=True) + "\n"


def main() -> int:
    from localcluster import build

    OUTPUT.write_text(rendered(build.kubernetes_openapi(), build.KUBERNETES_SCHEMA_VERSION))
    print(f"wrote {OUTPUT.relative_to(ROOT)} from Kubernetes {build.KUBERNETES_SCHEMA_VERSION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
