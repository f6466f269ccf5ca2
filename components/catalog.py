"""Glue table, Athena workgroup and named queries as plain data, in the boto3 API shapes.

Pure builders (no Pulumi): the Athena component turns them into resources, and the local sandbox creates the
same objects in moto with boto3, so the deployed catalog and the local one cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from pipeline.change_order import first_copy_sql, newest_first_sql, newest_key_sql
from pipeline.normalize import EXTRA_COLUMN, item_specs
from pipeline.schema import glue_columns

if TYPE_CHECKING:
    from components.current_state import PublishedSnapshot

__all__ = [
    "CHANGES_TABLE",
    "DEFAULT_PROJECTION_START",
    "DEFAULT_QUERY_WINDOW_DAYS",
    "ENGINE_VERSION",
    "PARQUET_INPUT_FORMAT",
    "PARQUET_OUTPUT_FORMAT",
    "PARQUET_SERDE",
    "PARTITION_KEYS",
    "RAW_WINDOW_DAYS",
    "REGISTRATIONS_TABLE",
    "NamedQuerySpec",
    "curated_window",
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
#: Days (today included) of the raw table a named query reads: the curator deletes raw objects it has covered
#: (after a grace period), so the raw table holds minutes to hours; two days cover midnight and a curator that
#: has been stopped for a day.
RAW_WINDOW_DAYS = 2
#: The curated Iceberg tables (curator.tables, which the curator creates in the stack's database).
CHANGES_TABLE = "registration_changes"
REGISTRATIONS_TABLE = "registrations"


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
# A registration's columns (the contract's item attributes, less the change's TTL flag, and the unknown ones):
# those of components.current_state.state_columns, which imports this module.
_STATE_COLUMNS = (*(spec.name for spec in item_specs() if spec.name != "deleted_by_ttl"), EXTRA_COLUMN)


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


def curated_window(window_days: int) -> str:
    """Predicate on ``change_time`` keeping the last ``window_days`` days (UTC), today included: the curated
    change log's counterpart of ``recent_partitions``. The table is partitioned by hour of ``change_time``
    (hidden partitioning), so Athena prunes every older hour from this predicate alone."""
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    return f"change_time >= date_trunc('day', current_timestamp - INTERVAL '{window_days - 1}' DAY)"


def _not_yet_curated(raw: str, changes: str) -> str:
    """CTEs ``unique_changes`` (each raw change once, the last two days of ``dt`` partitions) and ``pending``:
    those whose ``change_id`` is not in the curated change log (over the same two days)."""
    window = recent_partitions(RAW_WINDOW_DAYS)
    source = f"(\n      SELECT * FROM {raw}\n      WHERE {window}\n    ) AS recent_changes"  # noqa: S608
    return f"""{unique_changes_cte(source)},
curated_ids AS (
  SELECT change_id FROM {changes}
  WHERE {curated_window(RAW_WINDOW_DAYS)}
),
pending AS (
  SELECT * FROM unique_changes
  WHERE NOT EXISTS (SELECT 1 FROM curated_ids WHERE curated_ids.change_id = unique_changes.change_id)
)"""  # noqa: S608


def named_queries(
    database: str,
    table: str,
    *,
    window_days: int = DEFAULT_QUERY_WINDOW_DAYS,
    snapshot: PublishedSnapshot | None = None,
) -> list[NamedQuerySpec]:
    """The named queries analysts need (Athena/Trino SQL, DuckDB-transpilable), in ``database``.

    They read the curated Iceberg tables (``registration_changes``, ``registrations``; the curator writes them
    every ``curationIntervalMinutes``); the raw change table ``table`` (written within about a minute, kept only
    until the curator has covered it) serves the minutes the curator has not reached: ``changes_not_yet_curated``
    lists them, ``current_registrations_to_the_minute`` applies them to ``registrations``, and
    ``pipeline_freshness`` says how fresh each table is. Reads of the change log are bounded by ``window_days``
    days of ``change_time`` (hour partitions), reads of the raw table by two days of ``dt`` partitions, so the
    workgroup's scan cutoff never cancels them as the lake grows; ``registrations`` holds one row per live
    registration and is read whole. ``snapshot`` (the published backfill snapshot ``registrations`` was seeded
    from) is named in ``current_registrations``' description.
    """
    raw = f'"{database}"."{table}"'
    changes = f'"{database}"."{CHANGES_TABLE}"'
    state = f'"{database}"."{REGISTRATIONS_TABLE}"'
    columns = ", ".join(_STATE_COLUMNS)
    # Identifiers come from the naming helper, never from user input.
    demand_per_event_per_day = f"""-- Demand per event per day, from the curated change log (each change once): for
