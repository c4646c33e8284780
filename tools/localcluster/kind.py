"""A kind node image built here, offline, cached by content; and a kind cluster made from it.

`kind build node-image` fetches from registries every image it did not build, so the node image is assembled
here the way kind's own images are laid out (kind v0.33.0's images/base/Dockerfile and pkg/build/nodeimage):

1. binaries: kind, kubeadm + kubelet + kubectl, crictl, CNI plugins, built from the Go proxy (localcluster.build);
2. the images the node runs, built here and named after what they are (localhost/go-build/<binary>:<version>):
   the control plane, etcd and CoreDNS as one-binary images, kube-proxy and kube-router with Debian's iptables,
   local-path-provisioner, the sandbox (`pause`) and Debian minbase as local-path's helper;
3. a Debian bookworm root filesystem by debootstrap with systemd and the packages kind installs, plus Debian's
   containerd 1.6 and runc 1.1 (the versions the local cluster's node runs; kind's config.toml is in containerd's
   version-2 format, which 1.6 reads);
4. kind's base files (entrypoint, systemd units, containerd config) from the kind module, the binaries,
   /kind/version, /kind/manifests/default-cni.yaml (kube-router) and default-storage.yaml (kind's own manifest,
   pointed at the images built here);
5. every image imported into the node's containerd at build time: a containerd run on the host with its root in
   the node's /var/lib/containerd imports the archives without unpacking them, as kind's own node build does
   (`ctr images import --no-unpack`); the node's CRI unpacks an image on its first use. Nothing is imported at
   boot, so a node starts as fast as kind's own;
6. the filesystem as a one-layer docker-archive with kind's base image config (entrypoint, `container=docker`,
   STOPSIGNAL SIGRTMIN+3), cached as <cache>/images/kind-node-<version>-<key>.tar, where the key hashes every
   input (versions, the image archives' content-named files, this module and its files).

The cluster (localcluster.kindcluster) runs on a private Docker engine that leaves the host's iptables alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from string import Template

import yaml

from . import build, images
from .build import cache_root, log

HERE = Path(__file__).resolve().parent
FILES = HERE / "kindnode"
GO_BUILD = "localhost/go-build"  # the repository of every image built here from a Go binary
NODE_REPO = "localhost/flaskapp-operator/kind-node"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# What kind's base image installs (images/base/Dockerfile) minus storage-test and rootless extras (nfs-common,
# open-iscsi, fuse-overlayfs), plus Debian's container runtime.
NODE_PACKAGES = ("systemd", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
                 "libseccomp2", "pigz", "e2fsprogs", "bash", "ca-certificates", "curl", "jq", "procps",
                 "containerd", "runc")
# The node image's runtime config, as kind's base image sets it: systemd must know it runs in a container, and
# exits on SIGRTMIN+3 (SIGTERM makes it re-execute).
NODE_CONFIG = {"Entrypoint": ["/usr/local/bin/entrypoint", "/sbin/init"],
               "Env": ["container=docker", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "StopSignal": "SIGRTMIN+3"}
DEFAULT_CLUSTER = "flaskapp-e2e"


# ---------------------------------------------------------------------------------------------------------
# Pure pieces: names, configs, manifests, the cache key.


def component_refs(kubernetes: str = build.KUBERNETES_VERSION, etcd: str = build.ETCD_VERSION,
                   coredns: str = build.COREDNS_VERSION,
                   kube_router: str = build.KUBE_ROUTER_VERSION,
                   local_path: str = build.LOCAL_PATH_PROVISIONER_VERSION,
                   traefik: str = build.TRAEFIK_VERSION) -> dict[str, str]:
    """Every image the node runs, by component (Traefik: the cluster's Ingress and Gateway controller, which
    localcluster.kindcluster installs)."""
    refs = {c: f"{GO_BUILD}/{c}:{kubernetes}" for c in (*CONTROL_PLANE, "kube-proxy")}
    refs.update({"etcd": f"{GO_BUILD}/etcd:{etcd}", "coredns": f"{GO_BUILD}/coredns:{coredns}",
                 "kube-router": f"{GO_BUILD}/kube-router:{kube_router}",
                 "local-path-provisioner": f"{GO_BUILD}/local-path-provisioner:{local_path}",
                 "traefik": f"{GO_BUILD}/traefik:{traefik}",
                 "local-path-helper": images.BASE_REF, "pause": images.PAUSE_REF})
    return refs


def kubeadm_image_patch(refs: dict[str, str]) -> dict:
    """A ClusterConfiguration patch that makes kubeadm name the images built here instead of registry.k8s.io's."""
    def repo_tag(ref: str) -> tuple[str, str]:
        name, tag = ref.rsplit(":", 1)
        return name.rsplit("/", 1)[0], tag

    repository = repo_tag(refs["kube-apiserver"])[0]
    etcd_repo, etcd_tag = repo_tag(refs["etcd"])
    dns_repo, dns_tag = repo_tag(refs["coredns"])
    return {"kind": "ClusterConfiguration", "imageRepository": repository,
            "etcd": {"local": {"imageRepository": etcd_repo, "imageTag": etcd_tag}},
            "dns": {"imageRepository": dns_repo, "imageTag": dns_tag}}


