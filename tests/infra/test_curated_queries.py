"""The named queries over the curated tables, run in DuckDB on tables the curator wrote on the local AWS.

Raw objects are written as the stream handler writes them (rows from its decoder, duplicate deliveries
included); the curator (``curator.curation.Curator``) curates them into ``registration_changes`` and
``registrations`` through the Glue catalog of the local moto server; each query is the SQL the workgroup holds,
run by ``sandbox.athena_duckdb`` (Iceberg references read through pyiceberg scans, ``FOR TIMESTAMP AS OF`` as a
snapshot scan as of that moment). Answers are checked against a brute-force replay of every change.

Timeline: batch A (three to one hours ago) curated by run 1, batch B (the last hour) curated by run 2, batch C
(the last minutes) not yet curated. C holds a late change older than a removal B curated, a change to a key B
left, a removal of a key A inserted, and new registrations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components.catalog import CHANGES_TABLE, REGISTRATIONS_TABLE, named_queries
from components.current_state import state_columns
from curator.catalog import glue_catalog
from curator.curation import Curator, CuratorSettings
from curator.store import S3Store
from curator.tables import CHANGES_TABLE as CURATOR_CHANGES_TABLE
from curator.tables import REGISTRATIONS_TABLE as CURATOR_REGISTRATIONS_TABLE
from pipeline.change_order import newer_order_key
from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from pipeline.writer import encode_parquet, partition_prefix
from sandbox.athena_duckdb import AthenaOnDuckDB, TimeTravelError
from sandbox.changes import Change, DemandGenerator, changes_event, item_key
from sandbox.server import MotoProcess

# one worker runs the whole module, so its module fixture runs once (make unit: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("curated_queries")

REGION = "us-east-1"
PREFIX = "demand/events/"
RAW_TABLE = "demand_changes"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
Key = tuple[str, str]


def test_the_curated_table_names_are_the_curators() -> None:
    assert (CHANGES_TABLE, REGISTRATIONS_TABLE) == (CURATOR_CHANGES_TABLE, CURATOR_REGISTRATIONS_TABLE)


@dataclasses.dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Timeline:
    """What the lake went through, and the runner holding its tables."""

    database: str
    batches: dict[str, pa.Table]
    cases: dict[str, Key]
    snapshots: dict[str, Any]
    lake: Any
    raw_rows: pa.Table
    curated: dict[str, Any]

    def runner(self, now: datetime = NOW) -> AthenaOnDuckDB:
        runner = AthenaOnDuckDB(now=now)
        runner.add_rows(self.database, RAW_TABLE, self.raw_rows)
        for name, table in self.curated.items():
            runner.add_iceberg(self.database, name, table)
        return runner

    def sql(self, name: str, window_days: int = 7) -> str:
        return {query.name: query.sql for query in named_queries(self.database, RAW_TABLE, window_days=window_days)}[
            name
        ]


def _decoded(changes: list[Change], first_sequence: int, shard: str) -> pa.Table:
    """The stream handler's rows for ``changes``, a tenth of them delivered a second time (higher sequence)."""
    duplicated = changes + changes[::10]
    event = changes_event(duplicated, table_name="demand-table", shard_id=shard, first_sequence=first_sequence)
    decoded = decode_batch(parse_kinesis_records(event), "MILLISECOND")
    assert not decoded.quarantined
    return decoded.rows


def _write_raw(s3: Any, bucket: str, rows: pa.Table) -> None:
    """One object per hour partition, named per the object-key contract, created write-once."""
    hours = pc.floor_temporal(rows.column("change_time"), unit="hour")
    for hour in pc.unique(hours).to_pylist():
        part = rows.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
        sequences = sorted(int(value) for value in part.column("sequence_number").to_pylist())
        digest = hashlib.sha256("\n".join(map(str, sequences)).encode()).hexdigest()[:12]
        shard = part.column("shard_id")[0].as_py()
        key = partition_prefix(PREFIX, hour) + f"0a1b2c3d-{shard}-{sequences[0]}-{digest}.parquet"
        s3.put_object(Bucket=bucket, Key=key, Body=encode_parquet(part), IfNoneMatch="*")


