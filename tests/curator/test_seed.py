"""The seed of ``registrations`` from a published backfill snapshot: the state equals the published
``current_registrations`` query (``components.current_state``, run in DuckDB) over the same snapshot and changes,
it is seeded exactly once per export id, and a crash after any call while seeding loses nothing."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components.current_state import DEFAULT_LEAD, current_registrations_sql
from curator.commits import CurationError
from curator.curation import Curator
from curator.seed import SNAPSHOT_LEAD, PublishedSnapshot
from curator.state import SEED_EXPORT_PROPERTY, _range_groups
from curator.tables import REGISTRATIONS_TABLE
from pipeline.change_order import newer_order_key
from pipeline.schema import arrow_schema
from pipeline.writer import encode_parquet
from sandbox.lake import to_duckdb
from sandbox.server import MotoProcess
from tests.curator.conftest import CuratedLake, generated_rows, new_lake
from tests.curator.crash_harness import (
    CopiedRun,
    Crash,
    CrashPlan,
    Instrumented,
    copied_after_each_call,
    copies_differ_by_their_calls,
    crash_plan,
    instrumented,
    two_events,
)
from tests.curator.lake_copy import LakeCopy

__all__ = ["crash_plan", "instrumented"]  # the crash harness's fixtures

EXPORT_ID = "01774998000000-a1b2c3d4"
OTHER_EXPORT_ID = "01774999000000-e5f6a7b8"
SNAPSHOT_PREFIX = "demand/snapshots/"
ROWS = generated_rows(300, seed=11)
ORDERED = sorted(ROWS.to_pylist(), key=newer_order_key)
#: T - lead is the very microsecond of a change: that change wins over the snapshot's row of its key.
SINCE: datetime = ORDERED[150]["change_time"]
BEFORE, AFTER = ROWS.slice(0, 240), ROWS.slice(240)


def test_the_lead_is_the_published_querys():
    assert SNAPSHOT_LEAD == DEFAULT_LEAD


def published(export_id: str = EXPORT_ID, since: datetime = SINCE) -> PublishedSnapshot:
    return PublishedSnapshot(export_id, since + SNAPSHOT_LEAD, SNAPSHOT_PREFIX)


def snapshot_rows(snapshot: PublishedSnapshot, upto: int, changes: pa.Table = ROWS) -> list[dict[str, Any]]:
    """The export's rows: the live items after the first ``upto`` changes, as the backfill writes them."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(changes.to_pylist(), key=newer_order_key)[:upto]:
        key = (row["event_id"], row["fan_id"])
        if row["op"] == "REMOVE":
            live.pop(key, None)
        else:
            live[key] = row
    export_us = snapshot.export_time_us
    return [
        dict(
            row,
            op="SNAPSHOT",
            change_time=snapshot.export_time,
            change_time_us=export_us,
            shard_id=snapshot.export_id,
            sequence_number=str(line),
            change_id=f"{snapshot.export_id}:part-{line % 2}:{line}",
            deleted_by_ttl=False,
        )
        for line, row in enumerate(live.values(), start=1)
    ]


def write_snapshot(lake: CuratedLake, snapshot: PublishedSnapshot, rows: list[dict[str, Any]], *, counts: bool = True):
    """Two snapshot objects (rows split by line parity), each with its counts object unless ``counts`` is False."""
    for part in (0, 1):
        mine = [row for row in rows if int(row["sequence_number"]) % 2 == part]
        stem = f"{snapshot.objects_prefix}part-{part}"
        table = pa.Table.from_pylist(mine, schema=arrow_schema())
        lake.s3.put_object(Bucket=lake.bucket, Key=f"{stem}.parquet", Body=encode_parquet(table))
        if counts:
            key = f"{snapshot.objects_prefix}_part-{part}.counts.json"
            body = json.dumps({"items": len(mine), "rows": len(mine), "quarantined": 0})
            lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=body.encode())


