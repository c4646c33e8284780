"""Load and the two reference servers of the HTTP benchmarks: the naive baseline and the practical limit."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from testsupport.stack import EXAMPLE_APP, VENV_BIN, free_ports, wait_port

WRK_THREADS = 2
WRK_CONNECTIONS = 50


def wrk(url: str, seconds: float, headers: dict[str, str] | None = None, timeout: str = "5s") -> float:
    """Requests per second that wrk sustained (non-2xx/3xx answers are not counted)."""
    args = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{max(1, int(seconds))}s", f"--timeout={timeout}"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    duration = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))
    unit = re.search(r"requests in [\d.]+(m?s)", out).group(1)
    seconds_measured = duration / 1000 if unit == "ms" else duration
    good = total - (int(bad.group(1)) if bad else 0)
    return good / seconds_measured


def json_bytes(url: str, headers: dict[str, str]) -> int:
    """Body bytes on the wire when the client accepts gzip."""
    r = requests.get(url, headers={**headers, "Accept-Encoding": "gzip"}, stream=True, timeout=30)
    return len(r.raw.read(decode_content=False))


@dataclass
class Server:
    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def baseline_gunicorn(workdir: Path) -> Server:
    """`gunicorn app:create_app()` with its defaults: one sync worker, Flask serves static files, no cache."""
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    env = {**os.environ, "CACHE_TYPE": "NullCache", "DATABASE_URL": "sqlite://"}
    for key in ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
        env.pop(key, None)
    proc = subprocess.Popen([str(VENV_BIN / "gunicorn"), "app:create_app()", "--bind", f"127.0.0.1:{port}"],
                            cwd=EXAMPLE_APP, env=env, stdout=open(workdir / "gunicorn.log", "ab"),
                            stderr=subprocess.STDOUT)
    wait_port(port, proc, log=workdir / "gunicorn.log")
    return Server(proc, port)


LIMIT_CONF = """\
worker_processes {workers};
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    gzip on;
    gzip_static on;
    gzip_comp_level {gzip_level};
    gzip_types text/css application/javascript application/json;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {static}/; add_header Cache-Control "public, max-age=31536000, immutable"; }}
        location = /expensive {{ default_type application/json; alias {dir}/expensive.json; }}
    }}
}}
"""


def limit_nginx(workdir: Path, stack) -> Server:
    """The best a hand-tuned nginx does: the same static file (pre-compressed, gzip_static) and the same
    cached body, from disk, no proxy; same worker count and gzip level as the generated configuration."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o777)
    body = requests.get(stack.url + "/expensive", timeout=30).content
    (workdir / "expensive.json").write_bytes(body)
    (workdir / "expensive.json").chmod(0o644)
    (port,) = free_ports(1)
    spec = stack.rendered.spec
    conf = LIMIT_CONF.format(workers=stack.rendered.tuning.nginx_worker_processes, dir=workdir, port=port,
                             static=stack.workdir / "static", gzip_level=spec.nginx.gzip_level)
    (workdir / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
                            stdout=open(workdir / "nginx.log", "ab"), stderr=subprocess.STDOUT)
    wait_port(port, proc, log=workdir / "nginx.log")
    return Server(proc, port)


@contextlib.contextmanager
def slow_clients(port: int, count: int, body_bytes: int = 100_000):
    """`count` clients that each send a request body one byte every half second (slowloris-style)."""
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nCookie: slow=1\r\n"
                              b"Content-Type: application/octet-stream\r\n"
                              + f"Content-Length: {body_bytes}\r\n\r\n".encode())
                    for _ in range(body_bytes):
                        if stop.is_set():
                            return
                        s.sendall(b"x")
                        time.sleep(0.5)
            except OSError:
                time.sleep(0.2)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(2)  # let them all connect and start trickling
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
