"""The pieces that keep a run's memory bounded: the slice hash, the spill to local disk, the deduplication and
order within a slice, and the raw objects' names (no local AWS needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from curator.raw import is_raw_key, parse_object_name
from curator.rows import ContractError, conform_to_contract, first_of_each_change, slice_of, sort_order
from curator.spill import SpilledBuckets, SpilledHours

HOUR = datetime(2026, 3, 31, 23, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("change_id", pa.large_string()),
        ("change_time", pa.timestamp("us", tz="UTC")),
        ("sequence_number", pa.large_string()),
        ("shard_id", pa.large_string()),
    ]
)


def rows(ids: list[str], *, minutes: list[int] | None = None, sequences: list[str] | None = None) -> pa.Table:
    minutes = minutes or [0] * len(ids)
    return pa.table(
        {
            "change_id": ids,
            "change_time": [HOUR + timedelta(minutes=value) for value in minutes],
            "sequence_number": sequences or [str(index + 1) for index in range(len(ids))],
            "shard_id": ["shardId-000000000000"] * len(ids),
        },
        schema=SCHEMA,
    )


def test_every_copy_of_a_change_hashes_to_the_same_slice_in_any_batch():
    ids = [f"{index:08x}-5b1e-4c41-9a5e-{index * 7919:012x}" for index in range(2_000)]
    whole = slice_of(pa.array(ids), 16).to_pylist()
    # the same ids, in another order, chunked and as large strings: the same slice each
    shuffled = list(reversed(ids))
    chunked = pa.chunked_array(
        [pa.array(shuffled[:700], pa.large_string()), pa.array(shuffled[700:], pa.large_string())]
    )
    again = dict(zip(shuffled, slice_of(chunked, 16).to_pylist(), strict=True))
    assert [again[change_id] for change_id in ids] == whole
    assert set(whole) == set(range(16))
    assert max(whole.count(value) for value in range(16)) < 2 * 2_000 / 16  # spread, not piled into one
    assert slice_of(pa.array(["", "a"]), 4).to_pylist()[0] in range(4)


def test_the_spill_gives_back_each_row_once_by_hour_and_slice_groups(tmp_path):
    ids = [f"change-{index:05d}" for index in range(1_000)]
    minutes = [0 if index % 10 else 70 for index in range(1_000)]  # a tenth in the next hour
    with SpilledHours(partitions=8, flush_rows=128, folder=str(tmp_path)) as spilled:
        for start in range(0, 1_000, 100):
            spilled.add(rows(ids[start : start + 100], minutes=minutes[start : start + 100]), committed=False)
        spilled.add(rows(["change-00001", "old-1"]), committed=True)
        assert spilled.hours() == [HOUR, HOUR + timedelta(hours=1)]
        groups = spilled.groups(HOUR, 300)
        assert sorted(partition for group in groups for partition in group) == list(range(8))
        back = [spilled.read(HOUR, group, committed=False, schema=SCHEMA) for group in groups]
        assert all(table.num_rows <= 300 or len(group) == 1 for table, group in zip(back, groups, strict=True))
        new_ids = sorted(change_id for table in back for change_id in table.column("change_id").to_pylist())
        assert new_ids == sorted(ids[index] for index in range(1_000) if index % 10)
        committed = pa.concat_tables(spilled.read(HOUR, group, committed=True, schema=SCHEMA) for group in groups)
        assert sorted(committed.column("change_id").to_pylist()) == ["change-00001", "old-1"]
        # the committed copy of change-00001 is in the same group as its new copy
        for group in groups:
            old = spilled.read(HOUR, group, committed=True, schema=SCHEMA).column("change_id").to_pylist()
            new = spilled.read(HOUR, group, committed=False, schema=SCHEMA).column("change_id").to_pylist()
            assert ("change-00001" in old) == ("change-00001" in new)
        spilled.drop(HOUR)
        assert spilled.hours() == [HOUR + timedelta(hours=1)]
        assert list(tmp_path.iterdir()), "the spill folder exists while in use"
    assert not list(tmp_path.iterdir()), "the spill folder is removed afterwards"


@pytest.mark.parametrize("in_event_order", [False, True], ids=["events-interleaved", "events-in-runs"])
def test_buckets_give_back_each_row_once_with_every_row_of_an_event_in_one_bucket(tmp_path, in_event_order):
    # GIVEN 3,000 changes of 30 events, added in batches of 700 and flushed to disk every 1,000 rows: the events
    # interleaved row by row (hashed and reordered), or in runs as a sorted data file has them (sliced in place)
    events = [f"event-{index % 30:02d}" for index in range(3_000)]
    if in_event_order:
        events.sort()
    table = pa.table({"event_id": events, "change_id": [f"change-{index:05d}" for index in range(3_000)]})
    with SpilledBuckets("event_id", 4, flush_rows=1_000, folder=str(tmp_path)) as spilled:
        for offset in range(0, 3_000, 700):
            spilled.add(table.slice(offset, 700))
        spilled.finish()
        # WHEN each bucket is read
        read = [spilled.read(bucket) for bucket in range(4)]
    # THEN every change is in exactly one bucket, each event in one bucket only, and the buckets share them out
    found = [bucket for bucket in read if bucket is not None]
    ids = [change for bucket in found for change in bucket.column("change_id").to_pylist()]
    assert sorted(ids) == sorted(table.column("change_id").to_pylist())
    owners: dict[str, set[int]] = {}
    for index, bucket in enumerate(found):
        for event in bucket.column("event_id").to_pylist():
            owners.setdefault(event, set()).add(index)
    assert len(owners) == 30
    assert all(len(buckets) == 1 for buckets in owners.values())
    assert len(found) > 1
    assert all(bucket.column("change_id").num_chunks == 1 for bucket in found)
    assert not list(tmp_path.iterdir())  # the spill's folder is gone once it is closed


def test_a_spill_folder_left_by_a_run_that_died_is_removed_and_a_recent_one_is_not(tmp_path):
    dead, running = tmp_path / "curator-spill-dead", tmp_path / "curator-spill-running"
    for folder in (dead, running):
        folder.mkdir()
        (folder / "rows.arrow").write_bytes(b"x")
    now = 1_796_000_000.0  # the run's clock, injected: epoch seconds
    os.utime(dead, (now - 3 * 3600, now - 3 * 3600))  # untouched for 3 h: a run that died
    os.utime(running, (now - 3600, now - 3600))  # 1 h: within STALE_SECONDS, perhaps still running
    with SpilledHours(folder=str(tmp_path), clock=lambda: now):
        assert not dead.exists()
        assert running.exists()


def test_a_spill_folder_gone_between_listing_and_its_age_does_not_stop_the_run(tmp_path):
    # another run sharing the folder removes its own spill while this one lists them: listed, then gone (a link to
    # nothing is listed and has no age, as such a folder is)
    (tmp_path / "curator-spill-gone").symlink_to(tmp_path / "removed-a-moment-ago")
    hour = datetime(2026, 3, 31, 12, tzinfo=UTC)
    with SpilledHours(folder=str(tmp_path), clock=lambda: 1_796_000_000.0) as spilled:
        spilled.add(pa.table({"change_id": ["a"], "change_time": [hour]}), committed=False)
        assert spilled.hours() == [hour]


def test_one_row_per_change_lowest_sequence_then_shard():
    table = pa.table(
        {
            "change_id": ["a", "b", "a", "c", "a", "b"],
            "sequence_number": ["30", "5", "100", "7", "30", "9"],
            "shard_id": ["s2", "s1", "s1", "s1", "s1", "s1"],
        }
    )
    keep = first_of_each_change(table)
    assert keep is not None
    kept = table.take(keep).to_pylist()
    assert sorted((row["change_id"], row["sequence_number"], row["shard_id"]) for row in kept) == [
        ("a", "30", "s1"),
        ("b", "5", "s1"),
        ("c", "7", "s1"),
    ]
    assert first_of_each_change(table.slice(0, 2)) is None


def test_sort_order_is_event_fan_then_change_time():
    keys = pa.table(
        {
            "event_id": ["e2", "e1", "e2", "e1", "e1"],
            "fan_id": ["f1", "f2", "f1", "f1", "f2"],
            "change_time_us": [5, 3, 1, 9, 2],
        }
    )
    ordered = keys.take(sort_order(keys)).to_pylist()
    assert [(row["event_id"], row["fan_id"], row["change_time_us"]) for row in ordered] == [
        ("e1", "f1", 9),
        ("e1", "f2", 2),
        ("e1", "f2", 3),
        ("e2", "f1", 1),
        ("e2", "f1", 5),
    ]


def test_conforming_fills_missing_columns_and_refuses_unknown_ones():
    contract = pa.schema(
        [("change_id", pa.large_string()), ("change_time", pa.timestamp("us", tz="UTC")), ("x", pa.int64())]
    )
    older = pa.table({"change_id": ["a"], "change_time": pa.array([HOUR], pa.timestamp("ms", tz="UTC"))})
    conformed = conform_to_contract(older, contract, "old.parquet")
    assert conformed.column_names == ["change_id", "change_time", "x"]
    assert conformed.column("x").null_count == 1
    assert conformed.schema.field("change_time").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(ContractError, match=r"new\.parquet has column"):
        conform_to_contract(older.append_column("surprise", pa.array([1])), contract, "new.parquet")


def test_raw_object_names_are_recognised_from_the_right():
    name = "77248379-shardId-000000000000-49590338271490256608559692538361571095921575989136588898-5a19cf0c65ed.parquet"
    assert parse_object_name(name) == ("77248379", "shardId-000000000000", False)
    assert parse_object_name("77248379-shardId-000000000001-compacted.parquet") == (
        "77248379",
        "shardId-000000000001",
        True,
    )
    assert parse_object_name("77248379-shardId-0-123.parquet") == ("77248379", "shardId-0", False)
    assert parse_object_name("_SUCCESS") is None
    assert is_raw_key("demand/events/", f"demand/events/dt=2026-03-31/hour=23/{name}")
    assert not is_raw_key("demand/events/", f"demand/events/dt=2026-03-31/{name}")
    assert not is_raw_key("demand/events/", f"other/dt=2026-03-31/hour=23/{name}")


_SPILL_PROBE = """
import json, sys
from datetime import UTC, datetime, timedelta
import pyarrow as pa, pyarrow.compute as pc
from curator.spill import SpilledBuckets, SpilledHours

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024

