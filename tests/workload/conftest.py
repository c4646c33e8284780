"""One running stack per session; the servers are real processes, stopped at the end."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from stack import PG_BIN, Stack


def _require(binaries):
    missing = [b for b in binaries if shutil.which(b) is None and not Path(b).exists()]
    if missing:
        pytest.fail(f"missing {missing}: run `make debs` (make test does it)")


@pytest.fixture(scope="session")
def stack():
    _require(["nginx", "valkey-server", "redis-server", str(PG_BIN / "postgres")])
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-workload-"))
    workdir.chmod(0o755)  # nginx workers and postgres run as other users
    s = Stack(workdir).start()
    yield s
    s.stop()
    shutil.rmtree(workdir, ignore_errors=True)
