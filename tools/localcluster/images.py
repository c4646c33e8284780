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

from . import progress
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


PUBLIC_APPS = {FLASKR_REF: FLASKR, FLASK_CELERY_REF: FLASK_CELERY, FLASK_CACHING_REF: FLASK_CACHING_HELLO}


def image_builds(refs: tuple[str, ...] | None = None) -> list[ImageBuild]:
    """In dependency order. The public apps' builds only when `refs` (default: all) names them: their source is
    downloaded to make them."""
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
        *(public_app_build(ref, app) for ref, app in PUBLIC_APPS.items() if refs is None or ref in refs),
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


def _single_binary_config(entrypoint: str, user: str) -> dict:
    return {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": [entrypoint], "User": user}}


def single_binary_archive(ref: str, binary: Path, entrypoint: str, user: str = "65535") -> Path:
    """Where single_binary_image keeps its archive: keyed by the binary's content and the image's config."""
    key = hashlib.sha256(binary.read_bytes() + json.dumps(_single_binary_config(entrypoint, user),
                                                          sort_keys=True).encode()).hexdigest()[:16]
    return images_dir() / f"{ref.rsplit('/', 1)[-1].replace(':', '-')}-{key}.tar"


def single_binary_image(ref: str, binary: Path, entrypoint: str, user: str = "65535") -> Path:
    """`binary` alone at `entrypoint`, run as `user`. Cached by the binary's content and the image's config."""
    data = binary.read_bytes()
    config = _single_binary_config(entrypoint, user)
    target = single_binary_archive(ref, binary, entrypoint, user)
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
        logged = check and progress.raw_log() is not None  # a build's command and output, kept in the run's raw log
        if logged:
            log(f"$ docker {' '.join(args)}")
        result = subprocess.run(["/usr/bin/docker", *args], env=self.env(), capture_output=True, text=True, **kw)
        if logged:
            progress.write_raw(result.stdout + result.stderr)
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
    debootstrap = subprocess.run(["debootstrap", "--variant=minbase", "--include=ca-certificates", DEBIAN_SUITE,
                                  str(rootfs), DEBIAN_MIRROR], capture_output=True, text=True)
    progress.write_raw(debootstrap.stdout + debootstrap.stderr)
    if debootstrap.returncode != 0:
        raise RuntimeError(f"debootstrap failed with exit code {debootstrap.returncode}")
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


# The images `make demo` runs on the real node: the sandbox, the exporters of the sample's monitored pods, the
# operator (the chart's pod), the example app, its nginx, Valkey, PostgreSQL, PgBouncer and Flower, and the Python
# base they are built on (local-path-provisioner's helper pods run it too).
DEMO_IMAGES = (PAUSE_REF, *(GO_BINARY_REFS[b] for b in ("statsd_exporter", "nginx-prometheus-exporter",
                                                        "prometheus-nginxlog-exporter", "redis_exporter")),
               PYTHON_REF, OPERATOR_REF, EXAMPLE_REF, NGINX_REF, VALKEY_REF, POSTGRES_REF, PGBOUNCER_REF, FLOWER_REF)


def image_set(name: str) -> tuple[str, ...]:
    """The images a target imports into the real node (`localcluster images --for <set>`), by reference:
    test every image; demo DEMO_IMAGES; cluster the sandbox and the volume helper; bench none (fake nodes)."""
    if name == "test":
        return (PAUSE_REF, *GO_BINARY_REFS.values(), *(b.ref for b in image_builds(())), *PUBLIC_APPS)
    if name == "demo":
        return DEMO_IMAGES
    if name == "cluster":
        return (PAUSE_REF, PYTHON_REF)
    if name == "bench":
        return ()
    raise ValueError(f"unknown set {name!r}")


def with_bases(refs: tuple[str, ...], builds: list[ImageBuild]) -> list[ImageBuild]:
    """The Dockerfile builds making `refs`, with the images they build FROM, in dependency order."""
    by_ref = {b.ref: b for b in builds}
    wanted: set[str] = set()
    pending = [r for r in refs if r in by_ref]
    while pending:
        ref = pending.pop()
        if ref not in wanted:
            wanted.add(ref)
            pending.extend(n for n in by_ref[ref].needs if n in by_ref)
    return [b for b in builds if b.ref in wanted]


class _LazyDocker:
    """The private dockerd, started (with the Debian base imported) only when a build needs it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.docker: Docker | None = None

    def get(self) -> Docker:
        if self.docker is None:
            self.docker = Docker(self.workdir).__enter__()
            if not self.docker.has(BASE_REF):
                with open(_base_rootfs_tar(self.workdir), "rb") as f:
                    self.docker.docker("import", "-", BASE_REF, stdin=f)
        return self.docker

    def close(self, built: bool) -> None:
        if self.docker is not None:
            if built:
                # layers of replaced builds: the data root stays bounded
                self.docker.docker("image", "prune", "--force")
            self.docker.__exit__(None, None, None)


def _docker_build(lazy: _LazyDocker, b: ImageBuild, archive: Path) -> Path:
    docker = lazy.get()
    started = time.monotonic()
    log(f"docker build {b.ref} ({b.dockerfile.relative_to(ROOT)})")
    args = [a for k, v in b.build_args for a in ("--build-arg", f"{k}={v}")]
    docker.docker("build", "--network=host", "-t", b.ref, "-f", str(b.dockerfile), *args, str(b.context))
    partial = archive.with_suffix(".partial")
    docker.docker("save", "-o", str(partial), b.ref)
    partial.rename(archive)
    stem = archive.name.rsplit("-", 1)[0]
    for old in images_dir().glob(f"{stem}-*.tar"):  # earlier builds of the same image
        if old != archive:
            old.unlink()
    log(f"built {b.ref} ({time.monotonic() - started:.0f}s)")
    return archive


def build_archives(builds: list[ImageBuild]) -> dict[str, Path]:
    """Where each Dockerfile build's archive is kept, by reference: keyed by a digest of its inputs and its bases'."""
    digests = {BASE_REF: f"{DEBIAN_SUITE}-minbase"}
    archives: dict[str, Path] = {}
    for b in builds:
        digests[b.ref] = b.digest(digests)
        stem = b.ref.split('/', 1)[1].replace('/', '-').replace(':', '-')
        archives[b.ref] = images_dir() / f"{stem}-{digests[b.ref]}.tar"
    return archives


def ensure_images(set_name: str = "test", log_path: Path | None = None) -> dict[str, Path]:
    """The images of a set the real node runs, by reference: archives to import, built when missing. With
    `log_path`, one progress line per image (localcluster.progress) and the raw output there."""
    from . import build

    wanted = image_set(set_name)
    tools = build.catalogue()
    binaries = {PAUSE_REF: ("pause", "pause"), **{ref: (b, b) for b, ref in GO_BINARY_REFS.items()}}
    builds = with_bases(wanted, image_builds(wanted))
    archives = build_archives(builds)

    def binary_image(ref: str) -> progress.Step:
        tool, binary = binaries[ref]
        cached = tools[tool].cached() and single_binary_archive(
            ref, build.tool_dir(tool, tools[tool].version) / binary, f"/{binary}").exists()
        return progress.Step(ref, "", cached, lambda: single_binary_image(ref, tools[tool].build()[binary],
                                                                          f"/{binary}"))

    with tempfile.TemporaryDirectory(prefix="images-") as tmp:
        lazy = _LazyDocker(Path(tmp))
        steps = [binary_image(ref) for ref in wanted if ref in binaries]
        missing = [b for b in builds if not archives[b.ref].exists()]
        if missing:
            base = cache_root() / "images" / f"debian-{DEBIAN_SUITE}-minbase.tar"
            steps.append(progress.Step(f"debian-{DEBIAN_SUITE} minbase (debootstrap)", "", base.exists(),
                                       lambda: _base_rootfs_tar(Path(tmp))))
        steps += [progress.Step(b.ref, "", b not in missing,
                                (lambda b=b: _docker_build(lazy, b, archives[b.ref])) if b in missing
                                else (lambda b=b: archives[b.ref])) for b in builds]
        try:
            if log_path is None:
                results = [step.run() for step in steps]
            else:
                results = progress.run_steps(f"images for {set_name}", steps, log_path)
        finally:
            lazy.close(built=bool(missing))
    return {step.name: result for step, result in zip(steps, results)  # type: ignore[misc]
            if step.name in wanted}


def build_images(builds: list[ImageBuild]) -> dict[str, Path]:
    """Archives of Dockerfile builds (in dependency order), by reference; only missing ones are built."""
    archives = build_archives(builds)
    missing = [b for b in builds if not archives[b.ref].exists()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="images-") as tmp:
            lazy = _LazyDocker(Path(tmp))
            try:
                for b in missing:
                    _docker_build(lazy, b, archives[b.ref])
            finally:
                lazy.close(built=True)
    return archives


def base_image() -> Path:
    """Debian minbase as an image archive of its own (kind's local-path helper pods run it: sh, mkdir, rm)."""
    with tempfile.TemporaryDirectory(prefix="base-") as tmp:
        rootfs = _base_rootfs_tar(Path(tmp))
        return rootfs_image(BASE_REF, rootfs, images_dir() / f"debian-{DEBIAN_SUITE}-minbase-image.tar")
