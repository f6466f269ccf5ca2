"""Catalog builders: Glue columns follow the handler's schema; named queries run in DuckDB after transpiling
(the curated tables as plain tables here; tests/infra/test_curated_queries.py runs them on tables the curator wrote)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from components.catalog import (
    CHANGES_TABLE,
    REGISTRATIONS_TABLE,
    glue_table_input,
    named_queries,
    workgroup_configuration,
)
from components.function_environment import lambda_environment
from components.naming import prefixes
from components.settings import settings_from_stack_file
from curator.tables import changes_spec, registrations_spec
from pipeline.schema import arrow_schema, glue_columns
from sandbox.athena_duckdb import AthenaOnDuckDB

_HIVE = {
    pa.string(): "string",
    pa.int64(): "bigint",
    pa.int32(): "int",
    pa.bool_(): "boolean",
    pa.float64(): "double",
    pa.timestamp("ms", tz="UTC"): "timestamp",
    pa.timestamp("us", tz="UTC"): "timestamp",
    pa.list_(pa.string()): "array<string>",
    pa.map_(pa.string(), pa.string()): "map<string,string>",
}


def test_glue_columns_equal_the_arrow_schema_column_by_column() -> None:
    table = glue_table_input(table_name="demand_changes", location="s3://bucket/demand/events/")
    columns = table["StorageDescriptor"]["Columns"]
    schema = arrow_schema()
    assert [column["Name"] for column in columns] == schema.names
    for column, field in zip(columns, schema, strict=True):
        assert column["Type"] == _HIVE[field.type], field.name
    assert [column["Name"] for column in columns] == [column.name for column in glue_columns()]


def test_glue_table_is_parquet_with_partition_projection() -> None:
    table = glue_table_input(table_name="demand_changes", location="s3://bucket/demand/events/")
    descriptor = table["StorageDescriptor"]
    assert (
        descriptor["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    )
    assert descriptor["InputFormat"].endswith("MapredParquetInputFormat")
    assert descriptor["OutputFormat"].endswith("MapredParquetOutputFormat")
    assert descriptor["Location"] == "s3://bucket/demand/events/"
    assert table["PartitionKeys"] == [
        {"Name": "dt", "Type": "string", "Comment": "Day of the change (UTC), yyyy-MM-dd."},
        {"Name": "hour", "Type": "string", "Comment": "Hour of the change (UTC), 00-23."},
    ]
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.dt.type"] == "date"
    assert parameters["projection.dt.format"] == "yyyy-MM-dd"
    assert parameters["projection.dt.range"].endswith(",NOW")
    assert parameters["projection.dt.interval"] == "1"
    assert parameters["projection.dt.interval.unit"] == "DAYS"
    assert parameters["projection.hour.type"] == "integer"
    assert parameters["projection.hour.range"] == "0,23"
    assert parameters["projection.hour.digits"] == "2"
    assert parameters["storage.location.template"] == "s3://bucket/demand/events/dt=${dt}/hour=${hour}/"
    assert parameters["classification"] == "parquet"
    assert parameters["EXTERNAL"] == "TRUE"
    assert table["TableType"] == "EXTERNAL_TABLE"


def test_glue_table_rejects_a_location_without_trailing_slash() -> None:
    with pytest.raises(ValueError, match="s3:// URI ending with '/'"):
        glue_table_input(table_name="t", location="s3://bucket/demand/events")


def test_workgroup_configuration() -> None:
    config = workgroup_configuration(results_location="s3://b/demand/athena-results/", bytes_scanned_cutoff=10**10)
    assert config["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == 10**10
    assert config["ResultConfiguration"] == {
        "OutputLocation": "s3://b/demand/athena-results/",
        "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
    }
    kms = workgroup_configuration(
        results_location="s3://b/r/", bytes_scanned_cutoff=10**8, kms_key_arn="arn:aws:kms:us-east-1:1:key/k"
    )
    assert kms["ResultConfiguration"]["EncryptionConfiguration"] == {
        "EncryptionOption": "SSE_KMS",
        "KmsKey": "arn:aws:kms:us-east-1:1:key/k",
    }


def _row(now: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": "E1",
        "fan_id": "F1",
        "market_id": 7,
        "status": "REGISTERED",
        "quantity": 2,
        "price_levels": ["PL1"],
        "channel": "web",
        "presale_code": None,
        "created_at": now - timedelta(days=1),
        "updated_at": None,
        "attributes": None,
        "op": "INSERT",
        "change_id": "c1",
        "change_time": now,
        "shard_id": "shardId-000000000000",
        "sequence_number": "1",
        "table_name": "t",
        "extra_attributes": None,
    }
    row.update(values)
    change_time = row["change_time"]
    row["change_time_us"] = (change_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    row["dt"] = change_time.strftime("%Y-%m-%d")
    row["hour"] = change_time.strftime("%H")
    return row


# The queries' clock: each query reads CURRENT_TIMESTAMP, which _run pins to this moment (a fixture built from the
# wall clock put the rows of one test on two days when it ran just after midnight).
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def lake() -> AthenaOnDuckDB:
    """The raw table holding six rows (five changes) the curator has not reached; the curated tables as named."""
    now = NOW - timedelta(minutes=5)
    earlier = now - timedelta(minutes=10)
    long_sequence = "4" + "9" * 55  # 56 digits, larger than the short one numerically and when padded
    rows = [
        # F1 on E1: inserted, delivered twice, then modified (same change_time, later sequence number).
        _row(now, change_id="c1", sequence_number="12", change_time=earlier),
        _row(now, change_id="c1", sequence_number="12", change_time=earlier),
        _row(now, change_id="c2", sequence_number=long_sequence, change_time=earlier, op="MODIFY", status="SELECTED"),
        # F2 on E1: inserted, then removed.
        _row(now, fan_id="F2", change_id="c3", sequence_number="20", change_time=earlier),
        _row(now, fan_id="F2", change_id="c4", sequence_number="21", op="REMOVE"),
        # F3 on E2: registered once, 4 tickets.
        _row(now, event_id="E2", fan_id="F3", change_id="c5", sequence_number="30", quantity=4),
    ]
    schema = arrow_schema()
    full = schema.append(pa.field("dt", pa.string())).append(pa.field("hour", pa.string()))
    runner = AthenaOnDuckDB(now=NOW)
    runner.add_rows("demo_db", "demand_changes", pa.Table.from_pylist(rows, schema=full))
    runner.add_rows("demo_db", CHANGES_TABLE, changes_spec().arrow_schema.empty_table())
    runner.add_rows("demo_db", REGISTRATIONS_TABLE, registrations_spec().arrow_schema.empty_table())
    snapshots = pa.table(
        {"committed_at": pa.array([], pa.timestamp("ms", tz="UTC")), "snapshot_id": pa.array([], pa.int64())}
    )
    for name in (CHANGES_TABLE, REGISTRATIONS_TABLE):
        runner.add_rows("demo_db", f"{name}$snapshots", snapshots)
    return runner


def _curate(runner: AthenaOnDuckDB) -> None:
    """The curator's run, as far as these queries see it: each change once in the log, committed at NOW - 1 min."""
    raw = runner.query('SELECT * FROM "demo_db"."demand_changes"')
    unique = raw.take([0, *range(2, raw.num_rows)])  # c1's second delivery dropped
    runner.add_rows("demo_db", CHANGES_TABLE, unique.select(changes_spec().arrow_schema.names))
    committed = pa.table(
        {"committed_at": pa.array([NOW - timedelta(minutes=1)], pa.timestamp("ms", tz="UTC")), "snapshot_id": [1]}
    )
    runner.add_rows("demo_db", f"{CHANGES_TABLE}$snapshots", committed)


