"""The e2e suite's last story: its cluster crashes (every process SIGKILLed at once, nothing cleaned up), a new
cluster comes up on the same host, and taking it down leaves the host as it was. One class per kind of cluster
the suite runs on; what each leaves behind is read with the host's own tools (ip, iptables-save, /proc), not
with the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from localcluster.cluster import LocalCluster
from localcluster.node import NODE_BRIDGE, NODE_NAME, POD_BRIDGE, socket_dir

NOTHING = {"bridges": [], "links": [], "routes": [], "iptables": [], "ipsets": [], "mounts": [], "cgroups": [],
           "netns": [], "processes": [], "sockets": []}


def out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*")]


def alive(pids) -> list[int]:
    living = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            living.append(pid)
        except ProcessLookupError:
            pass
    return living


def mounts_under(dirs: list[Path]) -> list[str]:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [m for m in mounts if any(m == str(d) or m.startswith(f"{d}/") for d in dirs)]


def ready_nodes(kubectl) -> list[str]:
    """The nodes whose Ready condition is True (kubectl: a cluster's `kubectl(*args)`)."""
    listed = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return [n["metadata"]["name"] for n in listed
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])]


class LocalLifecycle:
    """The local cluster's real node: its processes are recorded in <state>/processes.json."""

    def __init__(self, crashed: LocalCluster, fresh_dir: Path):
        self.crashed, self.fresh_dir = crashed, fresh_dir
        self.crashed_pids = list(json.loads((crashed.state_dir / "processes.json").read_text())["pids"].values())
        self.expected_nodes = [NODE_NAME]
        self.fresh: LocalCluster | None = None
        self.fresh_pids: list[int] = []

    def crash(self) -> None:
        for pid in self.crashed_pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def up_again(self) -> list[str]:
        """The Ready nodes of a new cluster started on the same host."""
        self.fresh = LocalCluster(self.fresh_dir).start(nodes="real")
        self.fresh_pids = list(json.loads((self.fresh.state_dir / "processes.json").read_text())["pids"].values())
        assert not alive(self.crashed_pids), "a new cluster-up ends what the crashed cluster left running"
        return sorted(ready_nodes(self.fresh.kubectl))

    def down(self) -> None:
        self.fresh.stop()
        assert not alive(self.fresh_pids)

    def leftovers(self) -> dict[str, list[str]]:
        dirs = [self.crashed.state_dir, self.fresh_dir]
        return dict(NOTHING, **{
            "bridges": [b for b in (NODE_BRIDGE, POD_BRIDGE)
                        if subprocess.run(["ip", "link", "show", b], capture_output=True).returncode == 0],
            "iptables": [r for r in out("iptables-save").splitlines() if "KUBE-" in r or "CNI-" in r],
            "ipsets": [s for s in out("ipset", "list", "-n").split() if s.startswith(("KUBE-", "kube-router"))],
            "mounts": mounts_under(dirs),
            "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")],
            "netns": [str(p) for p in Path("/run/netns").glob("cni-*")] if Path("/run/netns").exists() else [],
            "processes": [c for c in map(cmdline, all_pids())
                          if any(str(d) in c or str(socket_dir(d)) in c for d in dirs)],
            "sockets": [str(socket_dir(d)) for d in dirs if socket_dir(d).exists()],
        })


class KindLifecycle:
    """A kind cluster from `localcluster kind-up`: a private Docker engine (dockerd, its containerd, one shim per
    node) whose node containers run systemd, the kubelet, containerd and the pods. Crashed as a power cut would:
    the engine's processes and every node's init (which takes its whole PID namespace with it) SIGKILLed."""

    def __init__(self, cluster):  # localcluster.kindcluster.KindCluster
        self.cluster = cluster
        self.links_before = set(json.loads((cluster.state / "links-before.json").read_text()))
        nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        self.pod_subnets = sorted(n["spec"]["podCIDR"] for n in nodes)
        self.expected_nodes = sorted(n["metadata"]["name"] for n in nodes)
        self.containers = cluster.engine.docker("ps", "--quiet", "--no-trunc").stdout.split()

    def engine_pids(self) -> list[int]:
        """dockerd, its containerd and the shims: their command lines name the engine's state or data root."""
        marks = (str(self.cluster.state), str(self.cluster.engine.data_root))
        return [pid for pid in all_pids() if pid != os.getpid() and any(m in cmdline(pid) for m in marks)]

    def crash(self) -> None:
        engine = self.engine_pids()
        shims = {pid for pid in engine if "containerd-shim" in cmdline(pid)}
        inits = [pid for pid in all_pids() if _parent(pid) in shims]
        assert inits, "the node containers' init processes were found"
        for pid in inits + engine:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def up_again(self) -> list[str]:
        self.cluster.up()
        return sorted(ready_nodes(self.cluster.kubectl))

    def down(self) -> None:
        self.cluster.down()

    def leftovers(self) -> dict[str, list[str]]:
        dirs = [self.cluster.state, self.cluster.engine.data_root]
        routes = out("ip", "route", "show").splitlines()
        return dict(NOTHING, **{
            "links": sorted(set(_links()) - self.links_before),
            "routes": [r for r in routes if r.split()[0] in self.pod_subnets],
            "iptables": [r for r in out("iptables-save").splitlines() if "DOCKER" in r or "KIND" in r],
            "mounts": mounts_under(dirs),
            "cgroups": [str(p) for c in self.containers for p in Path("/sys/fs/cgroup").glob(f"*/docker/{c}")],
            "processes": [cmdline(pid) for pid in self.engine_pids()],
            "sockets": [str(p) for p in (self.cluster.state / "docker.sock",) if p.exists()],
        })


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _links() -> list[str]:
    return [line.split(": ")[1].split("@")[0] for line in out("ip", "-o", "link", "show").splitlines()]
