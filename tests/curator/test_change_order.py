"""The curator follows the contract's order of changes (``pipeline.change_order``): ``change_time_us``, then the
sequence number as an integer, then ``change_id``; of two copies of a change, the lowest sequence number, then the
lowest ``shard_id``."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from curator.state import _latest_per_key, _Order
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from pipeline.change_order import CHANGE_TIME_US, newer_order_key
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


@pytest.mark.parametrize("seeded", [False, True], ids=["changes", "changes-and-snapshot-rows"])
def test_the_newest_change_of_each_key_is_the_brute_force_newest_ties_included(seeded: bool):
    """2,000 rows over 300 keys, in no order: many keys have two changes in one microsecond (then the sequence
    number as an integer decides, then ``change_id``), and with a seed, snapshot rows placed at T - lead sit below
    a change of that very microsecond. The result is one row per key, in key order, each the newest by
    ``newer_order_key``."""
    generator = random.Random(7)
    since = 1_775_000_000_000_000
    rows: list[dict[str, Any]] = []
    for index in range(2_000):
        number = generator.randrange(300)
        snapshot = seeded and generator.random() < 0.2
        rows.append(
            {
                "event_id": f"event-{number % 7}",
                "fan_id": f"fan-{number:04d}",
                "shard_id": "export-1" if snapshot else f"shardId-{generator.randrange(2)}",
                CHANGE_TIME_US: since - 5 if snapshot else since + generator.randrange(4),
                "sequence_number": str(generator.choice([9, 10, 99, 100, 10**30]) + generator.randrange(3)),
                "change_id": f"change-{index:05d}",
                "op": "SNAPSHOT" if snapshot else "MODIFY",
            }
        )
    table = pa.Table.from_pylist(rows)
    order = _Order("export-1", since) if seeded else _Order()

    def newest_key(row: dict[str, Any]) -> tuple[Any, ...]:
        if seeded and row["shard_id"] == "export-1":
            return (since, 0, *newer_order_key({**row, CHANGE_TIME_US: since})[1:])
        time, *rest = newer_order_key(row)
        return (time, 1, *rest)

    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["event_id"], row["fan_id"])
        if key not in expected or newest_key(row) > newest_key(expected[key]):
            expected[key] = row

    latest = _latest_per_key(table, order).to_pylist()

    assert [(row["event_id"], row["fan_id"]) for row in latest] == sorted(expected)
    assert [row["change_id"] for row in latest] == [expected[key]["change_id"] for key in sorted(expected)]
    # many keys' newest microsecond is shared by two rows: the order's later terms decide there
    newest_times = {key: newest_key(row)[:2] for key, row in expected.items()}
    tied = {
        key
        for key in expected
        if sum(
            1 for row in rows if (row["event_id"], row["fan_id"]) == key and newest_key(row)[:2] == newest_times[key]
        )
        > 1
    }
    assert len(tied) > 50
