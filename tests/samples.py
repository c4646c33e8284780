"""Paths of the repository and its sample FlaskApps, for every test suite."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "manifests" / "samples"


def load_sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
