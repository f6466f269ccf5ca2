"""Erasure by the curator: one run removes a fan from every place, leaves every other row, audits what it did;
a second run changes nothing. The planted lake's buckets are versioned: the fan's bytes are searched in every
version, and old versions of objects deleted before the request are purged when they hold the fan, kept when not."""

from __future__ import annotations

import dataclasses
import gzip
import json
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator import erasure_tables
from curator.erasure import PROGRESS_PREFIX
from curator.erasure_look import LOOK_PREFIX
from curator.erasure_requests import AUDIT_PREFIX, REQUESTS_PREFIX, AuditRecord, fan_id_hmac
from curator.store import S3Store
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from pipeline.export import ExportFile
from pipeline.snapshot import SnapshotSettings, backfill_file
from tests.curator.conftest import HOUR, PREFIX, CuratedLake, generated_rows, latest_state, state_of
from tests.curator.erasure_lake import (
    ERASED,
    EXPORT_DATA,
    EXPORT_MANIFEST,
    EXPORT_REWRITTEN,
    KEPT,
    SALT,
    PlantedLake,
    digest,
    failed_batch,
    find_bytes,
    normalized,
    plant,
    versioned,
    with_fans,
)


@pytest.fixture
def planted(lake: CuratedLake) -> PlantedLake:
    failure_bucket = f"{lake.bucket}-failures"
    lake.s3.create_bucket(Bucket=failure_bucket)
    return plant(lake, failure_bucket)


def raw_rows(planted: PlantedLake) -> pa.Table:
    lake = planted.lake
    tables = [pq.read_table(pa.BufferReader(planted.body(lake.bucket, key))) for key in lake.raw_keys()]
    return pa.concat_tables(tables) if tables else pa.table({"fan_id": pa.array([], pa.string())})


def known_changes(planted: PlantedLake) -> list[tuple[Any, ...]]:
    """Every change the lake holds (the changes table and the raw layer), each once."""
    table = planted.lake.table(CHANGES_TABLE).scan().to_arrow()
    return sorted(set(normalized(table, without=None)) | set(normalized(raw_rows(planted), without=None)))


def snapshot_rows(planted: PlantedLake) -> pa.Table:
    lake = planted.lake
    keys = [key for key in lake.keys("demand/snapshots/") if key.endswith(".parquet")]
    return pa.concat_tables([pq.read_table(pa.BufferReader(planted.body(lake.bucket, key))) for key in keys])


def quarantine_lines(planted: PlantedLake) -> list[dict[str, Any]]:
    lake = planted.lake
    return [
        json.loads(line)
        for key in lake.keys("demand/quarantine/")
        for line in gzip.decompress(planted.body(lake.bucket, key)).splitlines()
    ]


def failure_records(planted: PlantedLake) -> list[dict[str, Any]]:
    records = []
    for bucket, key in planted.objects():
        if bucket == planted.failure_bucket:
            records.extend(json.loads(json.loads(planted.body(bucket, key))["payload"])["Records"])
    return records


def count_fan(rows: pa.Table, fan: str) -> int:
    return rows.filter(pa.compute.equal(rows.column("fan_id"), fan)).num_rows