def cluster_config(refs: dict[str, str], workers: int = 1) -> dict:
    """kind's cluster config: one control plane and `workers` workers; kubeadm told where the images are and that
    this host's cgroup v1 is accepted (kubelet >= 1.35 refuses it otherwise)."""
    return {
        "kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [{"role": "control-plane"}] + [{"role": "worker"}] * workers,
        "kubeadmConfigPatches": [
            yaml.safe_dump(kubeadm_image_patch(refs), sort_keys=False),
            yaml.safe_dump({"kind": "KubeletConfiguration", "failCgroupV1": False}, sort_keys=False),
        ],
    }


def containerd_config(kind_config: str, sandbox_image: str) -> str:
    """kind's containerd config with the sandbox image built here, and negative oom_score_adj not asked for:
    this host's root lacks CAP_SYS_RESOURCE, so runc could not set it (what kind does for rootless nodes)."""
    config, sandbox = re.subn(r'sandbox_image = ".*"', f'sandbox_image = "{sandbox_image}"', kind_config)
    config, oom = re.subn(r"restrict_oom_score_adj = false", "restrict_oom_score_adj = true", config)
    if sandbox != 1 or oom != 1:
        raise ValueError("kind's containerd config changed: sandbox_image or restrict_oom_score_adj not found once")
    return config


def cri_base_spec(default_spec: dict) -> dict:
    """kind's /etc/containerd/cri-base.json from `ctr oci spec`: its hook mounts the node's product files into
    every container, and no rlimits (jq in kind's Dockerfile)."""
    spec = json.loads(json.dumps(default_spec))
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
    spec.get("process", {}).pop("rlimits", None)
    return spec


def storage_manifest(const_storage_go: str, provisioner_image: str, helper_image: str) -> str:
    """kind's default-storage manifest (the Go string constant in pkg/build/nodeimage/const_storage.go) with the
    images built here in place of kind's."""
    body = const_storage_go.split("const defaultStorageManifest = `", 1)[1].rsplit("`", 1)[0]
    body = body.replace("` + storageProvisionerImage + `", provisioner_image)
    body = body.replace("` + storageHelperImage + `", helper_image)
    if "` +" in body:
        raise ValueError("kind's storage manifest holds an expression this parser does not know")
    return body.lstrip("\n")


def cni_manifest(kube_router_image: str, kube_router_version: str = build.KUBE_ROUTER_VERSION) -> str:
    return Template((FILES / "default-cni.yaml").read_text()).substitute(
        kube_router_image=kube_router_image, kube_router_version=kube_router_version)


