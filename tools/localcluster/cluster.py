"""A real Kubernetes control plane as local processes: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and either a real node (kubelet, containerd, CNI, kube-proxy, CoreDNS, an ingress controller
and a NetworkPolicy engine: see node.py) or kwok faking Ready nodes and pods for scale tests.

Every process is started in its own session and recorded in <state>/processes.json, so `stop` kills
exactly those processes, wherever they were started from, and then removes the state directory. A real
node's host state is global (a bridge, iptables rules, port 80 of the node address), so the state
directory of the cluster owning it is also recorded in ACTIVE_REAL_NODE: a `start` after a crash stops
that cluster first.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from . import build, kwokvolumes
from .build import log
from .node import NODE_IP, NODE_NAME, SERVICE_CIDR, RealNode, unavailable_reason, wait_for

ACTIVE_REAL_NODE = Path("/run/flaskapp-localcluster/active-real-node")

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"

# Every write request, with the user who sent it, and every read of the operator's ServiceAccount: tests count
# the operator's own writes and reads from this log.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
    users: ["system:serviceaccount:flaskapp-system:flaskapp-operator"]
    verbs: ["get", "list", "watch"]
  - level: None
"""
NODE_COUNT = 4
# Generous fake capacity: kwok nodes run nothing, and the benchmarks schedule thousands of pods.
NODE_CAPACITY = {"cpu": "1000", "memory": "4Ti", "pods": "3000", "ephemeral-storage": "100Ti"}
ZONES = ("zone-a", "zone-b")  # labelled like a cloud's nodes, so zone spreading has something to spread over


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------
# Certificates: a throw-away CA, a serving cert for loopback, an admin client cert, a service-account key.


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
          sans: list | None = None, client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=7))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _client_cert(pki: Path, name: str, common_name: str, organization: str | None, ca, ca_key, ca_name) -> None:
    key = _key()
    attrs = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []) + \
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    _write_key(pki / f"{name}.key", key)
    (pki / f"{name}.crt").write_bytes(_cert(x509.Name(attrs), key, ca_name, ca_key, client=True)
                                       .public_bytes(serialization.Encoding.PEM))


def write_certificates(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flaskapp-localcluster-ca")])
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write_key(pki / "ca.key", ca_key)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    serving_key = _key()
    sans = [x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
            x509.IPAddress(ipaddress.ip_address(NODE_IP))]
    serving = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), serving_key,
                    ca_name, ca_key, sans=sans)
    _write_key(pki / "apiserver.key", serving_key)
    (pki / "apiserver.crt").write_bytes(serving.public_bytes(serialization.Encoding.PEM))

    # Each component with the identity the default RBAC and the Node authorizer expect.
    for name, cn, org in (("admin", "admin", "system:masters"),
                          ("kubelet-client", f"system:node:{NODE_NAME}", "system:nodes"),
                          ("kube-proxy", "system:kube-proxy", None)):
        _client_cert(pki, name, cn, org, ca, ca_key, ca_name)
    kubelet_key = _key()
    _write_key(pki / "kubelet.key", kubelet_key)
    (pki / "kubelet.crt").write_bytes(_cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_NAME)]), kubelet_key, ca_name, ca_key,
        sans=[x509.DNSName(NODE_NAME), x509.IPAddress(ipaddress.ip_address(NODE_IP))])
        .public_bytes(serialization.Encoding.PEM))

    sa_key = _key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_kubeconfig(path: Path, server: str, pki: Path, context: str = "flaskapp-local", user: str = "admin") -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server,
                                                    "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / f"{user}.crt"),
                                           "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
    }
    path.write_text(yaml.safe_dump(config))


# ---------------------------------------------------------------------------------------------------------


