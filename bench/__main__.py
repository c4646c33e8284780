"""`make bench`: the generated stack against a naive baseline, measured side by side in one run.

Baseline: `gunicorn app:create_app()` with gunicorn's defaults (one sync worker), Flask serving its own
static files, no cache (Flask-Caching's NullCache), no gzip. Practical limit: a minimal hand-tuned nginx
serving the same bytes from disk with no proxy. Load: wrk from Debian, the same command for both sides.

Items 1, 2, 6 and 7 take the median of BENCH_ROUNDS interleaved wrk runs of BENCH_SECONDS each.
Writes a table to stdout, JSON to $BENCH_OUT (build/bench.json) and a PNG of the ratios beside it.
Every ratio is oriented so that higher is better.

BENCH_ROWS (comma-separated) runs only some groups of rows: http (items 1-4 and 6), monitoring (7), agent,
budget (8), operator (5: needs the local control plane). BENCH_ONLY=<group> is the older spelling of one group
(BENCH_ONLY=http also runs monitoring).

A row is written to $BENCH_OUT as soon as it is measured. A row whose run raised or served no request is
FAILED (never "met"), the other groups still run, and the exit status is 1 when any row failed.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Iterator

from bench.http import (baseline_gunicorn, json_bytes, limit_nginx, slow_clients, wrk)
from bench.budget import BUDGET_ROWS, budget_benchmark
from bench.operator_bench import operator_benchmark
from bench.rows import any_failed, entry, failure, ratio, run_group, selected_groups, verdict
from testsupport.samples import ROOT
from testsupport.stack import Stack

OUT = Path(os.environ.get("BENCH_OUT", ROOT / "build" / "bench.json"))
DURATION = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
NOCACHE = {"Cookie": "bench=1"}  # a cookie: nginx's micro-cache steps aside (personalised request)


def compare(urls: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, float]:
    """Median req/s of each server over ROUNDS interleaved runs, so the machine's noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(ROUNDS):
        for name, url in urls.items():
            samples[name].append(wrk(url, DURATION, headers))
    return {name: statistics.median(values) for name, values in samples.items()}


def http_benchmarks(workdir: Path) -> Iterator[dict]:
    servers = []  # stopped in reverse, also when one of them fails to start
    try:
        stack = Stack(workdir / "stack").start(with_postgres=False)
        servers.append(stack)
        base = baseline_gunicorn(workdir / "baseline")
        servers.append(base)
        limit = limit_nginx(workdir / "limit", stack)
        servers.append(limit)
        # Warm both sides (imports, Flask-Caching's first computation, nginx's open_file_cache).
        for url in (stack.url, base.url):
            wrk(url + "/static/app.css", 1)
            wrk(url + "/expensive", 1)

        print("1. static asset throughput", flush=True)
        m = compare({s: u + "/static/app.css" for s, u in (("gen", stack.url), ("bas", base.url), ("lim", limit.url))},
                    {"Accept-Encoding": "gzip"})
        gen, bas, lim = m["gen"], m["bas"], m["lim"]
        yield entry("static_asset_throughput", gen, bas, "req/s", ratio(gen, bas), target=10)
        yield entry("static_asset_vs_practical_limit", gen, lim, "req/s", ratio(gen, lim), target=0.8)

        print("2. cacheable expensive endpoint", flush=True)
        m = compare({s: u + "/expensive" for s, u in (("gen", stack.url), ("bas", base.url), ("lim", limit.url))})
        gen, bas, lim = m["gen"], m["bas"], m["lim"]
        yield entry("cached_endpoint_throughput", gen, bas, "req/s", ratio(gen, bas), target=20)
        yield entry("cached_endpoint_vs_practical_limit", gen, lim, "req/s", ratio(gen, lim), target=0.8)

        print("3. fast clients while 50 slow clients trickle request bodies", flush=True)
        with slow_clients(stack.ports["nginx"], 50):
            gen = wrk(stack.url + "/hello", DURATION, NOCACHE)
        with slow_clients(base.port, 50):
            bas = wrk(base.url + "/hello", DURATION, NOCACHE, timeout="2s")
        yield entry("fast_clients_under_50_slow_clients", gen, bas, "req/s", ratio(gen, max(bas, 1.0)), target=5,
                    baseline_floor=1.0, note="baseline floored at 1 req/s for the ratio")

        print("4. bytes on the wire for a JSON response", flush=True)
        gen_bytes = json_bytes(stack.url + "/api/items", NOCACHE)
        bas_bytes = json_bytes(base.url + "/api/items", NOCACHE)
        if not gen_bytes or not bas_bytes:
            raise RuntimeError(f"an empty JSON response (generated {gen_bytes} bytes, baseline {bas_bytes} bytes)")
        yield entry("json_bytes_on_wire", gen_bytes, bas_bytes, "bytes", ratio(bas_bytes, gen_bytes),
                    reduction_percent=round(100 * (1 - gen_bytes / bas_bytes), 1), target_reduction=70)
    finally:
        for server in reversed(servers):
            server.stop()


