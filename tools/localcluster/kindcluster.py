"""A kind cluster from the node image built here (localcluster.kind), and its complete removal.

kind is said to need a Docker engine with iptables and a bridge; such an engine sets the host's iptables FORWARD
policy to DROP and adds chains, which breaks the local cluster's real node. It does not need one here: kind's
nodes only talk to each other (one Docker network, a Linux bridge: layer 2, no forwarding or NAT), the API server
port is published on 127.0.0.1 by Docker's userland proxy, and Docker's embedded DNS (node names, which
`kubeadm join` resolves) is set up inside each container's own network namespace. Nothing offline needs NAT out.
So the engine is Debian's dockerd with the build engine's flags (no iptables, no ip forwarding or masquerade,
no docker0), on its own socket, exec root and data root, and the host's iptables are never touched.
What the engine adds to the host: the kind network's bridge and one veth per node; `up` adds a route to each
node's pod subnet via the node (route_pod_subnets). `down` removes them all.

kind runs nodes `--privileged`; Docker 20.10 then asks for every capability the kernel knows, and this host's
root cannot grant CAP_SYS_RESOURCE: the engine's runtime is kindnode/runc-wrapper, which drops what the host
cannot grant.

What the cluster serves beyond kind's own (`up`): the Ingress and Gateway API controller the local cluster runs,
Traefik with the same providers, IngressClass and GatewayClass (localcluster.node), here as a pod on the control
plane from the image preloaded in the node image. Its entry points are the pod's ports 80 and 443, published as
the same hostPorts of the control-plane node (CNI portmap): the host reaches that node's address directly over
the kind network's bridge, as the local cluster's host reaches its node address, so a test's URL and a Gateway
listener's port are the same on both clusters, with no published Docker port (which kind can only map at
creation, through the userland proxy). The control plane also takes workloads (untainted, as kind does for a
one-node cluster): its spare CPU is what the suite's requests need beyond the worker's (docs/development.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from . import build, kind, images
from .build import cache_root, log
from .images import Docker
from .node import (INGRESS_CLASS_OBJECT, INGRESS_PORT, INGRESS_TLS_PORT, TRAEFIK_RBAC, install_gateway_api,
                   traefik_args, unmount_under)

RUNC_WRAPPER = kind.FILES / "runc-wrapper"


def engine_flags() -> tuple[str, ...]:
    """The build engine's (no iptables, no bridge), with the capability-dropping runc as the default runtime."""
    return (*images.PRIVATE_FLAGS, f"--add-runtime=kind-runc={RUNC_WRAPPER}", "--default-runtime=kind-runc")


def link_masters() -> dict[str, str]:
    """The host's network links, each with the bridge it is enslaved to ("" for none)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    masters = {}
    for line in out.splitlines():
        name = line.split(": ")[1].split("@")[0]
        words = line.split()
        masters[name] = words[words.index("master") + 1] if "master" in words else ""
    return masters


TRAEFIK_API_PORT = 9000  # its ping, for the probes


def ingress_manifest(image: str) -> str:
    """Traefik in kube-system (its ServiceAccount bound to the local node's role, the same IngressClass), one pod
    on the control plane with hostPorts 80 and 443; the address it publishes in Ingress and Gateway status is its
    node's (status.hostIP). Runs as nobody: its pod lets unprivileged processes bind low ports."""
    ports = [{"name": name, "containerPort": port, "hostPort": port, "protocol": "TCP"}
             for name, port in (("web", INGRESS_PORT), ("websecure", INGRESS_TLS_PORT))]
    ports.append({"name": "traefik", "containerPort": TRAEFIK_API_PORT, "protocol": "TCP"})

    def probe(**more) -> dict:
        return {"httpGet": {"path": "/ping", "port": TRAEFIK_API_PORT}, "periodSeconds": 2, **more}

    labels = {"app.kubernetes.io/name": "traefik"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "traefik", "namespace": "kube-system", "labels": dict(labels)},
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"},  # hostPorts: one pod at a time
                 "selector": {"matchLabels": dict(labels)},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": {
                     "serviceAccountName": "traefik",
                     "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
                     "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                      "effect": "NoSchedule"}],
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65535, "runAsGroup": 65535,
                                         "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                     "containers": [{
                         "name": "traefik", "image": image, "imagePullPolicy": "IfNotPresent",
                         "args": traefik_args("$(HOST_IP)", f":{TRAEFIK_API_PORT}", listen=""),
                         "env": [{"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
                         "ports": ports, "readinessProbe": probe(), "livenessProbe": probe(failureThreshold=5),
                         "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                         "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                             "capabilities": {"drop": ["ALL"]}}}]}}}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik", "namespace": "kube-system"}}
    return "---\n".join([yaml.safe_dump(account), TRAEFIK_RBAC, INGRESS_CLASS_OBJECT, yaml.safe_dump(deployment)])