@dataclass
class LocalCluster:
    state_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def _record(self) -> Path:
        return self.state_dir / "processes.json"

    def _processes(self) -> dict:
        return json.loads(self._record.read_text()) if self._record.exists() else {}

    @property
    def server(self) -> str:
        return self._processes().get("server", "")

    @property
    def nodes(self) -> str:
        """"real" (containers run) or "kwok" (fake nodes)."""
        return self._processes().get("nodes", "")

    @property
    def node(self) -> RealNode | None:
        return RealNode(self.state_dir) if self.nodes == "real" else None

    def _spawn(self, name: str, argv: list[str]) -> None:
        logfile = open(self.state_dir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.state_dir)
        record = self._processes()
        record.setdefault("pids", {})[name] = proc.pid
        record.setdefault("argv", {})[name] = argv
        self._record.write_text(json.dumps(record, indent=1))

    def respawn(self, name: str) -> None:
        """Restart one component with the same arguments (used by the fault-injection tests)."""
        pid = self._processes()["pids"][name]
        self.kill(name)
        _wait_gone(pid)  # its port must be free before the new one binds it
        self._spawn(name, self._processes()["argv"][name])

    def restart_apiserver(self, timeout: float = 60) -> None:
        """Restart kube-apiserver, as an upgrade or a crash would. kwok 0.7 stops renewing its fake nodes'
        heartbeats across the restart (nodes then flap NotReady), so it is restarted with it; etcd,
        the controller-manager, the scheduler and a real kubelet reconnect by themselves."""
        self.respawn("kube-apiserver")
        self.wait_ready(timeout)
        if "kwok" in self._processes().get("pids", {}):
            self.respawn("kwok")

    def kill(self, name: str, sig: int = signal.SIGTERM) -> None:
        pid = self._processes().get("pids", {}).get(name)
        if pid:
            _kill_group(pid, sig)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        kubectl = build.tool_dir("kubernetes", build.KUBERNETES_VERSION) / "kubectl"
        result = subprocess.run([str(kubectl), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def start(self, timeout: float = 120, nodes: str | None = None,
              images: dict[str, Path] | None = None) -> "LocalCluster":
        """nodes: "real" (the default where the machine allows it) or "kwok"; images: archives to import
        into a real node (reference -> archive)."""
        if self._record.exists():
            if _any_alive(self._processes()):
                raise RuntimeError(f"a cluster is already running from {self.state_dir}; stop it first")
            log(f"cleaning up a crashed cluster in {self.state_dir}")
            self.stop()
        nodes = nodes or os.environ.get("NODES", "real")
        if nodes == "real" and (reason := unavailable_reason()):
            log(f"no real node on this machine ({reason}); using kwok fake nodes")
            nodes = "kwok"
        if nodes not in ("real", "kwok"):
            raise ValueError(f"NODES must be real or kwok, not {nodes!r}")
        if nodes == "real":
            _stop_previous_real_node()
        started = time.monotonic()
        bins = build.ensure(build.tool_set("cluster", real_node=nodes == "real"))
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        pki = self.state_dir / "pki"
        write_certificates(pki)
        host = NODE_IP if nodes == "real" else "127.0.0.1"
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        server = f"https://{host}:{api_port}"
        self._record.write_text(json.dumps({"server": server, "nodes": nodes, "pids": {}, "argv": {}}))
        (self.state_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        try:
            if nodes == "real":
                ACTIVE_REAL_NODE.parent.mkdir(parents=True, exist_ok=True)
                ACTIVE_REAL_NODE.write_text(str(self.state_dir.resolve()))
                RealNode.setup_host_network()
            self._spawn("etcd", [
                str(bins["etcd"]), "--data-dir", str(self.state_dir / "etcd"), "--name", "default",
                "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync", "--quota-backend-bytes", str(4 << 30), "--log-level", "warn"])
            self._spawn("kube-apiserver", [
                str(bins["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                # Pods reach the API server through the `kubernetes` Service: it must advertise an
                # address they can route to (the node's), not loopback.
                f"--bind-address={host}", f"--advertise-address={host}", f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=PodSecurity,NodeRestriction", "--allow-privileged=false", "--v=0",
                f"--audit-policy-file={self.state_dir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                # Kubernetes 1.37 refuses a loopback address for the `kubernetes` Service's endpoints; fake nodes run
                # no pod that would use them.
                *(["--endpoint-reconciler-type=none"] if host.startswith("127.") else [])])
            write_kubeconfig(self.kubeconfig, server, pki)
            self.wait_ready(timeout)
            log(f"kube-apiserver ready at {server} ({time.monotonic() - started:.1f}s)")
            self._spawn("kube-controller-manager", [
                str(bins["kube-controller-manager"]), f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
                f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
                "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                # No cloud here: node IPAM off, and the cloud node lifecycle controller where the release still has
                # one (1.37 moved it out of kube-controller-manager and refuses its name).
                "--controllers=*,-node-ipam-controller" + (
                    ",-cloud-node-lifecycle-controller" if build.kubernetes_minor() < 37 else ""),
                "--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20",
                "--concurrent-gc-syncs=40", "--kube-api-qps=200", "--kube-api-burst=400",
                # Fake nodes on a loaded 2-core machine: tolerate a late heartbeat before marking pods NotReady.
                "--node-monitor-grace-period=2m"])
            self._spawn("kube-scheduler", [
                str(bins["kube-scheduler"]), f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                "--kube-api-qps=200", "--kube-api-burst=400"])
            if nodes == "real":
                self._start_real_node(bins, pki, server, images or {})
            else:
                self._start_kwok(bins)
        except BaseException:
            self.stop()
            raise
        log(f"cluster up with {nodes} nodes in {time.monotonic() - started:.1f}s; kubeconfig: {self.kubeconfig}")
        return self

    def _start_kwok(self, bins: dict[str, Path]) -> None:
        self._spawn("kwok", [
            str(bins["kwok"]), f"--kubeconfig={self.kubeconfig}", "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{free_port()}", "--cidr=10.0.0.1/16",
            # Lease heartbeats, renewed apart from the pod work queue (the node status heartbeat
            # alone stalled behind bursts of pod deletions).
            "--node-lease-duration-seconds=40"])
        self._create_nodes(bins["kubectl"])
        # Fake nodes have no disks: claims get stand-in volumes (a StatefulSet's pods can then schedule).
        self.kubectl("apply", "-f", "-", input=json.dumps(kwokvolumes.STORAGE_CLASS_OBJECT))
        self._spawn("kwok-volumes", [sys.executable, kwokvolumes.__file__, str(self.kubeconfig)])

    def _start_real_node(self, bins: dict[str, Path], pki: Path, server: str, images: dict[str, Path]) -> None:
        from . import images as image_builds

        node = RealNode(self.state_dir)
        logs = self.state_dir / "logs"
        pause = image_builds.single_binary_image(image_builds.PAUSE_REF, bins["pause"], "/pause")
        node.start_runtime(self._spawn, image_builds.PAUSE_REF)
        node.import_images([pause, *(a for ref, a in images.items() if ref != image_builds.PAUSE_REF)])
        for user in ("kubelet-client", "kube-proxy"):
            write_kubeconfig(self.state_dir / f"{user}.kubeconfig", server, pki, user=user)
        node.start_kubelet(self._spawn, bins["kubelet"], self.state_dir / "kubelet-client.kubeconfig", pki,
                           free_port(), free_port())
        node.start_kube_proxy(self._spawn, bins["kube-proxy"], self.state_dir / "kube-proxy.kubeconfig",
                              free_port(), free_port())
        node.start_dns(self._spawn, bins["coredns"], self.kubeconfig)
        wait_for(lambda: "True" in self.kubectl("get", "node", NODE_NAME, "-o",
                                             "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                             check=False).stdout, 90, "node Ready", logs, "kubelet")
        node.start_addons(self._spawn, self.kubectl, server, pki, bins, free_port(), free_port(),
                          helper_image=image_builds.PYTHON_REF)

    def import_images(self, images: dict[str, Path]) -> None:
        if self.node is None:
            raise RuntimeError("images run only on a real node (NODES=real)")
        self.node.import_images(list(images.values()))

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.state_dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5) -> str:
        with urllib.request.urlopen(self.server + path, context=self._ssl_context(), timeout=timeout) as resp:
            return resp.read().decode()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz", timeout=2).strip() == "ok":
                    return
            except Exception as exc:  # noqa: BLE001 - report what we last saw
                last = str(exc)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last} "
                           f"(logs in {self.state_dir / 'logs'})")

    def _create_nodes(self, kubectl: Path) -> None:
        nodes = []
        for i in range(NODE_COUNT):
            name = f"kwok-node-{i}"
            nodes.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                             "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                        "kubernetes.io/arch": "amd64", "type": "kwok",
                                        "topology.kubernetes.io/zone": ZONES[i % len(ZONES)]}},
                "status": {"allocatable": NODE_CAPACITY, "capacity": NODE_CAPACITY},
            })
        manifest = yaml.safe_dump_all(nodes)
        subprocess.run([str(kubectl), "--kubeconfig", str(self.kubeconfig), "apply", "-f", "-"],
                       input=manifest.encode(), check=True, capture_output=True)

    def stop(self) -> None:
        record = self._processes()
        # Reverse start order: node add-ons, kubelet and controllers first, etcd last.
        for name, pid in reversed(list(record.get("pids", {}).items())):
            _kill_group(pid, signal.SIGTERM)
        for pid in record.get("pids", {}).values():
            _wait_gone(pid)
        if record.get("nodes") == "real":
            _teardown_node(self.state_dir)
            if ACTIVE_REAL_NODE.exists() and ACTIVE_REAL_NODE.read_text() == str(self.state_dir.resolve()):
                ACTIVE_REAL_NODE.unlink()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _teardown_node(state_dir: Path) -> None:
    RealNode.teardown(state_dir, build.tool_dir("kubernetes", build.KUBERNETES_VERSION) / "kube-proxy")


def _stop_previous_real_node() -> None:
    """One real node per machine: stop the cluster that owns it (a crashed run's, say) before starting."""
    if not ACTIVE_REAL_NODE.exists():
        return
    previous = Path(ACTIVE_REAL_NODE.read_text().strip())
    log(f"stopping the previous real-node cluster of {previous} (one real node per machine)")
    LocalCluster(previous).stop()
    if not (previous / "processes.json").exists():  # its state is gone: remove the host state by name
        _teardown_node(previous)
    ACTIVE_REAL_NODE.unlink(missing_ok=True)


def _any_alive(record: dict) -> bool:
    for pid in record.get("pids", {}).values():
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            continue
        except PermissionError:
            return True
    return False


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            try:  # our own child: reap it
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _kill_group(pid, signal.SIGKILL)
