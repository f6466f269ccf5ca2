"""The published backfill snapshot ``registrations`` is seeded from: where its rows are, and how they are ordered.

A snapshot is an export of the DynamoDB table at time T, back-filled as write-once Parquet objects
(``<SNAPSHOT_PREFIX>export_id=<id>/<stem>.parquet``, each completed by ``_<stem>.counts.json``, see
docs/backfill.md). The stream is read from T - ``SNAPSHOT_LEAD``, so the current state is the latest row per
key over the snapshot's rows, placed in the order of changes at T - lead, and the changes from T - lead on; a change
at that very microsecond wins over the snapshot's row, and changes older than T - lead are in the snapshot already
and are ignored. This is the order ``components.current_state`` gives the published ``current_registrations``
query (its ``DEFAULT_LEAD``; a test keeps the two equal).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from curator.commits import CurationError

if TYPE_CHECKING:
    from curator.store import ObjectStore

__all__ = ["SNAPSHOT_LEAD", "PublishedSnapshot", "snapshot_batches", "snapshot_objects"]

#: How long before the export time T the stream is read from (``components.current_state.DEFAULT_LEAD``).
SNAPSHOT_LEAD = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXPORT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class PublishedSnapshot:
    """The snapshot the stack publishes: its export id, export time T (UTC) and the snapshot prefix."""

    export_id: str
    export_time: datetime
    prefix: str = "demand/snapshots/"
    lead: timedelta = SNAPSHOT_LEAD

    def __post_init__(self) -> None:
        if not _EXPORT_ID.match(self.export_id):
            raise ValueError(f"export id {self.export_id!r} is not a DynamoDB export id (letters, digits, '-')")
        if self.export_time.tzinfo is None or self.export_time.utcoffset() is None:
            raise ValueError(f"export time {self.export_time.isoformat()} has no time zone")

    @property
    def objects_prefix(self) -> str:
        return f"{self.prefix}export_id={self.export_id}/"

    @property
    def export_time_us(self) -> int:
        return (self.export_time - _EPOCH) // timedelta(microseconds=1)

    @property
    def since_us(self) -> int:
        """T - lead in epoch microseconds: the snapshot's place in the order of changes, and the oldest change
        the state applies."""
        return (self.export_time - self.lead - _EPOCH) // timedelta(microseconds=1)


def snapshot_objects(store: ObjectStore, snapshot: PublishedSnapshot) -> list[str]:
    """The snapshot's Parquet keys, each completed by its counts object; ``CurationError`` when there is none, or
    when one is not complete (the backfill has not finished: the snapshot must not be published yet)."""
    listed = {item.key for item in store.list(snapshot.objects_prefix)}
    keys = sorted(key for key in listed if key.endswith(".parquet") and not key.rpartition("/")[2].startswith("_"))
    if not keys:
        raise CurationError(
            f"published snapshot {snapshot.export_id} has no Parquet object under {snapshot.objects_prefix}: "
            "back-fill it before publishing it"
        )
    incomplete = [
        key
        for key in keys
        if f"{key.rpartition('/')[0]}/_{key.rpartition('/')[2].removesuffix('.parquet')}.counts.json" not in listed
    ]
    if incomplete:
        raise CurationError(
            f"published snapshot {snapshot.export_id} is not completely back-filled: {len(incomplete)} object(s) "
            f"without their counts, e.g. {incomplete[0]}"
        )
    return keys


def snapshot_batches(
    store: ObjectStore, snapshot: PublishedSnapshot, columns: list[str], batch_rows: int
) -> Iterator[pa.Table]:
    """The snapshot's rows (``columns`` of them), at most ``batch_rows`` at a time: one object's body and one
    batch in memory, never the whole snapshot."""
    for key in snapshot_objects(store, snapshot):
        body, _ = store.get(key)
        parquet = pq.ParquetFile(pa.BufferReader(body))
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield pa.Table.from_batches([batch])
        del parquet, body
