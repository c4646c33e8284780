"""Print the chart's README (`make docs` writes charts/flaskapp-operator/README.md; a unit test keeps it current).

The values table comes from values.schema.json (keys, types, bounds, descriptions: the schema is the source,
helm checks every install against it) with each default from values.yaml. Bounds are worded as in the API
reference (flaskapp_operator.apidocs). A value without a description in the
schema stops the generator: every value gets one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from flaskapp_operator.apidocs import bounds

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flaskapp-operator"

INTRODUCTION = """\
# flaskapp-operator

{description}

The operator watches `FlaskApp` objects (`flaskapp.dev/v1alpha1`) and runs each as gunicorn web pods, Celery
worker pools and beat, a managed Redis (cache and broker), nginx, an Ingress or HTTPRoute and NetworkPolicies,
with process counts and database pools derived from the containers' resources and the database's connection
budget. The FlaskApp fields are described in the [API reference](../../docs/api.md).

Chart version {version}, operator version {app_version}, Kubernetes `{kube_version}`.

## Installing the chart

```sh
helm install flaskapp-operator charts/flaskapp-operator --namespace flaskapp-system --create-namespace
```

The chart installs the `FlaskApp` CustomResourceDefinition from its `crds/` directory on the first install. By
default the operator runs two replicas with leader election and watches every namespace; to restrict it (and its
RBAC, then Roles in those namespaces only):

```sh
helm install flaskapp-operator charts/flaskapp-operator --namespace flaskapp-system --create-namespace \\
  --set watchNamespaces='{{team-a,team-b}}'
```

Then describe an application:

```sh
kubectl apply -f manifests/samples/minimal.yaml
kubectl get flaskapps
```

## Upgrading the chart

Helm never upgrades a CRD it installed from `crds/`. Apply the new release's CRD first (server-side: it is too
large for a client-side apply's annotation), then upgrade the release:

```sh
kubectl apply --server-side -f charts/flaskapp-operator/crds/
helm upgrade flaskapp-operator charts/flaskapp-operator --namespace flaskapp-system
```

When the new operator renders the FlaskApps' pods differently, the apps roll in waves of
`rolloutPacing.maxConcurrentApps`.

## Uninstalling the chart

```sh
helm uninstall flaskapp-operator --namespace flaskapp-system
```

This removes the operator and its RBAC. The CRD, and with it every FlaskApp and the objects the operator
created for them, stays. Deleting the CRD deletes every FlaskApp in the cluster, and Kubernetes' garbage
collector then deletes their children:

```sh
kubectl delete -f charts/flaskapp-operator/crds/
```

## Values

Generated from [values.schema.json](values.schema.json), which `helm install` and `helm upgrade` check every
value against, with the defaults of [values.yaml](values.yaml).

| Key | Type | Default | Description |
|---|---|---|---|
"""


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    if kind == "array" and "type" in schema.get("items", {}):
        return f"list of {schema['items']['type']}"
    if kind == "array":
        return "list"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {schema['additionalProperties']['type']}"
    return kind


def _bounds(schema: dict[str, Any]) -> str:
    parts = bounds(schema)
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`")
    if "pattern" in schema.get("items", {}):
        parts.append(f"each item matches `{schema['items']['pattern']}`")
    if schema.get("minLength"):
        parts.append("not empty")
    return f"({'; '.join(parts)})" if parts else ""


def _cell(text: str) -> str:
    return text.replace("|", r"\|")  # a pipe ends a table cell, even inside a code span


def _rows(schema: dict[str, Any], defaults: Any, prefix: str = "") -> list[str]:
    """One row per value: an object with declared properties is a group, its properties are the rows."""
    rows = []
    for key, prop in schema["properties"].items():
        path = f"{prefix}{key}"
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if "properties" in prop and prop.get("type") == "object":
            rows += _rows(prop, default, path + ".")
            continue
        if not prop.get("description"):
            raise SystemExit(f"values.schema.json: {path} has no description")
        description = " ".join(p for p in (prop["description"], _bounds(prop)) if p)
        rows.append("| " + " | ".join(_cell(c) for c in (
            f"`{path}`", _type(prop), f"`{json.dumps(default)}`", description)) + " |")
    return rows


def chart_readme() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    header = ("<!-- Generated from Chart.yaml, values.schema.json and values.yaml by `make docs` "
              "(hack/chart_readme.py); do not edit. -->\n\n")
    return header + INTRODUCTION.format(
        description=chart["description"], version=chart["version"], app_version=chart["appVersion"],
        kube_version=chart["kubeVersion"]) + "\n".join(_rows(schema, values)) + "\n"


if __name__ == "__main__":
    sys.stdout.write(chart_readme())
