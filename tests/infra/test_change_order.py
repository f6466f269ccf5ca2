"""The order of changes within a millisecond, in the named queries and the current state, as Athena reads the lake.

Every query runs through sqlglot -> DuckDB over views that show timestamps at millisecond precision, as Athena
reads a Hive table's Parquet timestamps (``sandbox.lake.register_as_athena_reads``). The raw table's changes are
those the curator has not reached yet (the curated tables are empty here, or hold the same changes curated):
``current_registrations_to_the_minute`` is the query that reads them.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.catalog import CHANGES_TABLE, REGISTRATIONS_TABLE, named_queries
from components.current_state import current_registrations_sql, state_columns
from curator.rows import SORT_KEYS, first_of_each_change, sort_order
from curator.tables import changes_spec, registrations_spec
from pipeline.batch import decode_strict
from pipeline.change_order import (
    CHANGE_TIME_US,
    copy_order_key,
    first_copy_sql,
    newer_order_key,
    newest_first_sql,
    newest_key_sql,
)
from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from pipeline.export import ExportFile, decode_export_lines
from pipeline.schema import arrow_schema
from sandbox.changes import Change, changes_event, item_key, to_dynamodb_json
from sandbox.lake import register_as_athena_reads

DATABASE, TABLE, SNAPSHOTS = "demand_db", "demand_changes", "demand_changes_snapshots"
SOURCE_TABLE = "prd3292-dev1-us-east-1-demand-table"
EXPORT_ID = "01796029080000-a1b2c3d4"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROWS = arrow_schema().append(pa.field("dt", pa.string())).append(pa.field("hour", pa.string()))
Key = tuple[str, str]


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _with_partitions(rows: pa.Table) -> pa.Table:
    times = rows.column("change_time")
    rows = rows.append_column("dt", pc.strftime(times, format="%Y-%m-%d"))
    return rows.append_column("hour", pc.strftime(times, format="%H"))


def _connect(
    changes: pa.Table, snapshots: pa.Table | None = None, curated: pa.Table | None = None
) -> duckdb.DuckDBPyConnection:
    """The raw table ``changes``; ``registration_changes`` holding ``curated`` (default: nothing curated yet),
    ``registrations`` empty: in the module's one DuckDB database, whose views of an earlier call are dropped."""
    connection = _database()
    connection.execute(f'DROP SCHEMA IF EXISTS "{DATABASE}" CASCADE')
    connection.execute(f'CREATE SCHEMA "{DATABASE}"')
    register_as_athena_reads(connection, f'"{DATABASE}"."{TABLE}"', changes)
    log = changes_spec().arrow_schema
    for name, rows in (
        (CHANGES_TABLE, log.empty_table() if curated is None else curated.select(log.names).cast(log)),
        (REGISTRATIONS_TABLE, registrations_spec().arrow_schema.empty_table()),
    ):
        connection.register(f"{name}_rows", rows)
        connection.execute(f'CREATE VIEW "{DATABASE}"."{name}" AS SELECT * FROM "{name}_rows"')  # noqa: S608
    if snapshots is not None:
        register_as_athena_reads(connection, f'"{DATABASE}"."{SNAPSHOTS}"', snapshots)
    return connection


@functools.cache
def _database() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB for the module (opening one costs more than most queries here)."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


@functools.cache
def _duckdb_sql(athena_sql: str) -> str:
    """A named query's Athena SQL in DuckDB's dialect (transpiled once per query: the property test runs hundreds)."""
    (duck_sql,) = sqlglot.transpile(athena_sql, read="athena", write="duckdb")
    return duck_sql


def _run(connection: duckdb.DuckDBPyConnection, athena_sql: str) -> list[dict[str, Any]]:
    duck_sql = _duckdb_sql(athena_sql)
    rows: list[dict[str, Any]] = connection.sql(duck_sql).to_arrow_table().to_pylist()
    return rows


@functools.cache
def _named(name: str) -> str:
    return {query.name: query for query in named_queries(DATABASE, TABLE)}[name].sql


# -- the reproduced case: two changes 600 µs apart in one millisecond, delivered reversed -----------------------
def _recent_millisecond(now: datetime | None = None) -> datetime:
    """A moment inside the named queries' window (today or yesterday, UTC), 100 µs into a millisecond, at least
    ten minutes into its day: the case's first change, a minute earlier, falls on the same day, so the per-day query
    gives one row whatever the time of day the test runs (the data's place, not an assertion)."""
    moment = (now or datetime.now(UTC)) - timedelta(hours=1)
    if moment - moment.replace(hour=0, minute=0, second=0, microsecond=0) < timedelta(minutes=10):
        moment -= timedelta(minutes=15)  # the end of the day before, still inside the window
    return moment.replace(microsecond=123_100)


