"""Shared test helpers: repository paths, sample loading, and a wait helper that reports what it saw."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "manifests" / "samples"
sys.path.insert(0, str(ROOT / "tools"))  # the localcluster package
sys.path.insert(0, str(ROOT / "tests"))


def load_sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "") -> Any:
    """Poll until `predicate()` is truthy; on timeout, fail with the last value or error it produced."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate.__name__}; last saw: {last!r}")
