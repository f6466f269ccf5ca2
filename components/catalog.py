"""Glue table, Athena workgroup and named queries as plain data, in the boto3 API shapes.

Pure builders (no Pulumi): the Athena component turns them into resources, and the local sandbox creates the
same objects in moto with boto3, so the deployed catalog and the local one cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from pipeline.change_order import first_copy_sql, newest_first_sql
from pipeline.schema import glue_columns

if TYPE_CHECKING:
    from components.current_state import PublishedSnapshot

__all__ = [
    "DEFAULT_PROJECTION_START",
    "DEFAULT_QUERY_WINDOW_DAYS",
    "ENGINE_VERSION",
    "PARQUET_INPUT_FORMAT",
    "PARQUET_OUTPUT_FORMAT",
    "PARQUET_SERDE",
    "PARTITION_KEYS",
    "NamedQuerySpec",
    "glue_table_input",
    "named_queries",
    "recent_partitions",
    "snapshot_table_input",
    "snapshot_table_name",
    "unique_changes_cte",
    "workgroup_configuration",
]

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
ENGINE_VERSION = "Athena engine version 3"
# Hive-style partitions the handler writes: <events prefix>dt=YYYY-MM-DD/hour=HH/<file>.parquet
PARTITION_KEYS: tuple[tuple[str, str], ...] = (
    ("dt", "Day of the change (UTC), yyyy-MM-dd."),
    ("hour", "Hour of the change (UTC), 00-23."),
)
DEFAULT_PROJECTION_START = "2024-01-01"
# dt partitions (days, today included) a named query reads unless told otherwise.
DEFAULT_QUERY_WINDOW_DAYS = 7


@dataclass(frozen=True)
class NamedQuerySpec:
    """An Athena named query: name, description and SQL (Athena/Trino dialect)."""

    name: str
    description: str
    sql: str


def glue_table_input(
    *,
    table_name: str,
    location: str,
    description: str = "Demand registration changes captured from the demand table, one row per change.",
    projection_start: str = DEFAULT_PROJECTION_START,
) -> dict[str, Any]:
    """The Glue ``TableInput`` of the events table: Parquet, partitioned by dt/hour, partition projection on.

    ``location`` is the events prefix as an ``s3://bucket/prefix/`` URI. With projection, Athena computes the
    partitions from the template, so no crawler, ``MSCK REPAIR`` or ``ADD PARTITION`` is ever needed.
    """
    if not location.startswith("s3://") or not location.endswith("/"):
        raise ValueError(f"location must be an s3:// URI ending with '/', got {location!r}")
    return {
        "Name": table_name,
        "Description": description,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "EXTERNAL": "TRUE",
            "classification": "parquet",
            "projection.enabled": "true",
            "projection.dt.type": "date",
            "projection.dt.format": "yyyy-MM-dd",
            "projection.dt.range": f"{projection_start},NOW",
            "projection.dt.interval": "1",
            "projection.dt.interval.unit": "DAYS",
            "projection.hour.type": "integer",
            "projection.hour.range": "0,23",
            "projection.hour.digits": "2",
            "storage.location.template": f"{location}dt=${{dt}}/hour=${{hour}}/",
        },
        "PartitionKeys": [{"Name": name, "Type": "string", "Comment": comment} for name, comment in PARTITION_KEYS],
        "StorageDescriptor": {
            "Columns": [
                {"Name": column.name, "Type": column.type, "Comment": column.comment} for column in glue_columns()
            ],
            "Location": location,
            "InputFormat": PARQUET_INPUT_FORMAT,
            "OutputFormat": PARQUET_OUTPUT_FORMAT,
            "Compressed": True,
            "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
        },
    }


def snapshot_table_name(changes_table: str) -> str:
    """The snapshot table of a change table: ``<table>_snapshots`` (same columns, partitioned by export id)."""
    return f"{changes_table}_snapshots"


def snapshot_table_input(
    *,
    table_name: str,
    location: str,
    description: str = "Snapshots of the demand table back-filled from DynamoDB exports, one row per item; query one"
    " export_id at a time.",
) -> dict[str, Any]:
    """The Glue ``TableInput`` of the snapshot table: the change table's columns, partitioned by ``export_id``.

    ``location`` is the snapshot prefix as an ``s3://bucket/prefix/`` URI. The partition is projected with type
    ``injected``: Athena takes the export id from the query's ``WHERE export_id = '...'`` (a query without it is
    refused), so a new export needs no partition registered and a query never lists every export.
    """
    table = glue_table_input(table_name=table_name, location=location, description=description)
    table["Parameters"] = {
        "EXTERNAL": "TRUE",
        "classification": "parquet",
        "projection.enabled": "true",
        "projection.export_id.type": "injected",
        "storage.location.template": f"{location}export_id=${{export_id}}/",
    }
    table["PartitionKeys"] = [{"Name": "export_id", "Type": "string", "Comment": "DynamoDB export id of the snapshot."}]
    return table


def workgroup_configuration(
    *,
    results_location: str,
    bytes_scanned_cutoff: int,
    kms_key_arn: str | None = None,
) -> dict[str, Any]:
    """The Athena ``WorkGroupConfiguration``: engine v3, enforced, encrypted results, per-query scan limit."""
    if not results_location.startswith("s3://") or not results_location.endswith("/"):
        raise ValueError(f"results_location must be an s3:// URI ending with '/', got {results_location!r}")
    encryption: dict[str, Any] = (
        {"EncryptionOption": "SSE_KMS", "KmsKey": kms_key_arn} if kms_key_arn else {"EncryptionOption": "SSE_S3"}
    )
    return {
        "ResultConfiguration": {"OutputLocation": results_location, "EncryptionConfiguration": encryption},
        "EnforceWorkGroupConfiguration": True,
        "PublishCloudWatchMetricsEnabled": True,
        "BytesScannedCutoffPerQuery": bytes_scanned_cutoff,
        "RequesterPaysEnabled": False,
        "EngineVersion": {"SelectedEngineVersion": ENGINE_VERSION},
    }


# The order of changes and the copy of a duplicated change kept: one rule, pipeline.change_order.
_NEWEST_FIRST = newest_first_sql()


def unique_changes_cte(source: str) -> str:
    """CTE ``unique_changes`` over ``source`` (a table or a parenthesised subquery): each change once, even when
    Kinesis delivered it (and the handler wrote it) twice. The copy kept is the one compaction keeps (the lowest
    sequence number, ``pipeline.change_order``), so the answer does not depend on the order of files or rows."""
    return f"""unique_changes AS (
  SELECT *
  FROM (
    SELECT *, row_number() OVER (PARTITION BY change_id ORDER BY {first_copy_sql()}) AS copy_number
    FROM {source}
  ) AS copies
  WHERE copy_number = 1
)"""  # noqa: S608


def recent_partitions(window_days: int) -> str:
    """Predicate on ``dt`` keeping the last ``window_days`` days, today (UTC) included.

    A constant expression Athena folds before planning, so partition projection prunes every older day and a
    query's scan stays bounded however long the lake grows; sqlglot turns it into DuckDB's ``strftime``.
    """
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    return f"dt >= date_format(current_timestamp - INTERVAL '{window_days - 1}' DAY, '%Y-%m-%d')"


def named_queries(
    database: str,
    table: str,
    *,
    window_days: int = DEFAULT_QUERY_WINDOW_DAYS,
    snapshot: PublishedSnapshot | None = None,
) -> list[NamedQuerySpec]:
    """The named queries analysts need, against ``database.table`` (Athena/Trino SQL, DuckDB-transpilable).

    Each reads at most the last ``window_days`` days of ``dt`` partitions (pipeline_freshness: two), so the
    workgroup's per-query scan cutoff never cancels them as the lake grows. With a published ``snapshot``,
    ``current_registrations`` is the whole current state instead: that snapshot (in ``<table>_snapshots``)
    plus every change from its export time on (``components.current_state``).
    """
    table_source = f'"{database}"."{table}"'
    window = recent_partitions(window_days)
    source = f"(\n      SELECT * FROM {table_source}\n      WHERE {window}\n    ) AS recent_changes"  # noqa: S608
    # Identifiers come from the naming helper, never from user input.
    demand_per_event_per_day = f"""-- Demand per event per day: for each day and event, the fans whose last change
