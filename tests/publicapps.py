"""Public Flask applications nobody here wrote, taken unchanged from their published source distributions on
PyPI (pinned by version and sha256) and cached outside the work tree. The tests run them behind the operator's
rendered configuration and the in-process agent, with not one line of their code changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("FLASKAPP_CACHE", Path.home() / ".cache" / "flaskapp-operator")) / "public-apps"


@dataclass(frozen=True)
class PublicApp:
    name: str
    distribution: str  # the sdist on PyPI that holds the app
    version: str
    sha256: str
    path: str  # the app's directory inside the sdist
    wsgi: str
    description: str

    def source(self) -> Path:
        """The app's directory, downloaded once (pip download, checked against the pinned digest)."""
        top = CACHE / f"{self.distribution}-{self.version}"
        app = top / self.path
        if app.is_dir():
            return app
        downloads = CACHE / "sdists"
        downloads.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--dest", str(downloads), f"{self.distribution}=={self.version}"], check=True, timeout=300)
        archive = next(p for p in downloads.iterdir() if p.name.lower().replace("_", "-").startswith(
            f"{self.distribution.lower()}-{self.version}") and p.name.endswith(".tar.gz"))
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise RuntimeError(f"{archive.name}: sha256 {digest}, pinned {self.sha256}")
        with tarfile.open(archive) as tar:
            root = tar.getnames()[0].split("/")[0]
            members = [m for m in tar.getmembers() if m.name.startswith(f"{root}/{self.path}/")]
            tar.extractall(CACHE / "extract", members=members, filter="data")
        top.parent.mkdir(parents=True, exist_ok=True)
        (CACHE / "extract" / root).rename(top)
        return app


# Flask-SQLAlchemy's own example application: Flask-SQLAlchemy models, a database created by its `init-db`
# command (our migration Job), sessions, blueprints; it reads DATABASE_URL and nothing else of ours.
FLASKR = PublicApp(
    name="flaskr", distribution="Flask-SQLAlchemy", version="2.5.1",
    sha256="2bda44b43e7cacb15d4e05ff3cc1f8bc97936cc464623424102bfc2c35e95912",
    path="examples/flaskr", wsgi="flaskr:create_app()",
    description="Flask-SQLAlchemy 2.5.1's examples/flaskr (a blog: users, posts, login)")
