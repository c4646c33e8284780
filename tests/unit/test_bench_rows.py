"""`make bench`'s rows: a run that served nothing or raised is a FAILED row, never "met"; a group that raises
loses none of the rows measured before it, nor the other groups' (bench/rows.py; no servers)."""

from __future__ import annotations

import pytest

from bench.rows import (FAILED, MET, MISSED, NO_TARGET, any_failed, combine_runs, entry, failure, ratio, run_group,
                        selected_groups, verdict)

GROUPS = ("http", "monitoring", "agent", "budget", "operator")


def db_row(generated: float, baseline: float, errors: int = 0, **extra) -> dict:
    """A row of item 8 as budget_rows builds it."""
    return entry("db_budget_vs_unconstrained", generated, baseline, "req/s", ratio(generated, baseline),
                 errors=errors, target_errors=0, **extra)


def test_a_run_that_served_nothing_is_failed_not_met():
    # The false result of issue 30: 0 req/s, 0 errors against a target of 0 errors printed "met".
    row = db_row(0.0, 7.4)
    assert verdict(row) == FAILED
    assert "generated side served no request" in failure(row)


def test_a_reference_that_served_nothing_fails_the_row_instead_of_dividing_by_zero():
    assert ratio(12.0, 0.0) is None
    row = db_row(12.0, 0.0)
    assert row["ratio"] is None
    assert verdict(row) == FAILED
    assert "baseline side served no request" in failure(row)


def test_a_baseline_with_a_floor_may_serve_nothing():
    # Item 3: the naive server starved by slow clients serves nothing, which is the finding.
    row = entry("fast_clients_under_50_slow_clients", 900.0, 0.0, "req/s", ratio(900.0, max(0.0, 1.0)), target=5,
                baseline_floor=1.0)
    assert verdict(row) == MET
    starved = entry("fast_clients_under_50_slow_clients", 0.0, 0.0, "req/s", ratio(0.0, 1.0), target=5,
                    baseline_floor=1.0)
    assert verdict(starved) == FAILED


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_ratio_that_is_not_a_number_is_failed(value):
    row = entry("agent_import_cpu", 0.1, 0.1, "s", value, target=0.95)
    assert row["ratio"] is None
    assert verdict(row) == FAILED


def test_measured_rows_keep_their_verdicts():
    assert verdict(db_row(311.4, 359.5)) == MET
    assert verdict(db_row(311.4, 359.5, errors=3)) == MISSED
    assert verdict(entry("x", 2.0, 1.0, "req/s", 2.0, target=10)) == MISSED
    assert verdict(entry("x", 2.0, 1.0, "req/s", 2.0)) == NO_TARGET
    # Not a throughput: a zero baseline is a figure here (the operator's idle writes).
    assert verdict(entry("operator_idle_writes_300s", 0, 0, "requests", 1.0, target=1)) == MET
    assert verdict(entry("json_bytes_on_wire", 500, 5000, "bytes", 10.0, reduction_percent=90.0,
                         target_reduction=70)) == MET


def test_combine_runs_reports_a_dead_or_failed_run_instead_of_a_lower_mean():
    good = {"rps": 350.0, "p99_ms": 80.0, "errors": 0, "too_many_clients": 0, "pods": 25}
    dead = {**good, "rps": 0.0, "p99_ms": 0.0}
    combined = combine_runs([good, dead], averaged=("rps", "p99_ms"), summed=("errors",))
    assert combined["error"] == "run 2 of 2 served no request"
    raised = combine_runs([{"error": "unconstrained run 1 of 6: RuntimeError: postgres exited"}, good],
                          averaged=("rps",), summed=())
    assert raised["error"].startswith("unconstrained run 1 of 6")
    assert combine_runs([good, {**good, "rps": 250.0, "errors": 2}], averaged=("rps",), summed=("errors",)) == {
        **good, "rps": 300.0, "errors": 2, "runs": 2}


def test_budget_rows_fail_when_a_run_or_the_reference_failed(monkeypatch):
    from pathlib import Path

    # bench.budget imports the workload harness (tests/workload/stack.py) as bench/__main__ does.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "workload"))
    from bench.budget import BUDGET_ROWS, budget_rows

    ok = {"rps": 300.0, "p99_ms": 90.0, "errors": 0, "too_many_clients": 0, "pods": 25, "runs": 2}
    rows = budget_rows({"unconstrained": {"error": "run 1 of 2 served no request", "runs": 2},
                        "naive": ok, "budget": ok, "pooler": ok}, entry)
    assert [r["name"] for r in rows] == list(BUDGET_ROWS)
    assert all(verdict(r) == FAILED and "reference run failed" in r["error"] for r in rows)
    rows = budget_rows({"unconstrained": {**ok, "rps": 360.0}, "naive": ok,
                        "budget": {"error": "budget run 4 of 6: TimeoutError", "runs": 1}, "pooler": ok}, entry)
    assert [verdict(r) for r in rows] == [NO_TARGET, FAILED, MISSED]  # pooler: 300 / 360 < 0.9


def test_a_group_that_raises_keeps_its_measured_rows_and_fails_the_rest():
    recorded: list[dict] = []

    def measure():
        yield entry("static_asset_throughput", 100.0, 10.0, "req/s", 10.0, target=10)
        raise ZeroDivisionError("float division by zero")

    run_group("http", measure, ("static_asset_throughput", "cached_endpoint_throughput"), recorded.append)
    run_group("monitoring", lambda: iter([entry("monitoring_on_vs_off_static", 9.0, 10.0, "req/s", 0.9,
                                                target=0.9)]), ("monitoring_on_vs_off_static",), recorded.append)
    assert [(r["name"], verdict(r)) for r in recorded] == [
        ("static_asset_throughput", MET), ("cached_endpoint_throughput", FAILED),
        ("monitoring_on_vs_off_static", MET)]
    assert recorded[1]["error"] == "ZeroDivisionError: float division by zero"
    assert any_failed(recorded)


def test_a_group_without_a_row_list_fails_under_its_own_name():
    recorded: list[dict] = []

    def measure():
        raise TimeoutError("the control plane did not start")
        yield  # a generator, like the others

    run_group("operator", measure, (), recorded.append)
    assert [(r["name"], verdict(r)) for r in recorded] == [("operator", FAILED)]


def test_an_interrupted_run_is_not_turned_into_a_failed_row():
    def measure():
        raise KeyboardInterrupt
        yield

    with pytest.raises(KeyboardInterrupt):
        run_group("budget", measure, ("db_naive_vs_unconstrained",), lambda row: None)


def test_no_failed_row_no_failure():
    assert not any_failed([db_row(311.4, 359.5), db_row(311.4, 359.5, errors=1)])


def test_selected_groups():
    assert selected_groups(GROUPS, None, None) == list(GROUPS)
    assert selected_groups(GROUPS, None, "all") == list(GROUPS)
    assert selected_groups(GROUPS, None, "http") == ["http", "monitoring"]
    assert selected_groups(GROUPS, None, "budget") == ["budget"]
    # BENCH_ROWS wins over BENCH_ONLY, and runs the groups in their own order.
    assert selected_groups(GROUPS, "budget, http", "operator") == ["http", "budget"]
    with pytest.raises(ValueError, match="unknown benchmark group.*kwok"):
        selected_groups(GROUPS, "budget,kwok", None)
