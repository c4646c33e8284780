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

wrk starts only once every gunicorn worker has loaded the app (a post_worker_init hook in the app directory's own
gunicorn.conf.py, which the rendered config runs) and one transaction has gone through the tier: 100 workers
importing Flask and SQLAlchemy take about a minute of CPU on two cores, and a run measured while they boot serves
next to nothing. A run that raised, served no
request or lost its PostgreSQL fails its rows (bench.rows), never a ratio of zero.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import traceback
from pathlib import Path
from typing import Callable

import yaml

from bench.rows import combine_runs, failed_entry, ratio
from flaskapp_operator.render import render
from testsupport.stack import EXAMPLE_APP, PORT_NAMES, WORKLOAD_APP, Stack, container_env, find, free_ports, wait_port

PODS = 25  # the autoscaler's maximum in the spec
WORKERS, THREADS = 4, 4
MAX_CONNECTIONS = 100
UNCONSTRAINED_MAX_CONNECTIONS = 1000
SQLALCHEMY_DEFAULTS = "{}"  # create_engine's own pool: pool_size 5, max_overflow 10, no pre-ping
SQLALCHEMY_DEFAULT_SIZES = {"pool_size": 5, "max_overflow": 10}
TRANSACTION = "/db?sleep=0.05"
# PostgreSQL's refusals once max_connections is reached (the second while only superuser slots are left).
CONNECTION_REFUSED = ("too many clients already", "remaining connection slots are reserved")
SCENARIOS = ("naive", "budget", "pooler")
BUDGET_ROWS = tuple(f"db_{name}_vs_unconstrained" for name in SCENARIOS)
WORKERS_READY_TIMEOUT = 600  # 100 workers booting on two shared cores: about a minute when the machine is quiet
# The app directory's own gunicorn config, which the rendered one runs (its post_worker_init first): each
# worker marks, once it has loaded the app, that it can serve.
READY_HOOK = """import os


def post_worker_init(worker):
    open(os.path.join({ready!r}, str(os.getpid())), "w").close()
"""


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
        app_dir, ready = stack.workdir / "app", stack.workdir / "workers-ready"
        shutil.copytree(EXAMPLE_APP, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
        (app_dir / "gunicorn.conf.py").write_text(READY_HOOK.format(ready=str(ready)))
        ready.mkdir()
        proc = stack._spawn("gunicorn", stack.command_of("-web"), env=env, cwd=app_dir)
        wait_port(stack.ports["gunicorn"], proc, log=stack.log("gunicorn"))
        url = stack.gunicorn_url + TRANSACTION
        _wait_workers_ready(stack, ready, pods * WORKERS)
        _wait_transaction(url)
        warm = _warm(url, pods * WORKERS * THREADS)  # first connections: errors count too
        result = wrk_latency(url, seconds, pods * WORKERS * THREADS)
        _check_alive(stack, "postgres", *(("pooler",) if pooled else ()))
        result["pods"] = pods
        result["errors"] += warm["errors"]
        log = stack.log("gunicorn").read_text(errors="replace")
        result["too_many_clients"] = sum(log.count(m) for m in CONNECTION_REFUSED)
        return result
    finally:
        stack.stop()


def _wait_workers_ready(stack: Stack, ready: Path, count: int, timeout: float = WORKERS_READY_TIMEOUT) -> None:
    """Until `count` workers run and every one of them has loaded the app (its file in `ready`)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = set(stack.gunicorn_worker_pids())
        loaded = {int(p.name) for p in ready.iterdir()} & workers
        if len(workers) >= count and loaded == workers:
            return
        if stack.procs["gunicorn"].poll() is not None:
            raise RuntimeError(f"gunicorn exited with {stack.procs['gunicorn'].returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(loaded)} of {count} gunicorn workers loaded the app in {timeout}s")
        time.sleep(0.5)


def _warm(url: str, connections: int, seconds: float = 2, tries: int = 10) -> dict:
    """Short runs until throughput stops climbing (each gunicorn thread's first connection, 400 SCRAM logins at
    a single-threaded PgBouncer: seconds on a loaded machine); the errors of all of them."""
    errors, previous = 0, None
    for _ in range(tries):
        run = wrk_latency(url, seconds, connections)
        errors += run["errors"]
        if previous and run["rps"] <= 1.2 * previous:  # serving, and no longer climbing
            break
        previous = run["rps"]
    return {"errors": errors}


def _wait_transaction(url: str, timeout: float = 120) -> None:
    """Until one transaction goes through the tier (gunicorn, the pooler if any, PostgreSQL): on a loaded
    machine PgBouncer's first server login may time out (server_connect_timeout), and it then waits
    server_login_retry (15 s) before the next, longer than a run."""
    import urllib.error
    import urllib.request

    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"no transaction through the tier in {timeout}s: {last}")


def _check_alive(stack: Stack, *names: str) -> None:
    """A server that died during the run makes the run an error (its log's tail says why)."""
    for name in names:
        if stack.procs[name].poll() is not None:
            tail = stack.log(name).read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{name} exited with {stack.procs[name].returncode} during the run: {tail}")


def budget_benchmark(workdir: Path, entry: Callable[..., dict], seconds: float) -> list[dict]:
    # The pooler's ratio is the one with a target: its runs and the reference's are paired in the order
    # U P N B P U, so that the machine's drift over the item hits both alike; each keeps the mean of its two.
    order = ("unconstrained", "pooler", "naive", "budget", "pooler", "unconstrained")
    runs: dict[str, list[dict]] = {}
    for i, name in enumerate(order):
        try:
            run = _scenario(workdir / str(i), name, seconds)
        except Exception as e:  # noqa: BLE001 - the run fails its rows; the other runs still measure
            traceback.print_exc()
            run = {"error": f"{name} run {i + 1} of {len(order)}: {type(e).__name__}: {e}"[:500]}
        else:
            print(f"   {name:14} {run['pods']:3d} pods {run['rps']:8.1f} req/s  p99 {run['p99_ms']:8.1f} ms  "
                  f"errors {run['errors']:6d}  'too many clients' {run['too_many_clients']}", flush=True)
        runs.setdefault(name, []).append(run)
    results = {name: combine_runs(r, averaged=("rps", "p99_ms"), summed=("errors", "too_many_clients"))
               for name, r in runs.items()}
    return budget_rows(results, entry)


def budget_rows(results: dict[str, dict], entry: Callable[..., dict]) -> list[dict]:
    """The three rows from the scenarios' combined runs; a row whose run or reference run failed is failed."""
    ref = results["unconstrained"]
    out = []
    for name, row_name in zip(SCENARIOS, BUDGET_ROWS):
        r = results[name]
        if r.get("error") or ref.get("error"):
            out.append(failed_entry(row_name, r.get("error") or f"the reference run failed: {ref['error']}"))
            continue
        extra = {"pods": r["pods"], "runs": r["runs"], "errors": r["errors"], "too_many_clients": r["too_many_clients"], "p99_ms": round(r["p99_ms"], 1),
                 "baseline_p99_ms": round(ref["p99_ms"], 1),
                 "note": f"baseline: pools of 5 + 10 per process with max_connections {UNCONSTRAINED_MAX_CONNECTIONS}; "
                         f"{PODS} pods x {WORKERS} workers x {THREADS} threads against max_connections {MAX_CONNECTIONS}"}
        if name == "pooler":
            extra["target"] = 0.9
        if name in ("budget", "pooler"):
            extra["target_errors"] = 0
        out.append(entry(row_name, r["rps"], ref["rps"], "req/s", ratio(r["rps"], ref["rps"]), **extra))
    return out
