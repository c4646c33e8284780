"""A real node joined to the local control plane: containerd + runc + bridge CNI (Debian packages), kubelet
and kube-proxy (built from the same Kubernetes module as the API server), CoreDNS, the Traefik ingress
controller and kube-router's NetworkPolicy firewall, each a plain host process.

Host state this module creates, and `teardown` removes by name (also after a crash of a previous run):
two Linux bridges (NODE_BRIDGE holding the node address, POD_BRIDGE made by the CNI plugin), iptables
rules (kube-proxy's KUBE-* chains via `kube-proxy --cleanup`; the kubelet's and kube-router's chains and
ipsets, and the CNI plugin's masquerade chains, by name), network namespaces of pods, cgroups
under `kubepods`, and mounts under the state directory. Pod processes are killed through their cgroups;
everything else by PID.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from .build import log

NODE_NAME = "flaskapp-node"
NODE_IP = "10.245.255.1"  # a /32 on its own bridge: the kubelet refuses loopback node addresses
NODE_BRIDGE = "flaskapp-node"
POD_BRIDGE = "flaskapp-cni0"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
CNI_NETWORK = "flaskapp-pods"
CLUSTER_DOMAIN = "cluster.local"
INGRESS_CLASS = "traefik"
INGRESS_PORT = 80
INGRESS_TLS_PORT = 443
# A GatewayClass for Traefik's Kubernetes Gateway provider: Gateways of this class listen on Traefik's entry points
# (a listener's port is the entry point's: 80 plain, 443 TLS).
GATEWAY_CLASS = "traefik"
GATEWAY_CLASS_OBJECT = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                        "metadata": {"name": GATEWAY_CLASS}, "spec": {"controllerName": "traefik.io/gateway-controller"}}
CNI_BIN_DIR = "/usr/lib/cni"
SOCKETS_ROOT = Path("/run/flaskapp-localcluster/sockets")
# Debian packages a real node runs; `hack/install-debian-packages.sh` installs the missing ones.
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "ipset",
                   "util-linux", "iproute2")

Spawn = Callable[[str, list[str]], None]


@functools.cache
def unavailable_reason() -> str | None:
    """Why real nodes cannot run on this machine (None when they can): the fall-back is kwok. Asked once
    per process: the answer probes the host (a bridge is created and deleted)."""
    if os.geteuid() != 0:
        return "real nodes need root (containerd, kubelet and the pod network change host state)"
    missing = [b for b in ("containerd", "runc", "iptables", "ipset", "ip") if shutil.which(b) is None]
    if missing or not Path(CNI_BIN_DIR, "bridge").exists():
        return f"real nodes need the Debian packages {' '.join(DEBIAN_PACKAGES)} (missing: {missing or 'CNI'})"
    if not Path("/sys/fs/cgroup").is_dir():
        return "real nodes need cgroups mounted at /sys/fs/cgroup"
    probe = run("ip", "link", "add", "flaskapp-probe", "type", "bridge", check=False)
    if probe.returncode != 0:
        return f"real nodes need to create a network bridge ({probe.stderr.strip()})"
    run("ip", "link", "delete", "flaskapp-probe", check=False)
    return None


def run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, input=input)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, logs: Path,
             component: str | None = None) -> None:
    """Wait for a condition; on timeout, say what and show the end of the component's log (the state
    directory is removed when a failed start is cleaned up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.25)
    tail = ""
    if component and (logs / f"{component}.log").exists():
        tail = "\n" + "\n".join((logs / f"{component}.log").read_text(errors="replace").splitlines()[-25:])
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (logs in {logs}){tail}")


# ---------------------------------------------------------------------------------------------------------
# Configuration files


def containerd_config(state: Path, sockets: Path, sandbox_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{state}/root"
state = "{state}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sockets}/containerd.sock"
[ttrpc]
  address = "{sockets}/containerd.sock.ttrpc"
[{cri}]
  sandbox_image = "{sandbox_image}"
  # The VM's root lacks CAP_SYS_RESOURCE: a negative oom_score_adj for sandboxes would be refused.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{state}/cni"
"""


def cni_conflist(ipam_dir: Path) -> str:
    return json.dumps({
        "cniVersion": "0.4.0", "name": CNI_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=1)


def kubelet_config(root: Path, pki: Path, sock: Path, port: int, healthz_port: int) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # This machine runs cgroup v1, which kubelet >= 1.35 refuses unless told otherwise.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "failSwapOn": False,
        "address": NODE_IP, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [NODE_IP], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(root / "resolv.conf"),
        "containerRuntimeEndpoint": f"unix://{sock}",
        # Imported images cannot be pulled again: never garbage-collect them; evict only when really short.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False, "maxPods": 250, "registerNode": True,
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s", "fileCheckFrequency": "5s",
        "volumeStatsAggPeriod": "0s",
    })


def corefile(kubeconfig: Path, upstream: list[str]) -> str:
    return f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . {' '.join(upstream) or '/etc/resolv.conf'}
    cache 5
}}
"""


def host_nameservers() -> list[str]:
    text = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]