HTTP_ROWS = ("static_asset_throughput", "static_asset_vs_practical_limit", "cached_endpoint_throughput",
             "cached_endpoint_vs_practical_limit", "fast_clients_under_50_slow_clients", "json_bytes_on_wire")


def _stack_pair(workdir: Path, name: str, on_document: dict, off_document: dict) -> tuple[Stack, Stack]:
    """The same stack twice, a feature on and off (no PostgreSQL, no worker): what the feature costs."""
    off = Stack(workdir / f"{name}-off", document=off_document).start(with_postgres=False, with_celery=False)
    try:
        on = Stack(workdir / f"{name}-on", document=on_document).start(with_postgres=False, with_celery=False)
    except BaseException:
        off.stop()
        raise
    return on, off


def _warm(urls: list[str], paths: list[str]) -> None:
    """Imports, Flask-Caching's first computation, nginx's open_file_cache: before anything is measured."""
    for url in urls:
        for path in paths:
            wrk(url + path, 1)


def monitoring_benchmarks(workdir: Path) -> Iterator[dict]:
    """The same stack with spec.monitoring on (exporters beside nginx and gunicorn, the JSON access log on
    stdout and over syslog, gunicorn's statsd packets) against it off: what monitoring costs."""
    import yaml

    from testsupport.stack import WORKLOAD_APP

    document = yaml.safe_load(WORKLOAD_APP.read_text())
    document["spec"]["monitoring"] = {"enabled": True}
    on, off = _stack_pair(workdir, "monitoring", document, yaml.safe_load(WORKLOAD_APP.read_text()))
    try:
        _warm([off.url, on.url], ["/static/app.css", "/expensive"])
        for name, path, headers in (("static", "/static/app.css", {"Accept-Encoding": "gzip"}),
                                    ("cached_endpoint", "/expensive", None)):
            m = compare({"on": on.url + path, "off": off.url + path}, headers)
            yield entry(f"monitoring_on_vs_off_{name}", m["on"], m["off"], "req/s", ratio(m["on"], m["off"]),
                        target=0.9, note="baseline: the same stack with monitoring off")
    finally:
        on.stop()
        off.stop()


MONITORING_ROWS = ("monitoring_on_vs_off_static", "monitoring_on_vs_off_cached_endpoint")


