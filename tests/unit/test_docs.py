"""The generated documentation is current: docs/api.md (from the model) and the chart README (from its schema)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from testsupport.samples import ROOT
from flaskapp_operator.apidocs import api_reference, kubernetes_reference

API_REFERENCE = ROOT / "docs" / "api.md"
CHART = ROOT / "charts" / "flaskapp-operator"


def test_committed_api_reference_is_generated_from_the_model():
    assert API_REFERENCE.read_text() == api_reference(), "docs/api.md is stale: run `make docs`"


def test_committed_chart_readme_is_generated_from_the_values_schema():
    # Run as `make docs` runs it: hack/ is a directory of scripts, not a package.
    generated = subprocess.run([sys.executable, str(ROOT / "hack" / "chart_readme.py")], check=True,
                               capture_output=True, text=True).stdout
    assert (CHART / "README.md").read_text() == generated, "the chart README is stale: run `make docs`"


def test_api_reference_links_kubernetes_types_instead_of_expanding_them():
    reference = api_reference()
    assert f"list of Kubernetes [Container]({kubernetes_reference('Container')})" in reference
    assert "readinessProbe" not in reference  # a Container's own fields are Kubernetes' to document


def test_chart_values_schema_describes_every_value_in_values_yaml():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def undescribed(node: dict, defaults: dict, prefix: str = "") -> list[str]:
        out = []
        for key, default in defaults.items():
            prop = node.get("properties", {}).get(key)
            if prop is None or not prop.get("description"):
                out.append(prefix + key)
            elif "properties" in prop and isinstance(default, dict):
                out += undescribed(prop, default, f"{prefix}{key}.")
        return out

    assert undescribed(schema, values) == []
