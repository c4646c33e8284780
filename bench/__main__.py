"""`make bench`: the generated stack against a naive baseline, measured side by side in one run.

Baseline: `gunicorn app:create_app()` with gunicorn's defaults (one sync worker), Flask serving its own
static files, no cache (Flask-Caching's NullCache), no gzip. Practical limit: a minimal hand-tuned nginx
serving the same bytes from disk with no proxy. Load: wrk from Debian, the same command for both sides.

Items 1, 2, 6 and 7 take the median of BENCH_ROUNDS interleaved wrk runs of BENCH_SECONDS each.
Writes a table to stdout, JSON to $BENCH_OUT (build/bench.json) and a PNG of the ratios beside it.
Every ratio is oriented so that higher is better.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "workload"), str(ROOT / "tests"), str(ROOT / "tools")]

from bench.http import (baseline_gunicorn, json_bytes, limit_nginx, slow_clients, wrk)  # noqa: E402
from bench.budget import budget_benchmark  # noqa: E402
from bench.operator_bench import operator_benchmark  # noqa: E402
from stack import Stack  # noqa: E402

OUT = Path(os.environ.get("BENCH_OUT", ROOT / "build" / "bench.json"))
DURATION = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
NOCACHE = {"Cookie": "bench=1"}  # a cookie: nginx's micro-cache steps aside (personalised request)


def entry(name: str, generated: float, baseline: float, unit: str, ratio: float, **extra) -> dict:
    return {"name": name, "generated": round(generated, 3), "baseline": round(baseline, 3), "unit": unit,
            "ratio": round(ratio, 3), **extra}


def compare(urls: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, float]:
    """Median req/s of each server over ROUNDS interleaved runs, so the machine's noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(ROUNDS):
        for name, url in urls.items():
            samples[name].append(wrk(url, DURATION, headers))
    return {name: statistics.median(values) for name, values in samples.items()}


def http_benchmarks(workdir: Path) -> list[dict]:
    results = []
    stack = Stack(workdir / "stack").start(with_postgres=False)
    base = baseline_gunicorn(workdir / "baseline")
    limit = limit_nginx(workdir / "limit", stack)
    try:
        # Warm both sides (imports, Flask-Caching's first computation, nginx's open_file_cache).
        for url in (stack.url, base.url):
            wrk(url + "/static/app.css", 1)
            wrk(url + "/expensive", 1)

        print("1. static asset throughput", flush=True)
        m = compare({s: u + "/static/app.css" for s, u in (("gen", stack.url), ("bas", base.url), ("lim", limit.url))},
                    {"Accept-Encoding": "gzip"})
        gen, bas, lim = m["gen"], m["bas"], m["lim"]
        results.append(entry("static_asset_throughput", gen, bas, "req/s", gen / bas, target=10))
        results.append(entry("static_asset_vs_practical_limit", gen, lim, "req/s", gen / lim, target=0.8))

        print("2. cacheable expensive endpoint", flush=True)
        m = compare({s: u + "/expensive" for s, u in (("gen", stack.url), ("bas", base.url), ("lim", limit.url))})
        gen, bas, lim = m["gen"], m["bas"], m["lim"]
        results.append(entry("cached_endpoint_throughput", gen, bas, "req/s", gen / bas, target=20))
        results.append(entry("cached_endpoint_vs_practical_limit", gen, lim, "req/s", gen / lim, target=0.8))

        print("3. fast clients while 50 slow clients trickle request bodies", flush=True)
        with slow_clients(stack.ports["nginx"], 50):
            gen = wrk(stack.url + "/hello", DURATION, NOCACHE)
        with slow_clients(base.port, 50):
            bas = wrk(base.url + "/hello", DURATION, NOCACHE, timeout="2s")
        results.append(entry("fast_clients_under_50_slow_clients", gen, bas, "req/s",
                             gen / max(bas, 1.0), target=5, note="baseline floored at 1 req/s for the ratio"))

        print("4. bytes on the wire for a JSON response", flush=True)
        gen_bytes = json_bytes(stack.url + "/api/items", NOCACHE)
        bas_bytes = json_bytes(base.url + "/api/items", NOCACHE)
        results.append(entry("json_bytes_on_wire", gen_bytes, bas_bytes, "bytes", bas_bytes / gen_bytes,
                             reduction_percent=round(100 * (1 - gen_bytes / bas_bytes), 1), target_reduction=70))
    finally:
        limit.stop()
        base.stop()
        stack.stop()
    return results


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


def monitoring_benchmarks(workdir: Path) -> list[dict]:
    """The same stack with spec.monitoring on (exporters beside nginx and gunicorn, the JSON access log on
    stdout and over syslog, gunicorn's statsd packets) against it off: what monitoring costs."""
    import yaml

    from stack import WORKLOAD_APP

    document = yaml.safe_load(WORKLOAD_APP.read_text())
    document["spec"]["monitoring"] = {"enabled": True}
    on, off = _stack_pair(workdir, "monitoring", document, yaml.safe_load(WORKLOAD_APP.read_text()))
    results = []
    try:
        _warm([off.url, on.url], ["/static/app.css", "/expensive"])
        for name, path, headers in (("static", "/static/app.css", {"Accept-Encoding": "gzip"}),
                                    ("cached_endpoint", "/expensive", None)):
            m = compare({"on": on.url + path, "off": off.url + path}, headers)
            results.append(entry(f"monitoring_on_vs_off_{name}", m["on"], m["off"], "req/s", m["on"] / m["off"],
                                 target=0.9, note="baseline: the same stack with monitoring off"))
    finally:
        on.stop()
        off.stop()
    return results


