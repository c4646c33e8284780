"""The rendered FlaskApp configuration run with the real servers as local processes on loopback.

The objects come from the operator's own renderer; only addresses differ (the renderer's `addresses`
parameter). Each process gets the env its container would get: configMapKeyRef and secretKeyRef are
resolved from the rendered ConfigMap and Secrets, exactly as the kubelet would.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import yaml

from flaskapp_operator.builders import Addresses
from flaskapp_operator.builders.agent import AGENT_DIR
from flaskapp_operator.render import Rendered, render

from .agentvolume import mount_agent
from .samples import ROOT

EXAMPLE_APP = ROOT / "examples" / "flask-shop"
WORKLOAD_APP = ROOT / "tests" / "workload" / "app.yaml"
VENV_BIN = Path(sys.executable).parent
# Debian 12 ships PostgreSQL 15, Ubuntu 24.04 16: take the newest installed.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/usr/lib/postgresql/15/bin"),
             key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
REDIS_PASSWORD = "workload-password"
LOCAL_POD_NAME = "local-process"  # what a fieldRef to metadata.name resolves to here
DB_USER = "shop"
# Every server a stack may run, each on its own loopback port.
PORT_NAMES = ("nginx", "gunicorn", "redis-cache", "redis-broker", "postgres", "statsd", "nginx-status", "access-log",
              "pooler", "memcached")


POD_TMP = "/tmp/"  # where the rendered commands keep files of their own: the pod's tmp emptyDir


def pod_tmp_paths(command: list[str], scratch: Path, own: Path) -> list[str]:
    """A rendered command with its paths in the pod's /tmp (beat's schedule and pid files) moved into `scratch`,
    the local stand-in for that volume. Only what the render means by /tmp: paths the stack rendered in itself
    (under `own`, its working directory, which may lie under the host's /tmp) stay. Run on the rendered command,
    before its program is resolved to this host's (whose path may lie under /tmp too: a checkout there)."""
    return [f"{scratch}/{a.removeprefix(POD_TMP)}" if a.startswith(POD_TMP) and not Path(a).is_relative_to(own)
            else a for a in command]


def as_user(user: str | None) -> dict:
    """Popen's arguments that run a server as `user` when this process is root (PostgreSQL and PgBouncer refuse
    root). The server itself becomes that user: no `runuser` between, whose watching parent answers the stop's
    SIGTERM with "Session terminated, killing shell..." and a SIGKILL of the server two seconds later."""
    if not user or os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays open until all are chosen (one at a time, the kernel may
    hand out the same port twice, and two servers then fight over it)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_port(port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 30, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: " + (log.read_text()[-3000:] if log else ""))
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s" + (": " + log.read_text()[-3000:] if log else ""))


def find(objects: list[dict], kind: str, suffix: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix))


def container_env(container: dict, objects: list[dict], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """What the kubelet would put in the container's environment."""
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    rendered_secrets = {o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o["data"].items()}
                        for o in objects if o["kind"] == "Secret"}
    all_secrets = {**rendered_secrets, **secrets}
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            env[entry["name"]] = configmaps[ref["name"]][ref["key"]]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            if ref["name"] in all_secrets and ref["key"] in all_secrets[ref["name"]]:
                env[entry["name"]] = all_secrets[ref["name"]][ref["key"]]
            elif not ref.get("optional"):  # the kubelet would not start the container either
                raise KeyError(f"env {entry['name']}: Secret {ref['name']} has no key {ref['key']!r}")
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = LOCAL_POD_NAME
    # $(NAME) of a variable defined earlier is expanded, as the kubelet does ("Define dependent environment
    # variables"); anything else is left as written.
    for name, value in env.items():
        env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)
    return env