total, batch = int(sys.argv[1]), 50_000
hour = datetime(2026, 3, 31, 23, tzinfo=UTC)
schema = pa.schema([("change_id", pa.large_string()), ("change_time", pa.timestamp("us", tz="UTC")),
                    ("payload", pa.large_string())])
base = status("VmRSS")
limit = {"rows": {"flush_rows": 100_000}, "bytes": {"flush_bytes": 40 * 2**20}}[sys.argv[2]]
with SpilledHours(partitions=32, **limit) as spilled:
    for start in range(0, total, batch):
        numbers = pa.array(range(start, start + batch), pa.int64())
        ids = pc.binary_join_element_wise("change-", pc.cast(numbers, pa.string()), "")
        payload = pc.binary_repeat(pc.cast(numbers, pa.string()), 20)
        times = pa.array([hour + timedelta(microseconds=i) for i in range(batch)], pa.timestamp("us", tz="UTC"))
        spilled.add(pa.table([ids, times, payload], schema=schema), committed=False)
    seen, largest = 0, 0
    for group in spilled.groups(hour, 200_000):
        rows = spilled.read(hour, group, committed=False, schema=schema)
        seen, largest = seen + rows.num_rows, max(largest, rows.num_rows)
        del rows
print(json.dumps({"seen": seen, "largest": largest, "growth_mb": status("VmHWM") - base,
                  "rows_mb": total * 200 // 2**20}))
"""


@pytest.mark.parametrize("limit", ["rows", "bytes"])
def test_the_spill_keeps_a_fresh_process_memory_far_below_the_rows_it_holds(limit: str):
    """2M rows of ~200 bytes (~380 MB in Arrow) go through the spill, written to disk past 100,000 rows or 40 MB
    in memory; the process peak stays near a slice's size."""
    done = subprocess.run(
        [sys.executable, "-c", _SPILL_PROBE, "2000000", limit],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["seen"] == 2_000_000
    assert figures["largest"] <= 200_000 + 2_000_000 // 32
    assert figures["growth_mb"] < figures["rows_mb"] / 2, figures


def test_the_spill_puts_a_change_in_the_hour_its_time_falls_in_before_1970_too(tmp_path):
    # GIVEN changes a microsecond before an hour, on the hour, and half an hour before the epoch
    times = [
        HOUR - timedelta(microseconds=1),
        HOUR,
        datetime(1969, 12, 31, 23, 30, tzinfo=UTC),
    ]
    table = pa.table(
        {
            "change_id": ["before", "on", "pre-epoch"],
            "change_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "sequence_number": ["1", "2", "3"],
            "shard_id": ["shardId-000000000000"] * 3,
        },
        schema=SCHEMA,
    )
    with SpilledHours(partitions=4, folder=str(tmp_path)) as spilled:
        # WHEN they are spread over hours
        spilled.add(table, committed=False)
        # THEN each is in the hour that holds its time (floored, not rounded towards 1970)
        found = {
            hour: spilled.read(hour, range(4), committed=False, schema=SCHEMA).column("change_id").to_pylist()
            for hour in spilled.hours()
        }
    assert found == {
        datetime(1969, 12, 31, 23, tzinfo=UTC): ["pre-epoch"],
        HOUR - timedelta(hours=1): ["before"],
        HOUR: ["on"],
    }