def _service_account_with_token(name: str) -> str:
    """A ServiceAccount in kube-system and a long-lived token Secret for a host process to use."""
    return f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: kube-system}}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-token
  namespace: kube-system
  annotations: {{kubernetes.io/service-account.name: {name}}}
type: kubernetes.io/service-account-token
---
"""


def _binding(role_kind: str, name: str, account: str) -> str:
    """Binds Role or ClusterRole `name` to ServiceAccount `account` of kube-system (a Role in kube-system)."""
    scope = ", namespace: kube-system" if role_kind == "Role" else ""
    return f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: {role_kind}Binding
metadata: {{name: {name}{scope}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {role_kind}, name: {name}}}
subjects: [{{kind: ServiceAccount, name: {account}, namespace: kube-system}}]
"""


# Traefik's permissions (Ingress and Gateway API providers), from its project's own manifests; the local node's
# host process and the kind cluster's pod (localcluster.kindcluster) are bound to the same role.
TRAEFIK_CLUSTER_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: traefik-ingress-controller}
rules:
  - apiGroups: [""]
    resources: [services, secrets, nodes, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
  - apiGroups: [networking.k8s.io, extensions]
    resources: [ingresses, ingressclasses]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io, extensions]
    resources: [ingresses/status]
    verbs: [update]
  # Its Kubernetes Gateway provider (doc.traefik.io/traefik/reference/install-configuration/providers/kubernetes/
  # kubernetes-gateway/).
  - apiGroups: [""]
    resources: [namespaces, configmaps]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses, gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status, backendtlspolicies/status]
    verbs: [update, patch]
"""
INGRESS_CLASS_OBJECT = """\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: traefik
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: traefik.io/ingress-controller}
"""
TRAEFIK_RBAC = TRAEFIK_CLUSTER_ROLE + "---\n" + _binding("ClusterRole", "traefik-ingress-controller", "traefik")

# Least privilege for the host-process add-ons, from their projects' own manifests.
ADDON_RBAC = _service_account_with_token("traefik") + TRAEFIK_RBAC + "---\n" + INGRESS_CLASS_OBJECT + "---\n" + \
    _service_account_with_token("kube-router") + """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-router-firewall}
rules:
  - apiGroups: [""]
    resources: [namespaces, pods, services, nodes, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
""" + _binding("ClusterRole", "kube-router-firewall", "kube-router")


# PersistentVolumes: rancher's local-path-provisioner (what kind ships) as a host process; its helper pods
# create and remove each volume's directory on the node. RBAC from its deploy/local-path-storage.yaml.
LOCAL_PATH_RBAC = _service_account_with_token("local-path-provisioner") + """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner, namespace: kube-system}
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, patch, update, delete]
---
""" + _binding("Role", "local-path-provisioner", "local-path-provisioner") + """\
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-path-provisioner}
rules:
  - apiGroups: [""]
    resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [persistentvolumes]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
---
""" + _binding("ClusterRole", "local-path-provisioner", "local-path-provisioner") + """\
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
"""


def local_path_config(volumes: Path, helper_image: str) -> dict:
    helper_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"},
                  "spec": {"containers": [{"name": "helper-pod", "image": helper_image,
                                           "imagePullPolicy": "IfNotPresent"}]}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": "kube-system"},
            "data": {"config.json": json.dumps({"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES",
                                                                 "paths": [str(volumes)]}]}),
                     "setup": "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"$VOL_DIR\"\n",
                     "teardown": "#!/bin/sh\nset -eu\nrm -rf \"$VOL_DIR\"\n",
                     "helperPod.yaml": yaml.safe_dump(helper_pod)}}


def install_gateway_api(kubectl: Callable[..., subprocess.CompletedProcess], crds: Path) -> None:
    """Gateway API: its CRDs (the release Traefik implements) and Traefik's GatewayClass."""
    kubectl("apply", "--server-side", "-f", str(crds))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            *(f"crd/{name}.gateway.networking.k8s.io" for name in ("gatewayclasses", "gateways", "httproutes")))
    kubectl("apply", "-f", "-", input=yaml.safe_dump(GATEWAY_CLASS_OBJECT))