def _raw_table(s3: Any, bucket: str) -> pa.Table:
    """The raw table as Athena sees it: every object still under the prefix, with dt and hour from its key."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
    tables = []
    for item in (item for page in pages for item in page.get("Contents", [])):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        rows = pq.read_table(pa.BufferReader(body))
        dt, hour = (part.split("=")[1] for part in item["Key"][len(PREFIX) :].split("/")[:2])
        rows = rows.append_column("dt", pa.array([dt] * rows.num_rows, pa.string()))
        tables.append(rows.append_column("hour", pa.array([hour] * rows.num_rows, pa.string())))
    return pa.concat_tables(tables)


def _changes() -> tuple[dict[str, list[Change]], dict[str, Key]]:
    generator = DemandGenerator(seed=11, events=4, start=NOW - timedelta(hours=3))
    spread = list(generator.changes(700))
    batches: dict[str, list[Change]] = {"A": [], "B": [], "C": []}
    windows = {
        "A": (NOW - timedelta(hours=3), timedelta(hours=2)),
        "B": (NOW - timedelta(minutes=55), timedelta(minutes=50)),
        "C": (NOW - timedelta(minutes=4), timedelta(minutes=3)),
    }
    counts = {"A": 400, "B": 200, "C": 100}
    position = 0
    for name, count in counts.items():
        start, length = windows[name]
        for index, change in enumerate(spread[position : position + count]):
            batches[name].append(dataclasses.replace(change, time=start + length * index / count))
        position += count
    cases: dict[str, Key] = {}

    def item(at: datetime) -> dict[str, Any]:
        return generator.new_item(at)

    revived = item(NOW - timedelta(hours=2))  # inserted in A, removed in B, a late MODIFY older than it in C
    cases["late change older than a curated removal"] = (revived["pk"], revived["sk"])
    batches["A"].append(Change("INSERT", item_key(revived), revived, None, NOW - timedelta(hours=2)))
    batches["B"].append(Change("REMOVE", item_key(revived), None, revived, NOW - timedelta(minutes=10)))
    late = dict(revived, status="SELECTED")
    batches["C"].append(Change("MODIFY", item_key(late), late, revived, NOW - timedelta(minutes=20)))
    changed = item(NOW - timedelta(minutes=30))  # inserted in B, selected in C
    cases["changed since the last run"] = (changed["pk"], changed["sk"])
    batches["B"].append(Change("INSERT", item_key(changed), changed, None, NOW - timedelta(minutes=30)))
    selected = dict(changed, status="SELECTED", quantity=8)
    batches["C"].append(Change("MODIFY", item_key(selected), selected, changed, NOW - timedelta(minutes=2)))
    gone = item(NOW - timedelta(hours=2, minutes=30))  # inserted in A, removed in C
    cases["removed since the last run"] = (gone["pk"], gone["sk"])
    batches["A"].append(Change("INSERT", item_key(gone), gone, None, NOW - timedelta(hours=2, minutes=30)))
    batches["C"].append(Change("REMOVE", item_key(gone), None, gone, NOW - timedelta(minutes=1)))
    return batches, cases


@pytest.fixture(scope="module")
def aws_server() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


@pytest.fixture(scope="module")
def timeline(aws_server: MotoProcess) -> Timeline:
    options: dict[str, Any] = {
        "endpoint_url": aws_server.endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3 = boto3.client("s3", **options)
    suffix = uuid.uuid4().hex[:12]
    bucket, database = f"curated-{suffix}", f"curated_{suffix}"
    s3.create_bucket(Bucket=bucket)
    catalog = glue_catalog(
        REGION, endpoint_url=aws_server.endpoint_url, access_key_id="testing", secret_access_key="testing"
    )
    clock = Clock(NOW - timedelta(minutes=58))
    curator = Curator(
        catalog=catalog,
        store=S3Store(bucket, client=s3),
        settings=CuratorSettings(bucket=bucket, raw_prefix=PREFIX, database=database),
        clock=clock,
    )
    changes, cases = _changes()
    batches = {
        name: _decoded(
            sorted(batch, key=lambda change: change.time), 10**20 * (index + 1), f"shardId-00000000000{index}"
        )
        for index, (name, batch) in enumerate(changes.items())
    }
    snapshots: dict[str, Any] = {}
    _write_raw(s3, bucket, batches["A"])
    first = curator.run()
    assert first.conflict is None
    tables = {name: catalog.load_table((database, name)) for name in (CHANGES_TABLE, REGISTRATIONS_TABLE)}
    snapshots["run 1"] = {name: table.current_snapshot() for name, table in tables.items()}
    _write_raw(s3, bucket, batches["B"])
    clock.now = NOW - timedelta(minutes=5)  # batch A's objects are past the grace period: deleted by run 2
    second = curator.run()
    assert second.conflict is None
    assert second.raw_deleted > 0
    _write_raw(s3, bucket, batches["C"])
    tables = {name: catalog.load_table((database, name)) for name in (CHANGES_TABLE, REGISTRATIONS_TABLE)}
    snapshots["run 2"] = {name: table.current_snapshot() for name, table in tables.items()}
    return Timeline(database, batches, cases, snapshots, catalog, _raw_table(s3, bucket), tables)


def _latest(changes: pa.Table) -> dict[Key, dict[str, Any]]:
    """Brute force: per (event, fan), the newest change by the contract's order; removed keys absent."""
    best: dict[Key, dict[str, Any]] = {}
    for row in changes.to_pylist():
        key = (row["event_id"], row["fan_id"])
        if key not in best or newer_order_key(row) > newer_order_key(best[key]):
            best[key] = row
    return {key: row for key, row in best.items() if row["op"] != "REMOVE"}


