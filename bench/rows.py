"""The rows of `make bench`: their ratio, whether each failed, met or missed its target, which groups run, and
how a group's rows are recorded. No servers here: the functions decide from the rows they are given.

A row *failed* when its measurement cannot be believed: the run raised (the row carries `error`), a
throughput side served no request at all (a baseline with a `baseline_floor` may), or the ratio is missing or
not a number. A failed row is never "met" nor "MISSED": a target is judged only on a measurement that happened.
"""

from __future__ import annotations

import math
import traceback
from typing import Callable, Iterable, Optional

FAILED, MET, MISSED, NO_TARGET = "FAILED", "met", "MISSED", "-"


def ratio(numerator: float, denominator: float) -> Optional[float]:
    """numerator / denominator, or None when the denominator is zero (nothing to compare against)."""
    return numerator / denominator if denominator else None


def entry(name: str, generated: float, baseline: float, unit: str, ratio: Optional[float], **extra) -> dict:
    """One row as it is written to bench.json."""
    return {"name": name, "generated": round(generated, 3), "baseline": round(baseline, 3), "unit": unit,
            "ratio": None if ratio is None or not math.isfinite(ratio) else round(ratio, 3), **extra}


def failed_entry(name: str, error: str) -> dict:
    """A row whose measurement did not happen (its run raised)."""
    return {"name": name, "generated": None, "baseline": None, "unit": None, "ratio": None, "error": error}


def failure(r: dict) -> Optional[str]:
    """Why the row failed, or None when it measured something."""
    if r.get("error"):
        return str(r["error"])
    if r.get("unit") == "req/s":
        # A baseline with a floor may serve nothing (the naive server starved by slow clients): that is the finding.
        for side in ("generated",) if "baseline_floor" in r else ("generated", "baseline"):
            if not r.get(side):
                return f"{side} side served no request"
    if r.get("ratio") is None or not math.isfinite(r["ratio"]):
        return "no ratio (nothing to compare against)"
    return None


def meets_target(r: dict) -> Optional[bool]:
    """True/False against the row's target, None when it has none. Only for rows that did not fail."""
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


def verdict(r: dict) -> str:
    if failure(r) is not None:
        return FAILED
    return {True: MET, False: MISSED, None: NO_TARGET}[meets_target(r)]


def missing_rows(expected: Iterable[str], measured: Iterable[dict], error: str) -> list[dict]:
    """Failed rows for the expected rows a group did not measure before it raised."""
    done = {r["name"] for r in measured}
    return [failed_entry(name, error) for name in expected if name not in done]


def any_failed(results: Iterable[dict]) -> bool:
    return any(verdict(r) == FAILED for r in results)


def run_group(name: str, measure: Callable[[], Iterable[dict]], expected: Iterable[str],
              record: Callable[[dict], None]) -> None:
    """Measure one group of rows, handing each row to `record` as soon as it is measured. When the group
    raises, the rows it had not measured yet are recorded as failed (a group with no list of expected rows
    gets one failed row named after it), and the next group still runs. Ctrl-C and SIGTERM still stop the run."""
    measured: list[dict] = []
    try:
        for row in measure():
            measured.append(row)
            record(row)
    except Exception as e:  # noqa: BLE001 - any error of a measurement is that row's verdict
        traceback.print_exc()  # to stderr: what the engineer reads to find out why
        error = f"{type(e).__name__}: {e}".strip()[:500]
        for row in missing_rows(tuple(expected) or (name,), measured, error):
            record(row)


def selected_groups(groups: Iterable[str], rows: str | None, only: str | None) -> list[str]:
    """The groups to run, in `groups`' order: BENCH_ROWS (comma-separated group names), else BENCH_ONLY
    (one group; `http` brings `monitoring` with it, as it always did), else all."""
    groups = list(groups)
    if rows:
        wanted = {w.strip() for w in rows.split(",") if w.strip()}
    elif only and only != "all":
        wanted = {only, "monitoring"} if only == "http" else {only}
    else:
        return groups
    unknown = wanted - set(groups)
    if unknown:
        raise ValueError(f"unknown benchmark group(s) {', '.join(sorted(unknown))}; known: {', '.join(groups)}")
    return [g for g in groups if g in wanted]


def combine_runs(runs: list[dict], averaged: Iterable[str], summed: Iterable[str],
                 served: str = "rps") -> dict:
    """Several runs of one scenario as one: `averaged` keys averaged, `summed` keys summed, the rest from the
    first run. When any run raised (carries `error`) or served no request (`served` is zero), the result is
    that error: a mean with a dead run in it would look like a slower, valid measurement."""
    errors = [r["error"] for r in runs if r.get("error")]
    errors += [f"run {i + 1} of {len(runs)} served no request" for i, r in enumerate(runs)
               if not r.get("error") and not r.get(served)]
    if errors or not runs:
        return {"error": "; ".join(errors) or "no run", "runs": len(runs)}
    out = dict(runs[0])
    for key in averaged:
        out[key] = sum(r[key] for r in runs) / len(runs)
    for key in summed:
        out[key] = sum(r[key] for r in runs)
    out["runs"] = len(runs)
    return out