def query_state(
    snapshot: PublishedSnapshot, snapshot_rows: list[dict[str, Any]], changes: pa.Table
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The published ``current_registrations`` query over the snapshot and the changes, in DuckDB."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("CREATE SCHEMA lake")
    days = pc.strftime(changes.column("change_time"), format="%Y-%m-%d")
    change_table = changes.append_column("dt", days)
    snapshot_table = pa.Table.from_pylist(snapshot_rows, schema=arrow_schema())
    snapshot_table = snapshot_table.append_column("export_id", pa.array([snapshot.export_id] * len(snapshot_rows)))
    connection.register("change_rows", change_table)
    connection.register("snapshot_rows", snapshot_table)
    connection.execute("CREATE TABLE lake.changes AS SELECT * FROM change_rows")
    connection.execute("CREATE TABLE lake.snapshots AS SELECT * FROM snapshot_rows")
    sql = current_registrations_sql(
        "lake", "changes", "snapshots", export_id=snapshot.export_id, export_time=snapshot.export_time
    )
    result = connection.execute(to_duckdb(sql))
    names = [column[0] for column in result.description]
    rows = [dict(zip(names, values, strict=True)) for values in result.fetchall()]
    return {(row["event_id"], row["fan_id"]): (row["status"], row["quantity"], row["last_change_time"]) for row in rows}


def table_state(lake: CuratedLake) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = lake.table(REGISTRATIONS_TABLE).scan().to_arrow().to_pylist()
    state = {(row["event_id"], row["fan_id"]): (row["status"], row["quantity"], row["change_time"]) for row in rows}
    assert len(state) == len(rows), "registrations holds a key twice"
    return state


def seeding_curator(lake: CuratedLake, snapshot: PublishedSnapshot | None, **overrides: Any) -> Curator:
    settings = dataclasses.replace(lake.settings, snapshot=snapshot)
    catalog = overrides.pop("catalog", None) or lake.catalog()
    store = overrides.pop("store", None) or lake.store()
    return Curator(catalog=catalog, store=store, settings=settings, clock=lake.clock, **overrides)


def seed_summary(lake: CuratedLake) -> Any:
    return lake.table(REGISTRATIONS_TABLE).current_snapshot().summary


def test_the_data_reaches_every_case_of_the_order():
    snapshot = published()
    rows = snapshot_rows(snapshot, 200)
    since_us = snapshot.since_us
    expected = query_state(snapshot, rows, ROWS)
    from_snapshot = [key for key, value in expected.items() if value[2] == snapshot.export_time]
    from_changes = [key for key, value in expected.items() if value[2] != snapshot.export_time]
    assert from_snapshot
    assert from_changes
    tie = ORDERED[150]
    assert tie["change_time_us"] == since_us
    assert (tie["event_id"], tie["fan_id"]) in {(row["event_id"], row["fan_id"]) for row in rows}
    # Changes older than T - lead exist, and some key removed after T - lead is in the snapshot.
    assert any(row["change_time_us"] < since_us for row in ORDERED)
    removed = {(row["event_id"], row["fan_id"]) for row in ORDERED[151:] if row["op"] == "REMOVE"}
    assert removed & {(row["event_id"], row["fan_id"]) for row in rows}


def test_a_published_snapshot_seeds_the_state_once_as_the_published_query_computes_it(lake: CuratedLake):
    """GIVEN a state advanced from changes alone, WHEN a snapshot is published, THEN the next run rebuilds it from
    the snapshot and the changes since T - lead, once; later runs advance it as usual."""
    snapshot = published()
    rows = snapshot_rows(snapshot, 200)
    lake.write(BEFORE)
    lake.curator().run()
    write_snapshot(lake, snapshot, rows)

    seeded = seeding_curator(lake, snapshot).run()

    assert seeded.conflict is None
    assert table_state(lake) == query_state(snapshot, rows, BEFORE)
    assert seed_summary(lake)[SEED_EXPORT_PROPERTY] == EXPORT_ID
    lake.write(AFTER)
    advanced = seeding_curator(lake, snapshot).run()
    assert advanced.state_changes_applied == len({(r["event_id"], r["fan_id"]) for r in AFTER.to_pylist()})
    assert table_state(lake) == query_state(snapshot, rows, ROWS)
    assert seed_summary(lake)[SEED_EXPORT_PROPERTY] == EXPORT_ID
    # The snapshot no longer published: the seed stays in effect.
    again = seeding_curator(lake, None).run()
    assert again.registrations_snapshot is None
    assert table_state(lake) == query_state(snapshot, rows, ROWS)


def test_small_files_and_batches_keep_disjoint_ranges_and_the_same_state(
    lake: CuratedLake, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("curator.state.STATE_FILE_ROWS", 7)
    monkeypatch.setattr("curator.state.BATCH_ROWS", 25)
    snapshot = published()
    rows = snapshot_rows(snapshot, 200)
    write_snapshot(lake, snapshot, rows)
    lake.write(BEFORE)
    seeding_curator(lake, snapshot).run()
    lake.write(AFTER)
    seeding_curator(lake, snapshot).run()

    assert table_state(lake) == query_state(snapshot, rows, ROWS)
    state = lake.table(REGISTRATIONS_TABLE)
    files = [task.file for task in state.scan().plan_files()]
    assert all(item.record_count <= 7 for item in files)
    fan_field = state.schema().find_field("fan_id").field_id
    events = {item.partition[0] for item in files}
    assert len(events) > 1
    for event in events:
        mine = [item for item in files if item.partition[0] == event]
        assert len(_range_groups(mine, fan_field)) == len(mine), f"files of {event} overlap"


def test_a_new_export_id_seeds_the_state_again_from_it(lake: CuratedLake):
    first, second = published(), published(OTHER_EXPORT_ID, ORDERED[220]["change_time"])
    first_rows, second_rows = snapshot_rows(first, 200), snapshot_rows(second, 260)
    write_snapshot(lake, first, first_rows)
    write_snapshot(lake, second, second_rows)
    lake.write(BEFORE)
    seeding_curator(lake, first).run()
    lake.write(AFTER)

    seeding_curator(lake, second).run()

    assert seed_summary(lake)[SEED_EXPORT_PROPERTY] == OTHER_EXPORT_ID
    assert table_state(lake) == query_state(second, second_rows, ROWS)
    assert table_state(lake) != query_state(first, first_rows, ROWS)


def test_an_incompletely_backfilled_snapshot_is_refused_and_the_state_left_as_it_was(lake: CuratedLake):
    snapshot = published()
    write_snapshot(lake, snapshot, snapshot_rows(snapshot, 200), counts=False)
    lake.write(BEFORE)
    lake.curator().run()
    before = table_state(lake)

    with pytest.raises(CurationError, match=f"{EXPORT_ID} is not completely back-filled"):
        seeding_curator(lake, snapshot).run()

    assert table_state(lake) == before
    assert SEED_EXPORT_PROPERTY not in seed_summary(lake).additional_properties


def test_a_snapshot_with_no_object_is_refused(lake: CuratedLake):
    lake.write(BEFORE)
    with pytest.raises(CurationError, match="has no Parquet object under demand/snapshots/export_id="):
        seeding_curator(lake, published()).run()


# -- a crash after each changing call of the seeding run, then a rerun ---------------------------------------------
#
# The lake is prepared once (FOLDED curated, the snapshot written). The seeding run that counts the changing calls
# copies the lake right after each (``copied_after_each_call``); each crash point restores its copy in place and
# reruns. One point also crashes for real. One worker runs these tests (the copies are made once).

#: Two events (fewer files, fewer calls to crash after); the keys stay distinct.
FOLDED = two_events(BEFORE)
#: Crash points are shared out among this many tests (each reports its own points' failures).
PARTS = 3


def prepare_seeding(lake: CuratedLake) -> PublishedSnapshot:
    """Curate FOLDED and write the snapshot: what the seeding run starts from."""
    snapshot = published()
    lake.write(FOLDED)
    lake.curator().run()
    write_snapshot(lake, snapshot, snapshot_rows(snapshot, 200, FOLDED))
    return snapshot


def crash_while_seeding(lake: CuratedLake, snapshot: PublishedSnapshot, instrumented: Instrumented) -> str | None:
    """Seed with the plan armed, then seed again."""
    plan = instrumented.plan
    curator = seeding_curator(
        lake, snapshot, catalog=instrumented.catalog, store=type(lake.store())(lake.bucket, client=instrumented.s3)
    )
    crashed: str | None = None
    plan.armed = True
    try:
        curator.run()
    except Crash as crash:
        crashed = str(crash)
    plan.armed = False
    seeding_curator(lake, snapshot).run()
    return crashed


def copy_of(lake: CuratedLake, previous: LakeCopy | None = None) -> LakeCopy:
    return LakeCopy.save(lake.s3, lake.glue, (lake.bucket,), lake.database, lake.clock, previous=previous)


@dataclasses.dataclass
class Seeding:
    """The lake prepared once per module, its copy as prepared, and the changing calls of the seeding run when
    nothing crashes with a copy of the lake right after each."""

    lake: CuratedLake
    snapshot: PublishedSnapshot
    copy: LakeCopy
    run: CopiedRun


@pytest.fixture(scope="module")
def seeding(aws_server: MotoProcess, session_clients: Any, session_catalog: Any, instrumented: Instrumented) -> Seeding:
    lake = new_lake(aws_server, session_clients, session_catalog)
    snapshot = prepare_seeding(lake)
    prepared = copy_of(lake)

    def run(plan: CrashPlan) -> None:
        assert crash_while_seeding(lake, snapshot, instrumented) is None

    copied = copied_after_each_call(instrumented, lambda previous: copy_of(lake, previous), run)
    return Seeding(lake, snapshot, prepared, copied)


def assert_seeded(seeding: Seeding, where: str) -> None:
    lake, snapshot = seeding.lake, seeding.snapshot
    expected = query_state(snapshot, snapshot_rows(snapshot, 200, FOLDED), FOLDED)
    assert table_state(lake) == expected, f"the state is wrong after a crash at {where}"
    assert seed_summary(lake)[SEED_EXPORT_PROPERTY] == EXPORT_ID
    # The run after: nothing new, nothing seeded again.
    assert seeding_curator(lake, snapshot).run().registrations_snapshot is None


@pytest.mark.xdist_group("seed_crashes")
def test_the_seeding_run_makes_every_kind_of_changing_call(seeding: Seeding):
    for expected in (
        f"s3 put {REGISTRATIONS_TABLE} data file",
        f"s3 put {REGISTRATIONS_TABLE} metadata",
        "glue UpdateTable",
    ):
        assert expected in seeding.run.calls, (expected, seeding.run.calls)
    assert len(seeding.run.after) == len(seeding.run.calls)


@pytest.mark.xdist_group("seed_crashes")
def test_each_copy_of_the_seeding_run_differs_from_the_one_before_by_its_call(seeding: Seeding):
    copies_differ_by_their_calls(seeding.copy, seeding.run)


@pytest.mark.slow
@pytest.mark.xdist_group("seed_crashes")
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_after_any_call_while_seeding_then_a_rerun_gives_the_same_state(part: int, seeding: Seeding):
    """Crash points ``part + 1``, ``part + 1 + PARTS``, ...: together the parts crash after every call. Each starts
    from the lake as the run left it right after its call."""
    calls = seeding.run.calls
    points = range(part + 1, len(calls) + 1, PARTS)
    assert len(points) > 0
    for at in points:
        seeding.run.after[at - 1].restore()
        seeding_curator(seeding.lake, seeding.snapshot).run()
        assert_seeded(seeding, f"call {at} ({calls[at - 1]})")


@pytest.mark.slow
@pytest.mark.xdist_group("seed_crashes")
def test_a_real_crash_while_seeding_then_a_rerun_gives_the_same_state(
    seeding: Seeding, instrumented: Instrumented, crash_plan: CrashPlan
):
    """On the prepared lake restored: a crash after the seeding's first commit."""
    calls = seeding.run.calls
    at = calls.index("glue UpdateTable") + 1
    seeding.copy.restore()
    crash_plan.at, crash_plan.calls = at, []
    crashed = crash_while_seeding(seeding.lake, seeding.snapshot, instrumented)
    assert crash_plan.calls == calls[:at]
    assert crashed == calls[at - 1]
    assert_seeded(seeding, f"call {at} ({crashed})")