-- each day and event, the fans whose last change that day left them in each status (removals excluded), and
-- their tickets. Days: the last {window_days} (UTC), today included. Changes the curator has not reached yet (its last
-- run is at most curationIntervalMinutes old) are in changes_not_yet_curated. Each fan's last change of the day is
-- an aggregate (max_by over the order of changes), not a window: no sort of the week's changes.
WITH last_of_day AS (
  SELECT date_format(change_time, '%Y-%m-%d') AS dt, event_id,
         max_by(
           CAST(ROW(status, quantity, op) AS ROW(status VARCHAR, quantity INTEGER, op VARCHAR)),
           {newest_key_sql()}
         ) AS last_change
  FROM {changes}
  WHERE {curated_window(window_days)}
  GROUP BY date_format(change_time, '%Y-%m-%d'), event_id, fan_id
)
SELECT dt, event_id, last_change.status AS status, count(*) AS fans, sum(last_change.quantity) AS tickets
FROM last_of_day
WHERE last_change.op <> 'REMOVE'
GROUP BY dt, event_id, last_change.status
ORDER BY dt, event_id, status"""  # noqa: S608
    current_registrations = f"""-- Current state per registration: the curated registrations table, one row per live
-- (event_id, fan_id) with its last change, as of the curator's last run (every curationIntervalMinutes).
-- current_registrations_to_the_minute adds the changes since.
SELECT {columns}, change_time AS last_change_time
FROM {state}
ORDER BY event_id, fan_id"""  # noqa: S608
    registrations_as_of = f"""-- Registrations as they were at a past moment: Iceberg time travel reads the snapshot
-- the curator had committed at that moment (one per run, so the state at most curationIntervalMinutes before it).
-- EDIT the moment below, e.g. TIMESTAMP '2026-03-31 19:00:00 UTC'; it must lie within the time-travel window
-- (timeTravelDays, 7 by default): older snapshots are expired.
SELECT {columns}, change_time AS last_change_time
FROM {state} FOR TIMESTAMP AS OF (current_timestamp - INTERVAL '1' DAY)
ORDER BY event_id, fan_id"""  # noqa: S608
    freshness = f"""-- How fresh each table is: the newest change it holds, how old that change is, distinct
-- changes of the last hour, and when the curator last committed the table. The raw table is about a minute
-- behind the source (stream batching); the curated tables up to curationIntervalMinutes plus one run behind it.
-- Each change is counted once (duplicate deliveries in the raw table included). Reads two days.
WITH raw_changes AS (
  SELECT change_id, change_time FROM {raw}
  WHERE {recent_partitions(RAW_WINDOW_DAYS)}
),
curated_changes AS (
  SELECT change_id, change_time FROM {changes}
  WHERE {curated_window(RAW_WINDOW_DAYS)}
)
SELECT '{table}' AS table_name, 'raw' AS layer, max(change_time) AS newest_change_time,
       date_diff('second', max(change_time), current_timestamp) AS lag_seconds,
       count(DISTINCT CASE WHEN change_time >= current_timestamp - INTERVAL '1' HOUR THEN change_id END)
         AS changes_last_hour,
       NULL AS last_commit_time
FROM raw_changes
UNION ALL
SELECT '{CHANGES_TABLE}', 'curated', max(change_time), date_diff('second', max(change_time), current_timestamp),
       count(DISTINCT CASE WHEN change_time >= current_timestamp - INTERVAL '1' HOUR THEN change_id END),
       (SELECT max(committed_at) FROM "{database}"."{CHANGES_TABLE}$snapshots")
