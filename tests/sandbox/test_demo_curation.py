"""The demo's check of ``registrations`` against the brute-force latest state, and what makes the demo fail."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from sandbox import demo
from sandbox.curated import agreement
from sandbox.lake import LakeCounts

ROW = {"event_id": "e1", "fan_id": "f1", "status": "SELECTED", "quantity": 2}


def test_registrations_equal_to_the_latest_state_may_lack_only_snapshot_items_no_change_touched() -> None:
    expected = {("e1", "f1"): ROW, ("e1", "f2"): dict(ROW, fan_id="f2"), ("e2", "f1"): dict(ROW, event_id="e2")}
    registrations = {("e1", "f1"): dict(ROW), ("e1", "f2"): dict(ROW, fan_id="f2")}

    found = agreement(registrations, expected, snapshot_only={("e2", "f1")})

    assert found.equal
    assert (found.registrations, found.expected, found.not_seeded) == (2, 3, 1)


def test_a_changed_key_missing_an_extra_key_or_a_different_column_is_a_mismatch() -> None:
    expected = {("e1", "f1"): ROW, ("e1", "f2"): dict(ROW, fan_id="f2")}
    registrations = {("e1", "f1"): dict(ROW, quantity=3), ("e9", "f9"): dict(ROW, event_id="e9", fan_id="f9")}

    found = agreement(registrations, expected, snapshot_only=set())

    assert not found.equal
    assert found.mismatches == 3
    assert found.missing == [("e1", "f2")]
    assert found.unexpected == [("e9", "f9")]
    assert found.different == {("e1", "f1"): ["quantity"]}


def _figures(changes_rows: int, distinct: int, state_equal: bool) -> demo.CurationFigures:
    counts = LakeCounts(rows=12, distinct_changes=10, quarantined=0, parquet_objects=3, quarantine_objects=0)
    figures = demo.CurationFigures(
        first={},
        second={},
        raw=counts,
        changes_rows=changes_rows,
        distinct_changes=distinct,
        data_files=1,
        registrations=pa.table({"event_id": ["e1"]}),
        as_of_first=demo.StateFigures(1, 1, 2),
        now=demo.StateFigures(1, 1, 2),
        first_snapshot=1,
    )
    figures.state = agreement({("e1", "f1"): ROW}, {("e1", "f1"): ROW if state_equal else dict(ROW, quantity=9)}, set())
    return figures


def test_the_demo_fails_unless_each_change_is_curated_once_and_registrations_agree() -> None:
    counts = LakeCounts(rows=12, distinct_changes=10, quarantined=0, parquet_objects=3, quarantine_objects=0)

    def result(curation: demo.CurationFigures) -> demo.DemoResult:
        return demo.DemoResult(10, 10, counts, 0, 1.0, curation)

    assert result(_figures(10, 10, state_equal=True)).accounted  # raw duplicates (12 rows) are fine
    assert not result(_figures(11, 10, state_equal=True)).accounted  # a change twice in registration_changes
    assert not result(_figures(9, 9, state_equal=True)).accounted  # a change missing
    assert not result(_figures(10, 10, state_equal=False)).accounted
    assert not dataclasses.replace(result(_figures(10, 10, state_equal=True)), items_written=11).accounted
