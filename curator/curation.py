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
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from curator.erasure import ROWS_PER_RUN, ErasureOutcome, ErasureRun
from curator.exports import expire_exports
from curator.files import conform_to, files_matching, write_partition
from curator.raw import LEDGER_PROPERTY, LedgerEntry, raw_objects, read_ledger, write_ledger
from curator.retention import RetentionResult, apply_retention
from curator.rows import SORT_KEYS, ContractError, conform_to_contract, first_of_each_change, sort_order
from curator.seed import PublishedSnapshot
from curator.spill import MEMORY_BYTES, SpilledHours
from curator.state import APPLIED_PROPERTY, WATERMARK_PROPERTY, advance_registrations
from curator.store import IO_THREADS, ObjectGoneError, ObjectStore, StoredObject
from curator.tables import changes_spec, ensure_table, registrations_spec
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

#: Rows of one slice of an hour (one data file) at most, as far as the hash spreads them: the run's memory.
SLICE_ROWS = 500_000
#: Slices an hour is hashed into on local disk before they are grouped into files of ``SLICE_ROWS``.
SPILL_PARTITIONS = 64
#: Rows of a raw object decoded at once; a bigger object (an old compacted hour) is checked whole first.
_BATCH_ROWS = 65_536
_WHOLE_OBJECT_ROWS = 262_144
# Parquet is decoded on the calling thread (``use_threads=False``): the run has one core, where handing each
# column to Arrow's pool only adds work (50 raw objects of 10,000 rows: 0.43 s of CPU with the pool, 0.33 s without).
#: The columns deduplication (``first_of_each_change``) and the file order (``SORT_KEYS``) read.
_KEY_COLUMNS = list(dict.fromkeys([*SORT_KEYS, "change_id", "sequence_number", "shard_id"]))

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
    #: Erasure (``curator.erasure``): where backfill snapshots, quarantine lines and DynamoDB exports are, the
    #: stack's salt for the audit (no salt: erasure is off, ``erasure/`` is not even listed) and the failure bucket
    #: (None: not searched).
    snapshot_prefix: str = "demand/snapshots/"
    quarantine_prefix: str = "demand/quarantine/"
    exports_prefix: str = "demand/exports/"
    erasure_salt: str = ""
    failure_bucket: str | None = None
    #: How long an export stays once its snapshot holds all of it (``curator.exports``).
    export_retention: timedelta = timedelta(days=14)
    #: Rows of data files an erasure rewrites in one run; a request holding more goes on in the next runs.
    erasure_rows_per_run: int = ROWS_PER_RUN
    #: Rows of data files whose ``fan_id`` an erasure looks at in one run (None: 40 times the rewrite's).
    erasure_look_rows_per_run: int | None = None

    @property
    def snapshots_prefix(self) -> str:
        """Where the backfill's snapshot objects are: the published snapshot's prefix, else the stack's."""
        return self.snapshot.prefix if self.snapshot is not None else self.snapshot_prefix

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
    erasure: ErasureOutcome = field(default_factory=ErasureOutcome)
    #: Exports purged (their folders) and exports kept although past their retention (snapshot incomplete).
    exports_expired: list[str] = field(default_factory=list)
    exports_incomplete: list[str] = field(default_factory=list)
    export_versions_purged: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        summary = {name: getattr(self, name) for name in self.__dataclass_fields__}
        summary["retention"] = [vars(item) for item in self.retention]
        summary["erasure"] = self.erasure.summary()
        return summary


def _hour_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


