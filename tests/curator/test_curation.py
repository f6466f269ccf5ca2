"""A curation run: each change once, late data merged into its hour, sorted files, the current state equal to a
brute-force latest-state computation, one snapshot per table recording what it consumed, raw objects deleted only
once covered and after the grace period."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.curation import APPLIED_PROPERTY
from curator.files import DICTIONARY_COLUMNS, STATISTICS_COLUMNS
from curator.raw import LEDGER_PROPERTY, read_ledger
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from pipeline.schema import arrow_schema
from tests.curator.conftest import (
    HOUR,
    OTHER_SHARD,
    CuratedLake,
    generated_rows,
    is_sorted,
    latest_state,
    state_of,
    with_sequences,
)

NEXT_HOUR = HOUR + timedelta(hours=1)


def changes_of(lake: CuratedLake) -> pa.Table:
    return lake.table(CHANGES_TABLE).scan().to_arrow()


def registrations_of(lake: CuratedLake) -> pa.Table:
    return lake.table(REGISTRATIONS_TABLE).scan().to_arrow()


def rows_from(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=arrow_schema())


def test_each_change_once_across_objects_and_within_one_object(lake: CuratedLake):
    rows = generated_rows(400)
    # A re-delivery inside one object: the same change again with a higher sequence number.
    repeated = rows.slice(10, 5)
    later = [str(int(value) + 10**6) for value in repeated.column("sequence_number").to_pylist()]
    within = pa.concat_tables([rows.slice(0, 200), with_sequences(repeated, later)])
    lake.write(within)
    lake.write(rows.slice(150, 250))  # overlaps the first object by 50 changes

    result = lake.curator().run()

    assert result.conflict is None
    assert result.rows_read == 205 + 250
    assert result.changes_added == 400
    changes = changes_of(lake)
    assert sorted(changes.column("change_id").to_pylist()) == sorted(rows.column("change_id").to_pylist())
    by_id = dict(
        zip(changes.column("change_id").to_pylist(), changes.column("sequence_number").to_pylist(), strict=True)
    )
    for change_id, sequence in zip(
        repeated.column("change_id").to_pylist(), repeated.column("sequence_number").to_pylist(), strict=True
    ):
        assert by_id[change_id] == sequence, "the lowest sequence number of a duplicated change is kept"
    assert is_sorted(changes, ("event_id", "fan_id", "change_time"))
    assert state_of(registrations_of(lake)) == latest_state(rows)


def test_late_records_are_merged_into_the_hour_in_one_snapshot(lake: CuratedLake):
    first = generated_rows(300)
    lake.write(first)
    curator = lake.curator()
    curator.run()
    changes_table = lake.table(CHANGES_TABLE)
    files_before = {task.file.file_path for task in changes_table.scan().plan_files()}
    snapshots_before = len(changes_table.metadata.snapshots)

    late = generated_rows(200, shard_id=OTHER_SHARD, seed=11)  # same hour, another shard, arriving later
    fresh = generated_rows(100, hour=NEXT_HOUR, seed=5)
    lake.write(late)
    lake.write(fresh, hour=NEXT_HOUR)
    lake.write(first.slice(0, 40))  # a re-delivery of changes already curated
    result = curator.run()

    assert result.changes_added == 300
    assert sorted(result.hours_written) == ["2026-03-31T23", "2026-04-01T00"]
    changes_table = lake.table(CHANGES_TABLE)
    assert len(changes_table.metadata.snapshots) == snapshots_before + 1
    current = changes_table.current_snapshot()
    assert current is not None
    assert current.summary is not None
    assert current.summary.operation.value == "overwrite"
    files_after = {task.file.file_path for task in changes_table.scan().plan_files()}
    assert not files_before & files_after, "the late hour's files were replaced, not added to"
    changes = changes_of(lake)
    everything = pa.concat_tables([first, late, fresh])
    assert changes.num_rows == 600
    assert sorted(changes.column("change_id").to_pylist()) == sorted(everything.column("change_id").to_pylist())
    hour_rows = changes_table.scan(row_filter=f"change_time < '{NEXT_HOUR.isoformat()}'").to_arrow()
    assert hour_rows.num_rows == 500
    assert is_sorted(hour_rows, ("event_id", "fan_id", "change_time"))
    assert state_of(registrations_of(lake)) == latest_state(everything)


def test_a_run_with_nothing_new_commits_nothing(lake: CuratedLake):
    lake.write(generated_rows(50))
    curator = lake.curator()
    curator.run()
    changes_snapshots = len(lake.table(CHANGES_TABLE).metadata.snapshots)
    state_snapshots = len(lake.table(REGISTRATIONS_TABLE).metadata.snapshots)

    result = curator.run()

    assert result.raw_objects_read == 0
    assert result.changes_snapshot is None
    assert result.registrations_snapshot is None
    assert len(lake.table(CHANGES_TABLE).metadata.snapshots) == changes_snapshots
    assert len(lake.table(REGISTRATIONS_TABLE).metadata.snapshots) == state_snapshots


def test_each_snapshot_records_the_raw_objects_it_covers(lake: CuratedLake):
    keys = [lake.write(generated_rows(60, seed=1)), lake.write(generated_rows(60, shard_id=OTHER_SHARD, seed=2))]
    lake.curator().run()

    changes_table = lake.table(CHANGES_TABLE)
    snapshot = changes_table.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary is not None
    ledger = read_ledger(changes_table.io, snapshot.summary[LEDGER_PROPERTY])
    etags = {key: lake.s3.head_object(Bucket=lake.bucket, Key=key)["ETag"] for key in keys}
    assert {key: entry.etag for key, entry in ledger.items()} == etags
    state_snapshot = lake.table(REGISTRATIONS_TABLE).current_snapshot()
    assert state_snapshot is not None
    assert state_snapshot.summary is not None
    assert state_snapshot.summary[APPLIED_PROPERTY] == str(snapshot.snapshot_id)


def test_raw_objects_are_deleted_after_the_grace_period_only(lake: CuratedLake):
    key = lake.write(generated_rows(80))
    curator = lake.curator()
    first = curator.run()
    assert first.raw_deleted == 0
    assert first.raw_pending_deletion == 1
    assert lake.raw_keys() == [key]

    lake.clock.advance(minutes=14)
    assert curator.run().raw_deleted == 0
    lake.clock.advance(minutes=1)
    third = curator.run()

    assert third.raw_deleted == 1
    assert lake.raw_keys() == []
    assert changes_of(lake).num_rows == 80, "the rows stay in the table"


def test_a_replaced_raw_object_is_read_again_and_not_deleted_on_its_old_etag(lake: CuratedLake):
    rows = generated_rows(100)
    key = lake.write(rows.slice(0, 60))
    curator = lake.curator()
    curator.run()
    # The same key replaced (the old compaction rewrites its objects): the new version holds more rows.
    from pipeline.writer import encode_parquet  # noqa: PLC0415

    lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=encode_parquet(rows))
    result = curator.run()

    assert result.raw_objects_read == 1
    assert changes_of(lake).num_rows == 100


def test_removes_and_late_changes_follow_the_latest_change(lake: CuratedLake):
    base = generated_rows(20).to_pylist()
    insert = dict(base[0], op="INSERT", status="REGISTERED")
    key = {"event_id": insert["event_id"], "fan_id": insert["fan_id"]}
    t0 = insert["change_time"]
    modify = dict(
        insert,
        op="MODIFY",
        status="SELECTED",
        change_id="m1",
        change_time=t0 + timedelta(minutes=5),
        sequence_number=str(int(insert["sequence_number"]) + 100),
    )
    remove = dict(
        insert,
        op="REMOVE",
        change_id="r1",
        change_time=t0 + timedelta(minutes=10),
        sequence_number=str(int(insert["sequence_number"]) + 200),
    )
    # Run 1 sees only the REMOVE (the earlier changes are late); run 2 gets the INSERT and MODIFY.
    # Another fan of the same event, stored by run 1: it must survive run 2's late-change check.
    keeper = dict(base[1], event_id=insert["event_id"], op="INSERT", change_id="k1")
    lake.write(rows_from([remove, keeper]))
    curator = lake.curator()
    curator.run()
    assert key["fan_id"] not in registrations_of(lake).column("fan_id").to_pylist()
    lake.write(rows_from([insert, modify]))
    curator.run()
    assert state_of(registrations_of(lake)) == latest_state(changes_of(lake))
    assert key["fan_id"] not in registrations_of(lake).column("fan_id").to_pylist(), (
        "a late change revived a removed key"
    )
    # A tie on change time is broken by the higher sequence number.
    again = dict(
        insert,
        op="INSERT",
        status="WAITLISTED",
        change_id="i2",
        change_time=t0 + timedelta(minutes=20),
        sequence_number=str(int(insert["sequence_number"]) + 300),
    )
    tie = dict(
        again,
        op="MODIFY",
        status="CANCELLED",
        change_id="i3",
        sequence_number=str(int(insert["sequence_number"]) + 299),
    )
    lake.write(rows_from([again, tie]))
    curator.run()
    state = state_of(registrations_of(lake))
    assert state[(key["event_id"], key["fan_id"])] == ("i2", "WAITLISTED", insert["quantity"])
    assert state == latest_state(changes_of(lake))


def test_duckdb_reads_the_tables_through_scans(lake: CuratedLake):
    rows = generated_rows(300)
    lake.write(rows)
    lake.curator().run()
    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    state = lake.table(REGISTRATIONS_TABLE).scan().to_arrow()
    connection = duckdb.connect()
    connection.register("changes", changes)
    connection.register("state", state)
    counts = connection.sql("select count(*), count(distinct change_id) from changes").fetchall()[0]
    assert counts == (300, 300)
    live = connection.sql("select count(*) from state").fetchall()[0]
    assert live == (len(latest_state(rows)),)
    per_event = dict(connection.sql("select event_id, count(*) from state group by event_id").fetchall())
    expected: dict[str, int] = {}
    for event_id, _ in latest_state(rows):
        expected[event_id] = expected.get(event_id, 0) + 1
    assert per_event == expected


def test_a_backlog_is_curated_partition_by_partition_into_one_snapshot(lake: CuratedLake):
    this_hour = generated_rows(120, seed=21)
    next_hour = generated_rows(80, hour=NEXT_HOUR, seed=22)
    # A raw partition holding a change of the next hour: that hour is rewritten twice in the run, committed once.
    lake.write(pa.concat_tables([this_hour, next_hour.slice(0, 10)]))
    lake.write(next_hour.slice(10), hour=NEXT_HOUR)

    result = lake.curator().run()

    assert result.changes_added == 200
    assert sorted(result.hours_written) == ["2026-03-31T23", "2026-04-01T00"]
    changes_table = lake.table(CHANGES_TABLE)
    assert len(changes_table.metadata.snapshots) == 1
    changes = changes_table.scan().to_arrow()
    everything = pa.concat_tables([this_hour, next_hour])
    assert sorted(changes.column("change_id").to_pylist()) == sorted(everything.column("change_id").to_pylist())
    listed = {
        f"s3://{lake.bucket}/{key}" for key in lake.keys(f"curated/{CHANGES_TABLE}/data/") if not key.endswith("/")
    }
    assert listed == {task.file.file_path for task in changes_table.scan().plan_files()}, (
        "the hour's first rewrite in the run was deleted, not left behind"
    )
    assert state_of(registrations_of(lake)) == latest_state(everything)


def test_an_hour_bigger_than_a_slice_is_written_as_several_sorted_files_each_change_once(lake: CuratedLake):
    """Slices of at most 120 rows (four hash slices an hour): every file sorted, every change once, duplicates
    within an object, across objects and against committed rows removed, late rows merged on a later run."""
    rows = generated_rows(500)
    repeated = rows.slice(10, 5)
    later = [str(int(value) + 10**6) for value in repeated.column("sequence_number").to_pylist()]
    lake.write(pa.concat_tables([rows.slice(0, 300), with_sequences(repeated, later)]))
    lake.write(rows.slice(250, 150))  # overlaps the first object by 50 changes
    curator = lake.curator(slice_rows=120, spill_partitions=4, spill_memory_bytes=1)  # every row through the disk

    first = curator.run()

    assert first.changes_added == 400
    table = lake.table(CHANGES_TABLE)
    files = [task.file for task in table.scan().plan_files()]
    assert len(files) >= 3, "one file per group of slices"
    for data_file in files:
        content = pq.read_table(pa.BufferReader(table.io.new_input(data_file.file_path).open().read()))
        assert is_sorted(content, ("event_id", "fan_id", "change_time"))
    lake.write(rows.slice(350, 150))  # late: 50 changes already committed, 100 new
    lake.write(rows.slice(0, 20))  # a re-delivery of committed changes only

    second = curator.run()

    assert second.changes_added == 100
    changes = changes_of(lake)
    assert sorted(changes.column("change_id").to_pylist()) == sorted(rows.column("change_id").to_pylist())
    by_id = dict(
        zip(changes.column("change_id").to_pylist(), changes.column("sequence_number").to_pylist(), strict=True)
    )
    for change_id, sequence in zip(
        repeated.column("change_id").to_pylist(), repeated.column("sequence_number").to_pylist(), strict=True
    ):
        assert by_id[change_id] == sequence
    assert state_of(registrations_of(lake)) == latest_state(rows)


def test_data_files_encode_dictionaries_and_statistics_only_where_readers_gain(
    lake: CuratedLake, caplog: pytest.LogCaptureFixture
):
    """Both tables' files: the table's types and field ids, dictionaries only on the few-valued columns, min/max
    statistics only on the columns readers prune on, and the manifests' bounds for them (``fan_id``'s are what
    ``registrations`` finds a key's file by)."""
    lake.write(generated_rows(300))

    with caplog.at_level(logging.WARNING):
        lake.curator().run()

    assert not [record.getMessage() for record in caplog.records if "statistics" in record.getMessage()]
    for name in (CHANGES_TABLE, REGISTRATIONS_TABLE):
        table = lake.table(name)
        files = [task.file for task in table.scan().plan_files()]
        assert files, name
        for data_file in files:
            body = table.io.new_input(data_file.file_path).open().read()
            parquet = pq.ParquetFile(pa.BufferReader(body))
            assert data_file.file_size_in_bytes == len(body)
            assert data_file.record_count == parquet.metadata.num_rows
            field_ids = {field.name: int(field.metadata[b"PARQUET:field_id"]) for field in parquet.schema_arrow}
            assert field_ids == {field.name: field.field_id for field in table.schema().fields}
            group = parquet.metadata.row_group(0)
            columns = {group.column(index).path_in_schema: group.column(index) for index in range(group.num_columns)}
            for path, column in columns.items():
                dictionary = "RLE_DICTIONARY" in column.encodings
                assert dictionary == (path in DICTIONARY_COLUMNS), (name, path, column.encodings)
                assert column.is_stats_set == (path in STATISTICS_COLUMNS), (name, path)
            fan_id = table.schema().find_field("fan_id").field_id
            sequence = table.schema().find_field("sequence_number").field_id
            assert fan_id in data_file.lower_bounds
            assert fan_id in data_file.upper_bounds
            assert sequence not in data_file.lower_bounds
            assert sequence not in (data_file.value_counts or {})
            assert data_file.value_counts[fan_id] == data_file.record_count
        assert table.scan().to_arrow().schema == table.schema().as_arrow()