def traefik_args(ip: str, api_address: str, listen: str | None = None) -> list[str]:
    """Traefik's flags wherever it runs: entry points `web` and `websecure` on INGRESS_PORT and INGRESS_TLS_PORT
    (Gateway listeners match an entry point by its port) of `listen` (default `ip`; "" every address), its ping on
    `api_address`, the Kubernetes Ingress and Gateway providers publishing `ip` (a pod's may be `$(VAR)`) in the
    status of what they serve."""
    listen = ip if listen is None else listen
    return [
        f"--entrypoints.web.address={listen}:{INGRESS_PORT}",
        f"--entrypoints.websecure.address={listen}:{INGRESS_TLS_PORT}",
        # A test cluster stops at once (Traefik's default waits 10 s for open connections).
        "--entrypoints.web.transport.lifecycle.gracetimeout=1s",
        "--entrypoints.websecure.transport.lifecycle.gracetimeout=1s",
        f"--entrypoints.traefik.address={api_address}", "--ping=true",
        "--providers.kubernetesingress=true", f"--providers.kubernetesingress.ingressendpoint.ip={ip}",
        "--providers.kubernetesgateway=true", f"--providers.kubernetesgateway.statusaddress.ip={ip}",
        "--global.checknewversion=false", "--global.sendanonymoususage=false", "--log.level=WARN"]


# ---------------------------------------------------------------------------------------------------------


