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

import contextlib
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
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, In, LessThan

from curator.files import conform_to, files_matching, read_files, snapshot_changes, write_files
from curator.raw import LEDGER_PROPERTY, LedgerEntry, raw_objects, read_ledger, write_ledger
from curator.retention import RetentionResult, apply_retention
from curator.rows import SORT_KEYS, ContractError, conform_to_contract, first_of_each_change, sort_order
from curator.spill import SpilledHours
from curator.store import IO_THREADS, ObjectGoneError, ObjectStore, StoredObject
from curator.tables import changes_spec, ensure_table, registrations_spec
from pipeline.change_order import CHANGE_TIME_US, NEWER_ORDER_COLUMNS, newer_order_columns
from pipeline.exceptions import PipelineError
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

#: Summary property of a ``registrations`` snapshot: the ``registration_changes`` snapshot it reflects.
APPLIED_PROPERTY = "curator.changes-snapshot-id"
#: Summary property of a ``registrations`` snapshot: the latest ``change_time_us`` applied so far.
WATERMARK_PROPERTY = "curator.applied-change-time-us"
#: Rows of one slice of an hour (one data file) at most, as far as the hash spreads them: the run's memory.
SLICE_ROWS = 500_000
#: Slices an hour is hashed into on local disk before they are grouped into files of ``SLICE_ROWS``.
SPILL_PARTITIONS = 64
#: Rows of a raw object decoded at once; a bigger object (an old compacted hour) is checked whole first.
_BATCH_ROWS = 65_536
_WHOLE_OBJECT_ROWS = 262_144

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CurationError(PipelineError):
    """The curated tables are not in a state a run can continue from (the message says which and why)."""


@dataclass(frozen=True)
class CuratorSettings:
    """Where the raw layer and the tables are, and how long raw objects and snapshots are kept."""

    bucket: str
    raw_prefix: str
    database: str
    tables_prefix: str = "curated/"
    time_travel: timedelta = timedelta(days=7)
    delete_grace: timedelta = timedelta(minutes=15)

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
class _Staged:
    """Files written for one commit, deleted again if the commit does not happen."""

    table: Table
    written: list[str] = field(default_factory=list)

    def discard(self) -> None:
        for path in self.written:
            with contextlib.suppress(Exception):  # best effort: an unreferenced file is removed by the cleanup
                self.table.io.delete(path)


def _commit_overwrite(
    table: Table, removed: Sequence[DataFile], added: Sequence[DataFile], properties: dict[str, str]
) -> Table:
    """One overwrite snapshot swapping ``removed`` for ``added``; ``CommitFailedException`` on any conflict."""
    transaction = table.transaction()
    with transaction.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
        for data_file in removed:
            overwrite.delete_data_file(data_file)
        for data_file in added:
            overwrite.append_data_file(data_file)
    return transaction.commit_transaction()


