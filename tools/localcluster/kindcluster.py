"""A kind cluster from the node image built here (localcluster.kind), and its complete removal.

kind needs a Docker engine with iptables and a bridge. Such an engine owns the machine's networking while it
runs: it sets the iptables FORWARD policy to DROP (the local cluster's real node then loses pod-to-pod
traffic) and adds chains, a docker0 bridge and one bridge per Docker network. So:
- `up` refuses to start beside a running local node, and records iptables (v4 and v6) and the network links
  first (a second `up` after a crash keeps the first record);
- the engine is Debian's dockerd on a private socket, exec root and data root (never the build engine's), with
  kindnode/runc-wrapper as its runtime: kind runs nodes `--privileged`, and this host's root cannot grant
  CAP_SYS_RESOURCE, which Docker asks for;
- `down` deletes the cluster, stops the engine by its pid file, deletes the links it made, and restores iptables
  as recorded (tables that did not exist before are flushed and their chains deleted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from . import build, kind
from .build import cache_root, log
from .images import Docker
from .node import unmount_under

ROOT = Path(__file__).resolve().parents[2]
RUNC_WRAPPER = kind.FILES / "runc-wrapper"
IPTABLES = {"iptables": ("iptables-save", "iptables-restore"), "ip6tables": ("ip6tables-save", "ip6tables-restore")}
TABLES = ("filter", "nat", "mangle", "raw")


def engine_flags() -> tuple[str, ...]:
    """dockerd's own defaults (iptables, ip forwarding and masquerade, docker0), with the capability-dropping runc."""
    return (f"--add-runtime=kind-runc={RUNC_WRAPPER}", "--default-runtime=kind-runc")


def local_node_running(local_state: Path) -> str | None:
    """Why a kind engine must not start now, or None."""
    if (local_state / "processes.json").exists():
        return f"the local cluster runs ({local_state / 'processes.json'})"
    kubelets = subprocess.run(["pgrep", "-x", "kubelet"], capture_output=True, text=True).stdout.split()
    if kubelets:
        return f"a kubelet runs on this machine (pid {', '.join(kubelets)})"
    return None


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def restore_plan(before: str, after: str) -> list[str]:
    """The tables to flush before `iptables-restore` of `before`: those present now and absent from the record
    (restore rewrites only the tables its input names)."""
    named = {line[1:].strip() for line in before.splitlines() if line.startswith("*")}
    present = {line[1:].strip() for line in after.splitlines() if line.startswith("*")}
    return sorted((present - named) & set(TABLES))


class KindCluster:
    def __init__(self, state: Path, name: str = kind.DEFAULT_CLUSTER):
        self.state, self.name = state, name
        self.kubeconfig = state / "kubeconfig"
        self.engine = Docker(state, data_root=cache_root() / "kind-docker", flags=engine_flags())

    # -- up ------------------------------------------------------------------------------------------------

    def up(self, local_state: Path, workers: int = 1, timeout: float = 900) -> "KindCluster":
        reason = local_node_running(local_state)
        if reason:
            raise RuntimeError(f"not starting a kind engine: {reason}; its FORWARD policy would break that node")
        ref, archive = kind.build_node_image()
        self.state.mkdir(parents=True, exist_ok=True)
        self._record_host()
        if not self._engine_running():
            log("kind: starting a Docker engine with iptables and a bridge (private socket)")
            self.engine.__enter__()
        if not self.engine.has(ref):
            log(f"kind: docker load {archive.name}")
            with open(archive, "rb") as f:
                self.engine.docker("load", stdin=f)
        config = self.state / "kind-config.yaml"
        config.write_text(yaml.safe_dump(kind.cluster_config(kind.component_refs(), workers), sort_keys=False))
        if self.name not in self._kind("get", "clusters").stdout.split():
            started = time.monotonic()
            log(f"kind: create cluster {self.name} ({workers} worker(s)) from {ref}")
            self._kind("create", "cluster", "--name", self.name, "--image", ref, "--config", str(config),
                       "--kubeconfig", str(self.kubeconfig), "--retain", "--wait", "0s", stream=True)
            log(f"kind: created in {time.monotonic() - started:.0f}s")
        else:
            self.kubeconfig.write_text(self._kind("get", "kubeconfig", "--name", self.name).stdout)
        self.wait_ready(workers + 1, timeout)
        return self

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

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kubectl = build.build_kubernetes() / "kubectl"
        return subprocess.run([str(kubectl), f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                              text=True, check=check)

    # -- down ----------------------------------------------------------------------------------------------

    def down(self) -> None:
        if self._engine_running():
            self._kind("delete", "cluster", "--name", self.name, check=False)
            self._stop_engine()
        unmount_under(self.state)  # the engine's exec root leaves network namespaces mounted
        self._restore_host()
        for name in ("kubeconfig", "kind-config.yaml", "docker.sock", "dockerd.pid"):
            (self.state / name).unlink(missing_ok=True)

    # -- the host's networking -----------------------------------------------------------------------------

    def _record_host(self) -> None:
        record = self.state / "host-before.json"
        if record.exists():  # a second `up` after a crash: the first record is the machine's real state
            return
        saved = {family: subprocess.run([save], capture_output=True, text=True, check=True).stdout
                 for family, (save, _) in IPTABLES.items()}
        record.write_text(json.dumps({"iptables": saved, "links": sorted(links()),
                                      "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}))

    def _restore_host(self) -> None:
        record = self.state / "host-before.json"
        if not record.exists():
            return
        before = json.loads(record.read_text())
        for name in sorted(links() - set(before["links"])):  # docker0, br-<network id>, leftover veths
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
        for family, (save, restore) in IPTABLES.items():
            for table in restore_plan(before["iptables"][family], subprocess.run(
                    [save], capture_output=True, text=True).stdout):
                subprocess.run([family, "-t", table, "-F"], capture_output=True)
                subprocess.run([family, "-t", table, "-X"], capture_output=True)
            subprocess.run([restore], input=before["iptables"][family], text=True, check=True)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(before["ip_forward"])
        record.unlink()
        log("kind: iptables, links and ip_forward restored as recorded before the engine started")

    # -- the engine and kind -------------------------------------------------------------------------------

    def _engine_running(self) -> bool:
        pidfile = self.state / "dockerd.pid"
        return pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip()}").exists()

    def _stop_engine(self) -> None:
        pid = int((self.state / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

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
