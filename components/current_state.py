"""The current state of every registration from a published snapshot plus the changes since: pure SQL builder.

A snapshot is an export of the table at time T, back-filled into the snapshot table (``export_id=<id>``); the
stream's event source mapping starts at T - 5 minutes, so every change from then on is in the change table.
The current state of a registration is its latest row over:

- the snapshot's row, ordered at T - ``lead`` (so any change from T - ``lead`` on wins over it: the snapshot
  may or may not already hold such a change, and applying it again gives the same state);
- the change rows with ``change_time_us >= T - lead`` (older ones are in the snapshot already, and are ignored),
  each change once however often it was delivered.

A registration whose latest row is a REMOVE is gone. Worked through: an item deleted long before T is in
neither; one removed just before T is not in the snapshot and its REMOVE row is newer than T - lead; one
changed at the export instant has a change row that wins over the snapshot either way; one removed after T is
in the snapshot and its REMOVE row wins. Athena (Trino) SQL, transpilable to DuckDB for the local lake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from components.catalog import unique_changes_cte
from pipeline.change_order import CHANGE_TIME_US, newest_first_sql
from pipeline.normalize import EXTRA_COLUMN, item_specs

__all__ = ["DEFAULT_LEAD", "PublishedSnapshot", "current_registrations_sql", "published_snapshot", "state_columns"]

#: How long before the export time the stream is read from (the mapping's AT_TIMESTAMP is T - lead).
DEFAULT_LEAD = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TTL_COLUMN = "deleted_by_ttl"  # a change's flag, not a registration attribute
_EXPORT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_IDENTIFIER = re.compile(r"^[a-z0-9_]{1,255}$")
# The order of changes (pipeline.change_order), with the snapshot's row placed at T - lead: a change at that very
# microsecond wins over it (source_rank), and snapshot line numbers stand for sequence numbers.
_NEWEST_FIRST = newest_first_sql("ordered_us", then=("source_rank DESC",))


@dataclass(frozen=True)
class PublishedSnapshot:
    """The snapshot ``current_registrations`` starts from: an export id and its export time T (UTC)."""

    export_id: str
    export_time: datetime

    def __post_init__(self) -> None:
        if not _EXPORT_ID.match(self.export_id):
            raise ValueError(f"export_id {self.export_id!r} is not a DynamoDB export id (letters, digits, '-')")
        if self.export_time.tzinfo is None or self.export_time.utcoffset() is None:
            raise ValueError(f"export_time {self.export_time.isoformat()} has no time zone")


def published_snapshot(export_id: str | None, export_time: str | None) -> PublishedSnapshot | None:
    """The published snapshot from stack config (``snapshotExportId``, ``snapshotExportTime``): both or neither."""
    if not export_id and not export_time:
        return None
    if not export_id or not export_time:
        raise ValueError(
            f"a published snapshot needs both an export id and an export time, got {export_id!r}, {export_time!r}"
        )
    try:
        moment = datetime.fromisoformat(export_time.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"export time {export_time!r} is not an ISO-8601 time") from None
    return PublishedSnapshot(export_id, moment)


def state_columns() -> list[str]:
    """The columns of a registration's state: every item attribute of the contract, and the unknown ones."""
    return [spec.name for spec in item_specs() if spec.name != _TTL_COLUMN] + [EXTRA_COLUMN]


def _micros(moment: datetime) -> str:
    """``moment`` as a ``change_time_us`` literal: whole microseconds since the epoch."""
    return str((moment - _EPOCH) // timedelta(microseconds=1))


def current_registrations_sql(
    database: str,
    changes_table: str,
    snapshots_table: str,
    *,
    export_id: str,
    export_time: datetime,
    lead: timedelta = DEFAULT_LEAD,
) -> str:
    """The query over ``database.changes_table`` and snapshot ``export_id`` of ``database.snapshots_table``."""
    for name, value in (("database", database), ("changes_table", changes_table), ("snapshots_table", snapshots_table)):
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{name} {value!r} is not a Glue name (lower-case letters, digits, '_')")
    if not _EXPORT_ID.match(export_id):
        raise ValueError(f"export_id {export_id!r} is not a DynamoDB export id (letters, digits, '-')")
    if export_time.tzinfo is None or export_time.utcoffset() is None:
        raise ValueError(f"export_time {export_time.isoformat()} has no time zone")
    if lead < timedelta(0):
        raise ValueError(f"lead {lead} must not be negative")
    since = export_time - lead
    columns = ", ".join(state_columns())
    # Identifiers and literals are validated above; nothing comes from user input.
    changes = (
        f'(SELECT * FROM "{database}"."{changes_table}" '  # noqa: S608
        f"WHERE dt >= '{since.astimezone(UTC):%Y-%m-%d}' AND {CHANGE_TIME_US} >= {_micros(since)})"
    )
    exported, ordered = (
        f"{export_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
        f"{since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
    )
    return f"""-- Current state per registration: snapshot {export_id} (exported {exported}) ordered at {ordered},
-- then every change from then on, each once; registrations whose latest change removed them are gone.
WITH {unique_changes_cte(changes)},
candidates AS (
  SELECT {columns}, op, change_time, sequence_number, change_id, {_micros(since)} AS ordered_us, 0 AS source_rank
  FROM "{database}"."{snapshots_table}"
  WHERE export_id = '{export_id}'
  UNION ALL
  SELECT {columns}, op, change_time, sequence_number, change_id, {CHANGE_TIME_US} AS ordered_us, 1 AS source_rank
  FROM unique_changes
),
latest AS (
  SELECT *, row_number() OVER (PARTITION BY event_id, fan_id ORDER BY {_NEWEST_FIRST}) AS newest
  FROM candidates
)
SELECT {columns}, change_time AS last_change_time
FROM latest
WHERE newest = 1 AND op <> 'REMOVE'
ORDER BY event_id, fan_id"""  # noqa: S608
