"""Current state from snapshot + changes equals the table: real snapshot rows and real stream rows, in DuckDB."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot

from components.current_state import current_registrations_sql, state_columns
from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from pipeline.export import ExportFile, decode_export_lines
from pipeline.schema import arrow_schema
from sandbox.changes import Change, DemandGenerator, changes_event, item_key, to_dynamodb_json

TABLE = "prd3292-dev1-us-east-1-demand-table"
EXPORT_ID = "01774998600000-a1b2c3d4"
T = datetime(2026, 3, 31, 23, 10, tzinfo=UTC)
Key = tuple[str, str]


def _timeline(seed: int) -> tuple[list[Change], dict[str, Key]]:
    """Realistic changes from a day before T to half an hour after it, and the edge cases, named."""
    generator = DemandGenerator(seed=seed, start=T - timedelta(days=1))
    changes = list(generator.changes(1500))
    # spread: 1,000 changes over the day before T - 5 min, 500 over [T - 5 min, T + 30 min]
    early, late = changes[:1000], changes[1000:]
    timed = [
        dataclasses.replace(c, time=T - timedelta(days=1) + i * timedelta(seconds=86)) for i, c in enumerate(early)
    ]
    timed += [
        dataclasses.replace(c, time=T - timedelta(minutes=5) + i * timedelta(seconds=4)) for i, c in enumerate(late)
    ]

    def fresh(at: datetime) -> dict[str, Any]:
        return generator.new_item(at)

    cases: dict[str, Key] = {}
    edges: list[Change] = []
    for name, inserted, event, when in (
        ("changed at the export instant", T - timedelta(hours=3), "MODIFY", T),
        ("removed just before T", T - timedelta(hours=3), "REMOVE", T - timedelta(minutes=1)),
        ("removed after T", T - timedelta(hours=3), "REMOVE", T + timedelta(minutes=1)),
        ("deleted long before T", T - timedelta(hours=20), "REMOVE", T - timedelta(hours=12)),
        ("changed exactly T - 5 min", T - timedelta(hours=3), "MODIFY", T - timedelta(minutes=5)),
    ):
        item = fresh(inserted)
        cases[name] = (item["pk"], item["sk"])
        edges.append(Change("INSERT", item_key(item), item, None, inserted))
        if event == "MODIFY":
            new = dict(item, status="SELECTED", updated_at=when.isoformat().replace("+00:00", "Z"))
            edges.append(Change("MODIFY", item_key(new), new, item, when))
        else:
            edges.append(Change("REMOVE", item_key(item), None, item, when))
    later = fresh(T + timedelta(minutes=2))
    cases["inserted after T"] = (later["pk"], later["sk"])
    edges.append(Change("INSERT", item_key(later), later, None, T + timedelta(minutes=2)))
    return sorted(timed + edges, key=lambda change: change.time), cases


def _state(
    changes: list[Change], until: datetime | None = None, *, inclusive: bool = True
) -> dict[Key, dict[str, Any]]:
    state: dict[Key, dict[str, Any]] = {}
    for change in changes:
        if until is not None and (change.time > until or (change.time == until and not inclusive)):
            break
        key = (change.keys["pk"], change.keys["sk"])
        if change.event_name == "REMOVE":
            state.pop(key, None)
        else:
            state[key] = dict(change.new_image or {})
    return state


def _change_rows(changes: list[Change]) -> pa.Table:
    """The stream handler's rows for every change (delivered twice for a tenth of them), with dt and hour."""
    duplicated = changes + changes[::10]
    tables = []
    for start in range(0, len(duplicated), 500):
        batch = duplicated[start : start + 500]
        event = changes_event(batch, table_name=TABLE, first_sequence=10**20 + start * 1000)
        decoded = decode_batch(parse_kinesis_records(event), "MILLISECOND")
        assert not decoded.quarantined
        tables.append(decoded.rows)
    rows = pa.concat_tables(tables)
    times = rows.column("change_time")
    rows = rows.append_column("dt", pc.strftime(times, format="%Y-%m-%d"))
    return rows.append_column("hour", pc.strftime(times, format="%H"))


