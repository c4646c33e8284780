"""Obtain pinned control-plane binaries, built from the Go module proxy and cached by version.

Kubernetes' own go.mod replaces every staging module (k8s.io/api, k8s.io/client-go, ...) with a local
path, so `go install k8s.io/kubernetes/cmd/...@vX` is refused. A small wrapper module that requires
k8s.io/kubernetes and replaces each staging module with its published v0.Y.Z builds it instead
(the same fix several public operators use). etcd is built the same way; kwok and helm install directly.
Tools whose go.mod carries replace directives of its own (Traefik) build inside a copy of their module
source, where those replaces apply.

Binaries land in $XDG_CACHE_HOME/flaskapp-operator/bin/<tool>-<version>/ and are never rebuilt once there.
catalogue() names every tool; tool_set() says which a target needs (`localcluster build --for demo|test|bench`),
built with one progress line each and their raw output in build/logs/ (localcluster.progress).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import progress

# The Kubernetes release whose pod field schemas the API embeds (make kubernetes-schemas) and the local cluster's
# default.
KUBERNETES_SCHEMA_VERSION = "v1.35.4"
# The release the local cluster runs: `KUBERNETES_VERSION=v1.37.2 make test` picks another (docs/development.md,
# "Kubernetes versions"); each is built once from its Go modules and cached by version.
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION") or KUBERNETES_SCHEMA_VERSION
KUBE_SCORE_VERSION = "v1.20.0"
CERT_MANAGER_VERSION = "v1.21.2"
KEDA_VERSION = "v2.21.0"  # whose ScaledObject and TriggerAuthentication schemas the rendered objects must pass
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
HELM_VERSION = "v3.20.2"
# The real node's add-ons, each a plain Go build from the module proxy (no image registry needed).
COREDNS_VERSION = "v1.14.7"
TRAEFIK_VERSION = "v3.6.12"
# The Gateway API release Traefik v3.6.12 implements (its go.mod): the CRDs the local cluster serves.
GATEWAY_API_VERSION = "v1.4.0"
GATEWAY_API_CRDS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants", "backendtlspolicies")
# NetworkPolicy engine: kube-router's firewall (iptables + ipset). sigs.k8s.io/kube-network-policies was
# tried first: it needs the nftables `queue` expression, which this VM's kernel lacks (nft answers
# "No such file or directory" to any `queue` rule), while iptables' set match works here.
KUBE_ROUTER_VERSION = "v2.1.0"
# PersistentVolumes on the node's disk, the same provisioner kind ships as its default StorageClass.
LOCAL_PATH_PROVISIONER_VERSION = "v0.0.30"
# Monitoring: the exporters the operator renders (same versions as its default images), Prometheus and
# promtool for the tests, and the Prometheus Operator whose CRD schemas the rendered monitors must pass.
STATSD_EXPORTER_VERSION = "v0.28.0"
NGINX_EXPORTER_VERSION = "v1.4.0"
NGINXLOG_EXPORTER_VERSION = "v1.11.0"
REDIS_EXPORTER_VERSION = "v1.74.0"
# sum.golang.org answers 404 for this module from here; its hash as the Go proxy served it, pinned.
REDIS_EXPORTER_SUM = "h1:/ESQZa3xqpQxiQmk4tpo90Y8gPWLpYVF6E5SR262KtM="
PROMETHEUS_VERSION = "v0.316.0"  # the Go module's tag of Prometheus 3.x
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
# The kind node image (localcluster/kind.py): kind itself and the node's tools, the versions kind v0.33.0's base
# image pins (images/base/Dockerfile), except cri-tools v1.37.0 (the proxy does not serve v1.36.0's module here)
# and the bridge plugin added to kind's list (kube-router's CNI config uses it).
KIND_VERSION = "v0.33.0"
CRI_TOOLS_VERSION = "v1.37.0"
CNI_PLUGINS_VERSION = "v1.9.1"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "ptp")

# Staging modules of k8s.io/kubernetes 1.34 to 1.37 (cri-streaming and streaming are new in 1.37; an unused replace
# is harmless).
STAGING_MODULES = (
    "api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider "
    "cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api "
    "cri-client cri-streaming streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms "
    "kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics "
    "mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller"
).split()

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flaskapp-operator"


def tool_dir(tool: str, version: str) -> Path:
    return cache_root() / "bin" / f"{tool}-{version}"


def log(message: str) -> None:
    """A message of the local cluster: into the raw log during a build run (localcluster.progress), else stderr."""
    progress.write_raw(f"[localcluster] {message}")


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run a go command, streaming its output (to the run's raw log, else stderr) with the time elapsed."""
    started = time.monotonic()
    log(f"$ go {' '.join(args)}")
    proc = subprocess.Popen(["go", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        progress.write_raw(f"  {line.rstrip()}  ({time.monotonic() - started:.0f}s)")
    if proc.wait() != 0:
        raise RuntimeError(f"go {' '.join(args)} failed with exit code {proc.returncode}")


def _build_env() -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    return env


def _wrapper_module(workdir: Path, module: str, version: str, packages: list[str],
                    replaces: dict[str, str]) -> None:
    """A throw-away module whose tools.go imports the commands to build, so `go mod tidy` resolves them."""
    lines = ["module localcluster/wrapper", "", "go 1.24", "", f"require {module} {version}", ""]
    lines += [f"replace {old} => {old} {new}" for old, new in sorted(replaces.items())]
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")
    imports = "\n".join(f'import _ "{p}"' for p in packages)
    (workdir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\n{imports}\n")


def _kubernetes_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    flags = {
        "gitVersion": version, "gitMajor": major, "gitMinor": minor,
        "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
    }
    # client-go carries its own copy of the version package for kubectl's client version.
    return " ".join(f"-X {p}.{k}={v}" for p in (pkg, "k8s.io/client-go/pkg/version")
                    for k, v in flags.items()) + " -s -w"


def kubernetes_minor(version: str = KUBERNETES_VERSION) -> int:
    return int(version.lstrip("v").split(".")[1])


def build_kubernetes(version: str = KUBERNETES_VERSION) -> Path:
    return _build_kubernetes_commands("kubernetes", version, KUBERNETES_COMMANDS)


def build_kubeadm(version: str = KUBERNETES_VERSION) -> Path:
    """kubeadm, for the kind node image only: a directory of its own, so the local cluster's cached binaries
    stay valid without it."""
    return _build_kubernetes_commands("kubeadm", version, ("kubeadm",))


def _build_kubernetes_commands(tool: str, version: str, commands: tuple[str, ...]) -> Path:
    target = tool_dir(tool, version)
    if all((target / c).exists() for c in commands):
        return target
    log(f"building Kubernetes {version} ({', '.join(commands)}); a cold build takes 10-20 minutes")
    staging_version = "v0." + version.lstrip("v").split(".", 1)[1]
    with tempfile.TemporaryDirectory(prefix="k8s-build-") as tmp:
        work = Path(tmp)
        packages = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
        _wrapper_module(work, "k8s.io/kubernetes", version, packages,
                        {f"k8s.io/{m}": staging_version for m in STAGING_MODULES})
        env = _build_env()
        _go(["mod", "tidy"], work, env)
        staging = work / "out"
        staging.mkdir()
        _go(["build", "-trimpath", "-ldflags", _kubernetes_ldflags(version), "-o", str(staging) + "/",
             *packages], work, env)
        _install(staging, target)
    return target


def build_etcd(version: str = ETCD_VERSION) -> Path:
    target = tool_dir("etcd", version)
    if (target / "etcd").exists():
        return target
    log(f"building etcd {version}")
    with tempfile.TemporaryDirectory(prefix="etcd-build-") as tmp:
        work = Path(tmp)
        _wrapper_module(work, "go.etcd.io/etcd/server/v3", version, ["go.etcd.io/etcd/server/v3"], {})
        env = _build_env()
        _go(["mod", "tidy"], work, env)
        staging = work / "out"
        staging.mkdir()
        _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / "etcd"),
             "go.etcd.io/etcd/server/v3"], work, env)
        _install(staging, target)
    return target