def agent_benchmarks(workdir: Path) -> list[dict]:
    """The web tier with the in-process agent on (measuring every request into statsd_exporter) against the
    same stack with spec.agent off, straight to gunicorn (no micro-cache): a Flask-Caching endpoint (a Redis GET
    per request) and the cheapest endpoint (/hello: where a fixed per-request cost weighs most). Plus the cost
    at interpreter start: `import flask, sqlalchemy` with the agent's sitecustomize and without."""
    import copy
    import subprocess

    import yaml

    from agentvolume import mount_agent
    from stack import VENV_BIN, WORKLOAD_APP, find

    document = yaml.safe_load(WORKLOAD_APP.read_text())
    document["spec"]["monitoring"] = {"enabled": True}
    off_document = copy.deepcopy(document)
    off_document["spec"]["agent"] = {"enabled": False}
    on, off = _stack_pair(workdir, "agent", document, off_document)
    results = []
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
            results.append(entry(f"agent_on_vs_off_{name}", m["on"], m["off"], "req/s", m["on"] / m["off"],
                                 target=0.97, note="gunicorn direct; baseline: the same stack with spec.agent off"))
            # CPU per request of gunicorn's processes: less exposed than throughput to a shared machine's noise.
            results.append(entry(f"agent_cpu_per_request_{name}", c["on"], c["off"], "us", c["off"] / c["on"],
                                 target=0.97, note="gunicorn master and workers' CPU time / requests served; "
                                                   "ratio = without / with the agent"))
            print(results[-2:], flush=True)
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
        results.append(entry("agent_import_cpu", with_agent, without, "s", without / with_agent, target=0.95,
                             note=f"`python -c '{code}'`: CPU seconds, median; ratio = without / with the agent"))
    finally:
        on.stop()
        off.stop()
    return results


def _gunicorn_cpu_seconds(stack: Stack) -> float:
    import psutil

    # The master's own time, its reaped workers' (gunicorn recycles them: --max-requests) and the live workers'.
    master = psutil.Process(stack.procs["gunicorn"].pid)
    return sum(master.cpu_times()[:4]) + sum(sum(p.cpu_times()[:2]) for p in master.children(recursive=True))


def print_table(results: list[dict]) -> None:
    print(f"\n{'benchmark':40} {'generated':>12} {'baseline':>12} {'unit':>7} {'ratio':>9}  target")
    for r in results:
        verdict = {True: "met", False: "MISSED", None: "-"}[meets_target(r)]
        print(f"{r['name']:40} {r['generated']:>12} {r['baseline']:>12} {r['unit']:>7} {r['ratio']:>9}  {verdict}")


def meets_target(r: dict) -> bool | None:
    if "target_errors" in r:
        if r["errors"] > r["target_errors"]:
            return False
        if "target" not in r:
            return True
    if "target" in r:
        return r["ratio"] >= r["target"]
    if "target_reduction" in r:
        return r["reduction_percent"] >= r["target_reduction"]
    return None


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    names = [r["name"] for r in results]
    ratios = [max(r["ratio"], 1e-3) for r in results]
    colors = {True: "#3a7", False: "#c33", None: "#999"}
    ax.barh(names, ratios, color=[colors[meets_target(r)] for r in results])
    for y, r in enumerate(results):
        if "target" in r:
            ax.plot([r["target"]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.axvline(1, color="black", linewidth=0.5, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("ratio, generated vs baseline (higher is better; log scale); black tick: target; "
                  "green: target met, grey: no target")
    for y, r in enumerate(ratios):
        ax.text(r, y, f" {r:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed run still stops its servers
    OUT.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-bench-"))
    workdir.chmod(0o755)
    started = time.monotonic()
    results = []
    if os.environ.get("BENCH_ONLY", "all") in ("all", "http"):
        results += http_benchmarks(workdir)
    if os.environ.get("BENCH_ONLY", "all") in ("all", "http", "monitoring"):
        print("7. monitoring on vs off", flush=True)
        results += monitoring_benchmarks(workdir)
    if os.environ.get("BENCH_ONLY", "all") in ("all", "agent"):
        print("9. the in-process agent on vs off", flush=True)
        results += agent_benchmarks(workdir)
    if os.environ.get("BENCH_ONLY", "all") in ("all", "budget"):
        print("8. the connection budget and the pooler against PostgreSQL max_connections 100", flush=True)
        results += budget_benchmark(workdir / "budget", entry, max(DURATION, 10))
    if os.environ.get("BENCH_ONLY", "all") in ("all", "operator"):
        print("5. the operator on the local control plane", flush=True)
        results += operator_benchmark(workdir / "operator", entry)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, OUT.with_suffix(".png"))
    print_table(results)
    print(f"\nwrote {OUT} and {OUT.with_suffix('.png')} in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