def content_key(inputs: dict[str, str]) -> str:
    """The node image's cache key: any change of an input (a version, an image archive, this code) changes it."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        digest.update(f"{name}={inputs[name]}\n".encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def node_image_inputs(archives: dict[str, Path]) -> dict[str, str]:
    """What the node image is made of. Image archives are named by their content's hash already; binaries are
    pinned by version; this module and its files by content."""
    inputs = {"kubernetes": build.KUBERNETES_VERSION, "kind": build.KIND_VERSION, "crictl": build.CRI_TOOLS_VERSION,
              "cni-plugins": f"{build.CNI_PLUGINS_VERSION} {' '.join(build.CNI_PLUGINS)}",
              "debian": f"{images.DEBIAN_SUITE} {' '.join(NODE_PACKAGES)}",
              "node-config": json.dumps(NODE_CONFIG, sort_keys=True)}
    inputs.update({f"image {ref}": path.name for ref, path in archives.items()})
    inputs.update({f"file {p.name}": file_digest(p) for p in (Path(__file__), FILES / "default-cni.yaml")})
    return inputs


# ---------------------------------------------------------------------------------------------------------
# The build.


class Steps:
    """Numbered progress lines with the time each step took: a cold build is long, and shows where."""

    def __init__(self, total: int):
        self.total, self.number, self.started = total, 0, time.monotonic()
        self.step_started = self.started

    def __call__(self, title: str) -> None:
        self.done()
        self.number += 1
        self.step_started = time.monotonic()
        log(f"kind-image [{self.number}/{self.total}] {title}")

    def done(self) -> None:
        if self.number:
            log(f"kind-image [{self.number}/{self.total}] done in {time.monotonic() - self.step_started:.0f}s")


def node_binaries() -> dict[str, Path]:
    k8s = build.build_kubernetes()
    return {"kind": build.build_kind(), "kubeadm": build.build_kubeadm() / "kubeadm", "kubelet": k8s / "kubelet",
            "kubectl": k8s / "kubectl", "crictl": build.build_crictl(), "cni-plugins": build.build_cni_plugins()}


def _binary_context(name: str, binary: Path, version: str) -> Path:
    """A Docker build context holding one binary (hard-linked), so a build sends only it."""
    context = cache_root() / "contexts" / f"{name}-{version}"
    if not (context / name).exists():
        context.mkdir(parents=True, exist_ok=True)
        partial = context / f".{name}.partial"
        partial.unlink(missing_ok=True)
        os.link(binary, partial)
        partial.rename(context / name)
    return context


def component_images(refs: dict[str, str]) -> dict[str, Path]:
    """The archive of each image the node runs, by reference; built when missing (all cached by content)."""
    k8s = build.build_kubernetes()
    archives = {}
    for c in CONTROL_PLANE:  # kubeadm's static pods run `command: [<binary>, ...]`, as root (they read the PKI)
        archives[refs[c]] = images.single_binary_image(refs[c], k8s / c, f"/usr/local/bin/{c}", user="0")
    archives[refs["etcd"]] = images.single_binary_image(refs["etcd"], build.build_etcd() / "etcd",
                                                        "/usr/local/bin/etcd", user="0")
    # kubeadm's CoreDNS Deployment passes only args; root binds port 53 without file capabilities.
    archives[refs["coredns"]] = images.single_binary_image(refs["coredns"], build.build_coredns() / "coredns",
                                                           "/coredns", user="0")
    archives[refs["local-path-provisioner"]] = images.single_binary_image(
        refs["local-path-provisioner"], build.build_local_path_provisioner() / "local-path-provisioner",
        "/usr/local/bin/local-path-provisioner", user="0")
    # Traefik runs as nobody (its pod lets unprivileged processes bind ports 80 and 443 of its own network).
    archives[refs["traefik"]] = images.single_binary_image(refs["traefik"], build.build_traefik() / "traefik",
                                                           "/usr/local/bin/traefik")
    archives[images.PAUSE_REF] = images.single_binary_image(images.PAUSE_REF, build.build_pause() / "pause", "/pause")
    archives[images.BASE_REF] = images.base_image()
    base = (("BASE_IMAGE", images.BASE_REF),)
    builds = [
        images.ImageBuild(refs["kube-proxy"], _binary_context("kube-proxy", k8s / "kube-proxy",
                                                              build.KUBERNETES_VERSION),
                          images.DOCKERFILES / "kube-proxy.Dockerfile", base, needs=(images.BASE_REF,)),
        images.ImageBuild(refs["kube-router"], _binary_context("kube-router", build.build_kube_router() / "kube-router",
                                                               build.KUBE_ROUTER_VERSION),
                          images.DOCKERFILES / "kube-router.Dockerfile", base, needs=(images.BASE_REF,)),
    ]
    archives.update(images.build_images(builds))
    return archives


def check_kubeadm_images(kubeadm: Path, refs: dict[str, str], archives: dict[str, Path]) -> None:
    """`kubeadm config images list` with the cluster's patch must name only images the node holds."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        patch = dict(kubeadm_image_patch(refs), apiVersion="kubeadm.k8s.io/v1beta4",
                     kubernetesVersion=build.KUBERNETES_VERSION)
        yaml.safe_dump(patch, config)
        config.flush()
        listed = subprocess.run([str(kubeadm), "config", "images", "list", "--config", config.name],
                                capture_output=True, text=True, check=True).stdout.split()
    # kubeadm lists its own pause image too; the node's CRI uses the sandbox image of its containerd config.
    missing = [ref for ref in listed if ref not in archives and "/pause:" not in ref]
    if missing:
        raise RuntimeError(f"kubeadm expects images the node image would not hold: {missing}")


