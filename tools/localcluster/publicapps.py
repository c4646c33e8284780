"""Public Flask applications nobody here wrote, taken unchanged from their published source distributions on
PyPI (pinned by version and sha256) and cached outside the work tree. The tests run them behind the operator's
rendered configuration and the in-process agent, with not one line of their code changed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .build import cache_root

CACHE = cache_root() / "public-apps"


@dataclass(frozen=True)
class PublicApp:
    name: str
    distribution: str  # the sdist on PyPI that holds the app
    version: str
    sha256: str
    path: str  # the app's directory inside the sdist
    wsgi: str
    description: str
    requirements: tuple[str, ...] = ()  # what its image installs (pinned), beside gunicorn

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
    description="Flask-SQLAlchemy 2.5.1's examples/flaskr (a blog: users, posts, login)",
    requirements=("Flask==3.1.3", "Flask-SQLAlchemy==3.1.1", "psycopg[binary]==3.3.9"))

# Flask's own Celery example: an app factory that builds its Celery app from app.config["CELERY"] (broker
# redis://localhost in its code: the operator's CELERY_BROKER_URL wins, Celery 5 reads it first), tasks with
# results; its package lives under src/, so the FlaskApp adds PYTHONPATH=src as an image would.
FLASK_CELERY = PublicApp(
    name="flask-celery", distribution="Flask", version="3.1.3",
    sha256="0ef0e52b8a9cd932855379197dd8f94047b359ca0a78695144304cb45f87c9eb",
    path="examples/celery", wsgi="task_app:create_app()",
    description="Flask 3.1.3's examples/celery (tasks queued from views, results read back)",
    requirements=("Flask==3.1.3", "celery[redis]==5.7.0"))

# Flask-Caching's own example: cached views, memoized functions; it sets CACHE_TYPE itself (SimpleCache), which
# the agent keeps.
FLASK_CACHING_HELLO = PublicApp(
    name="flask-caching-hello", distribution="Flask-Caching", version="2.5.1",
    sha256="f75b451fde3faac0e278da72263818134deca8c4ba6bb07b9b3b238991368dae",
    path="examples", wsgi="hello:app",
    description="Flask-Caching 2.5.1's examples/hello.py (@cached views, @memoize)",
    requirements=("Flask==3.1.3", "Flask-Caching==2.5.1"))