def _snapshot_rows(state: dict[Key, dict[str, Any]]) -> pa.Table:
    lines = [json.dumps({"Item": to_dynamodb_json(item)}).encode() for item in state.values()]
    export = ExportFile.from_event(
        {
            "export_bucket": "bucket-1",
            "data_key": f"demand/exports/x/AWSDynamoDB/{EXPORT_ID}/data/abc.json.gz",
            "export_time": T.isoformat(),
        }
    )
    chunk = decode_export_lines(lines, 1, export, TABLE)
    assert not chunk.bad_lines
    return chunk.rows.append_column("export_id", pa.array([EXPORT_ID] * chunk.rows.num_rows, pa.string()))


def _expected(state: dict[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The rows a scan of the table gives, through the same decoder (an INSERT of each live item)."""
    changes = [Change("INSERT", item_key(item), item, None, T) for item in state.values()]
    event = changes_event(changes, table_name=TABLE)
    rows = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows.select(state_columns())
    return {(f"EVENT#{row['event_id']}", f"FAN#{row['fan_id']}"): row for row in rows.to_pylist()}


def _query(changes_rows: pa.Table, snapshot_rows: pa.Table) -> dict[Key, dict[str, Any]]:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.register("changes_rows", changes_rows)
    connection.register("snapshot_rows", snapshot_rows)
    connection.execute('CREATE SCHEMA "demand_db"')
    connection.execute('CREATE VIEW "demand_db"."demand_changes" AS SELECT * FROM changes_rows')
    connection.execute('CREATE VIEW "demand_db"."demand_changes_snapshots" AS SELECT * FROM snapshot_rows')
    sql = current_registrations_sql(
        "demand_db", "demand_changes", "demand_changes_snapshots", export_id=EXPORT_ID, export_time=T
    )
    (duck_sql,) = sqlglot.transpile(sql, read="athena", write="duckdb")
    result = connection.sql(duck_sql).to_arrow_table()
    columns = state_columns()
    schema = pa.schema([arrow_schema().field(name) for name in columns])
    found = result.select(columns).cast(schema).to_pylist()
    return {(f"EVENT#{row['event_id']}", f"FAN#{row['fan_id']}"): row for row in found}


@pytest.mark.parametrize("snapshot_holds_the_instant", [True, False])
@pytest.mark.parametrize("seed", [3, 8])
def test_current_state_equals_a_scan_of_the_table(seed: int, snapshot_holds_the_instant: bool):
    changes, cases = _timeline(seed)
    snapshot = _snapshot_rows(_state(changes, T, inclusive=snapshot_holds_the_instant))
    expected = _expected(_state(changes))
    found = _query(_change_rows(changes), snapshot)
    assert set(found) == set(expected)
    for key, row in expected.items():
        assert found[key] == row, key  # every attribute of every live item
    assert cases["changed at the export instant"] in found
    assert found[cases["changed at the export instant"]]["status"] == "SELECTED"
    assert found[cases["changed exactly T - 5 min"]]["status"] == "SELECTED"
    assert cases["removed just before T"] not in found
    assert cases["removed after T"] not in found
    assert cases["deleted long before T"] not in found
    assert cases["inserted after T"] in found


def test_changes_before_the_snapshot_are_ignored():
    """Change rows older than T - 5 min do not count: an item the snapshot lacks is not revived by them (here the
    lake lost the early removals, as a stream read from a later start would)."""
    changes, _ = _timeline(5)
    snapshot = _snapshot_rows(_state(changes, T))
    early = [change for change in changes if change.time < T - timedelta(minutes=5) and change.event_name != "REMOVE"]
    assert {(change.keys["pk"], change.keys["sk"]) for change in early} - set(_state(changes, T))  # some were removed
    found = _query(_change_rows(early), snapshot)
    assert set(found) == set(_state(changes, T))  # exactly the snapshot


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"export_id": "x'; DROP"}, "export_id"),
        ({"database": "Demand-DB"}, "database"),
        ({"export_time": datetime(2026, 3, 31)}, "no time zone"),
        ({"lead": timedelta(minutes=-1)}, "lead"),
    ],
)
def test_bad_arguments_are_refused(overrides: dict[str, Any], message: str):
    arguments: dict[str, Any] = {
        "database": "demand_db",
        "changes_table": "demand_changes",
        "snapshots_table": "demand_changes_snapshots",
        "export_id": EXPORT_ID,
        "export_time": T,
        **overrides,
    }
    with pytest.raises(ValueError, match=message):
        current_registrations_sql(
            arguments.pop("database"), arguments.pop("changes_table"), arguments.pop("snapshots_table"), **arguments
        )