def _run(runner: AthenaOnDuckDB, name: str) -> list[tuple[Any, ...]]:
    spec = {query.name: query for query in named_queries("demo_db", "demand_changes")}[name]
    (duck_sql,) = sqlglot.transpile(spec.sql, read="athena", write="duckdb")
    assert "CURRENT_TIMESTAMP" in duck_sql or name in ("current_registrations",)
    return [tuple(row.values()) for row in runner.rows(spec.sql)]


def test_named_queries_are_the_ones_analysts_need() -> None:
    queries = named_queries("db", "tbl")
    assert [query.name for query in queries] == [
        "demand_per_event_per_day",
        "current_registrations",
        "registrations_as_of",
        "pipeline_freshness",
        "changes_not_yet_curated",
        "current_registrations_to_the_minute",
    ]
    reads = {  # the database's tables each query reads (CTE names aside)
        query.name: {
            table.name for table in sqlglot.parse_one(query.sql, read="athena").find_all(exp.Table) if table.db
        }
        for query in queries
    }
    assert reads == {
        "demand_per_event_per_day": {"registration_changes"},
        "current_registrations": {"registrations"},
        "registrations_as_of": {"registrations"},
        "pipeline_freshness": {
            "tbl",
            "registration_changes",
            "registrations",
            "registration_changes$snapshots",
            "registrations$snapshots",
        },
        "changes_not_yet_curated": {"tbl", "registration_changes"},
        "current_registrations_to_the_minute": {"tbl", "registration_changes", "registrations"},
    }
    for query in queries:
        assert query.description
        for table in sqlglot.parse_one(query.sql, read="athena").find_all(exp.Table):
            assert table.db in ("db", ""), (query.name, table.sql())
    as_of = sqlglot.parse_one(queries[2].sql, read="athena").find(exp.Table)
    assert as_of is not None
    assert as_of.args["version"].sql(dialect="athena") == "FOR TIMESTAMP AS OF (CURRENT_TIMESTAMP - INTERVAL '1' DAY)"