-- that day left them in each status (duplicate deliveries removed, removals excluded), and their tickets.
-- Days: the last {window_days} (dt partitions), today included.
WITH {unique_changes_cte(source)},
last_of_day AS (
  SELECT dt, event_id, fan_id, status, quantity, op,
         row_number() OVER (PARTITION BY dt, event_id, fan_id ORDER BY {_NEWEST_FIRST}) AS newest
  FROM unique_changes
)
SELECT dt, event_id, status, count(*) AS fans, sum(quantity) AS tickets
FROM last_of_day
WHERE newest = 1 AND op <> 'REMOVE'
GROUP BY dt, event_id, status
ORDER BY dt, event_id, status"""  # noqa: S608
    current_registrations = f"""-- Current state per registration: the latest change per (event_id, fan_id),
-- duplicate deliveries removed; registrations whose latest change is a REMOVE are gone and not listed.
-- Only registrations changed in the last {window_days} days (dt partitions, today included) are read.
WITH {unique_changes_cte(source)},
latest AS (
  SELECT *, row_number() OVER (PARTITION BY event_id, fan_id ORDER BY {_NEWEST_FIRST}) AS newest
  FROM unique_changes
)
SELECT event_id, fan_id, market_id, status, quantity, price_levels, channel, presale_code,
       created_at, updated_at, change_time AS last_change_time
FROM latest
WHERE newest = 1 AND op <> 'REMOVE'
ORDER BY event_id, fan_id"""  # noqa: S608
    pipeline_freshness = f"""-- Pipeline freshness: age of the newest change that reached the lake, and rows
-- seen in the last hour. Scans only the last two days of partitions.
SELECT max(change_time) AS newest_change_time,
       date_diff('second', max(change_time), current_timestamp) AS lag_seconds,
       sum(CASE WHEN change_time >= current_timestamp - INTERVAL '1' HOUR THEN 1 ELSE 0 END) AS rows_last_hour,
       count(*) AS rows_scanned
FROM {table_source}
WHERE {recent_partitions(2)}"""  # noqa: S608
    current = NamedQuerySpec(
        "current_registrations",
        f"Current state of registrations changed in the last {window_days} days: latest change per event and fan,"
        " duplicates and removals dropped.",
        current_registrations,
    )
    if snapshot is not None:
        from components.current_state import current_registrations_sql  # noqa: PLC0415 - it imports this module

        current = NamedQuerySpec(
            "current_registrations",
            f"Current state of every registration: snapshot {snapshot.export_id} (exported"
            f" {snapshot.export_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}) plus every change since, removals dropped.",
            current_registrations_sql(
                database,
                table,
                snapshot_table_name(table),
                export_id=snapshot.export_id,
                export_time=snapshot.export_time,
            ),
        )
    return [
        NamedQuerySpec(
            "demand_per_event_per_day",
            f"Fans and tickets per event, day and status over the last {window_days} days (each fan's last change of"
            " the day, duplicates removed).",
            demand_per_event_per_day,
        ),
        current,
        NamedQuerySpec(
            "pipeline_freshness",
            "Seconds since the newest change landed, and rows in the last hour.",
            pipeline_freshness,
        ),
    ]