@pytest.mark.parametrize("hour", [0, 1, 2, 23])
def test_the_reproduced_case_falls_on_one_day_whenever_the_test_runs(hour: int):
    for minute in (0, 5, 9, 10, 30, 59):
        now = datetime(2026, 12, 8, hour, minute, 30, tzinfo=UTC)
        at = _recent_millisecond(now)
        first = _reproduced_case(at)[1][0].time
        assert first.date() == at.date(), now
        assert (now.date() - at.date()).days <= 1, now  # today or yesterday: inside the raw window
        assert at < now


def _reproduced_case(at: datetime) -> tuple[dict[str, Any], list[Change], list[Change]]:
    """The item, its changes in the order they happened, and in the order the stream delivered them."""
    item = {
        "pk": "EVENT#E1",
        "sk": "FAN#F1",
        "market_id": Decimal(7),
        "status": "REGISTERED",
        "quantity": Decimal(2),
        "created_at": "2026-11-01T10:00:00.000Z",
    }
    selected = dict(item, status="SELECTED")
    cancelled = dict(item, status="CANCELLED")
    happened = [
        Change("INSERT", item_key(item), item, None, at - timedelta(minutes=1)),
        Change("MODIFY", item_key(item), selected, item, at),
        Change("MODIFY", item_key(item), cancelled, selected, at + timedelta(microseconds=600)),
    ]
    assert happened[1].time.replace(microsecond=0) == happened[2].time.replace(microsecond=0)
    assert happened[1].time.microsecond // 1000 == happened[2].time.microsecond // 1000  # one millisecond
    return cancelled, happened, [happened[0], happened[2], happened[1]]


def _decoded(changes: Sequence[Change], precision: str, decoder: Any = decode_batch) -> pa.Table:
    event = changes_event(changes, table_name=SOURCE_TABLE, precision=precision)  # type: ignore[arg-type]
    decoded = decoder(parse_kinesis_records(event), precision)
    assert not decoded.quarantined
    return _with_partitions(decoded.rows)


def _table_row(item: dict[str, Any]) -> dict[str, Any]:
    """The state columns a scan of the table gives for ``item`` (through the same decoder)."""
    event = changes_event([Change("INSERT", item_key(item), item, None, _recent_millisecond())])
    rows = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows.select(state_columns())
    (row,) = rows.to_pylist()
    return row


@pytest.mark.parametrize("decoder", [decode_batch, decode_strict], ids=["columnar", "strict"])
def test_two_changes_600_microseconds_apart_delivered_reversed_give_the_tables_state(decoder: Any):
    table_item, _, delivered = _reproduced_case(_recent_millisecond())
    rows = _decoded(delivered, "MICROSECOND", decoder)
    assert rows.column(CHANGE_TIME_US).to_pylist() == [_micros(change.time) for change in delivered]

    (found,) = _run(_connect(rows), _named("current_registrations_to_the_minute"))

    assert found["status"] == "CANCELLED"
    expected = _table_row(table_item)
    assert {name: found[name] for name in expected if name in found} == {
        name: expected[name] for name in expected if name in found
    }
    (per_day,) = _run(_connect(rows, curated=rows), _named("demand_per_event_per_day"))
    assert (per_day["event_id"], per_day["status"], per_day["fans"]) == ("E1", "CANCELLED", 1)


def test_at_millisecond_precision_the_same_delivery_gives_the_stale_state():
    """Why every stack streams at MICROSECOND: at MILLISECOND both changes carry the same instant, and only the
    delivery order (the sequence number) is left to tell them apart, which is the wrong one here."""
    _, _, delivered = _reproduced_case(_recent_millisecond())
    rows = _decoded(delivered, "MILLISECOND")
    assert len(set(rows.column(CHANGE_TIME_US).to_pylist()[1:])) == 1

    (found,) = _run(_connect(rows), _named("current_registrations_to_the_minute"))

    assert found["status"] == "SELECTED"


def _snapshot_rows(items: Sequence[dict[str, Any]], export_time: datetime) -> pa.Table:
    lines = [json.dumps({"Item": to_dynamodb_json(item)}).encode() for item in items]
    export = ExportFile.from_event(
        {
            "export_bucket": "bucket-1",
            "data_key": f"demand/exports/x/AWSDynamoDB/{EXPORT_ID}/data/abc.json.gz",
            "export_time": export_time.isoformat(),
        }
    )
    chunk = decode_export_lines(lines, 1, export, SOURCE_TABLE)
    assert not chunk.bad_lines
    assert chunk.rows.column(CHANGE_TIME_US).to_pylist() == [_micros(export_time)] * len(items)
    return chunk.rows.append_column("export_id", pa.array([EXPORT_ID] * chunk.rows.num_rows, pa.string()))


