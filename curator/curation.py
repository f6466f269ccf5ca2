"""One curation run: raw objects -> ``registration_changes`` -> ``registrations``, one snapshot per table.

Why no change is lost or duplicated (what the tests check):

1. ``registration_changes`` is rewritten an hour partition at a time: the hour's committed rows plus the run's
   new rows, deduplicated by ``change_id`` (lowest sequence number kept), sorted, written as new files, and
   swapped for the hour's old files in the same overwrite snapshot as every other hour of the run.
2. That snapshot's summary names a ledger of the raw objects its rows cover (key and ETag). The ledger is
   written before the commit and becomes true with it, so "covered" is never claimed for rows not committed.
   A raw object is read again until a committed ledger lists it with the ETag listed now.
3. ``registrations`` records the ``registration_changes`` snapshot it reflects. Each run applies the changes
   between that snapshot and the current one (files added minus the change ids of files removed), so a run
   that committed the changes but crashed before the state is caught up by the next, exactly once.
4. Commits never retry: a commit that meets another writer (the table moved on, or Glue refused a stale
   version) raises, the run deletes the files it wrote and changes nothing; the next run starts afresh.
5. Raw objects are deleted only once a committed ledger lists them with their current ETag, the grace period
   after they were first consumed, with a conditional delete (``If-Match``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from curator.commits import CurationError
from curator.commits import Staged as _Staged
from curator.commits import commit_overwrite as _commit_overwrite
from curator.commits import predicate as _predicate
from curator.files import conform_to, files_matching, read_files, write_files
from curator.raw import LEDGER_PROPERTY, LedgerEntry, raw_objects, read_ledger, write_ledger
from curator.retention import RetentionResult, apply_retention
from curator.seed import PublishedSnapshot
from curator.state import APPLIED_PROPERTY, WATERMARK_PROPERTY, advance_registrations
from curator.tables import changes_spec, ensure_table, registrations_spec
from pipeline.compactor import CompactionError, CompactionStore, StoredObject, _conform, merge_tables
from pipeline.schema import arrow_schema

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

__all__ = [
    "APPLIED_PROPERTY",
    "WATERMARK_PROPERTY",
    "CurationError",
    "CurationResult",
    "Curator",
    "CuratorSettings",
]

_IO_THREADS = 16

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CuratorSettings:
    """Where the raw layer and the tables are, and how long raw objects and snapshots are kept."""

    bucket: str
    raw_prefix: str
    database: str
    tables_prefix: str = "curated/"
    time_travel: timedelta = timedelta(days=7)
    delete_grace: timedelta = timedelta(minutes=15)
    #: The published backfill snapshot ``registrations`` is seeded from (``curator.seed``), if any.
    snapshot: PublishedSnapshot | None = None

    def location(self, table: str) -> str:
        return f"s3://{self.bucket}/{self.tables_prefix}{table}"


@dataclass
class CurationResult:
    """What one run did."""

    raw_objects_read: int = 0
    rows_read: int = 0
    changes_added: int = 0
    hours_written: list[str] = field(default_factory=list)
    changes_snapshot: int | None = None
    registrations_snapshot: int | None = None
    state_changes_applied: int = 0
    events_written: int = 0
    raw_deleted: int = 0
    raw_pending_deletion: int = 0
    unreadable: list[str] = field(default_factory=list)
    retention: list[RetentionResult] = field(default_factory=list)
    conflict: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        summary = {name: getattr(self, name) for name in self.__dataclass_fields__}
        summary["retention"] = [vars(item) for item in self.retention]
        return summary


@dataclass
class _HourFiles:
    """One hour partition during a run: its committed files, and its files now (this run's once rewritten)."""

    committed: list[DataFile]
    files: list[DataFile]
    rewritten: bool = False


def _by_partition(objects: Sequence[StoredObject]) -> list[list[StoredObject]]:
    """Raw objects grouped by their hour partition (the key's folder), oldest partition first."""
    groups: dict[str, list[StoredObject]] = {}
    for item in objects:
        groups.setdefault(item.key.rpartition("/")[0], []).append(item)
    return [groups[folder] for folder in sorted(groups)]


def _hour_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


@dataclass
class Curator:
    """Curates one raw prefix into the two tables of one Glue database."""

    catalog: Catalog
    store: CompactionStore
    settings: CuratorSettings
    clock: Clock = _utc_now
    io_threads: int = _IO_THREADS
    #: Called after each step that changed something durable (tests crash the run there).
    checkpoint: Callable[[str], None] = lambda step: None

    # -- tables -------------------------------------------------------------------------------------------------
    def tables(self) -> tuple[Table, Table]:
        """``registration_changes`` and ``registrations``, created on first use."""
        changes_table = ensure_table(
            self.catalog,
            self.settings.database,
            self.settings.location(changes_spec().name),
            changes_spec(),
            self.settings.time_travel,
        )
        registrations_table = ensure_table(
            self.catalog,
            self.settings.database,
            self.settings.location(registrations_spec().name),
            registrations_spec(),
            self.settings.time_travel,
        )
        return changes_table, registrations_table

    # -- a run ----------------------------------------------------------------------------------------------
    def run(self) -> CurationResult:
        """Curate what is new, advance the state, delete covered raw objects; a conflict abandons the run."""
        started = time.perf_counter()
        result = CurationResult()
        changes_table, registrations_table = self.tables()
        try:
            changes_table, ledger = self._curate_changes(changes_table, result)
            advance_registrations(
                changes_table,
                registrations_table,
                result,
                self.checkpoint,
                published=self.settings.snapshot,
                store=self.store,
            )
        except CommitFailedException as error:
            result.conflict = str(error)
            result.seconds = time.perf_counter() - started
            return result
        self._delete_covered(ledger, result)
        self._retain(result)
        result.seconds = time.perf_counter() - started
        return result

    def _retain(self, result: CurationResult) -> None:
        """Expire snapshots past the time-travel window and delete the files no kept snapshot needs."""
        changes_table, registrations_table = self.tables()
        state_snapshot = registrations_table.current_snapshot()
        summary = state_snapshot.summary if state_snapshot is not None else None
        applied = summary.get(APPLIED_PROPERTY) if summary is not None else None
        now = self.clock()
        for table, protected in ((changes_table, [int(applied)] if applied else []), (registrations_table, [])):
            result.retention.append(
                apply_retention(
                    table,
                    self.store,
                    self.settings.bucket,
                    now=now,
                    keep_for=self.settings.time_travel,
                    grace=self.settings.delete_grace,
                    protected=protected,
                )
            )
        self.checkpoint("retention applied")

    # -- registration_changes -------------------------------------------------------------------------------
    def _read_raw(self, item: StoredObject) -> pa.Table | None:
        try:
            body, _ = self.store.get(item.key)
            rows = pq.read_table(pa.BufferReader(body))
            return _conform(rows, arrow_schema(), item.key)
        except (CompactionError, pa.ArrowInvalid, OSError):
            return None

    def _curate_changes(self, table: Table, result: CurationResult) -> tuple[Table, dict[str, LedgerEntry]]:
        snapshot = table.current_snapshot()
        ledger = read_ledger(table.io, snapshot.summary.get(LEDGER_PROPERTY) if snapshot and snapshot.summary else None)
        prefix = self.settings.raw_prefix
        listed = raw_objects(prefix, self.store.list(prefix))
        pending = [item for item in listed if (entry := ledger.get(item.key)) is None or entry.etag != item.etag]
        still_there = {item.key for item in listed}
        ledger = {key: entry for key, entry in ledger.items() if key in still_there}
        if not pending:
            return table, ledger
        staged = _Staged(table)
        hours: dict[datetime, _HourFiles] = {}
        try:
            # One raw hour partition at a time: memory holds one partition's objects and the hours they touch,
            # not the whole backlog.
            for group in _by_partition(pending):
                incoming = self._read_group(group, ledger, result)
                self._rewrite_hours(table, incoming, result, staged, hours)
                del incoming
            removed = [data_file for hour in hours.values() if hour.rewritten for data_file in hour.committed]
            added = [data_file for hour in hours.values() if hour.rewritten for data_file in hour.files]
            ledger_path = f"{table.location()}/metadata/curator-ledger-{uuid.uuid4()}.json"
            write_ledger(table.io, ledger_path, ledger)
            staged.written.append(ledger_path)
            properties = {
                LEDGER_PROPERTY: ledger_path,
                "curator.raw-objects": str(result.raw_objects_read),
                "curator.changes-added": str(result.changes_added),
            }
            table = _commit_overwrite(table, removed, added, properties)
        except CommitFailedException:
            staged.discard()
            raise
        self.checkpoint("changes committed")
        committed = table.current_snapshot()
        result.changes_snapshot = committed.snapshot_id if committed else None
        return table, ledger

    def _read_group(
        self, group: Sequence[StoredObject], ledger: dict[str, LedgerEntry], result: CurationResult
    ) -> pa.Table:
        """The rows of one partition's new raw objects, in the table's schema; the ledger gains the objects read."""
        with ThreadPoolExecutor(max_workers=self.io_threads) as pool:
            reads = list(pool.map(self._read_raw, group))
        now = self.clock()
        tables: list[pa.Table] = []
        for item, rows in zip(group, reads, strict=True):
            if rows is None:
                result.unreadable.append(item.key)  # left unconsumed (never deleted); the run goes on
                continue
            tables.append(rows)
            ledger[item.key] = LedgerEntry(item.etag, now)
        del reads
        result.raw_objects_read += len(tables)
        target = changes_spec().arrow_schema
        incoming = conform_to(pa.concat_tables(tables), target) if tables else target.empty_table()
        result.rows_read += incoming.num_rows
        return incoming

    def _rewrite_hours(
        self,
        table: Table,
        incoming: pa.Table,
        result: CurationResult,
        staged: _Staged,
        hours: dict[datetime, _HourFiles],
    ) -> None:
        """Per hour of change time ``incoming`` touches: the hour's rows so far (committed, or written earlier in
        this run) + the new rows, deduplicated, sorted, written; ``hours`` keeps each hour's files."""
        hour_of_row = pc.floor_temporal(incoming.column("change_time"), unit="hour")
        schema = changes_spec().arrow_schema
        for hour in pc.unique(hour_of_row).to_pylist():
            new_rows = incoming.filter(pc.equal(hour_of_row, pa.scalar(hour, hour_of_row.type)))
            state = hours.get(hour)
            if state is None:
                end = hour + timedelta(hours=1)
                within = And(
                    _predicate(GreaterThanOrEqual, "change_time", hour.isoformat()),
                    _predicate(LessThan, "change_time", end.isoformat()),
                )
                committed = files_matching(table, within)
                state = hours[hour] = _HourFiles(committed, list(committed))
            old_rows = read_files(table, state.files)
            merged, order = merge_tables([old_rows, new_rows], schema)
            added_here = len(order) - old_rows.num_rows
            if not pc.any(pc.greater_equal(order, old_rows.num_rows)).as_py():
                continue  # every new row is already in the hour (as the copy kept): nothing to rewrite
            rows = conform_to(merged.take(order), schema)
            del merged, order, old_rows
            files = write_files(table, rows)
            staged.written.extend(data_file.file_path for data_file in files)
            if state.rewritten:  # files this run wrote for the hour a moment ago: never committed, replaced now
                _Staged(table, [data_file.file_path for data_file in state.files]).discard()
            state.files, state.rewritten = files, True
            result.changes_added += added_here
            if _hour_of(hour) not in result.hours_written:
                result.hours_written.append(_hour_of(hour))

    # -- raw objects ----------------------------------------------------------------------------------------
    def _delete_covered(self, ledger: dict[str, LedgerEntry], result: CurationResult) -> None:
        """Delete raw objects the committed ledger covers, the grace period after they were consumed."""
        now = self.clock()
        due = [(key, entry) for key, entry in ledger.items() if now - entry.consumed_at >= self.settings.delete_grace]
        result.raw_pending_deletion = len(ledger) - len(due)
        if not due:
            return
        with ThreadPoolExecutor(max_workers=self.io_threads) as pool:
            deleted = list(pool.map(lambda item: self.store.delete(item[0], item[1].etag), due))
        result.raw_deleted = sum(deleted)
        self.checkpoint("raw deleted")
