"""Container images for the real node, built here without any registry, cached by content.

- The pod sandbox (`pause`) is a one-file OCI archive written directly (a static C binary).
- Everything else is built from a Dockerfile by Debian's Docker engine, run only for the build on a private
  socket with no bridge and no iptables rules (a dockerd beside the kubelet would set the FORWARD policy
  to DROP); `RUN` steps use the host network. Its only base image is Debian bookworm made by
  `debootstrap` from Debian's mirror. The operator and the example app are built from their own
  Dockerfiles with `BASE_IMAGE` pointing at a Python made from Debian packages; nginx, Redis and
  PostgreSQL images install Debian's packages and are named after what they are
  (localhost/debian-bookworm/<package>), never after an upstream image they are not.

Archives land in <cache>/images/<name>-<content hash>.tar and are imported with `ctr images import`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .build import cache_root, log
from .publicapps import FLASK_CACHING_HELLO, FLASK_CELERY, FLASKR, PublicApp
from .node import unmount_under

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_REF = f"localhost/debian-{DEBIAN_SUITE}/minbase:local"
PYTHON_REF = f"localhost/debian-{DEBIAN_SUITE}/python3:local"
OPERATOR_REF = "localhost/flaskapp-operator/operator:local"
EXAMPLE_REF = "localhost/flaskapp-operator/example:local"
# Public Flask apps, unchanged, each in an image of its own (localcluster/publicapps.py).
FLASKR_REF = f"localhost/public-apps/{FLASKR.name}:{FLASKR.version}"
FLASK_CELERY_REF = f"localhost/public-apps/{FLASK_CELERY.name}:{FLASK_CELERY.version}"
FLASK_CACHING_REF = f"localhost/public-apps/{FLASK_CACHING_HELLO.name}:{FLASK_CACHING_HELLO.version}"
NGINX_REF = f"localhost/debian-{DEBIAN_SUITE}/nginx-light:local"
REDIS_REF = f"localhost/debian-{DEBIAN_SUITE}/redis-server:local"
VALKEY_REF = f"localhost/debian-{DEBIAN_SUITE}/valkey-server:local"  # the default engine's stand-in
POSTGRES_REF = f"localhost/debian-{DEBIAN_SUITE}/postgresql:local"
PGBOUNCER_REF = f"localhost/debian-{DEBIAN_SUITE}/pgbouncer:local"
PAUSE_REF = "localhost/flaskapp-localcluster/pause:local"
FLOWER_REF = f"localhost/debian-{DEBIAN_SUITE}/flower:2.0.1"
# Go programs built here from their pinned modules (localcluster.build), one binary per image, named
# after the binary they hold.
GO_BINARY_REFS = {
    "statsd_exporter": "localhost/go-build/statsd_exporter:local",
    "nginx-prometheus-exporter": "localhost/go-build/nginx-prometheus-exporter:local",
    "prometheus-nginxlog-exporter": "localhost/go-build/prometheus-nginxlog-exporter:local",
    "redis_exporter": "localhost/go-build/redis_exporter:local",
    "prometheus": "localhost/go-build/prometheus:local",
}
# spec.monitoring.images of a FlaskApp on the local node: the same programs as its default images, built here.
MONITORING_IMAGES = {
    "statsdExporter": GO_BINARY_REFS["statsd_exporter"],
    "nginxExporter": GO_BINARY_REFS["nginx-prometheus-exporter"],
    "nginxLogExporter": GO_BINARY_REFS["prometheus-nginxlog-exporter"],
    "redisExporter": GO_BINARY_REFS["redis_exporter"],
    "flower": FLOWER_REF,
}
DOCKERFILES = HERE / "dockerfiles"


@dataclass(frozen=True)
class ImageBuild:
    ref: str
    context: Path
    dockerfile: Path
    build_args: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()  # refs of images this one builds FROM
    inputs: tuple[str, ...] = (".",)  # what the Dockerfile copies (beside itself): with it, the cache key

    def digest(self, base_digests: dict[str, str]) -> str:
        h = hashlib.sha256(self.ref.encode())
        h.update(self.dockerfile.read_bytes())
        for key, value in self.build_args:
            h.update(f"{key}={value}".encode())
        for need in self.needs:
            h.update(base_digests[need].encode())
        files = {f for i in self.inputs for f in ([self.context / i] if (self.context / i).is_file()
                                                  else (self.context / i).rglob("*"))}
        for path in sorted(p for p in files if p.is_file() and _in_context(p, self.context)):
            h.update(str(path.relative_to(self.context)).encode())
            h.update(path.read_bytes())
        return h.hexdigest()[:16]


def _in_context(path: Path, context: Path) -> bool:
    parts = path.relative_to(context).parts
    return not any(p in {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".hypothesis"} for p in parts) \
        and not path.name.endswith(".pyc")


def image_builds() -> list[ImageBuild]:
    """In dependency order."""
    base = ("BASE_IMAGE", PYTHON_REF)
    return [
        ImageBuild(PYTHON_REF, DOCKERFILES, DOCKERFILES / "python3.Dockerfile", (("BASE_IMAGE", BASE_REF),),
                   needs=(BASE_REF,), inputs=()),
        ImageBuild(OPERATOR_REF, ROOT, ROOT / "operator" / "Dockerfile", (base,), needs=(PYTHON_REF,),
                   inputs=("pyproject.toml", "README.md", "operator")),
        ImageBuild(EXAMPLE_REF, ROOT / "examples" / "flask-shop", ROOT / "examples" / "flask-shop" / "Dockerfile",
                   (base,), needs=(PYTHON_REF,)),
        ImageBuild(NGINX_REF, DOCKERFILES, DOCKERFILES / "nginx.Dockerfile", (("BASE_IMAGE", BASE_REF),),
                   needs=(BASE_REF,), inputs=()),
        ImageBuild(REDIS_REF, DOCKERFILES, DOCKERFILES / "redis.Dockerfile", (("BASE_IMAGE", BASE_REF),),
                   needs=(BASE_REF,), inputs=()),
        ImageBuild(VALKEY_REF, DOCKERFILES, DOCKERFILES / "valkey.Dockerfile", (("BASE_IMAGE", BASE_REF),),
                   needs=(BASE_REF,), inputs=()),
        ImageBuild(POSTGRES_REF, DOCKERFILES, DOCKERFILES / "postgresql.Dockerfile", (("BASE_IMAGE", BASE_REF),),
                   needs=(BASE_REF,), inputs=("postgresql-entrypoint.sh",)),
        ImageBuild(PGBOUNCER_REF, DOCKERFILES, DOCKERFILES / "pgbouncer.Dockerfile", (("BASE_IMAGE", BASE_REF),),
                   needs=(BASE_REF,), inputs=()),
        ImageBuild(FLOWER_REF, DOCKERFILES, DOCKERFILES / "flower.Dockerfile", (base,), needs=(PYTHON_REF,), inputs=()),
        *(public_app_build(ref, app) for ref, app in ((FLASKR_REF, FLASKR), (FLASK_CELERY_REF, FLASK_CELERY),
                                                      (FLASK_CACHING_REF, FLASK_CACHING_HELLO))),
    ]


def public_app_build(ref: str, app: PublicApp) -> "ImageBuild":
    return ImageBuild(ref, app.source(), DOCKERFILES / "public-app.Dockerfile",
                      (("BASE_IMAGE", PYTHON_REF), ("REQUIREMENTS", " ".join(app.requirements))), needs=(PYTHON_REF,))


def images_dir() -> Path:
    d = cache_root() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------------------
# Images written without any tool: a one-file image as an OCI archive (image-layout), a whole filesystem as a
# docker-archive.


def _blob(layout: tarfile.TarFile, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    _add_bytes(layout, f"blobs/sha256/{digest}", data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def single_binary_image(ref: str, binary: Path, entrypoint: str, user: str = "65535") -> Path:
    """`binary` alone at `entrypoint`, run as `user`. Cached by the binary's content and the image's config."""
    data = binary.read_bytes()
    config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": [entrypoint], "User": user}}
    key = hashlib.sha256(data + json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    target = images_dir() / f"{ref.rsplit('/', 1)[-1].replace(':', '-')}-{key}.tar"
    if target.exists():
        return target
    layer_raw = io.BytesIO()
    with tarfile.open(fileobj=layer_raw, mode="w") as layer:
        parents = Path(entrypoint.lstrip("/")).parents
        for folder in reversed([p for p in parents if str(p) != "."]):  # /usr/local/bin/x needs its folders
            info = tarfile.TarInfo(str(folder))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(info)
        info = tarfile.TarInfo(entrypoint.lstrip("/"))
        info.size, info.mode = len(data), 0o755
        layer.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(layer_raw.getvalue()).hexdigest()
    layer_gz = gzip.compress(layer_raw.getvalue(), mtime=0)
    config["rootfs"] = {"type": "layers", "diff_ids": [diff_id]}
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w") as layout:
        config_desc = _blob(layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        layer_desc = _blob(layout, layer_gz, "application/vnd.oci.image.layer.v1.tar+gzip")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = _blob(layout, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {"io.containerd.image.name": ref,
                                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}
        for name, body in (("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                           ("index.json", {"schemaVersion": 2, "manifests": [manifest_desc]})):
            _add_bytes(layout, name, json.dumps(body).encode())
    partial.rename(target)
    return target


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def rootfs_image(ref: str, rootfs_tar: Path, target: Path, config: dict | None = None) -> Path:
    """A one-layer image of a whole filesystem (a plain tar), as a docker-archive (`docker save`'s format, which
    Docker 20.10's `docker load` and `ctr images import` both read; Docker 20.10 cannot load an OCI layout).
    `config` is the image's runtime config (Entrypoint, Env, StopSignal ...)."""
    if target.exists():
        return target
    digest = hashlib.sha256()
    with open(rootfs_tar, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    layer_id = digest.hexdigest()
    image_config = {"architecture": "amd64", "os": "linux", "config": config or {},
                    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]}}
    raw_config = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(raw_config).hexdigest() + ".json"
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w") as archive:
        _add_bytes(archive, config_name, raw_config)
        archive.add(rootfs_tar, arcname=f"{layer_id}/layer.tar")
        manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_id}/layer.tar"]}]
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
    partial.rename(target)
    return target