def _predicate(kind: Any, *arguments: Any) -> BooleanExpression:
    """A pyiceberg predicate (its pydantic constructors are not typed positionally)."""
    expression: BooleanExpression = kind(*arguments)
    return expression


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
            self._advance_registrations(changes_table, registrations_table, result)
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
            with SpilledHours(self.spill_partitions) as spilled:
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
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):  # decodable whole before any row is kept
                    del batch
            batches: Iterable[pa.RecordBatch] = (
                parquet.iter_batches(batch_size=_BATCH_ROWS)
                if parquet.metadata.num_rows > _WHOLE_OBJECT_ROWS
                else parquet.read().to_batches()
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
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
                    rows = conform_to_contract(pa.Table.from_batches([batch]), target, data_file.file_path)
                    spilled.add(conform_to(rows, target), committed=True)
        spilled.flush()
        return committed

    def _write_hour(
        self, table: Table, hour: datetime, spilled: SpilledHours, result: CurationResult, staged: _Staged
    ) -> list[DataFile] | None:
        """The hour's rows, one group of slices at a time: deduplicated (lowest sequence number), sorted by
        ``SORT_KEYS``, written as a data file. None (and nothing left written) when no new row is kept."""
        schema = changes_spec().arrow_schema
        files: list[DataFile] = []
        added = 0
        new_kept = False  # a new row kept: a new change, or a copy with a lower sequence number than the committed
        for group in spilled.groups(hour, self.slice_rows):
            old = spilled.read(hour, group, committed=True, schema=schema)
            new = spilled.read(hour, group, committed=False, schema=schema)
            old_rows = old.num_rows
            rows = pa.concat_tables([old, new]).combine_chunks()
            del old, new
            keep = first_of_each_change(rows)
            if keep is None:
                order = sort_order(rows.select(list(SORT_KEYS)))
                added += rows.num_rows - old_rows
                new_kept = new_kept or rows.num_rows > old_rows
            else:
                order = pc.take(keep, sort_order(rows.select(list(SORT_KEYS)).take(keep)))
                added += len(keep) - old_rows
                new_kept = new_kept or bool(pc.any(pc.greater_equal(keep, old_rows)).as_py())
            sorted_rows = conform_to(rows.take(order), schema)
            del rows, order, keep
            written = write_files(table, sorted_rows)
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

    # -- registrations --------------------------------------------------------------------------------------
    def _advance_registrations(self, changes: Table, state: Table, result: CurationResult) -> None:
        target = changes.current_snapshot()
        if target is None:
            return
        snapshot = state.current_snapshot()
        summary = snapshot.summary if snapshot is not None and snapshot.summary is not None else None
        applied_text = summary.get(APPLIED_PROPERTY) if summary is not None else None
        applied = int(applied_text) if applied_text else None
        if applied == target.snapshot_id:
            return
        delta = snapshot_changes(changes, applied, target.snapshot_id)
        if delta is None:
            raise CurationError(
                f"registrations reflects registration_changes snapshot {applied}, which is no longer an ancestor of "
                f"snapshot {target.snapshot_id}: the state cannot be advanced incrementally"
            )
        added_rows = read_files(changes, list(delta.added.values()))
        removed_ids = read_files(changes, list(delta.removed.values()), columns=["change_id"]).column("change_id")
        new_changes = added_rows.filter(pc.invert(pc.is_in(added_rows.column("change_id"), value_set=removed_ids)))
        del added_rows, removed_ids
        watermark_text = summary.get(WATERMARK_PROPERTY) if summary is not None else None
        watermark = int(watermark_text) if watermark_text else None
        staged = _Staged(state)
        try:
            removed, added, applied_count = self._merge_state(
                changes=changes,
                changes_snapshot=target.snapshot_id,
                state=state,
                new_changes=new_changes,
                watermark=watermark,
                result=result,
            )
            staged.written.extend(data_file.file_path for data_file in added)
            newest = pc.max(new_changes.column(CHANGE_TIME_US)).as_py()
            properties = {
                APPLIED_PROPERTY: str(target.snapshot_id),
                WATERMARK_PROPERTY: str(max(watermark or 0, newest or 0)),
                "curator.changes-applied": str(applied_count),
            }
            state = _commit_overwrite(state, removed, added, properties)
        except CommitFailedException:
            staged.discard()
            raise
        self.checkpoint("registrations committed")
        result.state_changes_applied = applied_count
        committed = state.current_snapshot()
        result.registrations_snapshot = committed.snapshot_id if committed else None

    def _merge_state(
        self,
        *,
        changes: Table,
        changes_snapshot: int,
        state: Table,
        new_changes: pa.Table,
        watermark: int | None,
        result: CurationResult,
    ) -> tuple[list[DataFile], list[DataFile], int]:
        """The touched events' partitions of ``state`` merged with the latest of ``new_changes`` per key."""
        if new_changes.num_rows == 0:
            return [], [], 0
        winners = _latest_per_key(new_changes)
        events = pc.unique(winners.column("event_id")).to_pylist()
        old_files = files_matching(state, _predicate(In, "event_id", events))
        current = read_files(state, old_files)
        schema = registrations_spec().arrow_schema
        # Candidates per key: the stored row (op null) and the run's latest change; the later one wins.
        stored = current.append_column("op", pa.nulls(current.num_rows, pa.large_string()))
        incoming = conform_to(winners.select([*schema.names, "op"]), stored.schema)
        candidates = pa.concat_tables([stored, incoming])
        chosen = _latest_per_key(candidates)
        removed_keys = self._removed_later(changes, changes_snapshot, chosen, current, watermark)
        keep = pc.not_equal(pc.fill_null(chosen.column("op"), ""), "REMOVE")
        if removed_keys is not None:
            keep = pc.and_(keep, pc.invert(removed_keys))
        rows = chosen.filter(keep).select(schema.names)
        order = pc.sort_indices(rows, sort_keys=[("event_id", "ascending"), ("fan_id", "ascending")])
        rows = conform_to(rows.take(order), schema)
        files = write_files(state, rows)
        result.events_written = len(events)
        return old_files, files, winners.num_rows

    def _removed_later(
        self, changes: Table, snapshot_id: int, chosen: pa.Table, current: pa.Table, watermark: int | None
    ) -> pa.Array | None:
        """For each chosen row: whether an already-applied REMOVE of its key is later than it.

        Only a late change (no later than what was applied before) of a key with no stored row can be one: its
        key may have been removed by a change applied in an earlier run, which the state no longer shows."""
        if watermark is None:
            return None
        stored_keys, keys = _key_text(current), _key_text(chosen)
        # A stored row (op null) is never a suspect: nulls are filled, or Arrow's and_ would make the row null.
        operations = pc.fill_null(chosen.column("op"), "")
        suspect = pc.and_(
            pc.and_(pc.not_equal(operations, ""), pc.not_equal(operations, "REMOVE")),
            pc.and_(
                pc.less_equal(chosen.column(CHANGE_TIME_US), watermark),
                pc.invert(pc.is_in(keys, value_set=stored_keys)),
            ),
        )
        if not pc.any(suspect).as_py():
            return None
        suspects = chosen.filter(suspect)
        since = pc.min(suspects.column("change_time")).as_py()
        row_filter = And(
            And(
                _predicate(EqualTo, "op", "REMOVE"),
                _predicate(GreaterThanOrEqual, "change_time", since.isoformat()),
            ),
            _predicate(In, "event_id", pc.unique(suspects.column("event_id")).to_pylist()),
        )
        removes = changes.scan(
            row_filter=row_filter,
            snapshot_id=snapshot_id,
            selected_fields=("event_id", "fan_id", "change_time", CHANGE_TIME_US, "sequence_number", "change_id"),
        ).to_arrow()
        if removes.num_rows == 0:
            return None
        latest_removes = _latest_per_key(removes)
        remove_keys = _key_text(latest_removes)
        # A key whose latest REMOVE orders after the chosen change: compare through a table join on the key.
        joined = pa.table({"key": keys, "row": pa.array(range(chosen.num_rows), pa.int64())}).join(
            pa.table({"key": remove_keys}).append_column("remove_rank", _rank_table(latest_removes)),
            "key",
            join_type="inner",
        )
        chosen_rank = _rank_table(chosen)
        pairs = zip(joined.column("row").to_pylist(), joined.column("remove_rank").to_pylist(), strict=True)
        later = [row for row, rank in pairs if rank > chosen_rank[row].as_py()]
        flags = [False] * chosen.num_rows
        for row in later:
            flags[row] = True
        return pc.and_(suspect, pa.array(flags))

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


def _key_text(rows: pa.Table) -> pa.Array:
    """``event_id`` and ``fan_id`` joined into one text per row (a unit separator between them)."""
    return pc.binary_join_element_wise(
        rows.column("event_id").cast(pa.string()), rows.column("fan_id").cast(pa.string()), "\x1f"
    )


def _rank_table(rows: pa.Table) -> pa.Array:
    """The order of changes (``pipeline.change_order``) as one comparable text per row."""
    keys = newer_order_columns(rows)
    micros = pc.utf8_lpad(keys.column(NEWER_ORDER_COLUMNS[0]).cast(pa.string()), width=20, padding="0")
    return pc.binary_join_element_wise(
        micros, keys.column(NEWER_ORDER_COLUMNS[1]), keys.column(NEWER_ORDER_COLUMNS[2]), "/"
    )


def _latest_per_key(rows: pa.Table) -> pa.Table:
    """The newest row (by the order of changes, ``pipeline.change_order``) of each (event_id, fan_id), in key
    order."""
    if rows.num_rows == 0:
        return rows
    keys = newer_order_columns(rows)
    index = pa.table(
        {
            "event_id": rows.column("event_id"),
            "fan_id": rows.column("fan_id"),
            **{name: keys.column(name) for name in NEWER_ORDER_COLUMNS},
        }
    )
    order = pc.sort_indices(
        index,
        sort_keys=[
            ("event_id", "ascending"),
            ("fan_id", "ascending"),
            *((name, "descending") for name in NEWER_ORDER_COLUMNS),
        ],
    )
    sorted_keys = index.select(["event_id", "fan_id"]).take(order)
    events, fans = sorted_keys.column("event_id").combine_chunks(), sorted_keys.column("fan_id").combine_chunks()
    if len(order) == 1:
        first = pa.array([True])
    else:
        differs = pc.or_(
            pc.not_equal(events.slice(1), events.slice(0, len(events) - 1)),
            pc.not_equal(fans.slice(1), fans.slice(0, len(fans) - 1)),
        )
        first = pa.concat_arrays([pa.array([True]), differs])
    return rows.take(pc.filter(order, first))