def _state(rows: list[dict[str, Any]]) -> dict[Key, tuple[Any, ...]]:
    state = {
        (row["event_id"], row["fan_id"]): (row["status"], row["quantity"], row["last_change_time"]) for row in rows
    }
    assert len(state) == len(rows), "a registration listed twice"
    return state


def _expected_state(*batches: pa.Table) -> dict[Key, tuple[Any, ...]]:
    latest = _latest(pa.concat_tables(batches))
    return {key: (row["status"], row["quantity"], row["change_time"]) for key, row in latest.items()}


def _fan(key: Key) -> Key:
    return (key[0].removeprefix("EVENT#"), key[1].removeprefix("FAN#"))


def test_current_registrations_reads_the_registrations_table(timeline: Timeline) -> None:
    runner = timeline.runner()
    rows = runner.rows(timeline.sql("current_registrations"))
    assert _state(rows) == _expected_state(timeline.batches["A"], timeline.batches["B"])
    assert list(rows[0]) == [*state_columns(), "last_change_time"]
    assert [(row["event_id"], row["fan_id"]) for row in rows] == sorted(
        (row["event_id"], row["fan_id"]) for row in rows
    )
    assert runner.snapshots_read == {
        (timeline.database, REGISTRATIONS_TABLE): [timeline.snapshots["run 2"][REGISTRATIONS_TABLE].snapshot_id]
    }
    assert _fan(timeline.cases["late change older than a curated removal"]) not in _state(rows)
    assert _state(rows)[_fan(timeline.cases["changed since the last run"])][0] == "REGISTERED"