def archive_image_id(archive: Path) -> str:
    """The image ID (its config's digest) of a one-image archive, docker-archive or OCI layout."""
    with tarfile.open(archive) as tar:
        def read(name: str) -> dict:
            member = tar.extractfile(name)
            assert member is not None, f"{archive}: no {name}"
            return json.load(member)

        names = set(tar.getnames())
        if "manifest.json" in names:  # docker-archive: the config file is named by its digest
            return "sha256:" + read("manifest.json")[0]["Config"].removeprefix("blobs/sha256/").removesuffix(".json")
        manifest = read("index.json")["manifests"][0]["digest"].replace(":", "/")
        return read(f"blobs/{manifest}")["config"]["digest"]


# ---------------------------------------------------------------------------------------------------------
# Dockerfile builds with a short-lived private dockerd.


# A build engine beside the kubelet: no bridge, no iptables rules (they would set the FORWARD policy to DROP).
PRIVATE_FLAGS = ("--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none")


class Docker:
    """Debian's dockerd on a private socket and data root, started for one batch of builds."""

    def __init__(self, workdir: Path, data_root: Path | None = None, flags: tuple[str, ...] = PRIVATE_FLAGS):
        self.workdir = workdir
        self.sock = workdir / "docker.sock"
        # Kept between runs: layers of unchanged steps are reused.
        self.data_root = data_root or cache_root() / "docker"
        self.flags = flags
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Docker":
        self.data_root.mkdir(parents=True, exist_ok=True)
        logfile = open(self.workdir / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", f"--host=unix://{self.sock}", f"--data-root={self.data_root}",
             f"--exec-root={self.workdir}/exec", f"--pidfile={self.workdir}/dockerd.pid", *self.flags,
             "--storage-driver=overlay2"],
            stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"dockerd did not start; see {self.workdir / 'dockerd.log'}")
            time.sleep(0.3)
        return self

    def env(self) -> dict[str, str]:
        # Debian's own client (the engine's version) first; DOCKER_BUILDKIT=0: the legacy builder needs no buildx.
        return dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_BUILDKIT="0",
                    PATH=f"/usr/bin:{os.environ.get('PATH', '')}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        unmount_under(self.workdir)  # dockerd leaves its exec root's network namespace mounted

    def docker(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run(["/usr/bin/docker", *args], env=self.env(), capture_output=True, text=True, **kw)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def has(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, check=False).returncode == 0


def _base_rootfs_tar(workdir: Path) -> Path:
    """Debian minbase from the mirror, with the host's CA bundle (a TLS-intercepting egress proxy's CA
    must be trusted inside builds as on the host)."""
    target = cache_root() / "images" / f"debian-{DEBIAN_SUITE}-minbase.tar"
    if target.exists():
        return target
    rootfs = workdir / "rootfs"
    started = time.monotonic()
    log(f"debootstrap --variant=minbase {DEBIAN_SUITE} (about a minute)")
    subprocess.run(["debootstrap", "--variant=minbase", "--include=ca-certificates", DEBIAN_SUITE, str(rootfs),
                    DEBIAN_MIRROR], check=True, capture_output=True)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / junk).mkdir(parents=True)
    partial = target.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
    partial.rename(target)
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"base rootfs ready ({time.monotonic() - started:.0f}s)")
    return target


