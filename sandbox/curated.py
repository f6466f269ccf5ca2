"""The curated tables as the demo reads them locally: pyiceberg's Glue catalog on the local AWS, scans into Arrow.

DuckDB cannot load its iceberg extension offline, so a table (at its current snapshot, or at an earlier one: time
travel) is read with ``scan(snapshot_id=...).to_arrow()`` and queried in DuckDB from there. The catalog acts as a
role of the local AWS (its temporary credentials, session token included) or as the administrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from components.current_state import state_columns

if TYPE_CHECKING:
    from pyiceberg.catalog.glue import GlueCatalog
    from pyiceberg.table import Table

    from sandbox.local_aws import LocalAws

__all__ = [
    "CHANGES_TABLE",
    "REGISTRATIONS_TABLE",
    "SEED_EXPORT_PROPERTY",
    "CuratedTables",
    "keyed_state",
    "local_catalog",
]

CHANGES_TABLE = "registration_changes"  # curator.tables.CHANGES_TABLE (not imported: pyiceberg loads slowly)
REGISTRATIONS_TABLE = "registrations"
#: The export id ``registrations`` was seeded from, in each of its snapshots' summaries (curator.state's).
SEED_EXPORT_PROPERTY = "curator.seed-export-id"
Key = tuple[str, str]


def local_catalog(aws: LocalAws, role: str | None = None) -> GlueCatalog:
    """pyiceberg's Glue catalog on ``aws``'s endpoint (Glue and S3), as ``role`` or the administrator."""
    from pyiceberg.catalog.glue import GlueCatalog  # noqa: PLC0415 - a slow import: only the curated steps pay it

    credentials = aws.credentials(role)
    properties = {
        "glue.region": aws.region,
        "s3.region": aws.region,
        "glue.endpoint": aws.endpoint_url,
        "s3.endpoint": aws.endpoint_url,
        "s3.force-virtual-addressing": "false",
        "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
    }
    for service in ("glue", "s3"):
        properties[f"{service}.access-key-id"] = credentials["AWS_ACCESS_KEY_ID"]
        properties[f"{service}.secret-access-key"] = credentials["AWS_SECRET_ACCESS_KEY"]
        if credentials.get("AWS_SESSION_TOKEN"):
            properties[f"{service}.session-token"] = credentials["AWS_SESSION_TOKEN"]
    catalog: GlueCatalog = GlueCatalog("curated", None, **properties)
    return catalog


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a table: its id and when it was committed."""

    snapshot_id: int
    committed_at: datetime


class CuratedTables:
    """``registration_changes`` and ``registrations`` of one Glue database, read through one catalog."""

    def __init__(self, catalog: GlueCatalog, database: str) -> None:
        self.catalog = catalog
        self.database = database

    def table(self, name: str) -> Table:
        return self.catalog.load_table((self.database, name))

    def read(self, name: str, snapshot_id: int | None = None) -> pa.Table:
        """The table's rows at ``snapshot_id`` (default: its current snapshot)."""
        table = self.table(name)
        if snapshot_id is None and table.current_snapshot() is None:
            return table.schema().as_arrow().empty_table()
        return table.scan(snapshot_id=snapshot_id).to_arrow()

    def data_files(self, name: str) -> int:
        """The data files the table's current snapshot references."""
        return sum(1 for _ in self.table(name).scan().plan_files())

    def seeded_from(self) -> str | None:
        """The export id of the backfill snapshot ``registrations`` was seeded from, as its current snapshot's
        summary records it (None: not seeded, or no snapshot yet)."""
        snapshot = self.table(REGISTRATIONS_TABLE).current_snapshot()
        if snapshot is None or snapshot.summary is None:
            return None
        value = snapshot.summary.get(SEED_EXPORT_PROPERTY)
        return None if value is None else str(value)

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """Every snapshot the table keeps, oldest first."""
        return [
            SnapshotInfo(item.snapshot_id, datetime.fromtimestamp(item.timestamp_ms / 1000, UTC))
            for item in sorted(self.table(name).snapshots(), key=lambda item: item.timestamp_ms)
        ]


def keyed_state(rows: pa.Table) -> dict[Key, dict[str, Any]]:
    """Rows of a current state (``registrations``, or the current-state query's result) by (event_id, fan_id),
    with the columns of a registration's state only."""
    return {(str(row["event_id"]), str(row["fan_id"])): row for row in rows.select(state_columns()).to_pylist()}
