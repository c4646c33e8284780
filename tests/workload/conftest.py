"""One running stack per session; the servers are real processes, stopped at the end."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from testsupport.stack import PG_BIN, scratch_stack


def _require(binaries):
    missing = [b for b in binaries if shutil.which(b) is None and not Path(b).exists()]
    if missing:
        pytest.fail(f"missing {missing}: run `make debs` (make test does it)")


@pytest.fixture(scope="session")
def stack():
    _require(["nginx", "valkey-server", "redis-server", str(PG_BIN / "postgres")])
    with scratch_stack("flaskapp-workload-") as s:
        yield s


@pytest.fixture(scope="module")
def nginx_scratch(tmp_path_factory):
    """(Addresses mapping the nginx pod's paths to a scratch directory, check(conf) running the real `nginx -t` on a
    rendered nginx.conf there): for the tests that feed generated values through render and nginx."""
    import subprocess

    from flaskapp_operator.builders.context import Addresses

    _require(["nginx"])
    root = Path(tempfile.mkdtemp(prefix="flaskapp-nginx-t-"))
    (root / "static").mkdir()
    addresses = Addresses(gunicorn_bind="127.0.0.1:1", nginx_listen="127.0.0.1:2", upstream="127.0.0.1:1",
                          redis_cache="127.0.0.1:3", redis_broker="127.0.0.1:4", static_root=str(root / "static"),
                          runtime_dir=str(root))

    def check(conf: str) -> subprocess.CompletedProcess:
        (root / "nginx.conf").write_text(conf)
        return subprocess.run(["nginx", "-t", "-q", "-c", str(root / "nginx.conf"), "-e", "stderr"],
                              capture_output=True, text=True, timeout=30)
    yield addresses, check
    shutil.rmtree(root, ignore_errors=True)