def _go_install(tool: str, package: str, version: str, binary: str, *more: str) -> Path:
    """`go install package@version` (and more packages of the same module, whose binaries are named after
    their last path element)."""
    target = tool_dir(tool, version)
    if all((target / b).exists() for b in (binary, *(m.rsplit("/", 1)[-1] for m in more))):
        return target
    log(f"building {tool} {version}")
    with tempfile.TemporaryDirectory(prefix=f"{tool}-build-") as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        env = dict(_build_env(), GOBIN=str(staging), GOFLAGS="-buildvcs=false")
        _go(["install", "-trimpath", "-ldflags", "-s -w", *(f"{p}@{version}" for p in (package, *more))],
            Path(tmp), env)
        _install(staging, target)
    return target


def build_kwok(version: str = KWOK_VERSION) -> Path:
    return _go_install("kwok", "sigs.k8s.io/kwok/cmd/kwok", version, "kwok")


def build_helm(version: str = HELM_VERSION) -> Path:
    return _go_install("helm", "helm.sh/helm/v3/cmd/helm", version, "helm")


def build_kind(version: str = KIND_VERSION) -> Path:
    return _go_install("kind", "sigs.k8s.io/kind", version, "kind") / "kind"


def build_crictl(version: str = CRI_TOOLS_VERSION) -> Path:
    return _go_install("crictl", "sigs.k8s.io/cri-tools/cmd/crictl", version, "crictl") / "crictl"