def test_registrations_as_of_reads_the_snapshot_of_that_moment(timeline: Timeline) -> None:
    first, second = (timeline.snapshots[run][REGISTRATIONS_TABLE] for run in ("run 1", "run 2"))
    between = datetime.fromtimestamp((first.timestamp_ms + second.timestamp_ms) / 2000, UTC)
    sql = timeline.sql("registrations_as_of")
    # As deployed: the state a day ago; here "now" is a day after a moment between the two runs.
    runner = timeline.runner(now=between + timedelta(days=1))
    as_of_first = _state(runner.rows(sql))
    assert runner.snapshots_read == {(timeline.database, REGISTRATIONS_TABLE): [first.snapshot_id]}
    assert as_of_first == _expected_state(timeline.batches["A"])
    assert _fan(timeline.cases["late change older than a curated removal"]) in as_of_first  # removed only in B
    # As an analyst edits it: a literal moment, as the comment in the query shows.
    assert "(current_timestamp - INTERVAL '1' DAY)" in sql
    for moment, snapshot, batches in (
        (between, first, ("A",)),
        (datetime.fromtimestamp(second.timestamp_ms / 1000 + 1, UTC), second, ("A", "B")),
    ):
        edited = sql.replace("(current_timestamp - INTERVAL '1' DAY)", f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S.%f} UTC'")
        runner = timeline.runner()
        assert _state(runner.rows(edited)) == _expected_state(*(timeline.batches[name] for name in batches))
        assert runner.snapshots_read == {(timeline.database, REGISTRATIONS_TABLE): [snapshot.snapshot_id]}
    before = sql.replace("(current_timestamp - INTERVAL '1' DAY)", "TIMESTAMP '2020-01-01 00:00:00 UTC'")
    with pytest.raises(TimeTravelError, match="no snapshot as of 2020-01-01T00:00:00"):
        timeline.runner().rows(before)


def test_changes_not_yet_curated_are_batch_c_each_once(timeline: Timeline) -> None:
    raw_ids = set(timeline.raw_rows.column("change_id").to_pylist())
    batch_b = set(timeline.batches["B"].column("change_id").to_pylist())
    batch_c = timeline.batches["C"]
    assert batch_b <= raw_ids, "batch B's objects are curated but still within the grace period"
    assert not set(timeline.batches["A"].column("change_id").to_pylist()) & raw_ids, "batch A's were deleted"
    rows = timeline.runner().rows(timeline.sql("changes_not_yet_curated"))
    assert sorted(row["change_id"] for row in rows) == sorted(set(batch_c.column("change_id").to_pylist()))
    lowest: dict[str, str] = {}
    for row in batch_c.to_pylist():
        lowest[row["change_id"]] = min(lowest.get(row["change_id"], row["sequence_number"]), row["sequence_number"])
    assert {row["change_id"]: row["sequence_number"] for row in rows} == lowest, "the copy the curator keeps"
    assert [row["change_time"] for row in rows] == sorted(row["change_time"] for row in rows)


def test_current_registrations_to_the_minute_applies_the_changes_not_yet_curated(timeline: Timeline) -> None:
    rows = timeline.runner().rows(timeline.sql("current_registrations_to_the_minute"))
    found = _state(rows)
    expected = _expected_state(*timeline.batches.values())
    assert found.keys() == expected.keys()
    for key, (status, quantity, change_time) in expected.items():
        assert found[key][:2] == (status, quantity), key
        assert found[key][2] == change_time, key
    assert _fan(timeline.cases["late change older than a curated removal"]) not in found
    assert found[_fan(timeline.cases["changed since the last run"])][:2] == ("SELECTED", 8)
    assert _fan(timeline.cases["removed since the last run"]) not in found
    assert [(row["event_id"], row["fan_id"]) for row in rows] == sorted(found)


def test_demand_per_event_per_day_reads_the_curated_log(timeline: Timeline) -> None:
    curated = pa.concat_tables([timeline.batches["A"], timeline.batches["B"]])
    unique: dict[str, dict[str, Any]] = {}
    for row in curated.to_pylist():
        unique.setdefault(row["change_id"], row)
    last_of_day: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in unique.values():
        key = (row["change_time"].strftime("%Y-%m-%d"), row["event_id"], row["fan_id"])
        if key not in last_of_day or newer_order_key(row) > newer_order_key(last_of_day[key]):
            last_of_day[key] = row
    expected: dict[tuple[str, str, str], list[int]] = {}
    for (day, event, _), row in last_of_day.items():
        if row["op"] != "REMOVE":
            totals = expected.setdefault((day, event, row["status"]), [0, 0])
            totals[0] += 1
            totals[1] += row["quantity"]
    rows = timeline.runner().rows(timeline.sql("demand_per_event_per_day"))
    found = {(row["dt"], row["event_id"], row["status"]): [row["fans"], row["tickets"]] for row in rows}
    assert found == expected
    assert len(found) >= 8
    # A window of one day reads today's hours only: every change here is from today (UTC).
    assert timeline.runner().rows(timeline.sql("demand_per_event_per_day", window_days=1)) == rows
    assert timeline.runner(now=NOW + timedelta(days=1)).rows(timeline.sql("demand_per_event_per_day", 1)) == []