@dataclass
class RealNode:
    state_dir: Path  # the cluster's state directory; the node keeps its own under node/

    @property
    def root(self) -> Path:
        return self.state_dir / "node"

    @property
    def socket_dir(self) -> Path:
        """containerd's sockets live under /run: a unix socket path must stay below 104 bytes, which a
        state directory under a test's temporary path can exceed."""
        return socket_dir(self.state_dir)

    @property
    def containerd_sock(self) -> Path:
        return self.socket_dir / "containerd.sock"

    @property
    def ingress_url(self) -> str:
        return f"http://{NODE_IP}:{INGRESS_PORT}"

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ctr", "--address", str(self.containerd_sock), "-n", "k8s.io", *args, check=check)

    # -- host network --------------------------------------------------------------------------------

    @staticmethod
    def setup_host_network() -> None:
        """The node address on a bridge of its own (no `dummy` links without kernel modules)."""
        if run("ip", "link", "show", NODE_BRIDGE, check=False).returncode != 0:
            run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
        run("ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
        run("ip", "link", "set", NODE_BRIDGE, "up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    # -- start ---------------------------------------------------------------------------------------

    def start_runtime(self, spawn: Spawn, sandbox_image: str) -> None:
        state = self.root / "containerd"
        (state / "cni").mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        (state / "cni" / "10-flaskapp.conflist").write_text(cni_conflist(self.root / "cni-ipam"))
        (state / "config.toml").write_text(containerd_config(state, self.socket_dir, sandbox_image))
        spawn("containerd", ["containerd", "--config", str(state / "config.toml"), "--log-level", "warn"])
        wait_for(lambda: self.ctr("version").returncode == 0, 60, "containerd", self.state_dir / "logs", "containerd")

    def import_images(self, archives: list[Path]) -> None:
        for archive in archives:
            started = time.monotonic()
            self.ctr("images", "import", "--no-unpack", str(archive))
            log(f"imported {archive.name} ({time.monotonic() - started:.1f}s)")

    def start_kubelet(self, spawn: Spawn, kubelet: Path, kubeconfig: Path, pki: Path,
                      port: int, healthz_port: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "resolv.conf").write_text(
            "".join(f"nameserver {ns}\n" for ns in host_nameservers()) or "nameserver 127.0.0.1\n")
        (self.root / "kubelet.yaml").write_text(kubelet_config(self.root, pki, self.containerd_sock, port,
                                                               healthz_port))
        spawn("kubelet", [str(kubelet), f"--config={self.root / 'kubelet.yaml'}", f"--kubeconfig={kubeconfig}",
                          f"--root-dir={self.root / 'kubelet'}", f"--hostname-override={NODE_NAME}",
                          f"--node-ip={NODE_IP}", "--node-labels=flaskapp.dev/local-node=true", "--v=0"])

    def start_kube_proxy(self, spawn: Spawn, kube_proxy: Path, kubeconfig: Path, metrics_port: int,
                         healthz_port: int) -> None:
        spawn("kube-proxy", [str(kube_proxy), f"--kubeconfig={kubeconfig}", f"--hostname-override={NODE_NAME}",
                             "--proxy-mode=iptables", f"--cluster-cidr={CLUSTER_CIDR}",
                             # No conntrack sysctls to raise in this VM (they are read-only here).
                             "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
                             "--conntrack-tcp-timeout-close-wait=0",
                             f"--metrics-bind-address=127.0.0.1:{metrics_port}",
                             f"--healthz-bind-address=127.0.0.1:{healthz_port}", "--v=0"])

    def start_dns(self, spawn: Spawn, coredns: Path, kubeconfig: Path) -> None:
        upstream = [ns for ns in host_nameservers() if ns != NODE_IP]
        (self.root / "Corefile").write_text(corefile(kubeconfig, upstream))
        spawn("coredns", [str(coredns), "-conf", str(self.root / "Corefile")])

    def start_addons(self, spawn: Spawn, kubectl: Callable[..., subprocess.CompletedProcess], server: str,
                     pki: Path, bins: dict[str, Path], traefik_api_port: int, kube_router_health_port: int,
                     helper_image: str) -> None:
        """Traefik (Ingress and Gateway API), kube-router's firewall (NetworkPolicy) and local-path-provisioner
        (PersistentVolumes), as host processes with ServiceAccount tokens of their own (least privilege,
        not the admin certificate)."""
        traefik, kube_router = bins["traefik"], bins["kube-router"]
        kubectl("apply", "-f", "-", input=ADDON_RBAC + "---\n" + LOCAL_PATH_RBAC + "---\n" +
                yaml.safe_dump(local_path_config(self.root / "volumes", helper_image)))
        tokens = {name: self._service_account_token(kubectl, name)
                  for name in ("traefik", "kube-router", "local-path-provisioner")}
        install_gateway_api(kubectl, bins["gateway-api-crds"])
        spawn("traefik", [
            str(traefik), *traefik_args(NODE_IP, f"127.0.0.1:{traefik_api_port}"),
            # A host process: the API server's address and credentials given (a pod's are found in-cluster).
            f"--providers.kubernetesingress.endpoint={server}", f"--providers.kubernetesingress.token={tokens['traefik']}",
            f"--providers.kubernetesingress.certauthfilepath={pki / 'ca.crt'}",
            f"--providers.kubernetesgateway.endpoint={server}", f"--providers.kubernetesgateway.token={tokens['traefik']}",
            f"--providers.kubernetesgateway.certauthfilepath={pki / 'ca.crt'}"])
        kubeconfig = self._token_kubeconfig("kube-router", server, pki, tokens["kube-router"])
        spawn("local-path-provisioner", [
            str(bins["local-path-provisioner"]), "start", "--namespace=kube-system",
            f"--kubeconfig={self._token_kubeconfig('local-path-provisioner', server, pki, tokens['local-path-provisioner'])}",
            "--service-account-name=local-path-provisioner", f"--helper-image={helper_image}",
            "--configmap-name=local-path-config"])
        spawn("kube-router", [
            str(kube_router), "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            f"--kubeconfig={kubeconfig}", f"--hostname-override={NODE_NAME}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", f"--health-port={kube_router_health_port}",
            "--iptables-sync-period=30s", "--v=1"])

    def _token_kubeconfig(self, name: str, server: str, pki: Path, token: str) -> Path:
        kubeconfig = self.root / f"{name}.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}]}))
        return kubeconfig

    def _service_account_token(self, kubectl: Callable[..., subprocess.CompletedProcess], name: str) -> str:
        secret = f"{name}-token"
        found: dict[str, str] = {}

        def issued() -> bool:
            found["token"] = kubectl("get", "secret", secret, "-n", "kube-system", "-o",
                                     "jsonpath={.data.token}", check=False).stdout
            return bool(found["token"])
        wait_for(issued, 60, f"the token of ServiceAccount {name}", self.state_dir / "logs")
        return base64.b64decode(found["token"]).decode()

    # -- teardown ------------------------------------------------------------------------------------

    @staticmethod
    def teardown(state_dir: Path, kube_proxy: Path | None) -> None:
        """Remove every piece of host state a node makes; safe to run when some or all are gone already."""
        _kill_cgroup_processes("kubepods")
        for pid in _pids_matching(f"{re.escape(str(state_dir / 'node' / 'containerd'))}|"
                                  f"{re.escape(str(socket_dir(state_dir)))}"):  # containerd and its shims
            _signal(pid, signal.SIGKILL)
        unmount_under(state_dir)
        _remove_pod_netns()
        _remove_cgroups("kubepods")
        if kube_proxy and kube_proxy.exists():
            run(str(kube_proxy), "--cleanup", check=False)
        _remove_cni_nat_rules()
        _remove_owned_chains()
        for bridge in (POD_BRIDGE, NODE_BRIDGE):
            run("ip", "link", "delete", bridge, check=False)
        shutil.rmtree(socket_dir(state_dir), ignore_errors=True)


def socket_dir(state_dir: Path) -> Path:
    return SOCKETS_ROOT / hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def _pids_matching(pattern: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(pattern, cmdline):
            found.append(int(proc.name))
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _cgroup_dirs(name: str) -> list[Path]:
    """Every directory of the `name` cgroup tree in every hierarchy, deepest first."""
    dirs = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if top.is_dir():
            dirs += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _kill_cgroup_processes(name: str) -> None:
    for _ in range(50):
        pids = set()
        for d in _cgroup_dirs(name):
            try:
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        if not pids:
            return
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_cgroups(name: str) -> None:
    for d in _cgroup_dirs(name):
        try:
            d.rmdir()
        except OSError:
            pass


def unmount_under(path: Path) -> None:
    prefix = str(path.resolve())
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), key=len, reverse=True):
        run("umount", "-l", point.replace("\\040", " "), check=False)


def _remove_pod_netns() -> None:
    """containerd's CRI names pod network namespaces cni-<uuid> under /run/netns."""
    netns = Path("/run/netns")
    if not netns.is_dir():
        return
    for entry in netns.glob("cni-*"):
        run("umount", "-l", str(entry), check=False)
        entry.unlink(missing_ok=True)


# iptables chains and ipsets the node's components make, by table (kube-proxy's own are removed by
# `kube-proxy --cleanup`). kube-router 2.1's `--cleanup-config` reports success without removing anything
# (its cleanup runs on an empty controller), so its chains and sets are removed here by name.
OWNED_CHAIN_PREFIXES = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-"),
    "nat": ("KUBE-KUBELET-CANARY",), "mangle": ("KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"),
}
OWNED_IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-", "kube-router-")