def test_the_current_state_from_a_snapshot_orders_the_same_millisecond_by_the_microsecond():
    at = datetime(2026, 11, 30, 9, 0, 0, 123_100, tzinfo=UTC)
    table_item, happened, delivered = _reproduced_case(at)
    export_time = at - timedelta(seconds=30)  # the snapshot holds the INSERT; both MODIFYs come after
    snapshot = _snapshot_rows([happened[0].new_image or {}], export_time)
    sql = current_registrations_sql(DATABASE, TABLE, SNAPSHOTS, export_id=EXPORT_ID, export_time=export_time)

    (found,) = _run(_connect(_decoded(delivered, "MICROSECOND"), snapshot), sql)

    assert found["status"] == "CANCELLED"
    expected = _table_row(table_item)
    assert {name: found[name] for name in state_columns()} == expected


# -- the rule itself ----------------------------------------------------------------------------------------------
def test_the_rule_orders_by_microsecond_then_sequence_number_as_an_integer_then_change_id():
    rows = [
        {CHANGE_TIME_US: 10, "sequence_number": "900", "change_id": "a"},
        {CHANGE_TIME_US: 11, "sequence_number": "1", "change_id": "a"},
        {CHANGE_TIME_US: 10, "sequence_number": "1000", "change_id": "a"},
        {CHANGE_TIME_US: 10, "sequence_number": "1000", "change_id": "b"},
    ]
    assert sorted(rows, key=newer_order_key, reverse=True) == [rows[1], rows[3], rows[2], rows[0]]
    copies = [
        {"sequence_number": "20", "shard_id": "shardId-000000000001"},
        {"sequence_number": "3", "shard_id": "shardId-000000000002"},
        {"sequence_number": "3", "shard_id": "shardId-000000000001"},
    ]
    assert min(copies, key=copy_order_key) == copies[2]
    assert newest_first_sql() == "change_time_us DESC, lpad(sequence_number, 129, '0') DESC, change_id DESC"
    assert first_copy_sql() == "lpad(sequence_number, 129, '0'), shard_id"
    for query in named_queries(DATABASE, TABLE):
        # no window orders by the timestamp column, which Athena reads at millisecond precision
        assert not re.search(r"ORDER BY [^)]*\bchange_time\b(?!_us)[^)]*\)", query.sql), query.name


def test_the_newest_key_picks_each_groups_newest_change_as_the_rule_does():
    # Ties on the microsecond, sequence numbers of different lengths, with leading zeros, and all zeros, then ties
    # on the sequence number's value: max_by over the key must keep the change newer_order_key keeps.
    generator = random.Random(11)
    sequences = ["7", "07", "0007", "10", "010", "9", "99", "100", "0", "000", "123456789012345678901234567890"]
    rows = [
        {
            "group_id": generator.randrange(25),
            CHANGE_TIME_US: generator.choice([10, 11, 11, 12]),
            "sequence_number": generator.choice(sequences),
            "change_id": generator.choice(["a", "b", "c"]) + str(number),
        }
        for number in range(400)
    ]
    connection = duckdb.connect()
    connection.register("changes", pa.Table.from_pylist(rows))
    athena = f"SELECT group_id, max_by(change_id, {newest_key_sql()}) AS newest FROM changes GROUP BY group_id"  # noqa: S608
    picked = dict(connection.sql(sqlglot.transpile(athena, read="athena", write="duckdb")[0]).fetchall())
    expected = {
        group: max((row for row in rows if row["group_id"] == group), key=newer_order_key)["change_id"]
        for group in {row["group_id"] for row in rows}
    }
    assert len(expected) == 25
    assert picked == expected
    assert newest_key_sql() == (
        "ROW(change_time_us, length(trim(LEADING '0' FROM sequence_number)), trim(LEADING '0' FROM sequence_number),"
        " change_id)"
    )


# -- any order of files and rows gives the same answer ------------------------------------------------------------
_REGISTRATIONS: list[Key] = [("E1", "F1"), ("E1", "F2"), ("E2", "F1")]
_STATUSES = ["REGISTERED", "SELECTED", "WAITLISTED", "CANCELLED"]
_SHARDS = ["shardId-000000000000", "shardId-000000000001"]