def agent_benchmarks(workdir: Path) -> Iterator[dict]:
    """The web tier with the in-process agent on (measuring every request into statsd_exporter) against the
    same stack with spec.agent off, straight to gunicorn (no micro-cache): a Flask-Caching endpoint (a Redis GET
    per request) and the cheapest endpoint (/hello: where a fixed per-request cost weighs most). Plus the cost
    at interpreter start: `import flask, sqlalchemy` with the agent's sitecustomize and without."""
    import copy
    import subprocess

    import yaml

    from testsupport.agentvolume import mount_agent
    from testsupport.stack import VENV_BIN, WORKLOAD_APP, find

    document = yaml.safe_load(WORKLOAD_APP.read_text())
    document["spec"]["monitoring"] = {"enabled": True}
    off_document = copy.deepcopy(document)
    off_document["spec"]["agent"] = {"enabled": False}
    on, off = _stack_pair(workdir, "agent", document, off_document)
    try:
        _warm([on.gunicorn_url, off.gunicorn_url], ["/expensive", "/hello"])
        stacks = {"on": on, "off": off}
        for name, path in (("cached_endpoint", "/expensive"), ("uncached_endpoint", "/hello")):
            rates: dict[str, list[float]] = {"on": [], "off": []}
            cpu: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(max(ROUNDS, 6)):  # interleaved, each side first in half the rounds: noise hits both alike
                for side, stack in (list(stacks.items()) if i % 2 == 0 else list(stacks.items())[::-1]):
                    before = _gunicorn_cpu_seconds(stack)
                    rate = wrk(stack.gunicorn_url + path, DURATION)
                    rates[side].append(rate)
                    cpu[side].append((_gunicorn_cpu_seconds(stack) - before) / max(1.0, rate * DURATION))
            m = {side: statistics.median(v) for side, v in rates.items()}
            c = {side: statistics.median(v) * 1e6 for side, v in cpu.items()}
            yield entry(f"agent_on_vs_off_{name}", m["on"], m["off"], "req/s", ratio(m["on"], m["off"]),
                        target=0.97, note="gunicorn direct; baseline: the same stack with spec.agent off")
            # CPU per request of gunicorn's processes: less exposed than throughput to a shared machine's noise.
            yield entry(f"agent_cpu_per_request_{name}", c["on"], c["off"], "us", ratio(c["off"], c["on"]),
                        target=0.97, note="gunicorn master and workers' CPU time / requests served; "
                                          "ratio = without / with the agent")
        web = find(on.rendered.objects, "Deployment", "-web")["spec"]["template"]["spec"]
        agent = mount_agent(on.rendered.objects, web, workdir / "agent-import")
        code = "import flask, sqlalchemy, flask_caching"

        def seconds(with_agent: bool) -> float:
            """CPU time (user + system) of one interpreter start: steadier than wall time on a shared machine.
            The agent's files are compiled every time, as on its read-only volume."""
            import resource

            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **({"PYTHONPATH": str(agent)} if with_agent else {})}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([str(VENV_BIN / "python"), "-c", code], env=env, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

        samples: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(max(20, ROUNDS * 5)):  # interleaved: the machine's noise hits both alike
            for with_agent in (True, False):
                samples[with_agent].append(seconds(with_agent))
        with_agent, without = statistics.median(samples[True]), statistics.median(samples[False])
        yield entry("agent_import_cpu", with_agent, without, "s", ratio(without, with_agent), target=0.95,
                    note=f"`python -c '{code}'`: CPU seconds, median; ratio = without / with the agent")
    finally:
        on.stop()
        off.stop()


AGENT_ROWS = tuple(f"agent_{kind}_{name}" for name in ("cached_endpoint", "uncached_endpoint")
                   for kind in ("on_vs_off", "cpu_per_request")) + ("agent_import_cpu",)


def _gunicorn_cpu_seconds(stack: Stack) -> float:
    import psutil

    # The master's own time, its reaped workers' (gunicorn recycles them: --max-requests) and the live workers'.
    master = psutil.Process(stack.procs["gunicorn"].pid)
    return sum(master.cpu_times()[:4]) + sum(sum(p.cpu_times()[:2]) for p in master.children(recursive=True))


def row_line(r: dict) -> str:
    line = (f"{r['name']:40} {_cell(r['generated']):>12} {_cell(r['baseline']):>12} {_cell(r['unit']):>7} "
            f"{_cell(r['ratio']):>9}  {verdict(r)}")
    reason = failure(r)
    return line + (f" ({reason})" if reason else "")


def _cell(value) -> str:
    return "-" if value is None else str(value)


def print_table(results: list[dict]) -> None:
    print(f"\n{'benchmark':40} {'generated':>12} {'baseline':>12} {'unit':>7} {'ratio':>9}  target")
    for r in results:
        print(row_line(r))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    names = [r["name"] for r in results]
    ratios = [max(r["ratio"], 1e-3) if verdict(r) != "FAILED" else 1e-3 for r in results]
    colors = {"met": "#3a7", "MISSED": "#c33", "-": "#999", "FAILED": "#000"}
    ax.barh(names, ratios, color=[colors[verdict(r)] for r in results])
    for y, r in enumerate(results):
        if "target" in r:
            ax.plot([r["target"]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.axvline(1, color="black", linewidth=0.5, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("ratio, generated vs baseline (higher is better; log scale); black tick: target;\n"
                  "green: target met, red: missed, grey: no target, black: FAILED (no measurement)")
    for y, (r, x) in enumerate(zip(results, ratios)):
        ax.text(x, y, " FAILED" if verdict(r) == "FAILED" else f" {x:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _write(results: list[dict]) -> None:
    """bench.json as it stands: replaced whole, so a reader never sees half a file."""
    partial = OUT.with_name(OUT.name + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(OUT)


# name: (what is printed before it, how it is measured, the rows it yields). Order: the order they run in.
GROUPS: dict[str, tuple[str, Callable[[Path], Iterable[dict]], tuple[str, ...]]] = {
    "http": ("1-4, 6. the generated stack against the naive baseline and the practical limit",
             http_benchmarks, HTTP_ROWS),
    "monitoring": ("7. monitoring on vs off", monitoring_benchmarks, MONITORING_ROWS),
    "agent": ("9. the in-process agent on vs off", agent_benchmarks, AGENT_ROWS),
    "budget": ("8. the connection budget and the pooler against PostgreSQL max_connections 100",
               lambda workdir: budget_benchmark(workdir / "budget", entry, max(DURATION, 10)), BUDGET_ROWS),
    "operator": ("5. the operator on the local control plane",
                 lambda workdir: operator_benchmark(workdir / "operator", entry), ()),
}


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed run still stops its servers
    try:
        groups = selected_groups(GROUPS, os.environ.get("BENCH_ROWS"), os.environ.get("BENCH_ONLY"))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    OUT.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-bench-"))
    workdir.chmod(0o755)
    started = time.monotonic()
    results: list[dict] = []

    def record(row: dict) -> None:
        results.append(row)
        _write(results)
        print("   " + row_line(row), flush=True)

    _write(results)  # no stale rows of an earlier run
    for name in groups:
        title, measure, expected = GROUPS[name]
        print(title, flush=True)
        run_group(name, lambda: measure(workdir), expected, record)
    try:
        plot(results, OUT.with_suffix(".png"))
    except Exception:  # noqa: BLE001 - the figures are written already; the picture is a convenience
        traceback.print_exc()
    print_table(results)
    failed = any_failed(results)
    print(f"\nwrote {OUT} and {OUT.with_suffix('.png')} in {time.monotonic() - started:.0f}s"
          + ("; FAILED rows: " + ", ".join(r["name"] for r in results if verdict(r) == "FAILED") if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