def test_current_registrations_to_the_minute_dedupes_and_drops_removed(lake: AthenaOnDuckDB) -> None:
    expected = [("E1", "F1", "SELECTED", 2), ("E2", "F3", "REGISTERED", 4)]
    rows = _run(lake, "current_registrations_to_the_minute")
    assert [(row[0], row[1], row[3], row[4]) for row in rows] == expected
    _curate(lake)  # curated, not yet applied to registrations (a run that crashed between its two commits)
    rows = _run(lake, "current_registrations_to_the_minute")
    assert rows == []  # every raw change is curated: what is left is registrations, empty here
    assert _run(lake, "changes_not_yet_curated") == []


def test_changes_not_yet_curated_lists_each_change_once(lake: AthenaOnDuckDB) -> None:
    rows = lake.rows(
        next(q.sql for q in named_queries("demo_db", "demand_changes") if q.name == "changes_not_yet_curated")
    )
    assert sorted(row["change_id"] for row in rows) == ["c1", "c2", "c3", "c4", "c5"]
    assert list(rows[0]) == arrow_schema().names


def test_demand_per_event_per_day(lake: AthenaOnDuckDB) -> None:
    assert _run(lake, "demand_per_event_per_day") == []  # nothing curated yet
    _curate(lake)
    rows = _run(lake, "demand_per_event_per_day")
    assert [(row[1], row[2], row[3], row[4]) for row in rows] == [("E1", "SELECTED", 1, 2), ("E2", "REGISTERED", 1, 4)]


def test_pipeline_freshness(lake: AthenaOnDuckDB) -> None:
    _curate(lake)
    rows = {row[0]: row[1:] for row in _run(lake, "pipeline_freshness")}
    assert list(rows) == ["demand_changes", "registration_changes", "registrations"]
    layer, newest, lag_seconds, changes_last_hour, last_commit = rows["demand_changes"]
    assert (layer, lag_seconds, changes_last_hour, last_commit) == ("raw", 5 * 60, 5, None)  # six rows, five changes
    assert newest == NOW - timedelta(minutes=5)
    layer, newest, lag_seconds, changes_last_hour, last_commit = rows["registration_changes"]
    assert (layer, lag_seconds, changes_last_hour) == ("curated", 5 * 60, 5)
    assert last_commit == NOW - timedelta(minutes=1)
    assert rows["registrations"] == ("curated", None, None, None, None)  # never committed, no rows


def test_lambda_environment_matches_the_handler_contract() -> None:
    settings = settings_from_stack_file("prod1")
    environment = lambda_environment(settings, "bucket-x", prefixes())
    assert environment == {
        "OUTPUT_BUCKET": "bucket-x",
        "OUTPUT_PREFIX": "demand/events/",
        "QUARANTINE_PREFIX": "demand/quarantine/",
        "CHANGE_TIME_PRECISION": "MICROSECOND",
        "LOG_LEVEL": "INFO",
        "POWERTOOLS_SERVICE_NAME": "prd3292-prod1-demand-processor",
        "POWERTOOLS_METRICS_NAMESPACE": "DmdPipeline",
        "SOURCE_TABLE_NAME": "prd3292-prod1-us-east-1-demand-table",
    }