class KindCluster:
    def __init__(self, state: Path, name: str = kind.DEFAULT_CLUSTER):
        self.state, self.name = state, name
        self.kubeconfig = state / "kubeconfig"
        self.engine = Docker(state, data_root=cache_root() / "kind-docker", flags=engine_flags())

    # -- up ------------------------------------------------------------------------------------------------

    def up(self, workers: int = 1, timeout: float = 900) -> "KindCluster":
        ref, archive = kind.build_node_image()
        self.state.mkdir(parents=True, exist_ok=True)
        self._record_host()
        if not self._engine_running():
            log("kind: starting a private Docker engine (no iptables, no docker0) with runc-wrapper")
            self.engine.__enter__()
        if not self.engine.has(ref):
            log(f"kind: docker load {archive.name}")
            with open(archive, "rb") as f:
                self.engine.docker("load", stdin=f)
            listed = self.engine.docker("images", kind.NODE_REPO, "--format", "{{.Repository}}:{{.Tag}}").stdout
            for old in set(listed.split()) - {ref}:  # superseded node images: the engine's data root stays bounded
                self.engine.docker("rmi", old, check=False)
        config = self.state / "kind-config.yaml"
        config.write_text(yaml.safe_dump(kind.cluster_config(kind.component_refs(), workers), sort_keys=False))
        clusters = self._kind("get", "clusters").stdout.split()
        stopped = self._stopped_nodes() if self.name in clusters else []
        if stopped:
            # A crash (engine or host) left the nodes stopped: kind cannot resume a cluster, so it starts anew.
            log(f"kind: the nodes of {self.name} are not running ({', '.join(stopped)}): "
                "deleting the cluster to create it again")
            self._kind("delete", "cluster", "--name", self.name)
            clusters.remove(self.name)
        if self.name not in clusters:
            started = time.monotonic()
            log(f"kind: create cluster {self.name} ({workers} worker(s)) from {ref}")
            self._kind("create", "cluster", "--name", self.name, "--image", ref, "--config", str(config),
                       "--kubeconfig", str(self.kubeconfig), "--retain", "--wait", "0s", stream=True)
            log(f"kind: created in {time.monotonic() - started:.0f}s")
        else:
            self.kubeconfig.write_text(self._kind("get", "kubeconfig", "--name", self.name).stdout)
        self.wait_ready(workers + 1, timeout)
        self.route_pod_subnets()
        self.install_ingress(timeout)
        return self

    def route_pod_subnets(self) -> None:
        """Host routes to each node's pod subnet via the node's address on the kind bridge: the suite reaches pods
        by IP from the host (as the local cluster's host, which is its node, does). They go with the bridge at
        `down`; a subnet the host already routes (a local cluster's node up meanwhile) is left alone."""
        listed = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        record = self.state / "routes.json"
        ours = set(json.loads(record.read_text())) if record.exists() else set()  # left by a crashed `up`
        routes = []
        for item in listed:
            address = next(a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP")
            subnet = item["spec"]["podCIDR"]
            verb = "replace" if subnet in ours else "add"
            if subprocess.run(["ip", "route", verb, subnet, "via", address], capture_output=True).returncode == 0:
                routes.append(subnet)
        record.write_text(json.dumps(sorted(set(routes) | ours)))

    def install_ingress(self, timeout: float) -> None:
        """Workloads on the control plane too; Gateway API's CRDs and class, Traefik, until it answers."""
        started = time.monotonic()
        self.kubectl("taint", "nodes", "--selector=node-role.kubernetes.io/control-plane",
                     "node-role.kubernetes.io/control-plane:NoSchedule-", check=False)  # absent on a second `up`
        install_gateway_api(self.kubectl, build.gateway_api_crds())
        self.kubectl("apply", "-f", "-", input=ingress_manifest(kind.component_refs()["traefik"]))
        self.kubectl("-n", "kube-system", "rollout", "status", "deployment/traefik", f"--timeout={timeout:.0f}s")
        log(f"kind: Traefik serves Ingress and Gateway API at {self.ingress_url()} "
            f"({time.monotonic() - started:.0f}s)")

    def ingress_url(self) -> str:
        """Where the host reaches the ingress controller: its node's address on the kind network."""
        address = self.kubectl("get", "nodes", "--selector=node-role.kubernetes.io/control-plane", "-o",
                               "jsonpath={.items[0].status.addresses[?(@.type=='InternalIP')].address}").stdout
        return f"http://{address.split()[0]}:{INGRESS_PORT}"

    def wait_ready(self, nodes: int, timeout: float) -> None:
        """Every node Ready and CoreDNS running, or an error that says what was last seen."""
        deadline, seen = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            node_list = self.kubectl("get", "nodes", "-o", "json", check=False)
            dns = self.kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "json", check=False)
            if node_list.returncode == 0 and dns.returncode == 0:
                ready = [n["metadata"]["name"] for n in json.loads(node_list.stdout)["items"]
                         if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])]
                running = [p["metadata"]["name"] for p in json.loads(dns.stdout)["items"]
                           if p["status"].get("phase") == "Running"
                           and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))]
                seen = f"ready nodes {ready}, running CoreDNS pods {running}"
                if len(ready) >= nodes and running:
                    log(f"kind: {seen}")
                    return
            else:
                seen = (node_list.stderr or dns.stderr).strip()
            time.sleep(3)
        raise TimeoutError(f"kind cluster {self.name} not ready after {timeout:.0f}s: {seen}")

    def load_images(self, archives: dict[str, Path]) -> None:
        """Image archives into every node's containerd, as a user would (`kind load image-archive`); skipped for
        an image every node holds under the same reference and image ID (a rebuilt `:local` tag is loaded)."""
        held = [self.node_images(node) for node in self.nodes()]
        for ref, archive in archives.items():
            if all(images.archive_image_id(archive) == node.get(ref) for node in held):
                continue
            started = time.monotonic()
            self._kind("load", "image-archive", "--name", self.name, str(archive))
            log(f"kind: loaded {ref} ({time.monotonic() - started:.0f}s)")

    def node_images(self, node: str) -> dict[str, str]:
        """Reference -> image ID (the config's digest) of every image in a node's CRI."""
        listed = json.loads(self.engine.docker("exec", node, "crictl", "images", "-o", "json").stdout)
        return {tag: image["id"] for image in listed["images"] for tag in image.get("repoTags") or ()}

    def _stopped_nodes(self) -> list[str]:
        names = self.nodes()
        running = self.engine.docker("ps", "--format", "{{.Names}}").stdout.split()
        return [name for name in names if name not in running]

    def nodes(self) -> list[str]:
        return self._kind("get", "nodes", "--name", self.name).stdout.split()

    def ctr_on(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`ctr` in the k8s.io namespace of one node's containerd (what the suite does on the local node)."""
        return self.engine.docker("exec", node, "ctr", "--namespace=k8s.io", *args, check=check)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        kubectl = build.build_kubernetes() / "kubectl"
        result = subprocess.run([str(kubectl), f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                                text=True, input=input)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result

    # -- down ----------------------------------------------------------------------------------------------

    def down(self) -> None:
        if not self._engine_running() and (self.state / "links-before.json").exists():
            # The engine died with the cluster (a crash): started again, it deletes what it holds as usual.
            log("kind: starting the stopped engine to delete the cluster it holds")
            self.engine.__enter__()
        if self._engine_running():
            self._kind("delete", "cluster", "--name", self.name, check=False)
            self.engine.docker("network", "rm", "kind", check=False)  # kind leaves its network behind
            self.engine.docker("volume", "prune", "--force", check=False)  # nodes' /var: the engine is kind's own
            self._stop_engine()
        routes = self.state / "routes.json"
        for subnet in json.loads(routes.read_text()) if routes.exists() else ():
            subprocess.run(["ip", "route", "delete", subnet], capture_output=True)
        routes.unlink(missing_ok=True)
        unmount_under(self.state)  # the engine's exec root leaves network namespaces mounted
        unmount_under(self.engine.data_root)  # its own bind mount, and the nodes' after a crash
        shutil.rmtree(self.state / "exec", ignore_errors=True)
        self._remove_links()
        for name in ("kubeconfig", "kind-config.yaml", "docker.sock", "dockerd.pid"):
            (self.state / name).unlink(missing_ok=True)

    # -- the host's network links ---------------------------------------------------------------------------

    def _record_host(self) -> None:
        record = self.state / "links-before.json"
        if not record.exists():  # a second `up` after a crash: the first record is the machine's real state
            record.write_text(json.dumps(sorted(link_masters())))

    def _remove_links(self) -> None:
        """Links the engine made and left: a network bridge (Docker names it br-<id>) that was not there before,
        the veths on it, and node veths on no bridge at all (once the nodes' network namespaces are unmounted the
        kernel deletes their veths by itself, a moment later: waited for). Nothing else: the local cluster's node
        may have made links meanwhile (its pods' veths are on its own bridge)."""
        record = self.state / "links-before.json"
        if not record.exists():
            return
        before = set(json.loads(record.read_text()))
        deadline = time.monotonic() + 20
        while True:
            masters = link_masters()
            ours = [n for n in sorted(set(masters) - before)
                    if n.startswith("br-") or masters[n].startswith("br-") or (n.startswith("veth") and not masters[n])]
            if not ours or time.monotonic() > deadline:
                break
            for name in ours:
                subprocess.run(["ip", "link", "delete", name], capture_output=True)
            time.sleep(0.5)
        record.unlink()

    # -- the engine and kind -------------------------------------------------------------------------------

    def _engine_running(self) -> bool:
        pidfile = self.state / "dockerd.pid"
        return pidfile.exists() and self._alive(int(pidfile.read_text().strip()))

    def _stop_engine(self) -> None:
        pid = int((self.state / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while self._alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

    def _alive(self, pid: int) -> bool:
        """Running, not a zombie: an engine this process started (an `up` after a crash, a `down` that started
        it to delete a crashed cluster) stays in /proc until it is reaped."""
        if self.engine.proc is not None and self.engine.proc.pid == pid:
            return self.engine.proc.poll() is None
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def _kind(self, *args: str, check: bool = True, stream: bool = False) -> subprocess.CompletedProcess:
        env = dict(self.engine.env(), KIND_EXPERIMENTAL_PROVIDER="docker")
        command = [str(build.build_kind()), *args]
        if stream:  # kind's own progress lines, as they come
            result = subprocess.run(command, env=env, text=True)
        else:
            result = subprocess.run(command, env=env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"kind {' '.join(args[:2])} failed: {result.stderr or ''}")
        return result
