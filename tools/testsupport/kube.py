"""The cluster harness shared by the integration, e2e and benchmark suites: a cluster (the local control plane,
or the current kube context), kubectl, and the operator run as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from localcluster import build
from localcluster.cluster import LocalCluster, free_port as _free_port

from .samples import ROOT
from .waiting import wait_until

# The session operator of the integration tests reconciles every FlaskApp without a shard label; tests that run
# operators of their own label their FlaskApps: operators side by side, as sharded releases of the chart run.
SHARD_LABEL = "test.flaskapp.dev/shard"
SESSION_SHARD_SELECTOR = f"!{SHARD_LABEL}"
AUDITED_WRITES = ("create", "update", "patch", "delete", "deletecollection")


def kubectl_seconds(duration: str) -> float:
    """kubectl's --timeout value ("300s", "5m", "1h", "90") in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


@dataclass
class Kube:
    kubeconfig: Path
    kubectl_bin: str
    helm_bin: str
    local: Optional[LocalCluster] = None  # None when testing against an existing cluster

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join([str(Path(self.kubectl_bin).parent), str(Path(self.helm_bin).parent),
                                os.environ.get("PATH", "")])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path, **extra}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess:
        if timeout is None:  # never cut short a command's own --timeout (kubectl wait, delete --wait)
            timeout = max([120.0] + [kubectl_seconds(a.split("=", 1)[1]) + 30 for a in args if a.startswith("--timeout=")])
        result = subprocess.run([self.kubectl_bin, *args], input=input, capture_output=True, text=True,
                                env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, docs: Any, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=text, check=check)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None,
            selector: str | None = None) -> Any:
        args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
        args += (["-n", namespace] if namespace else []) + (["-l", selector] if selector else [])
        result = self.kubectl(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)

    def wait_crd_established(self, name: str = "flaskapps.flaskapp.dev", timeout: float = 60) -> None:
        """`kubectl wait --for=condition=Established` fails at once, instead of waiting, while the API server
        has not yet written the CRD's first conditions; this waits on the condition itself."""
        wait_until(lambda: any(c["type"] == "Established" and c["status"] == "True"
                               for c in ((self.get("crd", name) or {}).get("status") or {}).get("conditions") or []),
                   timeout, what=f"CRD {name} Established")

    def metrics(self) -> str:
        return self.kubectl("get", "--raw", "/metrics").stdout

    def requests_served(self, resource: str, verbs: tuple[str, ...]) -> int:
        """Requests the API server has served for a resource (its apiserver_request_total metric)."""
        total = 0
        for line in self.metrics().splitlines():
            if line.startswith("apiserver_request_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                if labels.get("verb") in verbs and labels.get("resource") == resource:
                    total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def audit_events(self) -> list[dict]:
        """The local API server's audit log: every write, and the reads of the operator's ServiceAccount."""
        if self.local is None or not self.local.audit_log.exists():
            raise RuntimeError("auditing needs the local control plane")
        return [json.loads(line) for line in self.local.audit_log.read_text().splitlines()]

    def writes_by(self, username: str) -> list[str]:
        """Write requests sent by one user, from the local API server's audit log (verb resource name)."""
        if self.local is None or not self.local.audit_log.exists():
            raise RuntimeError("write auditing needs the local control plane")
        out = []
        for line in self.local.audit_log.read_text().splitlines():
            event = json.loads(line)
            if (event.get("user", {}).get("username") == username and event.get("stage") == "ResponseComplete"
                    and event["verb"] in AUDITED_WRITES):
                ref = event.get("objectRef", {})
                out.append(f"{event['verb']} {ref.get('resource')}/{ref.get('subresource', '')} "
                           f"{ref.get('namespace', '')}/{ref.get('name', '')}")
        return out


def start_kube(tmp: Path, nodes: str = "kwok", images: dict[str, Path] | None = None) -> Kube:
    """The cluster under test: FLASKAPP_TEST_KUBECONFIG's, else a local one with `nodes` ("real" where the
    machine allows it, with `images` imported; "kwok" for API-level and scale tests)."""
    bins = build.ensure_all()
    existing = os.environ.get("FLASKAPP_TEST_KUBECONFIG")
    if existing:
        return Kube(Path(existing), str(bins["kubectl"]), str(bins["helm"]))
    cluster = LocalCluster(tmp / "cluster").start(nodes=nodes, images=images)
    return Kube(cluster.kubeconfig, str(bins["kubectl"]), str(bins["helm"]), cluster)


@dataclass
class OperatorProcess:
    """`flaskapp-operator run` as a child process, with its log kept for failure reports."""

    kube: Kube
    log_path: Path
    kubeconfig: Optional[Path] = None  # e.g. a ServiceAccount's, to prove the shipped RBAC
    resync_seconds: float = 5
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    health_port: int = field(default_factory=lambda: _free_port())
    metrics_port: int = field(default_factory=lambda: _free_port())
    args: tuple[str, ...] = ()  # more arguments of `flaskapp-operator run`
    env: dict[str, str] = field(default_factory=dict)  # more environment variables

    def healthy(self) -> bool:
        """kopf's liveness endpoint answers (what the kubelet probes in a cluster)."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self) -> "OperatorProcess":
        # PYTHONOPTIMIZE=2: as the operator image runs it (operator/Dockerfile)
        env = self.kube.env(**{"FLASKAPP_RESYNC_SECONDS": str(self.resync_seconds), "FLASKAPP_DISCOVERY_SECONDS": "2",
                               "PYTHONOPTIMIZE": "2", **self.env})
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flaskapp_operator.cli", "run", "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
             "--metrics-address", f"127.0.0.1:{self.metrics_port}", *self.args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def scrape(self, path: str = "/metrics") -> tuple[int, str]:
        """An HTTP GET of the operator's metrics endpoint: (status, body); status 0 when nothing answers."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def passes(self) -> float:
        """Successful reconcile passes so far, from the operator's /metrics (paces waits for resyncs: with the
        watch cache an idle pass sends no request the API server could count)."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.scrape()[1].splitlines()
                   if line.startswith('flaskapp_operator_reconcile_total{outcome="success"}'))

    def watched_apps(self) -> int:
        """FlaskApps this operator reconciles (its FLASKAPP_SELECTOR): each resync passes over each."""
        selector = ["-l", self.env["FLASKAPP_SELECTOR"]] if self.env.get("FLASKAPP_SELECTOR") else []
        return len(self.kube.kubectl("get", "flaskapps", "-A", "-o", "name", *selector).stdout.split())

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def service_account_kubeconfig(kube: Kube, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a bound token), same server and CA."""
    token = kube.kubectl("create", "token", name, "-n", namespace, "--duration=24h").stdout.strip()
    current = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = current["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": name}}],
    }))
    return path


def new_namespace(kube: Kube, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        # Every namespace of the suite enforces the restricted Pod Security Standard.
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    return name


def ready(kube, namespace, name):
    app = kube.get("flaskapp", name, namespace)
    conds = {c["type"]: c for c in (app or {}).get("status", {}).get("conditions", [])}
    return conds.get("Ready", {}).get("status") == "True" and \
        app["status"].get("observedGeneration") == app["metadata"]["generation"]


def wait_ready(kube, namespace, name, timeout: float = 120, on_timeout: Callable[[], None] | None = None):
    """Until FlaskApp namespace/name is Ready for its current generation; on timeout runs `on_timeout`
    (diagnostics) and fails."""
    return wait_until(lambda: ready(kube, namespace, name), timeout, what=f"FlaskApp {namespace}/{name} Ready",
                      on_timeout=on_timeout)