def build_cni_plugins(version: str = CNI_PLUGINS_VERSION) -> Path:
    """The CNI plugins a kind node carries in /opt/cni/bin (a directory of binaries)."""
    module = "github.com/containernetworking/plugins/plugins"
    where = {"bridge": "main", "ptp": "main", "loopback": "main", "host-local": "ipam", "portmap": "meta"}
    first, *rest = (f"{module}/{where[p]}/{p}" for p in CNI_PLUGINS)
    return _go_install("cni-plugins", first, version, "bridge", *rest)


def _build_in_module_source(tool: str, module: str, version: str, packages: dict[str, str],
                            pinned_sum: str | None = None) -> Path:
    """Build commands inside a writable copy of a module's own source, so its go.mod (replaces included)
    governs the build: `go install module@version` refuses modules whose go.mod replaces anything.
    `pinned_sum` is for a module the checksum database does not answer for (the proxy serves it): the
    download is checked against the h1: hash recorded here instead."""
    target = tool_dir(tool, version)
    if all((target / b).exists() for b in packages):
        return target
    log(f"building {tool} {version}")
    env = dict(_build_env(), GOWORK="off")  # a module's go.work (Prometheus has one) refuses -mod=mod
    if pinned_sum:
        env["GONOSUMDB"] = module
    with tempfile.TemporaryDirectory(prefix=f"{tool}-build-") as tmp:
        work = Path(tmp)
        download = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=work, env=env,
                                  capture_output=True, text=True)
        found = json.loads(download.stdout or "{}")
        if download.returncode != 0 or "Dir" not in found:
            raise RuntimeError(f"go mod download {module}@{version}: {found.get('Error') or download.stderr}")
        if pinned_sum and found.get("Sum") != pinned_sum:
            raise RuntimeError(f"{module}@{version}: hash {found.get('Sum')} is not the pinned {pinned_sum}")
        source = work / "src"
        shutil.copytree(found["Dir"], source)
        subprocess.run(["chmod", "-R", "u+w", str(source)], check=True)
        staging = work / "out"
        staging.mkdir()
        for binary, package in packages.items():
            _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / binary), package], source, env)
        _install(staging, target)
    return target


def build_coredns(version: str = COREDNS_VERSION) -> Path:
    return _build_in_module_source("coredns", "github.com/coredns/coredns", version, {"coredns": "."})