def test_pipeline_freshness_says_how_fresh_each_table_is(timeline: Timeline) -> None:
    rows = timeline.runner().rows(timeline.sql("pipeline_freshness"))
    by_table = {row["table_name"]: row for row in rows}
    assert [row["table_name"] for row in rows] == [RAW_TABLE, CHANGES_TABLE, REGISTRATIONS_TABLE]
    raw, changes, state = by_table[RAW_TABLE], by_table[CHANGES_TABLE], by_table[REGISTRATIONS_TABLE]
    in_raw = timeline.raw_rows
    newest_raw = pc.max(in_raw.column("change_time")).as_py()
    assert raw["layer"] == "raw"
    assert raw["newest_change_time"] == newest_raw
    assert raw["lag_seconds"] == int((NOW - newest_raw).total_seconds())
    hour_ago = NOW - timedelta(hours=1)
    assert raw["changes_last_hour"] == len(
        {row["change_id"] for row in in_raw.to_pylist() if row["change_time"] >= hour_ago}
    )
    assert raw["changes_last_hour"] < in_raw.num_rows, "duplicate deliveries are counted once"
    assert raw["last_commit_time"] is None
    curated = pa.concat_tables([timeline.batches["A"], timeline.batches["B"]]).to_pylist()
    newest_curated = max(row["change_time"] for row in curated)
    assert changes["newest_change_time"] == newest_curated
    assert changes["lag_seconds"] == int((NOW - newest_curated).total_seconds())
    assert changes["changes_last_hour"] == len({row["change_id"] for row in curated if row["change_time"] >= hour_ago})
    for name, row in ((CHANGES_TABLE, changes), (REGISTRATIONS_TABLE, state)):
        assert row["layer"] == "curated"
        committed = timeline.snapshots["run 2"][name].timestamp_ms
        assert row["last_commit_time"] == datetime.fromtimestamp(committed / 1000, UTC), name
    live = _expected_state(timeline.batches["A"], timeline.batches["B"])
    assert state["newest_change_time"] == max(change_time for _, _, change_time in live.values())
    assert state["changes_last_hour"] is None


def test_the_runner_translates_only_iceberg_references(timeline: Timeline) -> None:
    first = timeline.snapshots["run 1"][CHANGES_TABLE]
    runner = timeline.runner()
    database = timeline.database
    changes, raw = f'"{database}"."{CHANGES_TABLE}"', f'"{database}"."{RAW_TABLE}"'
    # Names from the test's own lake.
    sql = f"""SELECT count(*) AS changes, count(DISTINCT r.change_id) AS raw_changes
FROM {changes} FOR VERSION AS OF {first.snapshot_id} AS c JOIN {raw} AS r ON r.change_id = c.change_id"""  # noqa: S608
    translated = runner.translate(sql)
    assert f"{raw} AS r" in translated
    assert "FOR VERSION" not in translated
    ((changes_count, raw_changes),) = runner.connection.execute(translated).fetchall()
    assert runner.snapshots_read == {(database, CHANGES_TABLE): [first.snapshot_id]}
    # Run 1's log is batch A, whose raw objects run 2 deleted: no raw row joins it any more.
    assert (changes_count, raw_changes) == (0, 0)
    as_of_run_1 = runner.rows(f"SELECT count(*) AS n FROM {changes} FOR VERSION AS OF {first.snapshot_id}")  # noqa: S608
    assert as_of_run_1 == [{"n": len(set(timeline.batches["A"].column("change_id").to_pylist()))}]
    with pytest.raises(TimeTravelError, match="has no snapshot 42"):
        runner.rows(f"SELECT * FROM {changes} FOR VERSION AS OF 42")  # noqa: S608
    with pytest.raises(ValueError, match="no time zone"):
        AthenaOnDuckDB(now=datetime(2026, 1, 1))


