"""The demo's check of ``registrations`` against a scan of the table, the snapshot it publishes for the curator's
seed, and what makes the demo fail (without a demo run: the whole run is tests/sandbox/test_demo_output.py)."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
from rich.console import Console

from components.current_state import state_columns
from components.settings import settings_from_stack_file
from ops import compact
from ops.backfill import BackfillReport
from ops.outputs import StackOutputs
from sandbox import demo
from sandbox.curated import SEED_EXPORT_PROPERTY, keyed_state
from sandbox.lake import LakeCounts
from sandbox.table_state import TableState, compare_states
from tests.ops.conftest import outputs_values

WIDTH = 80
ROW: dict[str, Any] = dict.fromkeys(state_columns()) | {
    "event_id": "e1",
    "fan_id": "f1",
    "status": "SELECTED",
    "quantity": 2,
}


def _registrations(*rows: dict[str, Any]) -> pa.Table:
    """A read of ``registrations``: the state's columns and the table's own (``last_change_time`` is not compared)."""
    return pa.Table.from_pylist([dict(row, change_time=datetime(2026, 12, 7, 8, tzinfo=UTC)) for row in rows])


def _table(*rows: dict[str, Any], refused: int = 0) -> TableState:
    keyed = {(str(row["event_id"]), str(row["fan_id"])): dict(row) for row in rows}
    return TableState(items=len(keyed) + refused, rows=keyed, refused=refused)


def _printed(state: Any) -> str:
    console = Console(file=io.StringIO(), width=WIDTH, record=True, force_terminal=False)
    demo._print_registrations(console, state)
    return console.export_text()


def test_registrations_equal_to_the_table_scan_are_reported_with_their_counts() -> None:
    rows = [ROW, dict(ROW, fan_id="f2"), dict(ROW, event_id="e2", quantity=4)]

    state = compare_states(_table(*rows, refused=1), keyed_state(_registrations(*rows)))

    assert state.equal
    assert (state.table_items, state.refused, state.lake_registrations) == (4, 1, 3)
    text = _printed(state)
    assert " ".join(text.split()) == (
        "registrations (a table scan) against the same scan of the table: 4 items in the table (1 refused by the "
        "record contract), 3 rows in registrations, every attribute compared: equal"
    )
    assert all(len(line) <= WIDTH for line in text.splitlines())


def test_a_tampered_missing_or_extra_row_of_registrations_is_a_mismatch_named_in_the_output() -> None:
    live = [ROW, dict(ROW, fan_id="f2"), dict(ROW, event_id="e2")]
    tampered = [dict(ROW, quantity=3), dict(ROW, event_id="e9", fan_id="f9"), dict(ROW, event_id="e2")]

    state = compare_states(_table(*live), keyed_state(_registrations(*tampered)))

    assert not state.equal
    assert state.mismatches == 3
    assert state.missing == [("e1", "f2")]
    assert state.unexpected == [("e9", "f9")]
    assert state.different == {("e1", "f1"): ["quantity"]}
    text = _printed(state)
    flat = " ".join(text.split())
    assert "3 rows in registrations, every attribute compared: 3 mismatches" in flat
    assert "live in the table, not in registrations: ('e1', 'f2')" in flat
    assert "in registrations, not live in the table: ('e9', 'f9')" in flat
    assert "('e1', 'f1') differs in quantity" in flat
    assert "equal" not in flat
    assert all(len(line) <= WIDTH for line in text.splitlines())


def test_an_unseeded_registrations_lacks_the_snapshot_items_and_is_a_mismatch() -> None:
    snapshot_only = dict(ROW, fan_id="f2")  # an item of the snapshot no change touched since T

    state = compare_states(_table(ROW, snapshot_only), keyed_state(_registrations(ROW)))

    assert not state.equal
    assert state.missing == [("e1", "f2")]


def test_the_seed_line_says_current_registrations_lists_the_current_state_and_names_each_shortfall() -> None:
    seeded = {"listed": 1503, "current": 1503, "seeded_items": 218, "unchanged": 218}

    line = demo._seed_line(**seeded, seeded_from="export-1", published="export-1")

    assert line == (
        "current_registrations (a read of registrations) lists 1,503 registrations: registrations is seeded from "
        "snapshot export-1, so it holds all 218 snapshot items no change touched since T"
    )
    assert "[red]" not in line
    short = demo._seed_line(**(seeded | {"listed": 1285}), seeded_from="export-1", published="export-1")
    assert "[red]1,285, not the current state's 1,503[/]" in short
    unseeded = demo._seed_line(**(seeded | {"seeded_items": 0}), seeded_from=None, published="export-1")
    assert "[red]seeded from no snapshot, not from snapshot export-1[/]" in unseeded
    assert "[red]0 of the 218[/]" in unseeded
    other = demo._seed_line(**seeded, seeded_from="export-0", published="export-1")
    assert "[red]seeded from export-0, not from snapshot export-1[/]" in other


def test_the_demo_publishes_its_snapshot_to_the_curators_environment_only_when_its_backfill_is_complete() -> None:
    from curator.handler import load_curator_settings  # noqa: PLC0415 - pyiceberg: only this test pays the import
    from curator.state import SEED_EXPORT_PROPERTY as CURATOR_SEED_PROPERTY  # noqa: PLC0415

    assert SEED_EXPORT_PROPERTY == CURATOR_SEED_PROPERTY  # the summary property the demo reads is the curator's
    outputs = StackOutputs.from_mapping(outputs_values(), source="test")
    report = BackfillReport("arn", "01733560000000-a1b2c3d4", "2026-12-07T08:00:01.250Z", 518)
    stack = SimpleNamespace(settings=settings_from_stack_file("dev1"))
    assert stack.settings.snapshot_export_id is None  # the committed stack file publishes none
    console = Console(file=io.StringIO(), width=WIDTH, record=True, force_terminal=False)

    demo._publish(console, stack, dataclasses.replace(report, problems=["a data file is missing"]))  # type: ignore[arg-type]
    assert stack.settings.snapshot_export_id is None
    assert "not published" in console.export_text()

    demo._publish(console, stack, report)  # type: ignore[arg-type]
    environment = compact.curator_environment(outputs, "dev1", stack.settings)
    assert (environment["SNAPSHOT_EXPORT_ID"], environment["SNAPSHOT_EXPORT_TIME"]) == (
        "01733560000000-a1b2c3d4",
        "2026-12-07T08:00:01.250Z",
    )
    published = load_curator_settings(environment).snapshot
    assert published is not None
    assert published.export_id == "01733560000000-a1b2c3d4"
    assert published.export_time == datetime(2026, 12, 7, 8, 0, 1, 250000, tzinfo=UTC)
    assert published.objects_prefix == "demand/snapshots/export_id=01733560000000-a1b2c3d4/"  # where it back-filled
    flat = " ".join(console.export_text().split())
    assert "published snapshot 01733560000000-a1b2c3d4 (T = 2026-12-07T08:00:01.250Z) on the local stack" in flat
    assert all(len(line) <= WIDTH for line in console.export_text().splitlines())
    # the stack file is not changed: make compact run later reads it unpublished (the seed stays in effect)
    assert compact.curator_environment(outputs, "dev1")["SNAPSHOT_EXPORT_ID"] == ""


def test_the_demo_erases_a_fan_the_stream_changed_not_a_snapshot_item_the_seed_brought() -> None:
    registrations = pa.table(
        {
            "event_id": ["e1", "e1", "e1", "e2"],
            "fan_id": ["a-seeded", "b-changed", "c-changed", "a-changed"],
            "shard_id": ["export-1", "shardId-000000000001", "shardId-000000000000", None],
        }
    )

    changed = demo._changed_since_the_snapshot(registrations, "export-1")

    assert changed.column("fan_id").to_pylist() == ["b-changed", "c-changed", "a-changed"]
    assert demo._changed_since_the_snapshot(registrations, None) is registrations  # not seeded: every row


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
    figures.state = compare_states(_table(ROW), {("e1", "f1"): ROW if state_equal else dict(ROW, quantity=9)})
    return figures


def test_the_demo_fails_unless_each_change_is_curated_once_and_registrations_equal_the_table() -> None:
    counts = LakeCounts(rows=12, distinct_changes=10, quarantined=0, parquet_objects=3, quarantine_objects=0)

    def result(curation: demo.CurationFigures) -> demo.DemoResult:
        return demo.DemoResult(10, 10, counts, 0, 1.0, curation)

    assert result(_figures(10, 10, state_equal=True)).accounted  # raw duplicates (12 rows) are fine
    assert not result(_figures(11, 10, state_equal=True)).accounted  # a change twice in registration_changes
    assert not result(_figures(9, 9, state_equal=True)).accounted  # a change missing
    assert not result(_figures(10, 10, state_equal=False)).accounted
    assert not dataclasses.replace(result(_figures(10, 10, state_equal=True)), items_written=11).accounted
