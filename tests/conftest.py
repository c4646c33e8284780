"""Make the shared test helpers (tests/*.py) and the localcluster tool importable."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

# A terminated run (CI timeout, `kill`) tears down like Ctrl-C: fixtures stop the servers they started.
signal.signal(signal.SIGTERM, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

# No time limit per generated example: these machines are shared, and a render that takes 300 ms under load is
# not a failure (speed is measured by `make bench`, never by a unit test).
from hypothesis import settings  # noqa: E402

settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")
