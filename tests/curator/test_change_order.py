"""The curator follows the contract's order of changes (``pipeline.change_order``): ``change_time_us``, then the
sequence number as an integer, then ``change_id``; of two copies of a change, the lowest sequence number, then the
lowest ``shard_id``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from pipeline.schema import arrow_schema
from tests.curator.conftest import OTHER_SHARD, CuratedLake, generated_rows, latest_state, state_of


def one_change() -> dict[str, Any]:
    row: dict[str, Any] = generated_rows(1, seed=11).to_pylist()[0]
    return row


def test_registrations_keep_the_last_change_time_in_microseconds(lake: CuratedLake):
    rows = generated_rows(40, seed=12)
    lake.write(rows)
    lake.curator().run()
    state = lake.table(REGISTRATIONS_TABLE).scan().to_arrow()
    assert state.schema.field("change_time_us").type == pa.int64()
    expected = latest_state(rows)
    by_change = {row["change_id"]: row for row in rows.to_pylist()}
    assert state.num_rows == len(expected) > 0
    for row in state.to_pylist():
        assert row["change_time_us"] == by_change[row["change_id"]]["change_time_us"]


@pytest.mark.parametrize("runs", ["one run", "the earlier change in a later run"])
def test_two_changes_in_one_millisecond_delivered_reversed_leave_the_later_one(lake: CuratedLake, runs: str):
    """600 µs apart in the same millisecond (``change_time`` cannot tell them apart); the later change is delivered
    first, with the lower sequence number."""
    base = one_change()
    millisecond = base["change_time"].replace(microsecond=base["change_time"].microsecond // 1000 * 1000)
    micros = int(millisecond.timestamp()) * 1_000_000 + millisecond.microsecond
    sequence = int(base["sequence_number"])
    earlier = {
        **base,
        "change_id": "change-earlier",
        "op": "INSERT",
        "status": "REGISTERED",
        "quantity": 1,
        "change_time": millisecond,
        "change_time_us": micros + 100,
        "sequence_number": str(sequence + 1),
    }
    later = {
        **earlier,
        "change_id": "change-later",
        "op": "MODIFY",
        "quantity": 2,
        "change_time_us": micros + 700,
        "sequence_number": str(sequence),
    }
    lake.write(pa.Table.from_pylist([later], schema=arrow_schema()))
    if runs != "one run":
        lake.curator().run()
    lake.write(pa.Table.from_pylist([earlier], schema=arrow_schema()))
    lake.curator().run()

    state = lake.table(REGISTRATIONS_TABLE).scan().to_arrow()
    assert state_of(state) == {(base["event_id"], base["fan_id"]): ("change-later", "REGISTERED", 2)}
    assert state.column("change_time_us").to_pylist() == [micros + 700]
    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    assert sorted(changes.column("change_id").to_pylist()) == ["change-earlier", "change-later"]


@pytest.mark.parametrize("delivery", ["lower shard first", "higher shard first", "higher shard a run earlier"])
def test_of_two_copies_with_one_sequence_number_the_lower_shard_is_kept(lake: CuratedLake, delivery: str):
    base = one_change()
    shards = sorted([base["shard_id"], OTHER_SHARD])
    copies = [{**base, "shard_id": shard} for shard in shards]
    if delivery != "lower shard first":
        copies.reverse()
    for copy in copies:
        lake.write(pa.Table.from_pylist([copy], schema=arrow_schema()))
        lake.clock.advance(seconds=1)
        if delivery == "higher shard a run earlier":
            lake.curator().run()
    lake.curator().run()

    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    assert changes.column("change_id").to_pylist() == [base["change_id"]]
    assert changes.column("shard_id").to_pylist() == [shards[0]]
    assert changes.column("sequence_number").to_pylist() == [base["sequence_number"]]
    state = lake.table(REGISTRATIONS_TABLE).scan().to_arrow()
    assert state_of(state) == latest_state(pa.Table.from_pylist(copies[:1], schema=arrow_schema()))