def build_traefik(version: str = TRAEFIK_VERSION) -> Path:
    return _build_in_module_source("traefik", "github.com/traefik/traefik/v3", version,
                                   {"traefik": "./cmd/traefik"})


def build_kube_router(version: str = KUBE_ROUTER_VERSION) -> Path:
    return _build_in_module_source("kube-router", "github.com/cloudnativelabs/kube-router/v2", version,
                                   {"kube-router": "./cmd/kube-router"})


def build_local_path_provisioner(version: str = LOCAL_PATH_PROVISIONER_VERSION) -> Path:
    return _build_in_module_source("local-path-provisioner", "github.com/rancher/local-path-provisioner", version,
                                   {"local-path-provisioner": "."})


def build_prometheus(version: str = PROMETHEUS_VERSION) -> dict[str, Path]:
    target = _build_in_module_source("prometheus", "github.com/prometheus/prometheus", version,
                                     {"prometheus": "./cmd/prometheus", "promtool": "./cmd/promtool"})
    return {b: target / b for b in ("prometheus", "promtool")}


def build_monitoring_tools() -> dict[str, Path]:
    """Exporters for the app stack's images, Prometheus and promtool for the tests."""
    return ensure(MONITORING_TOOLS)


def prometheus_operator_crds(version: str = PROMETHEUS_OPERATOR_VERSION) -> Path:
    """The monitoring.coreos.com CRDs as the Prometheus Operator publishes them (its module's example/)."""
    target = tool_dir("prometheus-operator-crds", version)
    if target.is_dir():
        return target
    with tempfile.TemporaryDirectory(prefix="prom-op-") as tmp:
        download = subprocess.run(["go", "mod", "download", "-json",
                                   f"github.com/prometheus-operator/prometheus-operator@{version}"],
                                  cwd=tmp, env=_build_env(), capture_output=True, text=True, check=True)
        staging = Path(tmp) / "out"
        shutil.copytree(Path(json.loads(download.stdout)["Dir"]) / "example" / "prometheus-operator-crd", staging)
        _install(staging, target)
    return target


def module_source(module: str, version: str) -> Path:
    """A module's source as the Go proxy serves it (checked against the checksum database), read-only in the
    module cache."""
    download = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=tempfile.gettempdir(),
                              env=_build_env(), capture_output=True, text=True)
    found = json.loads(download.stdout or "{}")
    if download.returncode != 0 or "Dir" not in found:
        raise RuntimeError(f"go mod download {module}@{version}: {found.get('Error') or download.stderr}")
    return Path(found["Dir"])


def _module_files(tool: str, module: str, version: str, files: dict[str, str]) -> Path:
    """Files published inside a Go module (`go mod download`, checked against the checksum database), cached
    by version: {name in the cache: path in the module}."""
    target = tool_dir(tool, version)
    if all((target / name).exists() for name in files):
        return target
    with tempfile.TemporaryDirectory(prefix=f"{tool}-") as tmp:
        download = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                                  cwd=tmp, env=_build_env(), capture_output=True, text=True, check=True)
        source = Path(json.loads(download.stdout)["Dir"])
        staging = Path(tmp) / "out"
        staging.mkdir()
        for name, inside in files.items():
            shutil.copy(source / inside, staging / name)
        _install(staging, target)
    return target


def kubernetes_openapi(version: str = KUBERNETES_SCHEMA_VERSION) -> Path:
    """The core/v1 OpenAPI v3 document of the pinned Kubernetes release: the source of the pod field schemas
    the FlaskApp API embeds (hack/vendor_kubernetes_schemas.py)."""
    return _module_files("kubernetes-openapi", "k8s.io/kubernetes", version,
                         {"api__v1_openapi.json": "api/openapi-spec/v3/api__v1_openapi.json"}) / "api__v1_openapi.json"


def build_kube_score(version: str = KUBE_SCORE_VERSION) -> Path:
    return _go_install("kube-score", "github.com/zegl/kube-score/cmd/kube-score", version, "kube-score") / "kube-score"