def test_one_run_erases_the_fan_everywhere_and_keeps_every_other_row(planted: PlantedLake):
    lake = planted.lake
    # GIVEN the fan in every place (checked, so the search below could fail).
    changes_before = lake.table(CHANGES_TABLE).scan().to_arrow()
    state_before = lake.table(REGISTRATIONS_TABLE).scan().to_arrow()
    raw_before = raw_rows(planted)
    planted_rows = {
        "registration_changes": count_fan(changes_before, ERASED),
        "registrations": count_fan(state_before, ERASED),
        "raw_events": count_fan(raw_before, ERASED),
        "snapshots": count_fan(snapshot_rows(planted), ERASED),
        "quarantine": 2,
        "failures": 1,
        "exports": 2,
    }
    assert all(count > 0 for count in planted_rows.values()), planted_rows
    assert len(lake.table(CHANGES_TABLE).metadata.snapshots) >= 2
    before_search = find_bytes(planted, ERASED)
    assert any("/metadata/" in hit and hit.endswith(".avro") for hit in before_search), before_search
    assert any("/data/" in hit for hit in before_search)
    assert any("aws/lambda/" in hit for hit in before_search)
    assert f"s3://{lake.bucket}/{EXPORT_DATA}" in before_search
    assert any(hit.startswith(f"s3://{lake.bucket}/{EXPORT_REWRITTEN}?versionId=") for hit in before_search)
    old_snapshots = {
        name: [item.snapshot_id for item in lake.table(name).metadata.snapshots]
        for name in (CHANGES_TABLE, REGISTRATIONS_TABLE)
    }
    others = {
        "changes": digest([row for row in known_changes(planted) if row[2] != ERASED]),
        "snapshots": digest(normalized(snapshot_rows(planted))),
        "failures": len(failure_records(planted)) - 1,
    }
    # WHEN the request is filed and the curator runs once
    request = planted.file_request(ERASED)
    result = planted.curator().run()

    # THEN no byte of the fan's id is left anywhere, decoded every way
    assert find_bytes(planted, ERASED) == []
    assert result.erasure.requests_completed == [request.request_id]
    assert result.erasure.pending_since == {}  # nothing left for the deadline alarm
    assert result.erasure.rows_removed == planted_rows
    assert result.unreadable == []
    assert result.erasure.objects_unreadable == []
    # every other fan's rows are intact (the run also curated the raw rows not curated before)
    assert digest([row for row in known_changes(planted) if row[2] != ERASED]) == others["changes"]
    assert digest(normalized(snapshot_rows(planted))) == others["snapshots"]
    assert [line["line_number"] for line in quarantine_lines(planted) if "line_number" in line] == [9]
    assert len(failure_records(planted)) == others["failures"] == 5
    changes_after = lake.table(CHANGES_TABLE).scan().to_arrow()
    assert sorted(normalized(changes_after)) == sorted(
        row for row in normalized(planted.everything) if row[2] != ERASED
    )
    assert count_fan(changes_after, KEPT) == count_fan(planted.everything, KEPT) > 0
    expected_state = latest_state(planted.everything.filter(pa.compute.not_equal(planted.everything["fan_id"], ERASED)))
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == expected_state
    # time travel to before the erasure finds nothing: every older snapshot is gone (the run's curation after the
    # erasure made one more), and no kept one has the fan
    for name, ids in old_snapshots.items():
        table = lake.table(name)
        kept = table.metadata.snapshots
        assert {item.snapshot_id for item in kept}.isdisjoint(ids), name
        assert table.snapshot_as_of_timestamp(min(item.timestamp_ms for item in kept) - 1) is None
        for snapshot in kept:
            assert count_fan(table.scan(snapshot_id=snapshot.snapshot_id).to_arrow(), ERASED) == 0
    # the audit: counts per place, snapshots before and after, no fan id in clear; request and progress gone
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert dict(audit.rows_removed) == planted_rows
    assert audit.fan_id_hmacs == (fan_id_hmac(SALT, ERASED),)
    assert audit.snapshots[CHANGES_TABLE]["before"] == old_snapshots[CHANGES_TABLE][-1]
    assert audit.snapshots[CHANGES_TABLE]["after"] == lake.table(CHANGES_TABLE).current_snapshot().parent_snapshot_id
    assert lake.keys(REQUESTS_PREFIX) == []
    assert lake.keys(PROGRESS_PREFIX) == []
    assert lake.keys(AUDIT_PREFIX) == [request.audit_key]


