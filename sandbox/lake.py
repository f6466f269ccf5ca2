"""The lake as analysts see it locally: the Parquet and quarantine objects in S3, queried with DuckDB.

The snapshot table (``<glue table>_snapshots``, back-filled from an export under ``demand/snapshots/``) is
registered next to the change table, so the current-state query of ``components.current_state`` runs as well.

Parquet is read through pyarrow's S3 filesystem into Arrow (DuckDB's httpfs extension would be downloaded at
run time) and registered in DuckDB under the Glue database and table names, so the workgroup's named queries,
written once in Athena SQL in ``components.catalog`` and translated by sqlglot, run unchanged.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import sqlglot

from components.catalog import CHANGES_TABLE, PARTITION_KEYS, REGISTRATIONS_TABLE, NamedQuerySpec, named_queries
from components.current_state import DEFAULT_LEAD, current_registrations_sql, state_columns
from ops.outputs import StackOutputs
from pipeline.schema import arrow_schema
from pipeline.snapshot import DEFAULT_SNAPSHOT_PREFIX
from sandbox.athena_duckdb import AthenaOnDuckDB

CURATED_TABLES = (CHANGES_TABLE, REGISTRATIONS_TABLE)

__all__ = ["CURATED_TABLES", "Lake", "LakeCounts", "register_as_athena_reads", "to_duckdb"]


def to_duckdb(athena_sql: str) -> str:
    """Athena (Trino) SQL -> DuckDB SQL."""
    return ";\n".join(sqlglot.transpile(athena_sql, read="athena", write="duckdb"))


@dataclass(frozen=True)
class LakeCounts:
    """What landed: rows (and distinct changes) in Parquet, quarantined records (each once), objects."""

    rows: int
    distinct_changes: int
    quarantined: int
    parquet_objects: int
    quarantine_objects: int

    @property
    def duplicate_rows(self) -> int:
        return self.rows - self.distinct_changes

    @property
    def objects(self) -> int:
        return self.parquet_objects + self.quarantine_objects


def register_as_athena_reads(connection: duckdb.DuckDBPyConnection, view: str, rows: pa.Table) -> None:
    """Make ``view`` (a quoted, possibly qualified name) show ``rows`` as Athena reads them from Parquet through a
    Hive table: timestamps truncated to the millisecond (engine v3 reads them as ``timestamp(3)``)."""
    source = "rows_of_" + "".join(character if character.isalnum() else "_" for character in view)
    connection.register(source, rows)
    truncated = [
        f'date_trunc(\'millisecond\', "{field.name}") AS "{field.name}"'
        for field in rows.schema
        if pa.types.is_timestamp(field.type)
    ]
    replaced = f" REPLACE ({', '.join(truncated)})" if truncated else ""
    connection.execute(f"CREATE VIEW {view} AS SELECT *{replaced} FROM {source}")  # noqa: S608 - names from the caller


class Lake:
    """The events and quarantine prefixes of one stack's bucket."""

    def __init__(self, outputs: StackOutputs, *, s3: Any, filesystem: pafs.FileSystem, catalog: Any = None) -> None:
        self.outputs = outputs
        self._s3 = s3
        self._fs = filesystem
        self._catalog = catalog  # pyiceberg's catalog of the curated tables (None: the raw layer only)

    def curated_tables(self) -> dict[str, Any]:
        """The curated Iceberg tables the curator has created so far, by name (none before its first run)."""
        if self._catalog is None:
            return {}
        from pyiceberg.exceptions import NoSuchTableError  # noqa: PLC0415 - pyiceberg only where curated tables are

        database = self.outputs.athena_database_name
        tables: dict[str, Any] = {}
        for name in CURATED_TABLES:
            with contextlib.suppress(NoSuchTableError):
                tables[name] = self._catalog.load_table((database, name))
        return tables

    def _keys(self, prefix: str, suffix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.outputs.bucket_name, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(suffix))
        return sorted(keys)

    def parquet_keys(self) -> list[str]:
        return self._keys(self.outputs.events_prefix, ".parquet")

    def quarantine_keys(self) -> list[str]:
        """The stream's quarantine objects (the backfill's bad lines, under ``snapshots/``, are not changes)."""
        snapshots = f"{self.outputs.quarantine_prefix}snapshots/"
        return [key for key in self._keys(self.outputs.quarantine_prefix, ".jsonl.gz") if not key.startswith(snapshots)]

    @property
    def snapshots_table(self) -> str:
        """The snapshot table's Glue name: the change table's, with ``_snapshots``."""
        return f"{self.outputs.glue_table_name}_snapshots"

    def snapshot_keys(self) -> list[str]:
        return [key for key in self._keys(DEFAULT_SNAPSHOT_PREFIX, ".parquet") if "/_" not in key]

    def snapshots(self) -> pa.Table:
        """Every snapshot row, with its ``export_id`` partition column."""
        keys = self.snapshot_keys()
        partitions = pa.schema([("export_id", pa.string())])
        schema = pa.schema(list(arrow_schema()) + list(partitions))
        if not keys:
            return schema.empty_table()
        dataset = ds.dataset(
            [f"{self.outputs.bucket_name}/{key}" for key in keys],
            schema=schema,
            format="parquet",
            filesystem=self._fs,
            partitioning=ds.partitioning(partitions, flavor="hive"),
            partition_base_dir=f"{self.outputs.bucket_name}/{DEFAULT_SNAPSHOT_PREFIX.rstrip('/')}",
        )
        return dataset.to_table()

    def events(self) -> pa.Table:
        """Every row under the events prefix, with the ``dt`` and ``hour`` partition columns (strings, as in Glue)."""
        keys = self.parquet_keys()
        partitions = pa.schema([(name, pa.string()) for name, _ in PARTITION_KEYS])
        schema = pa.schema(list(arrow_schema()) + list(partitions))
        if not keys:
            return schema.empty_table()
        dataset = ds.dataset(
            [f"{self.outputs.bucket_name}/{key}" for key in keys],
            schema=schema,
            format="parquet",
            filesystem=self._fs,
            partitioning=ds.partitioning(partitions, flavor="hive"),
            partition_base_dir=f"{self.outputs.bucket_name}/{self.outputs.events_prefix.rstrip('/')}",
        )
        return dataset.to_table()

    def quarantined(self) -> list[dict[str, Any]]:
        """Every quarantined record (one JSON line each)."""
        lines: list[dict[str, Any]] = []
        for key in self.quarantine_keys():
            body = self._s3.get_object(Bucket=self.outputs.bucket_name, Key=key)["Body"].read()
            text = gzip.decompress(body).decode("utf-8")
            lines.extend(json.loads(line) for line in text.splitlines() if line.strip())
        return lines

    def quarantined_records(self) -> list[dict[str, Any]]:
        """Every quarantined record once: a batch delivered again quarantines its bad records again (same shard and
        sequence number), as the stream's at-least-once delivery writes its good records twice."""
        seen: set[tuple[str, str]] = set()
        records: list[dict[str, Any]] = []
        for line in self.quarantined():
            key = (str(line.get("shard_id")), str(line.get("sequence_number")))
            if key not in seen:
                seen.add(key)
                records.append(line)
        return records

    def counts(self) -> LakeCounts:
        events = self.events()
        distinct = len(set(events.column("change_id").to_pylist())) if events.num_rows else 0
        return LakeCounts(
            rows=events.num_rows,
            distinct_changes=distinct,
            quarantined=len(self.quarantined_records()),
            parquet_objects=len(self.parquet_keys()),
            quarantine_objects=len(self.quarantine_keys()),
        )

    def connect(self, events: pa.Table | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection where ``"<glue database>"."<glue table>"`` is the events table.

        The views show every timestamp at millisecond precision, as Athena reads a Hive table's Parquet
        timestamps: a query that ordered changes by ``change_time`` would be as wrong here as in Athena."""
        connection = duckdb.connect()
        database, table = self.outputs.athena_database_name, self.outputs.glue_table_name
        connection.execute(f'CREATE SCHEMA "{database}"')
        register_as_athena_reads(connection, f'"{database}"."{table}"', self.events() if events is None else events)
        register_as_athena_reads(connection, f'"{database}"."{self.snapshots_table}"', self.snapshots())
        return connection

    def named_queries(self) -> list[NamedQuerySpec]:
        """The workgroup's named queries (the same builder the Athena component uses)."""
        return named_queries(self.outputs.athena_database_name, self.outputs.glue_table_name)

    def query(self, athena_sql: str, connection: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """Run Athena SQL on the lake through DuckDB; the result as an Arrow table. The curated Iceberg tables are
        read through pyiceberg scans at the snapshot each reference asks for (``FOR TIMESTAMP AS OF`` too)."""
        connection = connection or self.connect()
        athena = AthenaOnDuckDB(connection=connection)
        for name, table in self.curated_tables().items():
            athena.add_iceberg(self.outputs.athena_database_name, name, table)
        return athena.query(athena_sql)

    def current_state(
        self,
        export_id: str,
        export_time: datetime,
        *,
        lead: timedelta = DEFAULT_LEAD,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> pa.Table:
        """The current-state query (``components.current_state``) over snapshot ``export_id`` and the change rows:
        one row per live registration, its columns typed as in the contract, plus ``last_change_time``."""
        connection = connection or self.connect()
        connection.execute("SET TimeZone = 'UTC'")
        sql = current_registrations_sql(
            self.outputs.athena_database_name,
            self.outputs.glue_table_name,
            self.snapshots_table,
            export_id=export_id,
            export_time=export_time,
            lead=lead,
        )
        result = self.query(sql, connection)
        columns = state_columns()
        schema = pa.schema([arrow_schema().field(name) for name in columns])
        return result.select(columns).cast(schema)

    def unchanged_snapshot_rows(self, export_id: str, connection: duckdb.DuckDBPyConnection | None = None) -> int:
        """Rows of snapshot ``export_id`` whose registration has no change row: the items the current state takes
        from the snapshot alone, which a query over the change table cannot see."""
        return len(self.unchanged_snapshot_keys(export_id, connection))

    def unchanged_snapshot_keys(
        self, export_id: str, connection: duckdb.DuckDBPyConnection | None = None
    ) -> set[tuple[str, str]]:
        """The (event_id, fan_id) of the rows ``unchanged_snapshot_rows`` counts."""
        connection = connection or self.connect()
        database = self.outputs.athena_database_name
        sql = f"""SELECT event_id, fan_id FROM "{database}"."{self.snapshots_table}" AS snapshot
WHERE export_id = $export_id AND NOT EXISTS (
  SELECT 1 FROM "{database}"."{self.outputs.glue_table_name}" AS change
  WHERE change.event_id = snapshot.event_id AND change.fan_id = snapshot.fan_id
)"""  # noqa: S608 - names from the stack outputs, the export id bound
        rows = connection.execute(sql, {"export_id": export_id}).fetchall()
        return {(str(event_id), str(fan_id)) for event_id, fan_id in rows}