def _node_base_tar(workdir: Path) -> Path:
    """debootstrap of the node's packages, cached by the package list (a minute or three, from Debian's mirror)."""
    key = content_key({"suite": images.DEBIAN_SUITE, "packages": " ".join(NODE_PACKAGES)})
    target = images.images_dir() / f"kind-node-base-{images.DEBIAN_SUITE}-{key}.tar"
    if target.exists():
        return target
    rootfs = workdir / "base"
    subprocess.run(["nice", "-n", "10", "debootstrap", "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}",
                    images.DEBIAN_SUITE, str(rootfs), images.DEBIAN_MIRROR], check=True, capture_output=True)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / junk).mkdir(parents=True)
    _tar(rootfs, target)
    shutil.rmtree(rootfs)
    return target


def _tar(rootfs: Path, target: Path) -> None:
    """The filesystem as a plain tar; /dev, /proc, /sys stay empty (the engine mounts them)."""
    partial = target.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*",
                    "--exclude=./sys/*", "-cf", str(partial), "."], check=True)
    partial.rename(target)


def _install_kind_files(rootfs: Path, kind_files: Path) -> None:
    """kind's images/base/files with the modes its Dockerfile gives them (scripts 0755, the rest 0644)."""
    for source in sorted(kind_files.rglob("*")):
        dest = rootfs / source.relative_to(kind_files)
        if source.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest.chmod(0o755)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        shutil.copyfile(source, dest)
        executable = source.parent.relative_to(kind_files).as_posix() in ("usr/local/bin", "kind/bin")
        dest.chmod(0o755 if executable else 0o644)


def _systemd_setup(rootfs: Path) -> None:
    """What kind's Dockerfile does after installing packages: only kind's units start, systemd runs as init."""
    lib = rootfs / "usr/lib/systemd/system"  # bookworm is merged-/usr
    (lib / "sysinit.target.wants/systemd-tmpfiles-setup.service").unlink(missing_ok=True)
    for wants in ("multi-user.target.wants", "local-fs.target.wants", "basic.target.wants"):
        for unit in (lib / wants).glob("*"):
            unit.unlink()
    for unit in [*(lib / "sockets.target.wants").glob("*udev*"), *(lib / "sockets.target.wants").glob("*initctl*"),
                 *(rootfs / "etc/systemd/system").glob("*.wants/*")]:
        unit.unlink()
    with open(rootfs / "etc/systemd/journald.conf", "a") as journald:
        journald.write("ReadKMsg=no\n")
    init = rootfs / "sbin/init"
    if not init.exists() and not init.is_symlink():
        init.symlink_to("/usr/lib/systemd/systemd")
    subprocess.run(["chroot", str(rootfs), "systemctl", "enable", "kubelet.service", "containerd.service",
                    "undo-mount-hacks.service"], check=True, capture_output=True)
    subprocess.run(["chroot", str(rootfs), "systemctl", "mask", "systemd-binfmt.service"], check=True,
                   capture_output=True)
    (rootfs / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)


def _install_binaries(rootfs: Path, bins: dict[str, Path]) -> None:
    for name in ("kubeadm", "kubelet", "kubectl"):  # where kind's node build puts them
        shutil.copy(bins[name], rootfs / "usr/bin" / name)
    shutil.copy(bins["crictl"], rootfs / "usr/local/bin/crictl")
    cni = rootfs / "opt/cni/bin"
    cni.mkdir(parents=True, exist_ok=True)
    for plugin in build.CNI_PLUGINS:
        shutil.copy(bins["cni-plugins"] / plugin, cni / plugin)
    # kind's units start /usr/local/bin/containerd; Debian's package installs into /usr/bin.
    for name in ("containerd", "ctr", "containerd-shim-runc-v2"):
        link = rootfs / "usr/local/bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/{name}")