@dataclass
class Curator:
    """Curates one raw prefix into the two tables of one Glue database."""

    catalog: Catalog
    store: ObjectStore
    settings: CuratorSettings
    clock: Clock = _utc_now
    io_threads: int = IO_THREADS
    #: Rows per data file (one slice of an hour in memory at a time) and hash slices per hour on local disk.
    slice_rows: int = SLICE_ROWS
    spill_partitions: int = SPILL_PARTITIONS
    #: Bytes of the run's rows the spill keeps in memory before it writes them all to local disk.
    spill_memory_bytes: int = MEMORY_BYTES
    #: Called after each step that changed something durable (tests crash the run there).
    checkpoint: Callable[[str], None] = lambda step: None
    #: The failure bucket's store (erasure searches its on-failure records); None: not searched.
    failure_store: ObjectStore | None = None
    #: Arrow's buffers come from the C library's allocator for the process (``pa.system_memory_pool``) from the
    #: run on, not mimalloc (Arrow's default): the run allocates and frees hundreds of MB of buffers a step, which
    #: mimalloc hands back to the system and faults in again. On the quarter shard-hour: 9.4-10.2 s of CPU with
    #: mimalloc, 8.0-8.2 s with the C library's, and a peak RSS lower by about 150 MB.
    system_allocator: bool = True

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
        if self.system_allocator:
            pa.set_memory_pool(pa.system_memory_pool())
        result = CurationResult()
        changes_table, registrations_table = self.tables()
        try:
            result.erasure, changes_table, registrations_table = self.erasure_run().run(
                changes_table, registrations_table, lambda changes, state: self._catch_up(changes, state, result)
            )
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
        self._expire_exports(result)
        result.seconds = time.perf_counter() - started
        return result

    def erasure_run(self) -> ErasureRun:
        """The erasure step of this curator's runs (``curator.erasure``)."""
        settings = self.settings
        return ErasureRun(
            store=self.store,
            bucket=settings.bucket,
            raw_prefix=settings.raw_prefix,
            snapshot_prefix=settings.snapshots_prefix,
            quarantine_prefix=settings.quarantine_prefix,
            exports_prefix=settings.exports_prefix,
            salt=settings.erasure_salt,
            clock=self.clock,
            failure_store=self.failure_store,
            checkpoint=self.checkpoint,
            rows_per_run=settings.erasure_rows_per_run,
            look_rows_per_run=settings.erasure_look_rows_per_run,
        )

    def _catch_up(
        self, changes_table: Table, registrations_table: Table, result: CurationResult
    ) -> tuple[Table, Table]:
        """``registrations`` advanced to the current ``registration_changes`` snapshot (before an erasure)."""
        advance_registrations(
            changes_table,
            registrations_table,
            result,
            self.checkpoint,
            published=self.settings.snapshot,
            store=self.store,
        )
        return self.tables()

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

    def _expire_exports(self, result: CurationResult) -> None:
        """Purge the backfill's exports past their retention whose snapshot holds all of them."""
        settings = self.settings
        expiry = expire_exports(
            self.store,
            settings.exports_prefix,
            settings.snapshots_prefix,
            now=self.clock(),
            keep_for=settings.export_retention,
        )
        result.exports_expired = expiry.expired
        result.exports_incomplete = expiry.incomplete
        result.export_versions_purged = expiry.versions_purged
        if expiry.expired:
            self.checkpoint("exports expired")

    # -- registration_changes -------------------------------------------------------------------------------
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
        try:
            with SpilledHours(self.spill_partitions, flush_bytes=self.spill_memory_bytes) as spilled:
                # 1. Every new raw row, a record batch at a time, into its hour's slices on local disk.
                self._spill_raw(pending, spilled, ledger, result)
                # 2. Each touched hour: its committed rows into the same slices, then one slice group at a time
                #    deduplicated, sorted and written as one data file.
                removed: list[DataFile] = []
                added: list[DataFile] = []
                for hour in spilled.hours():
                    committed = self._spill_committed(table, hour, spilled)
                    files = self._write_hour(table, hour, spilled, result, staged)
                    spilled.drop(hour)
                    if files is not None:
                        removed.extend(committed)
                        added.extend(files)
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
        committed_snapshot = table.current_snapshot()
        result.changes_snapshot = committed_snapshot.snapshot_id if committed_snapshot else None
        return table, ledger

    def _fetch(self, item: StoredObject) -> bytes | None:
        try:
            body, _ = self.store.get(item.key)
        except ObjectGoneError:
            return None
        return body

    def _spill_raw(
        self,
        pending: Sequence[StoredObject],
        spilled: SpilledHours,
        ledger: dict[str, LedgerEntry],
        result: CurationResult,
    ) -> None:
        """Read the pending raw objects (at most ``2 * io_threads`` fetched ahead) into ``spilled``; the ledger
        gains each object read whole. An object that cannot be read is left unconsumed (never deleted)."""
        now = self.clock()
        with ThreadPoolExecutor(max_workers=self.io_threads) as pool:
            ahead: deque[tuple[StoredObject, Future[bytes | None]]] = deque()
            queue = iter(pending)
            for item in queue:
                ahead.append((item, pool.submit(self._fetch, item)))
                if len(ahead) < 2 * self.io_threads:
                    continue
                self._consume(*self._next(ahead), spilled=spilled, ledger=ledger, result=result, now=now)
            while ahead:
                self._consume(*self._next(ahead), spilled=spilled, ledger=ledger, result=result, now=now)

    @staticmethod
    def _next(ahead: deque[tuple[StoredObject, Future[bytes | None]]]) -> tuple[StoredObject, bytes | None]:
        item, future = ahead.popleft()
        return item, future.result()

    def _consume(
        self,
        item: StoredObject,
        body: bytes | None,
        *,
        spilled: SpilledHours,
        ledger: dict[str, LedgerEntry],
        result: CurationResult,
        now: datetime,
    ) -> None:
        contract, target = arrow_schema(), changes_spec().arrow_schema
        try:
            if body is None:
                raise ObjectGoneError(item.key)
            parquet = pq.ParquetFile(pa.BufferReader(body))
            conform_to_contract(parquet.schema_arrow.empty_table(), contract, item.key)
            if parquet.metadata.num_rows > _WHOLE_OBJECT_ROWS:
                # Decodable whole before any row is kept.
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
                    del batch
            batches: Iterable[pa.RecordBatch] = (
                parquet.iter_batches(batch_size=_BATCH_ROWS, use_threads=False)
                if parquet.metadata.num_rows > _WHOLE_OBJECT_ROWS
                else parquet.read(use_threads=False).to_batches()
            )
            rows_read = 0
            for batch in batches:
                rows = conform_to(conform_to_contract(pa.Table.from_batches([batch]), contract, item.key), target)
                spilled.add(rows, committed=False)
                rows_read += rows.num_rows
        except (ContractError, ObjectGoneError, pa.ArrowInvalid, OSError):
            result.unreadable.append(item.key)  # left unconsumed (never deleted); the run goes on
            return
        ledger[item.key] = LedgerEntry(item.etag, now)
        result.raw_objects_read += 1
        result.rows_read += rows_read

    def _spill_committed(self, table: Table, hour: datetime, spilled: SpilledHours) -> list[DataFile]:
        """The hour's committed data files, their rows streamed into ``spilled`` a record batch at a time."""
        end = hour + timedelta(hours=1)
        within = And(
            _predicate(GreaterThanOrEqual, "change_time", hour.isoformat()),
            _predicate(LessThan, "change_time", end.isoformat()),
        )
        committed = files_matching(table, within)
        target = changes_spec().arrow_schema
        for data_file in committed:
            with table.io.new_input(data_file.file_path).open() as stream:
                parquet = pq.ParquetFile(stream)
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
                    rows = conform_to_contract(pa.Table.from_batches([batch]), target, data_file.file_path)
                    spilled.add(conform_to(rows, target), committed=True)
        return committed

    def _write_hour(
        self, table: Table, hour: datetime, spilled: SpilledHours, result: CurationResult, staged: _Staged
    ) -> list[DataFile] | None:
        """The hour's rows, one group of slices at a time: deduplicated (lowest sequence number), sorted by
        ``SORT_KEYS``, written as a data file. None (and nothing left written) when no new row is kept."""
        schema = changes_spec().arrow_schema
        hour_number = int(hour.timestamp()) // 3600  # the partition value of hour(change_time)
        files: list[DataFile] = []
        added = 0
        new_kept = False  # a new row kept: a new change, or a copy with a lower sequence number than the committed
        for group in spilled.groups(hour, self.slice_rows):
            old = spilled.read(hour, group, committed=True, schema=schema)
            new = spilled.read(hour, group, committed=False, schema=schema)
            old_rows = old.num_rows
            # The wide rows stay in their chunks (files and buffered ranges): the order is worked out on the narrow
            # key columns, and the wide rows are copied once, by the take into file order.
            rows = pa.concat_tables([old, new])
            del old, new
            keys = rows.select(_KEY_COLUMNS).combine_chunks()
            keep = first_of_each_change(keys)
            if keep is None:
                order = sort_order(keys.select(list(SORT_KEYS)))
                added += rows.num_rows - old_rows
                new_kept = new_kept or rows.num_rows > old_rows
            else:
                order = pc.take(keep, sort_order(keys.select(list(SORT_KEYS)).take(keep)))
                added += len(keep) - old_rows
                new_kept = new_kept or bool(pc.any(pc.greater_equal(keep, old_rows)).as_py())
            sorted_rows = conform_to(rows.take(order), schema)
            del rows, keys, order, keep
            written = write_partition(table, hour_number, sorted_rows)
            del sorted_rows
            staged.written.extend(data_file.file_path for data_file in written)
            files.extend(written)
        if not new_kept:  # every new row is already in the hour (as the copy kept): nothing to rewrite
            paths = {data_file.file_path for data_file in files}
            _Staged(table, sorted(paths)).discard()
            staged.written = [path for path in staged.written if path not in paths]
            return None
        result.changes_added += added
        result.hours_written.append(_hour_of(hour))
        return files

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