def cert_manager_crds(version: str = CERT_MANAGER_VERSION) -> Path:
    """cert-manager's CRDs as it publishes them (its module's deploy/crds)."""
    files = {f"{name}.yaml": f"deploy/crds/{name}.yaml" for name in (
        "cert-manager.io_certificates", "cert-manager.io_certificaterequests", "cert-manager.io_issuers",
        "cert-manager.io_clusterissuers")}
    return _module_files("cert-manager-crds", "github.com/cert-manager/cert-manager", version, files)


def keda_crds(version: str = KEDA_VERSION) -> Path:
    """KEDA's CRDs as it publishes them (its module's config/crd/bases)."""
    files = {f"{name}.yaml": f"config/crd/bases/{name}.yaml" for name in (
        "keda.sh_scaledobjects", "keda.sh_triggerauthentications")}
    return _module_files("keda-crds", "github.com/kedacore/keda/v2", version, files)


def keda_redis_scaler(version: str = KEDA_VERSION) -> Path:
    """The source of KEDA's Redis scaler (its module's pkg/scalers/redis_scaler.go): the tests run the script it
    sends to the broker against the broker the operator renders."""
    return _module_files("keda-redis-scaler", "github.com/kedacore/keda/v2", version,
                         {"redis_scaler.go": "pkg/scalers/redis_scaler.go"}) / "redis_scaler.go"


def gateway_api_crds(version: str = GATEWAY_API_VERSION) -> Path:
    """Gateway API's standard-channel CRDs as the project publishes them (its module's config/crd/standard)."""
    files = {f"gateway.networking.k8s.io_{name}.yaml": f"config/crd/standard/gateway.networking.k8s.io_{name}.yaml"
             for name in GATEWAY_API_CRDS}
    return _module_files("gateway-api-crds", "sigs.k8s.io/gateway-api", version, files)


def build_cert_manager_shim(version: str = CERT_MANAGER_VERSION) -> Path:
    """tools/certmanagershim: cert-manager's ingress-shim over one namespace, built against cert-manager's module.
    Cached by cert-manager's version and the program's own content."""
    source = Path(__file__).resolve().parents[1] / "certmanagershim" / "main.go"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    target = tool_dir("certmanagershim", f"{version}-{digest}")
    if (target / "certmanagershim").exists():
        return target / "certmanagershim"
    log(f"building certmanagershim against cert-manager {version}")
    with tempfile.TemporaryDirectory(prefix="certmanagershim-") as tmp:
        work = Path(tmp)
        shutil.copy(source, work / "main.go")
        (work / "go.mod").write_text(f"module localcluster/certmanagershim\n\ngo 1.26\n\n"
                                     f"require github.com/cert-manager/cert-manager {version}\n")
        env = dict(_build_env(), GOWORK="off")
        _go(["mod", "tidy"], work, env)
        staging = work / "out"
        staging.mkdir()
        _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / "certmanagershim"), "."], work, env)
        _install(staging, target)
    return target / "certmanagershim"


def build_pause() -> Path:
    """The pod sandbox's process: a static C program that sleeps until signalled, as Kubernetes' own pause."""
    source = Path(__file__).with_name("pause.c")
    target = tool_dir("pause", hashlib.sha256(source.read_bytes()).hexdigest()[:12])
    if (target / "pause").exists():
        return target
    with tempfile.TemporaryDirectory(prefix="pause-build-") as tmp:
        gcc = subprocess.run(["gcc", "-Os", "-static", "-o", f"{tmp}/pause", str(source)], capture_output=True,
                             text=True)
        progress.write_raw(gcc.stdout + gcc.stderr)
        if gcc.returncode != 0:
            raise RuntimeError(f"gcc pause.c failed with exit code {gcc.returncode}")
        _install(Path(tmp), target)
    return target


