"""Item 8: what the connection budget pays. A web tier whose autoscaler may run 25 pods of 4 gunicorn workers
x 4 threads (100 processes), real PostgreSQL with max_connections = 100, every request one transaction holding
its connection 50 ms (/db?sleep=0.05), wrk with one connection per thread. Each plan runs at its own maximum,
all its pods' workers in one gunicorn:

- unconstrained: max_connections = 1000, the operator's pool options (pre-ping, recycle, timeout) with
  SQLAlchemy's default sizes (5 + 10 per process): the reference, what the tier does with no connection limit;
- naive: SQLAlchemy's defaults (5 + 10 per process, no pre-ping) against max_connections = 100: 100 processes
  each keep at least one connection ("sorry, too many clients already");
- budget: the operator's plan without a pooler: the autoscaler's maximum capped (budgetPolicy capAutoscaling)
  and the pools it renders;
- pooler: the operator's PgBouncer tier (1 replica) with all 25 pods and the pools it renders behind it.

Errors are non-2xx answers and socket errors, warm-up included; connection errors are PostgreSQL's refusals in the
gunicorn log ("too many clients already", "remaining connection slots are reserved").
Throughput and p99 latency as wrk reports them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import yaml

from flaskapp_operator.render import render
from stack import EXAMPLE_APP, PORT_NAMES, WORKLOAD_APP, Stack, container_env, find, free_ports, wait_port

PODS = 25  # the autoscaler's maximum in the spec
WORKERS, THREADS = 4, 4
MAX_CONNECTIONS = 100
UNCONSTRAINED_MAX_CONNECTIONS = 1000
SQLALCHEMY_DEFAULTS = "{}"  # create_engine's own pool: pool_size 5, max_overflow 10, no pre-ping
SQLALCHEMY_DEFAULT_SIZES = {"pool_size": 5, "max_overflow": 10}
TRANSACTION = "/db?sleep=0.05"
# PostgreSQL's refusals once max_connections is reached (the second while only superuser slots are left).
CONNECTION_REFUSED = ("too many clients already", "remaining connection slots are reserved")


def _document(max_connections: int, pooler: bool) -> dict:
    doc = yaml.safe_load(WORKLOAD_APP.read_text())
    spec = doc["spec"]
    spec["web"] = {"autoscaling": {"minReplicas": 2, "maxReplicas": PODS},
                   "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                   "gunicorn": {"workerClass": "gthread", "workers": WORKERS, "threads": THREADS}}
    spec.pop("workerPools", None)
    spec["database"] = {"secretName": "shop-db", "maxConnections": max_connections, "reservedConnections": 3,
                        "pooler": {"enabled": pooler, "replicas": 1}}
    return doc


def wrk_latency(url: str, seconds: float, connections: int) -> dict:
    """req/s of 2xx answers, the count of the others, and p99 latency in ms (wrk --latency)."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--timeout=20s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    value, unit = re.search(r"requests in ([\d.]+)(m?s)", out).groups()
    measured = float(value) / (1000 if unit == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    p99_value, p99_unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99_ms = float(p99_value) * {"us": 0.001, "ms": 1, "s": 1000}[p99_unit]
    return {"rps": (total - (int(bad.group(1)) if bad else 0)) / measured, "errors": errors, "p99_ms": p99_ms,
            "requests": total}


def _scenario(workdir: Path, name: str, seconds: float) -> dict:
    pooled = name == "pooler"
    max_connections = UNCONSTRAINED_MAX_CONNECTIONS if name == "unconstrained" else MAX_CONNECTIONS
    stack = Stack(workdir / name, document=_document(max_connections, pooled))
    stack.workdir.mkdir(parents=True, exist_ok=True)
    stack.workdir.chmod(0o755)
    stack.ports.update(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
    stack.rendered = render(stack.document, redis_password="bench", addresses=stack.addresses(),
                            database_url=stack.database_url)
    try:
        stack._start_postgres()
        if pooled:
            stack.start_pooler()
        container = find(stack.rendered.objects, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
        env = container_env(container, stack.rendered.objects, stack.secrets())
        pods = PODS if name != "budget" else find(stack.rendered.objects, "HorizontalPodAutoscaler", "-web")["spec"][
            "maxReplicas"]
        # Every pod of the tier at once: one gunicorn with all their workers (pools are per process).
        # ... each taking its share of wrk's connections, as the Service spreads them over pods: a gthread worker
        # otherwise accepts up to worker_connections (1000) and a few workers take every keep-alive connection.
        env["GUNICORN_CMD_ARGS"] = env["GUNICORN_CMD_ARGS"].replace(
            f"--workers={WORKERS}", f"--workers={pods * WORKERS} --worker-connections={THREADS}")
        env["WEB_CONCURRENCY"] = str(pods * WORKERS)
        env["CACHE_TYPE"] = "NullCache"
        if name == "naive":
            env["SQLALCHEMY_ENGINE_OPTIONS"] = SQLALCHEMY_DEFAULTS
        elif name == "unconstrained":
            env["SQLALCHEMY_ENGINE_OPTIONS"] = json.dumps(
                {**json.loads(env["SQLALCHEMY_ENGINE_OPTIONS"]), **SQLALCHEMY_DEFAULT_SIZES})
        (stack.workdir / "gunicorn").mkdir(exist_ok=True)
        for key, text in find(stack.rendered.objects, "ConfigMap", "-gunicorn-conf")["data"].items():
            (stack.workdir / "gunicorn" / key).write_text(text)
        proc = stack._spawn("gunicorn", stack.command_of("-web"), env=env, cwd=EXAMPLE_APP)
        wait_port(stack.ports["gunicorn"], proc, log=stack.log("gunicorn"))
        url = stack.gunicorn_url + TRANSACTION
        _wait_workers(stack, pods * WORKERS)
        warm = wrk_latency(url, 2, pods * WORKERS * THREADS)  # imports, first connections: errors count too
        result = wrk_latency(url, seconds, pods * WORKERS * THREADS)
        result["pods"] = pods
        result["errors"] += warm["errors"]
        log = stack.log("gunicorn").read_text(errors="replace")
        result["too_many_clients"] = sum(log.count(m) for m in CONNECTION_REFUSED)
        return result
    finally:
        stack.stop()


def _wait_workers(stack: Stack, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(stack.gunicorn_worker_pids()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gunicorn did not start {count} workers")
        time.sleep(0.2)


def _mean(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("rps", "p99_ms"):
        out[key] = sum(r[key] for r in runs) / len(runs)
    for key in ("errors", "too_many_clients"):
        out[key] = sum(r[key] for r in runs)
    out["runs"] = len(runs)
    return out


def budget_benchmark(workdir: Path, entry: Callable[..., dict], seconds: float) -> list[dict]:
    # The pooler's ratio is the one with a target: its runs and the reference's are paired in the order
    # U P N B P U, so that the machine's drift over the item hits both alike; each keeps the mean of its two.
    order = ("unconstrained", "pooler", "naive", "budget", "pooler", "unconstrained")
    runs: dict[str, list[dict]] = {}
    for i, name in enumerate(order):
        runs.setdefault(name, []).append(_scenario(workdir / str(i), name, seconds))
    results = {name: _mean(r) for name, r in runs.items()}
    for name, r in results.items():
        print(f"   {name:14} {r['pods']:3d} pods {r['rps']:8.1f} req/s  p99 {r['p99_ms']:8.1f} ms  errors {r['errors']:6d}  "
              f"'too many clients' {r['too_many_clients']}", flush=True)
    ref = results["unconstrained"]
    out = []
    for name in ("naive", "budget", "pooler"):
        r = results[name]
        extra = {"pods": r["pods"], "runs": r["runs"], "errors": r["errors"], "too_many_clients": r["too_many_clients"], "p99_ms": round(r["p99_ms"], 1),
                 "baseline_p99_ms": round(ref["p99_ms"], 1),
                 "note": f"baseline: pools of 5 + 10 per process with max_connections {UNCONSTRAINED_MAX_CONNECTIONS}; "
                         f"{PODS} pods x {WORKERS} workers x {THREADS} threads against max_connections {MAX_CONNECTIONS}"}
        if name == "pooler":
            extra["target"] = 0.9
        if name in ("budget", "pooler"):
            extra["target_errors"] = 0
        out.append(entry(f"db_{name}_vs_unconstrained", r["rps"], ref["rps"], "req/s", r["rps"] / ref["rps"], **extra))
    return out
