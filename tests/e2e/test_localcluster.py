"""The local cluster's real node leaves the host as it found it: after a crash (every process SIGKILLed, state
left behind) a new cluster-up works, and cluster-down removes everything a cluster-up made. Runs last in the
e2e story, on the suite's own cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from localcluster.cluster import LocalCluster
from localcluster.node import NODE_BRIDGE, NODE_NAME, POD_BRIDGE, socket_dir

pytestmark = pytest.mark.order(20)


def host_state(state_dirs: list[Path]) -> dict[str, list[str]]:
    """What a real node leaves on the host, read with the host's own tools."""
    def out(*argv):
        return subprocess.run(argv, capture_output=True, text=True).stdout

    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "bridges": [b for b in (NODE_BRIDGE, POD_BRIDGE)
                    if subprocess.run(["ip", "link", "show", b], capture_output=True).returncode == 0],
        "iptables": [r for r in out("iptables-save").splitlines() if "KUBE-" in r or "CNI-" in r],
        "ipsets": [s for s in out("ipset", "list", "-n").split() if s.startswith(("KUBE-", "kube-router"))],
        "mounts": [m for m in mounts if any(m.startswith(str(d)) for d in state_dirs)],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")],
        "netns": [str(p) for p in Path("/run/netns").glob("cni-*")] if Path("/run/netns").exists() else [],
        "processes": [cmd for cmd in map(_cmdline, Path("/proc").glob("[0-9]*"))
                      if any(str(d) in cmd or str(socket_dir(d)) in cmd for d in state_dirs)],
        "sockets": [str(socket_dir(d)) for d in state_dirs if socket_dir(d).exists()],
    }


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pids) -> list[int]:
    living = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            living.append(pid)
        except ProcessLookupError:
            pass
    return living


def test_cluster_up_after_a_crash_then_cluster_down_leaves_nothing(kube, tmp_path):
    crashed = kube.local
    if crashed is None or crashed.node is None:
        pytest.skip("needs the local cluster's real node")
    record = json.loads((crashed.state_dir / "processes.json").read_text())
    # The crash: every process of the cluster killed at once, nothing cleaned up.
    for pid in record["pids"].values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    fresh = LocalCluster(tmp_path / "fresh").start(nodes="real")
    try:
        nodes = fresh.kubectl("get", "node", NODE_NAME, "-o",
                              "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout
        assert nodes == "True"
        assert not alive(record["pids"].values()), "the crashed cluster's processes are gone"
        fresh_pids = list(json.loads((fresh.state_dir / "processes.json").read_text())["pids"].values())
    finally:
        fresh.stop()
    assert not alive(fresh_pids)
    assert host_state([crashed.state_dir, tmp_path / "fresh"]) == {
        "bridges": [], "iptables": [], "ipsets": [], "mounts": [], "cgroups": [], "netns": [], "processes": [],
        "sockets": []}