def ensure_images() -> dict[str, Path]:
    """Every image the real node runs, by reference: archives to import, built when missing."""
    from . import build

    archives = {PAUSE_REF: single_binary_image(PAUSE_REF, build.build_pause() / "pause", "/pause")}
    tools = build.build_monitoring_tools()
    for binary, ref in GO_BINARY_REFS.items():
        archives[ref] = single_binary_image(ref, tools[binary], f"/{binary}")
    archives.update(build_images(image_builds()))
    return archives


def build_images(builds: list[ImageBuild]) -> dict[str, Path]:
    """Archives of Dockerfile builds (in dependency order), by reference; only missing ones are built."""
    archives: dict[str, Path] = {}
    digests = {BASE_REF: f"{DEBIAN_SUITE}-minbase"}
    for b in builds:
        digests[b.ref] = b.digest(digests)
        archives[b.ref] = images_dir() / f"{b.ref.split('/', 1)[1].replace('/', '-').replace(':', '-')}-{digests[b.ref]}.tar"
    missing = [b for b in builds if not archives[b.ref].exists()]
    if not missing:
        return archives
    with tempfile.TemporaryDirectory(prefix="images-") as tmp, Docker(Path(tmp)) as docker:
        if not docker.has(BASE_REF):
            with open(_base_rootfs_tar(Path(tmp)), "rb") as f:
                docker.docker("import", "-", BASE_REF, stdin=f)
        for b in missing:
            started = time.monotonic()
            log(f"docker build {b.ref} ({b.dockerfile.relative_to(ROOT)})")
            args = [a for k, v in b.build_args for a in ("--build-arg", f"{k}={v}")]
            docker.docker("build", "--network=host", "-t", b.ref, "-f", str(b.dockerfile), *args, str(b.context))
            partial = archives[b.ref].with_suffix(".partial")
            docker.docker("save", "-o", str(partial), b.ref)
            partial.rename(archives[b.ref])
            stem = archives[b.ref].name.rsplit("-", 1)[0]
            for old in images_dir().glob(f"{stem}-*.tar"):  # earlier builds of the same image
                if old != archives[b.ref]:
                    old.unlink()
            log(f"built {b.ref} ({time.monotonic() - started:.0f}s)")
        docker.docker("image", "prune", "--force")  # layers of replaced builds: the data root stays bounded
    return archives


def base_image() -> Path:
    """Debian minbase as an image archive of its own (kind's local-path helper pods run it: sh, mkdir, rm)."""
    with tempfile.TemporaryDirectory(prefix="base-") as tmp:
        rootfs = _base_rootfs_tar(Path(tmp))
        return rootfs_image(BASE_REF, rootfs, images_dir() / f"debian-{DEBIAN_SUITE}-minbase-image.tar")