def test_a_second_run_and_the_same_request_again_remove_nothing(planted: PlantedLake):
    planted.file_request(ERASED)
    planted.curator().run()
    objects = planted.objects()
    snapshots = {name: planted.lake.table(name).current_snapshot().snapshot_id for name in (CHANGES_TABLE,)}

    second = planted.curator().run()

    assert second.erasure.requests_completed == []
    assert second.erasure.rows_removed == {}
    assert planted.objects() == objects
    assert planted.lake.table(CHANGES_TABLE).current_snapshot().snapshot_id == snapshots[CHANGES_TABLE]

    again = planted.file_request(ERASED, token="0badc0df")
    third = planted.curator().run()

    assert third.erasure.requests_completed == [again.request_id]
    assert set(third.erasure.rows_removed.values()) == {0}
    audit = AuditRecord.from_json(planted.body(planted.lake.bucket, again.audit_key), again.audit_key)
    assert set(audit.rows_removed.values()) == {0}

    # No row moved: the same data files and objects; only the tables' metadata may be new (the history since the
    # first erasure is cut again).
    def lasting(found: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        return {place: etag for place, etag in found.items() if "/metadata/" not in place[1]}

    assert lasting(planted.objects()) == {**lasting(objects), (planted.lake.bucket, again.audit_key): ANY}


def test_a_malformed_request_is_reported_and_left_in_place(planted: PlantedLake):
    lake = planted.lake
    bad = f"{REQUESTS_PREFIX}20260331T230000Z-00000001.json"
    lake.s3.put_object(Bucket=lake.bucket, Key=bad, Body=b'{"fan_ids": "not a list"}')
    result = planted.curator().run()
    assert len(result.erasure.requests_malformed) == 1
    assert bad in result.erasure.requests_malformed[0]
    assert lake.keys(REQUESTS_PREFIX) == [bad]
    assert result.changes_added > 0  # the run curated as usual
    assert lake.raw_keys() != []
    assert all(key.startswith(PREFIX) for key in lake.raw_keys())


def test_an_unreadable_object_leaves_the_request_pending(planted: PlantedLake):
    lake = planted.lake
    broken = "demand/quarantine/dt=2026-03-30/broken.jsonl.gz"
    lake.s3.put_object(Bucket=lake.bucket, Key=broken, Body=b"not gzip")
    request = planted.file_request(ERASED)

    result = planted.curator().run()

    assert result.erasure.objects_unreadable == [broken]
    assert result.erasure.requests_completed == []
    assert lake.keys(REQUESTS_PREFIX) == [request.key]
    assert lake.keys(AUDIT_PREFIX) == []
    assert find_bytes(planted, ERASED) == [f"s3://{lake.bucket}/{request.key}"]  # only the request names the fan
    # the deadline alarm's input: the request's age, from its filing time on the lake's clock
    assert result.erasure.pending_since == {request.key: request.filed_at}
    assert result.erasure.oldest_pending_hours(request.filed_at + timedelta(days=26)) == 26 * 24


def test_a_lake_of_one_snapshot_and_a_long_fan_id_is_erased_too(lake: CuratedLake):
    # One snapshot per table and a UUID fan id (its Iceberg bounds are truncated, never the whole id): nothing but
    # the rows themselves says the tables hold the fan.
    rows = generated_rows(20, seed=31)
    fan = max(set(rows.column("fan_id").to_pylist()), key=rows.column("fan_id").to_pylist().count)
    planted = PlantedLake(lake, f"{lake.bucket}-failures", rows)
    lake.s3.create_bucket(Bucket=planted.failure_bucket)
    lake.write(rows)
    planted.curator().run()
    assert len(lake.table(CHANGES_TABLE).metadata.snapshots) == 1
    assert count_fan(lake.table(CHANGES_TABLE).scan().to_arrow(), fan) > 0

    planted.file_request(fan)
    result = planted.curator().run()

    assert result.erasure.rows_removed["registration_changes"] == count_fan(rows, fan)
    assert count_fan(lake.table(CHANGES_TABLE).scan().to_arrow(), fan) == 0
    assert count_fan(lake.table(REGISTRATIONS_TABLE).scan().to_arrow(), fan) == 0
    assert find_bytes(planted, fan) == []


def _files_holding(table: Any, fan: str) -> tuple[list[str], list[str]]:
    """The paths of ``table``'s data files, and of those holding ``fan``."""
    files = [task.file.file_path for task in table.scan().plan_files()]
    return files, [
        path for path in files if fan in pq.read_table(table.io.new_input(path).open())["fan_id"].to_pylist()
    ]


class _TalliedError(Exception):
    """The run stopped right after the erasure's tally was written."""


def _stop_after_the_tally(step: str) -> None:
    if step == "erasure tallied":
        raise _TalliedError(step)


@pytest.mark.parametrize("rerun", [False, True], ids=["one run", "a rerun after the tally"])
def test_files_without_the_fan_are_looked_at_by_their_fan_id_column_alone(
    lake: CuratedLake, monkeypatch: pytest.MonkeyPatch, rerun: bool
):
    # Three hours, three files: the fan is in one. Every file's fan_id column is read; only the fans' files are read
    # whole, in both tables, by a run and by a rerun that reads the tally back instead of making it.
    hours = [HOUR + timedelta(hours=offset) for offset in range(3)]
    tables = [generated_rows(40, hour=hour, seed=60 + index) for index, hour in enumerate(hours)]
    middle = tables[1].column("fan_id").to_pylist()
    others = {fan for table in (tables[0], tables[2]) for fan in table.column("fan_id").to_pylist()}
    fan = next(fan for fan in middle if fan not in others)
    planted = PlantedLake(lake, f"{lake.bucket}-failures", pa.concat_tables(tables))
    lake.s3.create_bucket(Bucket=planted.failure_bucket)
    for table, hour in zip(tables, hours, strict=True):
        lake.write(table, hour)
    planted.curator().run()
    files, holding = _files_holding(lake.table(CHANGES_TABLE), fan)
    _, holding_state = _files_holding(lake.table(REGISTRATIONS_TABLE), fan)
    assert len(files) == 3
    assert len(holding) == 1
    assert len(holding_state) == 1
    planted.file_request(fan)
    if rerun:
        with pytest.raises(_TalliedError):
            planted.curator(checkpoint=_stop_after_the_tally).run()
    reads: dict[str, list[tuple[str, tuple[str, ...] | None]]] = {CHANGES_TABLE: [], REGISTRATIONS_TABLE: []}
    real = erasure_tables.read_files

    def spied(table: Any, files: Any, columns: Any = None) -> pa.Table:
        reads[table.name()[-1]].extend((item.file_path, tuple(columns) if columns else None) for item in files)
        return real(table, files, columns)

    monkeypatch.setattr(erasure_tables, "read_files", spied)
    result = planted.curator().run()

    assert result.erasure.rows_removed[CHANGES_TABLE] == middle.count(fan)
    assert count_fan(lake.table(CHANGES_TABLE).scan().to_arrow(), fan) == 0
    whole = {name: [path for path, columns in found if columns is None] for name, found in reads.items()}
    assert whole == {CHANGES_TABLE: holding, REGISTRATIONS_TABLE: holding_state}, "only the fan's files read whole"
    looked = {path for path, columns in reads[CHANGES_TABLE] if columns == ("fan_id",)}
    assert looked == set(files), "every file of the table is looked at by its fan_id column"
    assert find_bytes(planted, fan) == []


def test_old_versions_deleted_before_the_request_are_purged_when_they_hold_the_fan_and_kept_when_not(
    planted: PlantedLake,
):
    lake = planted.lake
    # GIVEN raw objects the curator deleted after the grace period, one without the fan, and failed batches a
    # replay deleted: on versioned buckets only their noncurrent versions are left.
    holding_keys = lake.raw_keys()  # the planted ones: each holds the fan
    other_key = lake.write(generated_rows(9, seed=15))
    planted.curator().run()
    lake.clock.advance(minutes=20)
    planted.curator().run()
    assert lake.raw_keys() == []
    failures = planted.failure_bucket
    for key, fans in (("aws/lambda/replayed/erased", ((ERASED, 31),)), ("aws/lambda/replayed/kept", ((KEPT, 32),))):
        lake.s3.put_object(Bucket=failures, Key=key, Body=failed_batch(*fans))
        lake.s3.delete_object(Bucket=failures, Key=key)
    before = find_bytes(planted, ERASED)
    for key in [*holding_keys, "aws/lambda/replayed/erased"]:
        assert any(f"/{key}?versionId=" in hit for hit in before), key
    assert not any(other_key in hit for hit in before)
    other_versions = planted.version_ids(lake.bucket, other_key)
    kept_versions = planted.version_ids(failures, "aws/lambda/replayed/kept")
    assert sorted(other_versions.values()) == sorted(kept_versions.values()) == [False, True]  # version and marker

    # WHEN the request is carried out
    request = planted.file_request(ERASED)
    result = planted.curator().run()

    # THEN no version anywhere holds the fan; nothing is left of the keys that held it (version nor marker), and
    # the other fans' old versions are kept, under their markers (nothing reads as current again)
    assert find_bytes(planted, ERASED) == []
    assert result.erasure.requests_completed == [request.request_id]
    for key in holding_keys:
        assert planted.version_ids(lake.bucket, key) == {}, key
    assert planted.version_ids(failures, "aws/lambda/replayed/erased") == {}
    assert planted.version_ids(lake.bucket, other_key) == other_versions
    assert planted.version_ids(failures, "aws/lambda/replayed/kept") == kept_versions
    assert lake.raw_keys() == []
    # the audit counts them: the raw objects deleted before, the replayed batch and the planted one rewritten, and
    # the tables' deleted files (the history the erasure cut, and what retention had deleted)
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert audit.versions_purged["raw_events"] == len(holding_keys)
    assert audit.versions_purged["failures"] == 2
    assert audit.versions_purged["registration_changes"] > 0
    assert audit.versions_purged["registrations"] > 0
    assert result.erasure.versions_purged == dict(audit.versions_purged)
    # the request itself, which named the fan in clear, left no version behind
    assert planted.version_ids(lake.bucket, request.key) == {}


def test_an_old_version_of_an_audited_request_is_purged_when_the_requests_are_listed(lake: CuratedLake):
    # A request deleted by a plain delete (by hand, or by an earlier version of the curator) on the versioned bucket:
    # its old version still names the fan in clear. The next run with erasure on purges it, version and marker.
    planted = PlantedLake(lake, f"{lake.bucket}-failures", generated_rows(4))
    lake.s3.create_bucket(Bucket=planted.failure_bucket)
    versioned(lake.s3, lake.bucket, planted.failure_bucket)
    request = planted.file_request(ERASED)
    audit = AuditRecord.of(request, SALT, lake.clock(), {}, {})
    lake.s3.put_object(Bucket=lake.bucket, Key=audit.key, Body=audit.to_json())
    lake.s3.delete_object(Bucket=lake.bucket, Key=request.key)
    pending = planted.file_request("someone-else", token="0badc0df")  # no audit: its versions are not touched
    lake.s3.delete_object(Bucket=lake.bucket, Key=pending.key)
    assert sorted(planted.version_ids(lake.bucket, request.key).values()) == [False, True]

    result = planted.curator().run()

    assert result.erasure.requests_completed == []
    assert planted.version_ids(lake.bucket, request.key) == {}
    assert sorted(planted.version_ids(lake.bucket, pending.key).values()) == [False, True]
    assert find_bytes(planted, ERASED) == []


def export_lines(planted: PlantedLake, key: str, version_id: str | None = None) -> list[bytes]:
    return gzip.decompress(planted.body(planted.lake.bucket, key, version_id)).splitlines(keepends=True)


def test_export_data_files_keep_their_names_and_other_fans_lines_and_a_backfill_rerun_adds_nothing(
    planted: PlantedLake,
):
    lake = planted.lake
    # GIVEN the export back-filled (its data file's lines are snapshot rows or quarantined), as make backfill does
    settings = SnapshotSettings(output_bucket=lake.bucket, source_table_name="prd3292-dev1-us-east-1-demand-table")
    lines_before = export_lines(planted, EXPORT_DATA)
    event = {
        "export_bucket": lake.bucket,
        "data_key": EXPORT_DATA,
        "export_time": "2026-03-31T23:00:00Z",
        "item_count": len(lines_before),  # the manifest's itemCount
    }
    first = backfill_file(ExportFile.from_event(event), settings, lake.s3)
    assert (first.items, first.rows + first.quarantined, first.already_done) == (5, 5, False)
    manifest = planted.body(lake.bucket, EXPORT_MANIFEST)
    untouched = planted.version_ids(lake.bucket, EXPORT_REWRITTEN)
    current_untouched = export_lines(planted, EXPORT_REWRITTEN)
    assert len(untouched) == 2  # the current version (another fan) and the old one holding the fan

    # WHEN the fan is erased
    request = planted.file_request(ERASED)
    result = planted.curator().run()

    # THEN the data file is rewritten in place: the same key, every other fan's line byte-identical and in order,
    # the fan's lines gone, and no older version left; the manifest is as it was
    assert result.erasure.requests_completed == [request.request_id]
    kept = [line for line in lines_before if f'"FAN#{ERASED}"'.encode() not in line]
    assert len(kept) == 3
    assert [json.loads(line)["Item"]["sk"]["S"] for line in kept] == [f"FAN#{KEPT}", "FAN#f-1", "FAN#f-2"]
    assert export_lines(planted, EXPORT_DATA) == kept
    assert len(planted.version_ids(lake.bucket, EXPORT_DATA)) == 1
    assert planted.body(lake.bucket, EXPORT_MANIFEST) == manifest
    # the data file that no longer held the fan keeps its current version; only its old version is purged
    after = planted.version_ids(lake.bucket, EXPORT_REWRITTEN)
    assert len(after) == 1
    assert set(after) < set(untouched)
    assert export_lines(planted, EXPORT_REWRITTEN) == current_untouched
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert audit.rows_removed["exports"] == 2
    assert audit.versions_purged["exports"] == 2  # the rewritten file's old bytes and the other file's old version
    assert find_bytes(planted, ERASED) == []

    # AND a re-run of the backfill over the same export (the manifest's itemCount) says the file is done and
    # adds nothing: it reads the counts object, not the rewritten data file
    snapshots = {key: etag for (bucket, key), etag in planted.objects().items() if key.startswith("demand/")}
    again = backfill_file(ExportFile.from_event(event), settings, lake.s3)
    assert (again.items, again.rows + again.quarantined, again.already_done) == (5, 5, True)
    assert {key: etag for (bucket, key), etag in planted.objects().items() if key.startswith("demand/")} == snapshots


def test_an_overwrite_is_conditional_on_the_etag_read_and_keeps_the_old_bytes_as_a_version(lake: CuratedLake):
    versioned(lake.s3, lake.bucket)
    key = "demand/exports/x/AWSDynamoDB/01700000000000-abcdef12/data/a.json.gz"
    store = S3Store(lake.bucket, client=lake.s3)
    store.create(key, b"first")
    _, first = store.get(key)

    assert store.overwrite(key, b"second", first.etag) is True
    assert store.overwrite(key, b"third", first.etag) is False  # replaced since read: left as it is
    assert store.overwrite("demand/exports/x/gone.json.gz", b"x", first.etag) is False  # never created by it

    assert store.get(key)[0] == b"second"
    assert sorted(store.get_version(key, item.version_id) for item in store.versions(key)) == [b"first", b"second"]


def _two_hours_with_the_fan(lake: CuratedLake, seed: int) -> tuple[PlantedLake, list[pa.Table]]:
    """Two hours of 30 changes each, the first fan of each hour renamed the erased fan, written and curated."""
    hours = [HOUR, HOUR + timedelta(hours=1)]
    tables = [generated_rows(30, hour=hour, seed=seed + index) for index, hour in enumerate(hours)]
    tables = [with_fans(table, {table.column("fan_id")[0].as_py(): ERASED}) for table in tables]
    planted = PlantedLake(lake, f"{lake.bucket}-failures", pa.concat_tables(tables))
    lake.s3.create_bucket(Bucket=planted.failure_bucket)
    for table, hour in zip(tables, hours, strict=True):
        lake.write(table, hour)
    planted.curator().run()
    return planted, tables


class _ShareCommittedError(Exception):
    """The run stopped right after it committed its share of an erasure, before curating."""


def _stop_after_the_share(step: str) -> None:
    if step == "erasure share committed":
        raise _ShareCommittedError(step)


def test_a_request_past_one_runs_share_goes_on_run_after_run_and_curation_never_waits(lake: CuratedLake):
    # Two hours, the fan in each hour's file; a run may rewrite one file (one row's budget: the first file of a
    # run always fits). Every run before the last commits its file, leaves the request pending and curates the
    # rows written since; the last completes the request, audited with the tally made before the first. The first
    # run crashes right after its share is committed (before it curates): the next run curates both runs' rows
    # and goes on from the files left (a first run that does not crash is one more run like the others).
    planted, tables = _two_hours_with_the_fan(lake, seed=70)
    changes_holding = _files_holding(lake.table(CHANGES_TABLE), ERASED)[1]
    state_holding = _files_holding(lake.table(REGISTRATIONS_TABLE), ERASED)[1]
    assert len(changes_holding) == 2
    assert len(state_holding) >= 1
    planted_rows = {
        CHANGES_TABLE: count_fan(lake.table(CHANGES_TABLE).scan().to_arrow(), ERASED),
        REGISTRATIONS_TABLE: count_fan(lake.table(REGISTRATIONS_TABLE).scan().to_arrow(), ERASED),
    }
    assert planted_rows[CHANGES_TABLE] >= 2
    request = planted.file_request(ERASED)
    # the look done in the first run (a share of its own, below)
    settings = dataclasses.replace(planted.settings, erasure_rows_per_run=1, erasure_look_rows_per_run=10**6)
    runs = len(changes_holding) + len(state_holding)
    written = [pa.concat_tables(tables)]
    left, holding = [], []
    uncurated = 0
    for run in range(runs):
        lake.clock.advance(minutes=15)
        fresh = generated_rows(6 + run, hour=HOUR + timedelta(hours=2), seed=80 + run)  # a name of its own
        assert ERASED not in fresh.column("fan_id").to_pylist()
        lake.write(fresh, HOUR + timedelta(hours=2))
        written.append(fresh)
        uncurated += fresh.num_rows
        if run == 0:
            with pytest.raises(_ShareCommittedError):
                planted.curator(settings=settings, checkpoint=_stop_after_the_share).run()
            holding.append(len(_files_holding(lake.table(CHANGES_TABLE), ERASED)[1]))
            continue

        result = planted.curator(settings=settings).run()

        assert result.changes_added == uncurated, "the run curated as usual"
        uncurated = 0
        if run == runs - 1:
            break
        left.append(result.erasure.data_files_left)
        holding.append(len(_files_holding(lake.table(CHANGES_TABLE), ERASED)[1]))
        assert result.erasure.requests_completed == []
        assert result.erasure.pending_since == {request.key: request.filed_at}
        assert lake.keys(REQUESTS_PREFIX) == [request.key]
        assert lake.keys(AUDIT_PREFIX) == []

    assert left == list(range(runs - 2, 0, -1)), "one file a run"
    assert holding[0] == 1, "registration_changes first"
    assert result.erasure.requests_completed == [request.request_id]
    assert result.erasure.data_files_left == 0
    assert {name: result.erasure.rows_removed[name] for name in planted_rows} == planted_rows
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert {name: audit.rows_removed[name] for name in planted_rows} == planted_rows
    assert find_bytes(planted, ERASED) == []
    everything = pa.concat_tables(written)
    assert sorted(normalized(lake.table(CHANGES_TABLE).scan().to_arrow())) == sorted(
        row for row in normalized(everything) if row[2] != ERASED
    )
    expected_state = latest_state(everything.filter(pa.compute.not_equal(everything["fan_id"], ERASED)))
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == expected_state


def test_a_look_past_one_runs_share_goes_on_run_after_run_and_rewrites_nothing_before_it_is_done(lake: CuratedLake):
    # Two hours, the fan in each hour's file; a run may look at 40 rows of files (the first file always fits).
    # Until the look is done a run rewrites nothing: it keeps what it found (paths and counts, no fan id) and
    # curates as usual, so the fan's row curated by the first run, in a file of its own, is found too. The run
    # that finishes the look tallies, rewrites and audits what the tables held then.
    planted, tables = _two_hours_with_the_fan(lake, seed=90)
    holding_before = _files_holding(lake.table(CHANGES_TABLE), ERASED)[1]
    assert len(holding_before) == 2
    later = HOUR + timedelta(hours=2)
    fresh = generated_rows(5, hour=later, seed=99)
    fresh = with_fans(fresh, {fresh.column("fan_id")[0].as_py(): ERASED})
    lake.write(fresh, later)  # curated by the first run below, after its erasure step
    request = planted.file_request(ERASED)
    settings = dataclasses.replace(planted.settings, erasure_look_rows_per_run=40)

    first = planted.curator(settings=settings).run()

    assert first.erasure.requests_completed == []
    assert first.erasure.data_files_left > 0
    assert first.changes_added == fresh.num_rows
    assert set(holding_before) < set(_files_holding(lake.table(CHANGES_TABLE), ERASED)[1]), "nothing rewritten"
    kept = lake.keys(LOOK_PREFIX)
    assert len(kept) == 1
    assert ERASED.encode() not in planted.body(lake.bucket, kept[0])
    held = {
        CHANGES_TABLE: count_fan(lake.table(CHANGES_TABLE).scan().to_arrow(), ERASED),
        REGISTRATIONS_TABLE: count_fan(lake.table(REGISTRATIONS_TABLE).scan().to_arrow(), ERASED),
    }
    assert held[CHANGES_TABLE] == count_fan(pa.concat_tables([*tables, fresh]), ERASED)
    runs = 1
    result = first
    while not result.erasure.requests_completed and runs < 8:
        lake.clock.advance(minutes=15)
        result = planted.curator(settings=settings).run()
        runs += 1
        assert len(lake.keys(LOOK_PREFIX)) <= 1

    assert result.erasure.requests_completed == [request.request_id]
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert {name: audit.rows_removed[name] for name in held} == held
    assert lake.keys(LOOK_PREFIX) == []
    assert find_bytes(planted, ERASED) == []
    everything = pa.concat_tables([*tables, fresh])
    assert sorted(normalized(lake.table(CHANGES_TABLE).scan().to_arrow())) == sorted(
        row for row in normalized(everything) if row[2] != ERASED
    )


def test_a_request_filed_while_another_goes_on_starts_a_new_look_and_both_are_audited_with_their_own_rows(
    lake: CuratedLake,
):
    # The first request's erasure goes on over runs (a rewrite of one file a run); a second request, for another
    # fan, is filed after its first run. The look starts over for both (another set of requests), the first
    # request's tally is read back, the second's is made when the new look is done, and both complete together.
    planted, tables = _two_hours_with_the_fan(lake, seed=110)
    other = next(fan for fan in reversed(tables[0].column("fan_id").to_pylist()) if fan != ERASED)
    fans = (ERASED, other)
    held = {
        fan: {name: count_fan(lake.table(name).scan().to_arrow(), fan) for name in (CHANGES_TABLE, REGISTRATIONS_TABLE)}
        for fan in fans
    }
    # one hour's file of registration_changes (30 rows) and a few of registrations a run
    settings = dataclasses.replace(planted.settings, erasure_rows_per_run=31, erasure_look_rows_per_run=10**6)
    first = planted.file_request(ERASED)
    result = planted.curator(settings=settings).run()
    assert result.erasure.data_files_left > 0
    looks = lake.keys(LOOK_PREFIX)
    assert len(looks) == 1
    second = planted.file_request(other, token="0badc0df")

    runs = 1
    while not result.erasure.requests_completed and runs < 12:
        lake.clock.advance(minutes=15)
        result = planted.curator(settings=settings).run()
        runs += 1
        kept = lake.keys(LOOK_PREFIX)
        assert len(kept) <= 1
        assert set(kept).isdisjoint(looks), "the first request's look is dropped: the new one is for both"

    assert sorted(result.erasure.requests_completed) == sorted([first.request_id, second.request_id])
    for request, fan in ((first, ERASED), (second, other)):
        audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
        assert {name: audit.rows_removed[name] for name in held[fan]} == held[fan], fan
        assert find_bytes(planted, fan) == []
    assert lake.keys(LOOK_PREFIX) == []
    everything = pa.concat_tables(tables)
    assert sorted(normalized(lake.table(CHANGES_TABLE).scan().to_arrow())) == sorted(
        row for row in normalized(everything) if row[2] not in fans
    )