FROM curated_changes
UNION ALL
SELECT '{REGISTRATIONS_TABLE}', 'curated', max(change_time), date_diff('second', max(change_time), current_timestamp),
       NULL, (SELECT max(committed_at) FROM "{database}"."{REGISTRATIONS_TABLE}$snapshots")
FROM {state}
ORDER BY layer DESC, table_name"""  # noqa: S608
    contract = ", ".join(column.name for column in glue_columns())
    not_yet_curated = f"""-- Changes the curator has not reached yet: raw rows of the last two days whose change is
-- not in registration_changes, each change once (duplicate deliveries removed, keeping the copy the curator
-- keeps). Together with registration_changes: every change, each once, to the minute.
WITH {_not_yet_curated(raw, changes)}
SELECT {contract}
FROM pending
ORDER BY change_time, event_id, fan_id"""  # noqa: S608
    to_the_minute = f"""-- Current state to the minute: registrations (as of the curator's last run) with the
-- changes the curator has not reached yet applied on top, by the order of changes; a curated removal still
-- wins over an older late change. Only the keys those changes touch are recomputed.
WITH {_not_yet_curated(raw, changes)},
touched AS (
  SELECT DISTINCT event_id, fan_id FROM pending
),
candidates AS (
  SELECT {columns}, 'STATE' AS op, change_time, change_time_us, sequence_number, change_id
  FROM {state} AS stored
  WHERE EXISTS (SELECT 1 FROM touched WHERE touched.event_id = stored.event_id AND touched.fan_id = stored.fan_id)
  UNION ALL
  SELECT {columns}, op, change_time, change_time_us, sequence_number, change_id
  FROM {changes} AS curated
  WHERE op = 'REMOVE' AND {curated_window(RAW_WINDOW_DAYS)}
    AND EXISTS (SELECT 1 FROM touched WHERE touched.event_id = curated.event_id AND touched.fan_id = curated.fan_id)
  UNION ALL
  SELECT {columns}, op, change_time, change_time_us, sequence_number, change_id
  FROM pending
),
latest AS (
  SELECT *, row_number() OVER (PARTITION BY event_id, fan_id ORDER BY {_NEWEST_FIRST}) AS newest
  FROM candidates
)
SELECT {columns}, change_time AS last_change_time
FROM {state} AS stored
WHERE NOT EXISTS (SELECT 1 FROM touched WHERE touched.event_id = stored.event_id AND touched.fan_id = stored.fan_id)
UNION ALL
SELECT {columns}, change_time AS last_change_time
FROM latest
WHERE newest = 1 AND op <> 'REMOVE'
ORDER BY event_id, fan_id"""  # noqa: S608
    seeded = (
        f" Seeded from the published snapshot {snapshot.export_id} (exported"
        f" {snapshot.export_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ})."
        if snapshot is not None
        else ""
    )
    return [
        NamedQuerySpec(
            "demand_per_event_per_day",
            f"Fans and tickets per event, day and status over the last {window_days} days, from the curated change"
            " log (each fan's last change of the day).",
            demand_per_event_per_day,
        ),
        NamedQuerySpec(
            "current_registrations",
            "Current state of every registration: the curated registrations table, as of the curator's last run."
            + seeded,
            current_registrations,
        ),
        NamedQuerySpec(
            "registrations_as_of",
            "Registrations as they were at a past moment (Iceberg time travel; edit the moment in the query).",
            registrations_as_of,
        ),
        NamedQuerySpec(
            "pipeline_freshness",
            "How fresh each table is: newest change, its age in seconds, distinct changes of the last hour, last"
            " curator commit.",
            freshness,
        ),
        NamedQuerySpec(
            "changes_not_yet_curated",
            "Raw changes of the last two days the curator has not reached yet, each once.",
            not_yet_curated,
        ),
        NamedQuerySpec(
            "current_registrations_to_the_minute",
            "Current state to the minute: registrations plus the changes the curator has not reached yet.",
            to_the_minute,
        ),
    ]