def _configure_node(rootfs: Path, kind_source: Path, refs: dict[str, str]) -> None:
    containerd_dir = rootfs / "etc/containerd"
    kind_config = (kind_source / "images/base/files/etc/containerd/config.toml").read_text()
    (containerd_dir / "config.toml").write_text(containerd_config(kind_config, refs["pause"]))
    default_spec = subprocess.run(["chroot", str(rootfs), "ctr", "oci", "spec"], capture_output=True, text=True,
                                  check=True).stdout
    (containerd_dir / "cri-base.json").write_text(json.dumps(cri_base_spec(json.loads(default_spec)), indent=2))
    (rootfs / "kind/version").write_text(build.KUBERNETES_VERSION)
    manifests = rootfs / "kind/manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "default-cni.yaml").write_text(cni_manifest(refs["kube-router"]))
    const_storage = (kind_source / "pkg/build/nodeimage/const_storage.go").read_text()
    (manifests / "default-storage.yaml").write_text(
        storage_manifest(const_storage, refs["local-path-provisioner"], refs["local-path-helper"]))


def _preload(rootfs: Path, workdir: Path, archives: dict[str, Path]) -> None:
    """Import every image into the node's containerd store: the node's own containerd binary, run on the host with
    its root in the node's /var/lib/containerd and no CRI; content only (the node's CRI unpacks on first use)."""
    sock = workdir / "containerd.sock"
    config = workdir / "containerd.toml"
    config.write_text(f"""version = 2
root = "{rootfs}/var/lib/containerd"
state = "{workdir}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
""")
    log_file = open(workdir / "containerd.log", "wb")
    proc = subprocess.Popen([str(rootfs / "usr/bin/containerd"), "--config", str(config)], stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)
    ctr = [str(rootfs / "usr/bin/ctr"), "--address", str(sock), "--namespace", "k8s.io"]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"containerd for the preload did not start; see {workdir / 'containerd.log'}")
            time.sleep(0.3)
        for ref, archive in archives.items():
            subprocess.run([*ctr, "images", "import", "--no-unpack", str(archive)], check=True, capture_output=True)
        listed = subprocess.run([*ctr, "images", "list", "--quiet"], capture_output=True, text=True,
                                check=True).stdout.split()
        missing = [ref for ref in archives if ref not in listed]
        if missing:
            raise RuntimeError(f"not in the node's containerd after import: {missing}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def node_image_ref(key: str) -> str:
    return f"{NODE_REPO}:{build.KUBERNETES_VERSION}-{key}"


def build_node_image() -> tuple[str, Path]:
    """The node image's reference and archive, built when no archive with the same inputs exists."""
    steps = Steps(6)
    steps("binaries: kind, kubeadm, kubelet, kubectl, crictl, CNI plugins")
    bins = node_binaries()
    steps("images the node runs: control plane, etcd, CoreDNS, kube-proxy, kube-router, local-path, Traefik, pause")
    refs = component_refs()
    archives = component_images(refs)
    check_kubeadm_images(bins["kubeadm"], refs, archives)
    key = content_key(node_image_inputs(archives))
    ref = node_image_ref(key)
    target = images.images_dir() / f"kind-node-{build.KUBERNETES_VERSION}-{key}.tar"
    if target.exists():
        steps.done()
        log(f"kind-image: cached {ref} ({target})")
        return ref, target
    kind_source = build.module_source("sigs.k8s.io/kind", build.KIND_VERSION)
    with tempfile.TemporaryDirectory(prefix="kind-node-", dir=cache_root()) as tmp:
        work = Path(tmp)
        steps(f"node base: debootstrap {images.DEBIAN_SUITE} with systemd, containerd, runc (cached by package list)")
        base = _node_base_tar(work)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(base)], check=True)
        steps("node files: kind's base files, systemd setup, binaries, containerd config, /kind/*")
        _install_kind_files(rootfs, kind_source / "images/base/files")
        _systemd_setup(rootfs)
        _install_binaries(rootfs, bins)
        _configure_node(rootfs, kind_source, refs)
        steps(f"preload {len(archives)} images into the node's containerd")
        _preload(rootfs, work, archives)
        steps(f"image archive {ref}")
        layer = work / "layer.tar"
        _tar(rootfs, layer)
        shutil.rmtree(rootfs)
        images.rootfs_image(ref, layer, target, NODE_CONFIG)
    for old in images.images_dir().glob("kind-node-v*.tar"):  # earlier node images: the cache stays bounded
        if old != target:
            old.unlink()
    steps.done()
    log(f"kind-image: built {ref} ({target.stat().st_size >> 20} MiB) in {time.monotonic() - steps.started:.0f}s")
    return ref, target
