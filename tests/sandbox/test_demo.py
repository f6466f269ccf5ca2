"""What `make demo` decides from its figures: a difference between the lake and the table is named, and a mismatch
or an incomplete backfill fails the demo. (The whole run: tests/sandbox/test_demo_output.py; the commands
`make demo ARGS="--keep"` prints, run as pasted: tests/ops/test_docs.py.)"""

from __future__ import annotations

import dataclasses
from typing import Any

from sandbox import demo
from sandbox.table_state import TableState, compare_states


def test_a_difference_between_the_lake_and_the_table_is_named():
    row = {"event_id": "e1", "fan_id": "f1", "status": "SELECTED", "quantity": 2}
    table = table_state_of({("e1", "f1"): row, ("e1", "f2"): dict(row, fan_id="f2")})
    lake = {("e1", "f1"): dict(row, status="REGISTERED"), ("e9", "f9"): dict(row, event_id="e9", fan_id="f9")}
    comparison = compare_states(table, lake)
    assert not comparison.equal
    assert comparison.mismatches == 3
    assert comparison.missing == [("e1", "f2")]
    assert comparison.unexpected == [("e9", "f9")]
    assert comparison.different == {("e1", "f1"): ["status"]}
    assert comparison.describe() == [
        "live in the table, not in the lake: ('e1', 'f2')",
        "in the lake, not live in the table: ('e9', 'f9')",
        "('e1', 'f1') differs in status",
    ]


def table_state_of(rows: dict[tuple[str, str], dict[str, Any]]) -> TableState:
    return TableState(items=len(rows), rows=rows, refused=0)


def test_a_mismatch_or_an_incomplete_backfill_fails_the_demo():
    from ops.backfill import BackfillReport  # noqa: PLC0415
    from sandbox.lake import LakeCounts  # noqa: PLC0415
    from sandbox.table_state import StateComparison  # noqa: PLC0415

    counts = LakeCounts(rows=10, distinct_changes=10, quarantined=0, parquet_objects=1, quarantine_objects=0)
    report = BackfillReport("arn", "export-1", "2026-11-30T14:00:00.000Z", 5)
    equal = StateComparison(table_items=12, refused=0, lake_registrations=12)

    def result(state: StateComparison, problems: list[str]) -> demo.DemoResult:
        bootstrap = demo.BootstrapFigures(5, 1.0, dataclasses.replace(report, problems=problems), {}, state)
        return demo.DemoResult(10, 10, counts, 0, 1.0, None, bootstrap)

    assert result(equal, []).accounted
    assert not result(dataclasses.replace(equal, missing=[("e1", "f1")]), []).accounted
    assert not result(equal, ["a data file is missing"]).accounted