def _install(staging: Path, target: Path) -> None:
    """Move finished binaries into place atomically, so an interrupted build never looks complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(staging, partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log(f"cached in {target}")


# ---------------------------------------------------------------------------------------------------------
# The catalogue of tools, and the sets a target builds (`localcluster build --for demo|test|bench`).


@dataclass(frozen=True)
class Tool:
    """One cached build: tool_dir(name, version) holding `files` (none: the directory itself), made by `build`,
    which returns what it provides by name (a binary, or a directory of CRDs)."""

    name: str
    version: str
    files: tuple[str, ...]
    build: Callable[[], dict[str, Path]]

    def cached(self) -> bool:
        target = tool_dir(self.name, self.version)
        return target.is_dir() and all((target / f).exists() for f in self.files)


def _source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _module_binary(name: str, module: str, version: str, package: str = ".", pinned_sum: str | None = None) -> Tool:
    return Tool(name, version, (name,),
                lambda: {name: _build_in_module_source(name, module, version, {name: package}, pinned_sum) / name})


def catalogue() -> dict[str, Tool]:
    """Every tool the local cluster, the demo and the tests use, by name (in the order a full build runs them)."""
    shim = Path(__file__).resolve().parents[1] / "certmanagershim" / "main.go"
    tools = [
        Tool("kubernetes", KUBERNETES_VERSION, KUBERNETES_COMMANDS,
             lambda: {c: build_kubernetes() / c for c in KUBERNETES_COMMANDS}),
        Tool("etcd", ETCD_VERSION, ("etcd",), lambda: {"etcd": build_etcd() / "etcd"}),
        Tool("kwok", KWOK_VERSION, ("kwok",), lambda: {"kwok": build_kwok() / "kwok"}),
        Tool("helm", HELM_VERSION, ("helm",), lambda: {"helm": build_helm() / "helm"}),
        Tool("coredns", COREDNS_VERSION, ("coredns",), lambda: {"coredns": build_coredns() / "coredns"}),
        Tool("traefik", TRAEFIK_VERSION, ("traefik",), lambda: {"traefik": build_traefik() / "traefik"}),
        Tool("kube-router", KUBE_ROUTER_VERSION, ("kube-router",),
             lambda: {"kube-router": build_kube_router() / "kube-router"}),
        Tool("local-path-provisioner", LOCAL_PATH_PROVISIONER_VERSION, ("local-path-provisioner",),
             lambda: {"local-path-provisioner": build_local_path_provisioner() / "local-path-provisioner"}),
        Tool("pause", _source_digest(Path(__file__).with_name("pause.c")), ("pause",),
             lambda: {"pause": build_pause() / "pause"}),
        Tool("gateway-api-crds", GATEWAY_API_VERSION,
             tuple(f"gateway.networking.k8s.io_{n}.yaml" for n in GATEWAY_API_CRDS),
             lambda: {"gateway-api-crds": gateway_api_crds()}),
        _module_binary("statsd_exporter", "github.com/prometheus/statsd_exporter", STATSD_EXPORTER_VERSION),
        _module_binary("nginx-prometheus-exporter", "github.com/nginxinc/nginx-prometheus-exporter",
                       NGINX_EXPORTER_VERSION),
        _module_binary("prometheus-nginxlog-exporter", "github.com/martin-helmich/prometheus-nginxlog-exporter",
                       NGINXLOG_EXPORTER_VERSION),
        _module_binary("redis_exporter", "github.com/oliver006/redis_exporter", REDIS_EXPORTER_VERSION,
                       pinned_sum=REDIS_EXPORTER_SUM),
        Tool("prometheus", PROMETHEUS_VERSION, ("prometheus", "promtool"), build_prometheus),
        Tool("prometheus-operator-crds", PROMETHEUS_OPERATOR_VERSION, (),
             lambda: {"prometheus-operator-crds": prometheus_operator_crds()}),
        Tool("kubernetes-openapi", KUBERNETES_SCHEMA_VERSION, ("api__v1_openapi.json",),
             lambda: {"kubernetes-openapi": kubernetes_openapi()}),
        Tool("kube-score", KUBE_SCORE_VERSION, ("kube-score",), lambda: {"kube-score": build_kube_score()}),
        Tool("cert-manager-crds", CERT_MANAGER_VERSION, (), lambda: {"cert-manager-crds": cert_manager_crds()}),
        Tool("keda-crds", KEDA_VERSION, (), lambda: {"keda-crds": keda_crds()}),
        Tool("keda-redis-scaler", KEDA_VERSION, ("redis_scaler.go",),
             lambda: {"keda-redis-scaler": keda_redis_scaler()}),
        Tool("certmanagershim", f"{CERT_MANAGER_VERSION}-{_source_digest(shim)}", ("certmanagershim",),
             lambda: {"certmanagershim": build_cert_manager_shim()}),
    ]
    return {t.name: t for t in tools}


CONTROL_PLANE = ("kubernetes", "etcd")
# A real node beside the control plane: the pod sandbox, DNS, an ingress controller (with the Gateway API CRDs it
# serves), a policy engine, a volume provisioner.
NODE_TOOLS = ("pause", "coredns", "traefik", "kube-router", "local-path-provisioner", "gateway-api-crds")
# The exporters a FlaskApp with monitoring runs (the real node's images of them); Prometheus and promtool are the
# tests'.
EXPORTERS = ("statsd_exporter", "nginx-prometheus-exporter", "prometheus-nginxlog-exporter", "redis_exporter")
MONITORING_TOOLS = (*EXPORTERS, "prometheus")
# Only the tests, `make lint` and `make kubernetes-schemas` use these: schemas to validate against, linters.
CHECK_TOOLS = ("prometheus-operator-crds", "kubernetes-openapi", "kube-score", "cert-manager-crds", "keda-crds",
               "keda-redis-scaler", "certmanagershim")
SETS = ("demo", "test", "bench", "cluster")


def tool_set(name: str, real_node: bool) -> tuple[str, ...]:
    """The tools a target needs, in build order:
    - cluster: what `localcluster up` starts (a real node's add-ons, or kwok's fake nodes);
    - demo: the cluster, helm (the chart's install) and the exporters of the sample's monitored pods;
    - bench: the control plane with kwok's fake nodes (bench and soak), helm, and the monitoring tools its monitored
      stack runs (tests/workload/stack.py builds them all);
    - test: everything (the suite runs the cluster, Prometheus, promtool, the schema checks, kube-score)."""
    cluster = CONTROL_PLANE + (NODE_TOOLS if real_node else ("kwok",))
    if name == "cluster":
        return cluster
    if name == "demo":
        return cluster + (("helm", *EXPORTERS) if real_node else ())
    if name == "bench":
        return (*CONTROL_PLANE, "kwok", "helm", *MONITORING_TOOLS)
    if name == "test":
        return (*CONTROL_PLANE, "kwok", "helm", *(NODE_TOOLS if real_node else ()), *MONITORING_TOOLS, *CHECK_TOOLS)
    raise ValueError(f"unknown set {name!r}: one of {', '.join(SETS)}")


def ensure(names: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """Build (once, cached by version) the named tools, quietly; what they provide, by name."""
    tools = catalogue()
    return {k: v for name in names for k, v in tools[name].build().items()}


def ensure_with_progress(set_name: str, real_node: bool, log_path: Path) -> dict[str, Path]:
    """`localcluster build --for <set>`: one readable line per tool, the raw output in `log_path`."""
    tools = catalogue()
    steps = [progress.Step(name, tools[name].version, tools[name].cached(), tools[name].build)
             for name in tool_set(set_name, real_node)]
    paths: dict[str, Path] = {}
    for provided in progress.run_steps(f"tools for {set_name}", steps, log_path):
        paths.update(provided)  # type: ignore[arg-type]
    return paths


def ensure_all() -> dict[str, Path]:
    """The control plane's binaries, kwok and helm, by name (what the tests' clusters use)."""
    return ensure(("kubernetes", "etcd", "kwok", "helm"))