def _remove_owned_chains() -> None:
    for table, prefixes in OWNED_CHAIN_PREFIXES.items():
        rules = [shlex.split(r) for r in run("iptables", "-t", table, "-S", check=False).stdout.splitlines()]
        chains = [r[1] for r in rules if r[:1] == ["-N"] and r[1].startswith(prefixes)]
        for r in rules:  # jumps into our chains from chains that are not ours
            if r[:1] == ["-A"] and not r[1].startswith(prefixes) and "-j" in r and \
                    r[r.index("-j") + 1].startswith(prefixes):
                run("iptables", "-t", table, "-D", *r[1:], check=False)
        for flag in ("-F", "-X"):
            for chain in chains:
                run("iptables", "-t", table, flag, chain, check=False)
    for name in run("ipset", "list", "-n", check=False).stdout.split():
        if name.startswith(OWNED_IPSET_PREFIXES):
            run("ipset", "destroy", name, check=False)


def _remove_cni_nat_rules() -> None:
    """The bridge plugin's ipMasq adds, per pod, a CNI-<hash> chain and a POSTROUTING jump to it, both
    commented with the network name; a crash leaves them behind. A crash in the middle of the plugin's
    ADD or DEL can also leave the chain empty, with no comment left to recognise it: an empty CNI- chain
    that nothing jumps to serves nobody and is removed too."""
    rules = [shlex.split(r) for r in run("iptables", "-t", "nat", "-S", check=False).stdout.splitlines()]
    tag = f'name: "{CNI_NETWORK}"'
    appended = [r for r in rules if r[:1] == ["-A"]]
    tagged = [r for r in appended if any(tag in w for w in r)]
    jumps = {r[r.index("-j") + 1] for r in appended if "-j" in r}
    chains = {r[1] for r in tagged if r[1].startswith("CNI-")}
    chains |= {r[r.index("-j") + 1] for r in tagged if "-j" in r and r[r.index("-j") + 1].startswith("CNI-")}
    chains |= {r[1] for r in rules if r[:1] == ["-N"] and r[1].startswith("CNI-")
               and r[1] not in {a[1] for a in appended} | jumps}
    for r in rules:
        if r[:2] == ["-A", "POSTROUTING"] and "-j" in r and r[r.index("-j") + 1] in chains:
            run("iptables", "-t", "nat", "-D", *r[1:], check=False)
    for flag in ("-F", "-X"):
        for chain in sorted(chains):
            run("iptables", "-t", "nat", flag, chain, check=False)