@dataclass
class Stack:
    """nginx -> gunicorn -> (redis cache, redis broker, postgresql), plus a Celery worker."""

    workdir: Path
    document: dict = field(default_factory=lambda: yaml.safe_load(WORKLOAD_APP.read_text()))
    # The app's source as its image holds it (the processes' working directory) and its static files.
    app_dir: Path = EXAMPLE_APP
    static_dir: Optional[Path] = None
    # The database Secret's URL scheme: a public app gets the driver its image installs (psycopg 3 here).
    url_scheme: str = "postgresql"
    server_path: Optional[str] = None  # PATH of the cache and broker processes (None: this process's)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    rendered: Optional[Rendered] = None

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['nginx']}"

    @property
    def gunicorn_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gunicorn']}"

    @property
    def database_url(self) -> str:
        return f"{self.url_scheme}://{DB_USER}:{DB_USER}@127.0.0.1:{self.ports['postgres']}/{DB_USER}"

    def addresses(self) -> Addresses:
        p = self.ports
        return Addresses(gunicorn_bind=f"127.0.0.1:{p['gunicorn']}", nginx_listen=f"127.0.0.1:{p['nginx']}",
                         upstream=f"127.0.0.1:{p['gunicorn']}", redis_cache=f"127.0.0.1:{p['redis-cache']}",
                         redis_broker=f"127.0.0.1:{p['redis-broker']}", static_root=str(self.workdir / "static"),
                         runtime_dir=str(self.workdir / "nginx"), gunicorn_config_dir=str(self.workdir / "gunicorn"),
                         celery_probe_dir=str(self.workdir / "celery"),
                         statsd=f"127.0.0.1:{p['statsd']}", nginx_status_listen=f"127.0.0.1:{p['nginx-status']}",
                         access_log_syslog=f"127.0.0.1:{p['access-log']}", pooler=f"127.0.0.1:{p['pooler']}", memcached=f"127.0.0.1:{p['memcached']}",
                         pooler_listen_port=p["pooler"], pooler_config_dir=str(self.workdir / "pgbouncer"))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
               user: str | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                stdout=open(self.log(name), "ab"), stderr=subprocess.STDOUT, **as_user(user))
        self.procs[name] = proc
        return proc

    # -- the servers ------------------------------------------------------------------------------------

    def start(self, with_postgres: bool = True, with_celery: bool = True) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports.update(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        self.rendered = render(self.document, redis_password=REDIS_PASSWORD, addresses=self.addresses(),
                               database_url=self.database_url)
        try:
            if self.rendered.spec.redis.cache.engine == "memcached":
                self.start_memcached()
            else:
                self._start_redis("redis-cache")
            if self.rendered.spec.worker_pools or self.rendered.spec.beat.enabled:
                self._start_redis("redis-broker")
            if with_postgres:
                self._start_postgres()
            if self.pooled:
                self.start_pooler()
            self.start_gunicorn()
            if with_celery:
                self.start_celery()
            self._start_nginx()
            if self.rendered.spec.monitoring.enabled:
                self.start_exporters()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self, component: str) -> None:
        workload = next(o for o in self.rendered.objects  # a durable broker is a StatefulSet
                        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"].endswith(component))
        container = workload["spec"]["template"]["spec"]["containers"][0]
        # The auth volume, as the kubelet would mount it: the Secret's auth.conf in a directory of its own.
        auth = self.workdir / f"{component}-auth"
        auth.mkdir(exist_ok=True)
        secret = find(self.rendered.objects, "Secret", "-redis")
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "auth")
        (auth / "auth.conf").write_bytes(base64.b64decode(secret["data"]["auth.conf"]))
        command = list(container["command"])
        args = [a.replace(mount, str(auth)) for a in container["args"]]
        args[args.index("--port") + 1] = str(self.ports[component])  # the address: a loopback port
        data = self.workdir / component
        data.mkdir(exist_ok=True)
        args[args.index("--dir") + 1] = str(data)
        # server_path: a PATH with only some servers on it (the rendered command takes valkey-server, else
        # redis-server, from the PATH).
        proc = self._spawn(component, [*command, *args, "--bind", "127.0.0.1"],
                           env={"PATH": self.server_path} if self.server_path else None)
        wait_port(self.ports[component], proc, log=self.log(component))

    def start_memcached(self) -> None:
        """memcached with its container's command, on its loopback port."""
        container = find(self.rendered.objects, "Deployment", "-memcached")["spec"]["template"]["spec"]["containers"][0]
        command = [f"--port={self.ports['memcached']}" if a.startswith("--port=") else a for a in container["command"]]
        proc = self._spawn("memcached", [*command, "--listen=127.0.0.1"], user="nobody")
        wait_port(self.ports["memcached"], proc, log=self.log("memcached"))

    def restart_redis(self, component: str, sig: int = signal.SIGTERM) -> None:
        """Stop a Redis (SIGTERM as the kubelet, SIGKILL as a crash) and start it again on the same data
        directory, as its volume would be."""
        self.stop_process(component, sig)
        self._start_redis(component)

    def _start_postgres(self) -> None:
        data = self.workdir / "pgdata"
        data.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(data, "postgres")
            os.chmod(data, 0o700)
        self.workdir.chmod(0o755)
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, **as_user("postgres"))
        max_connections = self.document["spec"]["database"]["maxConnections"]
        proc = self._spawn("postgres", [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.ports["postgres"]),
                                        "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={max_connections}",
                                        "-c", f"unix_socket_directories={data}", "-c", "fsync=off"], user="postgres")
        wait_port(self.ports["postgres"], proc, log=self.log("postgres"))
        psql = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1"]
        deadline = time.monotonic() + 30
        while subprocess.run(psql + ["-c", "select 1"], capture_output=True, timeout=10).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("postgres does not accept connections")
            time.sleep(0.2)
        subprocess.run(psql + ["-c", f"create user {DB_USER} password '{DB_USER}'",
                               "-c", f"create database {DB_USER} owner {DB_USER}"], check=True, capture_output=True)

    @property
    def pooled(self) -> bool:
        return bool(self.rendered.spec.database and self.rendered.spec.database.pooler.enabled)

    def start_pooler(self) -> None:
        """PgBouncer as its pod runs it: the rendered command, its Secret's files where the volume would mount
        them (readable by the user it runs as: PgBouncer refuses to run as root)."""
        container = find(self.rendered.objects, "Deployment", "-pooler")["spec"]["template"]["spec"]["containers"][0]
        config = self.workdir / "pgbouncer"
        config.mkdir(exist_ok=True)
        secret = find(self.rendered.objects, "Secret", "-pooler")
        for key, value in secret["data"].items():
            (config / key).write_bytes(base64.b64decode(value))
            (config / key).chmod(0o644)
        proc = self._spawn("pooler", container["command"], user="postgres")
        wait_port(self.ports["pooler"], proc, log=self.log("pooler"))

    def secrets(self) -> dict[str, dict[str, str]]:
        db = self.document["spec"].get("database")
        return {db["secretName"]: {db.get("urlKey", "url"): self.database_url}} if db else {}

    def statsd_port(self, tier: str) -> int:
        """The UDP port of `tier`'s statsd_exporter: web's is the stack's statsd port, a worker pool's its own."""
        if tier == "web":
            return self.ports["statsd"]
        key = f"statsd-udp-{tier}"
        if key not in self.ports:
            self.ports[key] = free_ports(1)[0]
        return self.ports[key]

    def env_of(self, component: str, kind: str = "Deployment") -> dict[str, str]:
        """The env of `component`'s app container, with the agent's volume mounted where its pod would have it."""
        workload = find(self.rendered.objects, kind, component)
        pod = workload["spec"]["template"]["spec"]
        env = container_env(pod["containers"][0], self.rendered.objects, self.secrets())
        tier = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if "FLASKAPP_AGENT_STATSD" in env:  # the statsd_exporter of this pod (each pod has its own loopback)
            env["FLASKAPP_AGENT_STATSD"] = f"127.0.0.1:{self.statsd_port(tier)}"
        if AGENT_DIR in env.get("PYTHONPATH", ""):
            agent = self.workdir / "agent"
            if not agent.exists():
                mount_agent(self.rendered.objects, pod, agent)
            env["PYTHONPATH"] = env["PYTHONPATH"].replace(AGENT_DIR, str(agent))
        return env

    def command_of(self, component: str, pod_tmp: Path | None = None) -> list[str]:
        """`component`'s rendered command with its program from this venv; with `pod_tmp`, the pod's /tmp
        paths moved there (pod_tmp_paths)."""
        deployment = find(self.rendered.objects, "Deployment", component)
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        if pod_tmp is not None:
            command = pod_tmp_paths(command, pod_tmp, self.workdir)
        return [str(VENV_BIN / command[0]), *command[1:]]

    def start_gunicorn(self) -> None:
        # The web pod's config file, as its ConfigMap volume would mount it.
        (self.workdir / "gunicorn").mkdir(exist_ok=True)
        for key, text in find(self.rendered.objects, "ConfigMap", "-gunicorn-conf")["data"].items():
            (self.workdir / "gunicorn" / key).write_text(text)
        proc = self._spawn("gunicorn", self.command_of("-web"), env=self.env_of("-web"), cwd=self.app_dir)
        wait_port(self.ports["gunicorn"], proc, log=self.log("gunicorn"))

    def start_celery(self, name: str = "celery", component: str = "-worker-default") -> Path:
        """A worker (or beat) as its pod runs it: under the rendered probe script (its ConfigMap, as the volume
        would mount it), with its own directory for the heartbeat files (the pod's /tmp). Returns that directory."""
        (self.workdir / "celery").mkdir(exist_ok=True)
        for key, text in find(self.rendered.objects, "ConfigMap", "-celery-probe")["data"].items():
            (self.workdir / "celery" / key).write_text(text)
        state = self.workdir / f"{name}-tmp"
        state.mkdir(exist_ok=True)
        command = self.command_of(component, pod_tmp=state)  # the pod's /tmp: beat's schedule and pid files
        self._spawn(name, command, env={**self.env_of(component), "FLASKAPP_PROBE_DIR": str(state)}, cwd=self.app_dir)
        return state

    def probe(self, component: str, probe: str, state: Path, *override: str) -> int:
        """Run the exec probe `probe` (livenessProbe, ...) of `component`'s container as the kubelet would: its
        exit code. `override` replaces the probe's trailing arguments (a shorter max age)."""
        container = find(self.rendered.objects, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
        command = container[probe]["exec"]["command"]
        command = [str(VENV_BIN / command[0]), *command[1:len(command) - len(override)], *override]
        return subprocess.run(command, env={"FLASKAPP_PROBE_DIR": str(state)}, timeout=30).returncode

    def _start_nginx(self) -> None:
        conf = find(self.rendered.objects, "ConfigMap", "-nginx-conf")["data"]["nginx.conf"]
        runtime = self.workdir / "nginx"
        runtime.mkdir(exist_ok=True)
        runtime.chmod(0o777)  # workers run as an unprivileged user when the master is root
        static = self.workdir / "static"
        static.mkdir(exist_ok=True)
        self._run_init_containers(static)
        for path in [self.workdir, static, *static.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        conf_path = self.workdir / "nginx.conf"
        conf_path.write_text(conf)
        proc = self._spawn("nginx", ["nginx", "-c", str(conf_path), "-g", "daemon off;"])
        wait_port(self.ports["nginx"], proc, log=self.log("nginx"))

    def _run_init_containers(self, static: Path) -> None:
        """Run the nginx pod's init containers' own commands, with the image's and the volume's
        directories mapped to local ones (the example app's static/ and nginx's static root)."""
        deployment = find(self.rendered.objects, "Deployment", "-nginx")
        image_static = self.rendered.spec.nginx.static_dir.rstrip("/")
        for init in deployment["spec"]["template"]["spec"]["initContainers"]:
            volume = init["volumeMounts"][0]["mountPath"]
            command = [a.replace(image_static, str(self.static_dir or self.app_dir / "static")).replace(volume, str(static))
                       for a in init["command"]]
            subprocess.run(command, check=True, capture_output=True)

    # -- monitoring (spec.monitoring): each exporter sidecar and Flower, as a local process ----------------

    def start_exporters(self) -> None:
        """Every container with a `*-metrics` port, run from its rendered args with the binary its image
        holds (built from the same pinned module); only listen ports and the config directory differ."""
        from localcluster.build import build_monitoring_tools
        from flaskapp_operator.builders.monitoring import ACCESS_LOG_EXPORTER_FILE, CONFIG_DIR

        binaries = build_monitoring_tools()
        image_binary = {"statsd-exporter": binaries["statsd_exporter"],
                        "nginx-exporter": binaries["nginx-prometheus-exporter"],
                        "access-log-exporter": binaries["prometheus-nginxlog-exporter"],
                        "redis-exporter": binaries["redis_exporter"], "flower": VENV_BIN / "celery"}
        exporters = [(f"{c['name']}-{w['metadata']['labels']['app.kubernetes.io/component']}", c, ports[0])
                     for w in self.rendered.objects if w["kind"] in ("Deployment", "StatefulSet")
                     for c in w["spec"]["template"]["spec"]["containers"]
                     if (ports := [p for p in c.get("ports", []) if p["name"].endswith("-metrics")])]
        self.ports.update(zip((name for name, _, _ in exporters), free_ports(len(exporters))))
        # The ConfigMap as its volume would mount it; the access-log exporter's listen port is in its file.
        config_dir = self.workdir / "monitoring"
        config_dir.mkdir(exist_ok=True)
        for key, text in find(self.rendered.objects, "ConfigMap", "-monitoring")["data"].items():
            if key == ACCESS_LOG_EXPORTER_FILE:
                config = yaml.safe_load(text)
                config["listen"]["port"] = self.ports["access-log-exporter-nginx"]
                text = yaml.safe_dump(config)
            (config_dir / key).write_text(text)
        for name, container, metrics in exporters:
            port, inside = self.ports[name], str(metrics["containerPort"])
            tier = name.removeprefix(container["name"] + "-")
            argv = [str(image_binary[container["name"]]), *container.get("command", [])[1:], *container.get("args", [])]
            argv = [(a[:-len(inside)] + str(port) if a.endswith((f"=:{inside}", f"--port={inside}")) else a)
                    .replace("=:", "=127.0.0.1:").replace(CONFIG_DIR, str(config_dir)) for a in argv]
            argv = [f"--statsd.listen-udp=127.0.0.1:{self.statsd_port(tier)}" if a.startswith("--statsd.listen-udp=")
                    else a for a in argv]
            env = container_env(container, self.rendered.objects, self.secrets())
            proc = self._spawn(name, argv, env=env, cwd=self.workdir)
            wait_port(port, proc, log=self.log(name))

    def metrics_url(self, container: str, tier: str) -> str:
        return f"http://127.0.0.1:{self.ports[f'{container}-{tier}']}/metrics"

    def gunicorn_requests(self, path: str) -> int:
        """How many requests for `path` reached gunicorn (its access log, GUNICORN_CMD_ARGS --access-logfile -)."""
        return sum(1 for line in self.log("gunicorn").read_text(errors="replace").splitlines()
                   if f" {path} HTTP/" in line or f" {path}?" in line)

    def gunicorn_worker_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.procs["gunicorn"].pid).children()]

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


@contextlib.contextmanager
def scratch_stack(prefix: str, spec: Optional[dict] = None, *, document: Optional[dict] = None,
                  app_files: Optional[dict[str, str]] = None, url_scheme: str = "postgresql", **start) -> Iterator[Stack]:
    """A Stack in a scratch directory of its own, its FlaskApp's spec sections replaced by `spec`, started with
    Stack.start's options; stopped and removed afterwards. `document`: another FlaskApp than the example's;
    `app_files`: the app's source (file name -> text), written into the directory its image would hold."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)  # nginx workers and postgres run as other users
    fields: dict = {"url_scheme": url_scheme}
    if document is not None:
        fields["document"] = document
    if app_files:
        app_dir = workdir / "app"
        app_dir.mkdir()
        for name, text in app_files.items():
            (app_dir / name).write_text(text)
        fields.update(app_dir=app_dir, static_dir=app_dir)
    s = Stack(workdir, **fields)
    s.document["spec"].update(spec or {})
    try:
        yield s.start(**start)
    finally:
        s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