def test_a_window_on_the_change_time_is_passed_to_the_scan_as_its_row_filter(timeline: Timeline) -> None:
    database = timeline.database
    changes = f'"{database}"."{CHANGES_TABLE}"'
    since = NOW - timedelta(hours=1)
    curated = {
        row["change_id"]: row["change_time"]
        for row in pa.concat_tables([timeline.batches["A"], timeline.batches["B"]]).to_pylist()
    }
    recent = sum(1 for moment in curated.values() if moment >= since)
    assert 0 < recent < len(curated)
    runner = timeline.runner()
    # Names from the test's own lake; the moment is a constant expression DuckDB evaluates.
    window = f"change_time >= TIMESTAMP '{since:%Y-%m-%d %H:%M:%S} UTC' AND op <> 'NONE' AND 1 = 1"
    rows = runner.rows(f"SELECT count(*) AS n FROM {changes} WHERE {window}")  # noqa: S608
    assert rows == [{"n": recent}]
    ((row_filter, scanned),) = runner.filters_read[(database, CHANGES_TABLE)]
    assert scanned == recent  # the scan itself kept only the window's rows (and planned only its hours' files)
    # Only =, <, <=, >, >= of a column and a constant are passed; DuckDB applies the rest.
    assert row_filter == (
        "GreaterThanOrEqual(term=Reference(name='change_time'), literal=literal('2026-11-28T11:00:00+00:00'))"
    )
    # The named query's window (relative to current_timestamp, pinned) is passed the same way.
    runner.rows(timeline.sql("demand_per_event_per_day", window_days=1))
    ((row_filter, scanned),) = runner.filters_read[(database, CHANGES_TABLE)]
    assert "GreaterThanOrEqual(term=Reference(name='change_time')" in row_filter
    assert scanned == len(curated)  # every curated change is from today (UTC)
    # A joined reference, or one without a WHERE, scans the whole snapshot.
    runner.rows(f"SELECT count(*) AS n FROM {changes}")  # noqa: S608
    assert runner.filters_read[(database, CHANGES_TABLE)] == [("AlwaysTrue()", len(curated))]


def test_data_files_are_planned_from_their_recorded_bounds(tmp_path: Path) -> None:
    runner = AthenaOnDuckDB(now=NOW)
    files = []
    for hours_ago in (30, 20, 2):
        moment = NOW - timedelta(hours=hours_ago)
        path = tmp_path / f"{hours_ago}.parquet"
        times = [moment, moment + timedelta(minutes=30)]
        # A nested column first: its leaves come before change_time's in the file's columns.
        tags = pa.array([{"key": "a", "value": "b"}, {"key": "c", "value": "d"}])  # two leaves
        pq.write_table(
            pa.table({"tags": tags, "change_time": pa.array(times, pa.timestamp("us", "UTC")), "n": [1, 2]}), path
        )
        files.append(str(path))
    runner.add_data_files("db", "log", files, bounds=("change_time",))
    window = "change_time >= current_timestamp - INTERVAL '1' DAY"
    assert runner.rows(f"SELECT sum(n) AS n FROM db.log WHERE {window}") == [{"n": 6}]  # noqa: S608
    assert runner.filters_read[("db", "log")] == [("2 of 3 files", -1)]
    assert runner.rows("SELECT sum(n) AS n FROM db.log WHERE n = 2 AND 1 = 1") == [{"n": 6}]
    assert runner.filters_read[("db", "log")] == [("3 of 3 files", -1)]  # no bounds of n: every file
    later = "change_time > current_timestamp"
    assert runner.rows(f"SELECT count(*) AS rows FROM db.log WHERE {later}") == [{"rows": 0}]  # noqa: S608
    assert runner.filters_read[("db", "log")] == [("0 of 3 files", -1)]