def _change_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Changes of three registrations inside one millisecond, many at the same microsecond, some delivered up to
    three times (same change_id and change time, another sequence number, maybe another shard)."""
    base = _micros(_recent_millisecond().replace(microsecond=0)) + 123_000
    rows: list[dict[str, Any]] = []
    count = draw(st.integers(min_value=1, max_value=12))
    for number in range(count):
        event_id, fan_id = draw(st.sampled_from(_REGISTRATIONS))
        micros = base + draw(st.sampled_from([0, 0, 1, 600, 999]))
        change = {
            "event_id": event_id,
            "fan_id": fan_id,
            "market_id": 7,
            "status": draw(st.sampled_from(_STATUSES)),
            "quantity": draw(st.integers(min_value=1, max_value=8)),
            "created_at": datetime(2026, 11, 1, tzinfo=UTC),
            "op": draw(st.sampled_from(["INSERT", "MODIFY", "MODIFY", "REMOVE"])),
            "change_id": f"change-{number}",
            "change_time": _EPOCH + timedelta(microseconds=micros),
            CHANGE_TIME_US: micros,
            "table_name": SOURCE_TABLE,
            "deleted_by_ttl": False,
        }
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            # decimal text of varying length: padded comparison must order it as the integers
            sequence = str(draw(st.integers(min_value=1, max_value=10**56)))
            rows.append({**change, "shard_id": draw(st.sampled_from(_SHARDS)), "sequence_number": sequence})
    return rows


def _reference(rows: Sequence[dict[str, Any]]) -> dict[Key, tuple[str, int]]:
    """The answer by the rule in Python: one copy per change (copy_order_key), newest change (newer_order_key)."""
    kept: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["change_id"] not in kept or copy_order_key(row) < copy_order_key(kept[row["change_id"]]):
            kept[row["change_id"]] = row
    newest: dict[Key, dict[str, Any]] = {}
    for row in kept.values():
        key = (row["event_id"], row["fan_id"])
        if key not in newest or newer_order_key(row) > newer_order_key(newest[key]):
            newest[key] = row
    return {key: (row["status"], row["quantity"]) for key, row in newest.items() if row["op"] != "REMOVE"}


def _files(rows: list[dict[str, Any]], order: random.Random) -> pa.Table:
    """The rows in shuffled order, cut into 1-4 files, the files concatenated in shuffled order."""
    shuffled = list(rows)
    order.shuffle(shuffled)
    cuts = sorted(order.sample(range(1, len(shuffled)), k=min(order.randint(0, 3), len(shuffled) - 1)))
    pieces = [shuffled[start:end] for start, end in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    order.shuffle(pieces)
    table = pa.Table.from_pylist([row for piece in pieces for row in piece], schema=arrow_schema())
    return _with_partitions(table)


def _answer(changes: pa.Table) -> dict[Key, tuple[str, int]]:
    return {
        (row["event_id"], row["fan_id"]): (row["status"], row["quantity"])
        for row in _run(_connect(changes), _named("current_registrations_to_the_minute"))
    }


def _per_day(changes: pa.Table) -> list[tuple[Any, ...]]:
    """demand_per_event_per_day over the curated log: ``changes`` each once (the copy the rule keeps), in the
    order the rows come."""
    kept: dict[str, int] = {}
    rows = changes.to_pylist()
    for index, row in enumerate(rows):
        if row["change_id"] not in kept or copy_order_key(row) < copy_order_key(rows[kept[row["change_id"]]]):
            kept[row["change_id"]] = index
    curated = changes.take(sorted(kept.values()))
    return [tuple(row.values()) for row in _run(_connect(changes, curated=curated), _named("demand_per_event_per_day"))]


def _compacted(changes: pa.Table) -> pa.Table:
    """Each shard's rows through compaction's merge (one row per change_id per shard, sorted)."""
    tables = []
    for shard in _SHARDS:
        rows = changes.filter(pc.equal(changes.column("shard_id"), shard)).select(arrow_schema().names)
        if rows.num_rows:
            keep = first_of_each_change(rows)  # one row per change, as the curator keeps it
            kept = rows if keep is None else rows.take(keep)
            tables.append(kept.take(sort_order(kept.select(list(SORT_KEYS)))).cast(arrow_schema()))
    return _with_partitions(pa.concat_tables(tables))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.composite(_change_rows)(), seeds=st.lists(st.integers(0, 2**32), min_size=3, max_size=3))
def test_every_order_of_files_and_rows_gives_the_rules_answer(rows: list[dict[str, Any]], seeds: list[int]):
    expected = _reference(rows)
    tables = [_files(rows, random.Random(seed)) for seed in seeds]

    answers = [_answer(table) for table in tables]
    per_day = [_per_day(table) for table in tables]

    assert answers == [expected] * len(tables)
    assert per_day == [per_day[0]] * len(tables)
    assert _answer(_compacted(tables[0])) == expected  # compaction keeps the copy the query keeps
