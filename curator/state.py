"""The ``registrations`` table: one row per live ``(event_id, fan_id)``, advanced from ``registration_changes``.

``registrations`` records (``curator.changes-snapshot-id``) the ``registration_changes`` snapshot it reflects.
Each run applies the changes between that snapshot and the current one (files added minus the change ids of files
removed), so a run that committed the changes but crashed before the state is caught up by the next, exactly once.
Per key the newest change wins by the contract's order of changes (``pipeline.change_order``); a REMOVE deletes
the row; a late change older than a REMOVE applied before does not revive the key.

**Seed.** With a published backfill snapshot (``curator.seed``), the state is the latest row per key over the
snapshot's rows (placed at T - lead) and the changes from T - lead on, the order the ``current_registrations``
query gives. The run that first sees a published export id (``curator.seed-export-id`` names another, or none)
rebuilds the state from the snapshot and every change from T - lead on, and commits it as one snapshot: a crash
before that commit leaves the state as it was, and the next run seeds again. A new export id published later is
seeded the same way (the state is rebuilt from it). A snapshot no longer published leaves the seed in effect.

**Cost.** Within an event's partition the files hold disjoint ``fan_id`` ranges (sorted, at most
``STATE_FILE_ROWS`` rows each, ranges read from the files' column bounds). A run reads and rewrites only the files
whose range holds a key it changes, ``MERGE_THREADS`` ranges at a time (one range's S3 reads and writes overlap
another's work), so its work and memory follow the keys and partitions it touches and a few files' rows, not the
table's size. The run's changes are streamed a record batch at a time into buckets of events on local disk
(``curator.spill.SpilledBuckets``, about ``BATCH_ROWS`` / 2 rows a bucket) and applied a bucket at a time: every
change of an event is in one bucket, so a range is rewritten at most once per run. A seed's snapshot rows are
merged ``BATCH_ROWS`` at a time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, And, EqualTo, GreaterThanOrEqual, In
from pyiceberg.types import StringType

from curator.commits import CurationError, Staged, commit_overwrite, predicate
from curator.files import conform_to, files_matching, read_files, snapshot_changes, write_partition
from curator.rows import conform_to_contract
from curator.seed import PublishedSnapshot, snapshot_batches
from curator.spill import SpilledBuckets
from curator.tables import registrations_spec
from pipeline.change_order import CHANGE_TIME_US, SEQUENCE_SQL_DIGITS, change_time_us_of

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from curator.curation import CurationResult
    from curator.store import ObjectStore

__all__ = [
    "APPLIED_PROPERTY",
    "BATCH_ROWS",
    "MERGE_THREADS",
    "SEED_EXPORT_PROPERTY",
    "SEED_EXPORT_TIME_PROPERTY",
    "SEED_SINCE_PROPERTY",
    "STATE_FILE_ROWS",
    "WATERMARK_PROPERTY",
    "StateAdvance",
    "advance_registrations",
    "write_partition",
]

#: Summary property of a ``registrations`` snapshot: the ``registration_changes`` snapshot it reflects.
APPLIED_PROPERTY = "curator.changes-snapshot-id"
#: Summary property of a ``registrations`` snapshot: the latest ``change_time_us`` applied so far.
WATERMARK_PROPERTY = "curator.applied-change-time-us"
#: Summary properties of a ``registrations`` snapshot: the export id of the snapshot the state was seeded from,
#: its export time and T - lead (epoch microseconds). Every later snapshot carries them on.
SEED_EXPORT_PROPERTY = "curator.seed-export-id"
SEED_EXPORT_TIME_PROPERTY = "curator.seed-export-time-us"
SEED_SINCE_PROPERTY = "curator.seed-since-us"
_SEED_PROPERTIES = (SEED_EXPORT_PROPERTY, SEED_EXPORT_TIME_PROPERTY, SEED_SINCE_PROPERTY)
#: Rows per data file of ``registrations`` (and so the rows one range merge holds).
STATE_FILE_ROWS = 250_000
#: Ranges of the state merged at once (their S3 reads and writes overlap).
MERGE_THREADS = 4
#: Changes (or snapshot rows) merged into the state at once.
BATCH_ROWS = 1_000_000
#: Rows of a changes file read at once while the run's changes are spread over buckets.
_READ_BATCH_ROWS = 65_536
_REMOVE_FIELDS = ("event_id", "fan_id", "shard_id", "change_time", CHANGE_TIME_US, "sequence_number", "change_id")
_ORDER_COLUMNS = ("_order_time_us", "_order_rank", "_order_sequence", "_order_change_id")


@dataclass(frozen=True)
class _Order:
    """The order of changes (``pipeline.change_order``), with the seed's snapshot rows (``shard_id`` = the export
    id) placed at T - lead, below a change of that very microsecond (as ``current_registrations`` orders them)."""

    export_id: str | None = None
    since_us: int | None = None

    def columns(self, rows: pa.Table, *, within: bool = False, time_only: bool = False) -> pa.Table:
        """Sort columns, ascending = oldest first. ``within``: the columns only order ``rows`` among themselves
        (the sequence numbers are padded to the longest of them, not to ``SEQUENCE_SQL_DIGITS``: the same order,
        at a fraction of the bytes). ``time_only``: the first column alone."""
        time = change_time_us_of(rows.column(CHANGE_TIME_US))
        if time_only:
            if self.export_id is not None and self.since_us is not None:
                seeded = pc.fill_null(pc.equal(rows.column("shard_id").cast(pa.string()), self.export_id), False)
                time = pc.if_else(seeded, pa.scalar(self.since_us, pa.int64()), time)
            return pa.table({_ORDER_COLUMNS[0]: time})
        width = SEQUENCE_SQL_DIGITS
        if within and rows.num_rows:
            width = pc.max(pc.utf8_length(rows.column("sequence_number"))).as_py() or 1
        sequences = rows.column("sequence_number").cast(pa.string())
        base = pa.table(
            {
                "time": time,
                "sequence": pc.utf8_lpad(sequences, width=width, padding="0"),
                "change_id": rows.column("change_id").cast(pa.string()),
            }
        )
        time = base.column(0)
        if self.export_id is not None and self.since_us is not None:
            seeded = pc.fill_null(pc.equal(rows.column("shard_id").cast(pa.string()), self.export_id), False)
            time = pc.if_else(seeded, pa.scalar(self.since_us, pa.int64()), time)
            rank = pc.if_else(seeded, pa.scalar(0, pa.int8()), pa.scalar(1, pa.int8()))
        else:
            rank = pa.array([1] * rows.num_rows, pa.int8())
        return pa.table(
            {
                _ORDER_COLUMNS[0]: time,
                _ORDER_COLUMNS[1]: rank,
                _ORDER_COLUMNS[2]: base.column(1),
                _ORDER_COLUMNS[3]: base.column(2),
            }
        )


def _summary_of(table: Table) -> dict[str, str]:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return {}
    names = (APPLIED_PROPERTY, WATERMARK_PROPERTY, *_SEED_PROPERTIES)
    return {name: str(value) for name in names if (value := snapshot.summary.get(name)) is not None}


def _whole(text: str | None) -> int | None:
    return int(text) if text else None


def _file_range(data_file: DataFile, field_id: int) -> tuple[str | None, str | None]:
    """A file's ``fan_id`` bounds (None: unknown, so the file may hold any key)."""
    lower = (data_file.lower_bounds or {}).get(field_id)
    upper = (data_file.upper_bounds or {}).get(field_id)
    if lower is None or upper is None:
        return None, None
    return str(from_bytes(StringType(), lower)), str(from_bytes(StringType(), upper))


def _range_groups(files: list[DataFile], field_id: int) -> list[tuple[str | None, list[DataFile]]]:
    """The partition's files as groups with disjoint ``fan_id`` ranges, in key order, each with its lowest key
    (files whose ranges overlap, or whose bounds are unknown, share a group). A key belongs to the last group
    whose lowest key is not above it (keys below every group belong to the first)."""
    if not files:
        return [(None, [])]
    ranged = sorted(((*_file_range(item, field_id), item) for item in files), key=lambda entry: entry[0] or "")
    groups: list[tuple[str | None, list[DataFile]]] = []
    highest: str | None = None
    for lower, upper, data_file in ranged:
        open_ended = lower is None or upper is None
        if groups and (highest is None or open_ended or (lower is not None and lower <= highest)):
            groups[-1][1].append(data_file)
            highest = None if open_ended or highest is None else max(highest, str(upper))
            continue
        groups.append((lower, [data_file]))
        highest = upper
    return groups


def _batched(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """``tables`` concatenated into batches of at least ``rows`` rows (the last may be smaller)."""
    pending: list[pa.Table] = []
    count = 0
    for table in tables:
        pending.append(table)
        count += table.num_rows
        if count >= rows:
            yield pa.concat_tables(pending)
            pending, count = [], 0
    if pending:
        yield pa.concat_tables(pending)


@dataclass
class _StateFiles:
    """The state's files during a run, per event partition: what is committed, and what the run has made of it."""

    table: Table
    order: _Order
    staged: Staged
    file_rows: int
    committed: dict[Any, list[DataFile]] = field(default_factory=dict)
    current: dict[Any, list[DataFile]] = field(default_factory=dict)
    #: A rebuild: every committed file is replaced, every partition starts empty.
    replacing: list[DataFile] | None = None
    events_written: set[Any] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.schema = registrations_spec().arrow_schema
        self.fan_field = self.table.schema().find_field("fan_id").field_id

    def rebuild(self) -> None:
        self.replacing = files_matching(self.table, AlwaysTrue())

    def _load(self, events: list[Any]) -> None:
        missing = [event for event in events if event not in self.current]
        if not missing:
            return
        if self.replacing is None:
            # The files of the touched partitions, by their partition value: evaluating an ``In`` of hundreds of
            # events against every file costs more than reading the manifests whole.
            wanted = set(missing)
            for data_file in files_matching(self.table, AlwaysTrue()):
                if data_file.partition[0] in wanted:
                    self.committed.setdefault(data_file.partition[0], []).append(data_file)
        for event in missing:
            self.current[event] = list(self.committed.get(event, []))

    def removed_and_added(self) -> tuple[list[DataFile], list[DataFile]]:
        now = {data_file.file_path for files in self.current.values() for data_file in files}
        before = [data_file for files in self.committed.values() for data_file in files] + (self.replacing or [])
        paths = {data_file.file_path for data_file in before}
        removed = [data_file for data_file in before if data_file.file_path not in now]
        added = [
            data_file for files in self.current.values() for data_file in files if data_file.file_path not in paths
        ]
        return removed, added

    def apply(self, winners: pa.Table, late_removed: pa.Array | None) -> None:
        """Merge ``winners`` (one change per key, in key order, with ``op``) into the files of their events."""
        if winners.num_rows == 0:
            return
        events = winners.column("event_id").combine_chunks()
        starts = [0]
        if len(events) > 1:
            differs = pc.not_equal(events.slice(1), events.slice(0, len(events) - 1))
            starts += [index + 1 for index in pc.indices_nonzero(differs).to_pylist()]
        starts.append(winners.num_rows)
        names = [events[start].as_py() for start in starts[:-1]]
        self._load(names)
        plans: dict[Any, list[tuple[str | None, list[DataFile]]]] = {}
        work: list[tuple[Any, int, list[DataFile], pa.Table]] = []
        for event, start, end in zip(names, starts[:-1], starts[1:], strict=True):
            rows = winners.slice(start, end - start)
            groups = plans[event] = _range_groups(self.current[event], self.fan_field)
            fans = rows.column("fan_id").to_pylist()
            bounds = [0] + [bisect.bisect_left(fans, lower) for lower, _ in groups[1:]] + [len(fans)]
            for index, (_, group) in enumerate(groups):
                if bounds[index + 1] > bounds[index]:
                    work.append((event, index, group, rows.slice(bounds[index], bounds[index + 1] - bounds[index])))
        # ``MERGE_THREADS`` ranges at a time, so one range's S3 reads and writes overlap another's work: memory
        # holds that many ranges' rows and their changes, whatever the table's size.
        with ThreadPoolExecutor(max_workers=MERGE_THREADS) as pool:
            merged = list(pool.map(lambda item: self._merge(item[0], item[2], item[3], late_removed), work))
        written = {(event, index): files for (event, index, _, _), files in zip(work, merged, strict=True)}
        for event, groups in plans.items():
            committed = {data_file.file_path for data_file in self.committed.get(event, [])}
            files: list[DataFile] = []
            for index, (_, group) in enumerate(groups):
                new = written.get((event, index))
                if new is None:
                    files.extend(group)
                    continue
                files.extend(new)
                self.events_written.add(event)
                # Files this run wrote a moment ago and replaces now were never committed: delete them at once.
                Staged(self.table, [item.file_path for item in group if item.file_path not in committed]).discard()
            self.current[event] = files

    def _merge(
        self, event: Any, group: list[DataFile], incoming: pa.Table, late_removed: pa.Array | None
    ) -> list[DataFile] | None:
        """The group's rows (one event's, one key each, in fan order) merged with ``incoming`` (the same event's
        changes, one per key, in fan order), written as new files; None when nothing would change. Only the keys
        in both are put in order of changes; the stored rows are never sorted again, only filtered and, when keys
        are added, put in fan order with them."""
        stored = read_files(self.table, group)
        if len(group) > 1:  # files whose ranges overlap (or are unknown): their rows together in fan order
            stored = stored.take(pc.sort_indices(stored.column("fan_id")))
        stored_fans, incoming_fans = stored.column("fan_id"), incoming.column("fan_id").combine_chunks()
        operations = pc.fill_null(incoming.column("op"), "")
        removing = pc.equal(operations, "REMOVE")
        # For each stored row, the incoming row of its key (hashing the few incoming keys, not the many stored).
        positions = pc.index_in(stored_fans, value_set=incoming_fans)
        if isinstance(positions, pa.ChunkedArray):
            positions = positions.combine_chunks()
        hit = pc.is_valid(positions)
        found = pc.filter(positions, hit)
        matched = pc.is_in(pa.array(range(incoming.num_rows), pa.int32()), value_set=found)
        wins = pc.invert(matched)  # a key not stored: the change applies (unless it is a REMOVE, see below)
        if len(found):
            theirs = incoming.take(found)
            ours = stored.filter(hit)
            newer = pa.chunked_array([pc.greater(_rank_text(theirs, self.order), _rank_text(ours, self.order))])
            # Back to incoming's row order: ``found`` names the incoming row of each stored hit.
            by_row = pa.table({"row": found, "newer": newer}).sort_by("row").column("newer").combine_chunks()
            wins = pc.replace_with_mask(wins, matched, by_row)
        if late_removed is not None and len(late_removed):
            revived = pc.and_(pc.invert(matched), pc.is_in(_key_text(incoming), value_set=late_removed))
            wins = pc.and_(wins, pc.invert(revived))
        replaced = incoming.filter(pc.and_(wins, matched)).column("fan_id")
        added = incoming.filter(pc.and_(wins, pc.invert(removing)))
        if len(replaced) == 0 and added.num_rows == 0:
            return None
        kept = stored.filter(pc.invert(pc.is_in(stored_fans, value_set=replaced))) if len(replaced) else stored
        del stored
        rows = conform_to(kept, self.schema)
        if added.num_rows:
            new = conform_to(added.select(self.schema.names), self.schema)
            # Both sides are in fan order: only keys that interleave need the rows put in order again.
            after = rows.num_rows == 0 or rows.column("fan_id")[-1].as_py() < new.column("fan_id")[0].as_py()
            rows = pa.concat_tables([rows, new])
            if not after:
                rows = rows.take(pc.sort_indices(rows.column("fan_id")))
        del kept, added
        written: list[DataFile] = []
        for offset in range(0, rows.num_rows, self.file_rows):
            files = write_partition(self.table, event, rows.slice(offset, self.file_rows))
            self.staged.written.extend(data_file.file_path for data_file in files)
            written.extend(files)
        return written


@dataclass
class StateAdvance:
    """One run's advance of ``registrations`` to the current ``registration_changes`` snapshot."""

    changes: Table
    state: Table
    result: CurationResult
    checkpoint: Callable[[str], None] = lambda step: None
    published: PublishedSnapshot | None = None
    store: ObjectStore | None = None
    batch_rows: int = BATCH_ROWS
    file_rows: int = STATE_FILE_ROWS

    def run(self) -> None:
        target = self.changes.current_snapshot()
        summary = _summary_of(self.state)
        published = self.published
        if published is not None and summary.get(SEED_EXPORT_PROPERTY) != published.export_id:
            self._seed(published, target.snapshot_id if target is not None else None)
            return
        applied = _whole(summary.get(APPLIED_PROPERTY))
        if target is None or applied == target.snapshot_id:
            return
        delta = snapshot_changes(self.changes, applied, target.snapshot_id)
        if delta is None:
            raise CurationError(
                f"registrations reflects registration_changes snapshot {applied}, which is no longer an ancestor of "
                f"snapshot {target.snapshot_id}: the state cannot be advanced incrementally"
            )
        order = _Order(summary.get(SEED_EXPORT_PROPERTY), _whole(summary.get(SEED_SINCE_PROPERTY)))
        removed_ids = read_files(self.changes, list(delta.removed.values()), columns=["change_id"]).column("change_id")
        watermark = _whole(summary.get(WATERMARK_PROPERTY))
        state_files = _StateFiles(self.state, order, Staged(self.state), self.file_rows)
        seed = {name: summary[name] for name in _SEED_PROPERTIES if name in summary}
        added = list(delta.added.values())
        # The run's changes, streamed a record batch at a time into buckets of events on local disk, then taken
        # one bucket at a time: memory holds one bucket (about half ``batch_rows``), and every change of an event
        # is in the same bucket, so each range of the state is rewritten at most once per run.
        buckets = max(1, -(-sum(data_file.record_count for data_file in added) // max(1, self.batch_rows // 2)))
        with SpilledBuckets("event_id", buckets) as spilled:
            for batch in _changes_batches(self.changes, added):
                kept = pc.invert(pc.is_in(batch.column("change_id"), value_set=removed_ids))
                spilled.add(batch.filter(kept) if len(removed_ids) else batch)
            spilled.finish()
            bucketed = (rows for bucket in range(buckets) if (rows := spilled.read(bucket)) is not None)
            self._apply_and_commit(state_files, bucketed, target.snapshot_id, watermark, seed, keys_in_one_batch=True)

    def _seed(self, published: PublishedSnapshot, target: int | None) -> None:
        """Rebuild the state from the snapshot's rows and every change from T - lead on, in one snapshot."""
        store = self.store
        if store is None:
            raise CurationError("seeding registrations needs the store the snapshot's objects are read from")
        order = _Order(published.export_id, published.since_us)
        state_files = _StateFiles(self.state, order, Staged(self.state), self.file_rows)
        state_files.rebuild()
        columns = [*registrations_spec().arrow_schema.names, "op"]
        seed = {
            SEED_EXPORT_PROPERTY: published.export_id,
            SEED_EXPORT_TIME_PROPERTY: str(published.export_time_us),
            SEED_SINCE_PROPERTY: str(published.since_us),
        }
        since = And(
            predicate(GreaterThanOrEqual, "change_time", (published.export_time - published.lead).isoformat()),
            predicate(GreaterThanOrEqual, CHANGE_TIME_US, published.since_us),
        )

        def batches() -> Iterator[pa.Table]:
            yield from _batched(snapshot_batches(store, published, columns, self.batch_rows), self.batch_rows)
            if target is None:
                return
            # Oldest hour first, so a batch's changes are mostly newer than the ones applied before it.
            files = sorted(files_matching(self.changes, since, snapshot_id=target), key=_hour_then_path)
            for group in _file_batches(files, self.batch_rows):
                yield read_files(self.changes, group)

        self._apply_and_commit(state_files, batches(), target, None, seed)

    def _apply_and_commit(
        self,
        state_files: _StateFiles,
        batches: Iterator[pa.Table],
        target: int | None,
        watermark: int | None,
        seed: dict[str, str],
        *,
        keys_in_one_batch: bool = False,
    ) -> None:
        """Apply ``batches`` of changes and commit. ``keys_in_one_batch``: every change of a key is in one batch, so
        only REMOVEs of earlier runs (no later than the watermark before this run) can outrank a late change, and
        the batches applied before need not be searched for them."""
        late_before = watermark
        applied = 0
        try:
            since = _whole(seed.get(SEED_SINCE_PROPERTY))
            for batch in batches:
                # Changes older than T - lead are in the seed's snapshot already: ignored, as the query ignores them.
                rows = batch if since is None else batch.filter(pc.greater_equal(batch.column(CHANGE_TIME_US), since))
                winners = _latest_per_key(rows, state_files.order)
                del batch, rows
                if target is not None:
                    checked = late_before if keys_in_one_batch else watermark
                    late = _late_removed_keys(self.changes, target, winners, checked, state_files.order)
                else:
                    late = None
                state_files.apply(winners, late)
                applied += winners.num_rows
                snapshot_rows = pc.equal(pc.fill_null(winners.column("op"), ""), "SNAPSHOT")
                times = pc.if_else(snapshot_rows, pa.scalar(None, pa.int64()), winners.column(CHANGE_TIME_US))
                newest = pc.max(times).as_py()
                if newest is not None:
                    watermark = max(watermark or 0, newest)
                del winners
            removed, added = state_files.removed_and_added()
            properties = {**seed, "curator.changes-applied": str(applied)}
            if target is not None:
                properties[APPLIED_PROPERTY] = str(target)
            if watermark is not None:
                properties[WATERMARK_PROPERTY] = str(watermark)
            state = commit_overwrite(self.state, removed, added, properties)
        except CommitFailedException:
            state_files.staged.discard()
            raise
        self.checkpoint("registrations committed")
        self.result.state_changes_applied = applied
        self.result.events_written = len(state_files.events_written)
        committed = state.current_snapshot()
        self.result.registrations_snapshot = committed.snapshot_id if committed else None


def advance_registrations(
    changes: Table,
    state: Table,
    result: CurationResult,
    checkpoint: Callable[[str], None],
    *,
    published: PublishedSnapshot | None = None,
    store: ObjectStore | None = None,
) -> None:
    """Apply the ``registration_changes`` snapshots ``state`` does not reflect yet (seeding it first from a newly
    published snapshot), in one overwrite snapshot."""
    StateAdvance(changes, state, result, checkpoint, published, store, BATCH_ROWS, STATE_FILE_ROWS).run()


def _changes_batches(changes: Table, files: list[DataFile]) -> Iterator[pa.Table]:
    """The rows of ``files`` of ``registration_changes`` (the state's columns and ``op``), a record batch at a time."""
    schema = changes.schema().as_arrow()
    wanted = [*registrations_spec().arrow_schema.names, "op"]
    for data_file in files:
        with changes.io.new_input(data_file.file_path).open() as stream:
            parquet = pq.ParquetFile(stream)
            for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, use_threads=False):
                rows = conform_to_contract(pa.Table.from_batches([batch]), schema, data_file.file_path)
                yield rows.select(wanted)


def _hour_then_path(data_file: DataFile) -> tuple[int, str]:
    return int(data_file.partition[0]), data_file.file_path


def _file_batches(files: list[DataFile], rows: int) -> Iterator[list[DataFile]]:
    """``files`` in groups of about ``rows`` rows (by their record counts), in the given order."""
    group: list[DataFile] = []
    count = 0
    for data_file in files:
        group.append(data_file)
        count += data_file.record_count
        if count >= rows:
            yield group
            group, count = [], 0
    if group:
        yield group


def _late_removed_keys(
    changes: Table, snapshot_id: int, winners: pa.Table, watermark: int | None, order: _Order
) -> pa.Array | None:
    """The keys of ``winners``' late changes (no later than ``watermark``, the newest change applied before) that
    a REMOVE in ``changes`` orders after: such a change must not revive a key that REMOVE deleted."""
    if watermark is None or winners.num_rows == 0:
        return None
    operations = pc.fill_null(winners.column("op"), "")
    suspect = pc.and_(
        pc.and_(pc.not_equal(operations, "REMOVE"), pc.not_equal(operations, "SNAPSHOT")),
        pc.less_equal(winners.column(CHANGE_TIME_US), watermark),
    )
    if not pc.any(suspect).as_py():
        return None
    suspects = winners.filter(suspect)
    since = pc.min(suspects.column("change_time")).as_py()
    row_filter = And(
        And(predicate(EqualTo, "op", "REMOVE"), predicate(GreaterThanOrEqual, "change_time", since.isoformat())),
        predicate(In, "event_id", pc.unique(suspects.column("event_id")).to_pylist()),
    )
    removes = changes.scan(
        row_filter=row_filter,
        snapshot_id=snapshot_id,
        selected_fields=(
            "event_id",
            "fan_id",
            "shard_id",
            "change_time",
            CHANGE_TIME_US,
            "sequence_number",
            "change_id",
        ),
    ).to_arrow()
    if removes.num_rows == 0:
        return None
    latest_removes = _latest_per_key(removes, order)
    joined = pa.table({"key": _key_text(suspects), "rank": _rank_text(suspects, order)}).join(
        pa.table({"key": _key_text(latest_removes), "remove_rank": _rank_text(latest_removes, order)}),
        "key",
        join_type="inner",
    )
    later = joined.filter(pc.greater(joined.column("remove_rank"), joined.column("rank")))
    return later.column("key").combine_chunks()


def _key_text(rows: pa.Table) -> pa.Array:
    """``event_id`` and ``fan_id`` joined into one text per row (a unit separator between them)."""
    return pc.binary_join_element_wise(
        rows.column("event_id").cast(pa.string()), rows.column("fan_id").cast(pa.string()), "\x1f"
    )


def _rank_text(rows: pa.Table, order: _Order) -> pa.Array:
    """The order of changes (``_Order``) as one comparable text per row."""
    keys = order.columns(rows)
    micros = pc.utf8_lpad(keys.column(_ORDER_COLUMNS[0]).cast(pa.string()), width=20, padding="0")
    return pc.binary_join_element_wise(
        micros,
        keys.column(_ORDER_COLUMNS[1]).cast(pa.string()),
        keys.column(_ORDER_COLUMNS[2]),
        keys.column(_ORDER_COLUMNS[3]),
        "/",
    )


def _latest_per_key(rows: pa.Table, order: _Order) -> pa.Table:
    """The newest row (by ``order``) of each (event_id, fan_id), in key order.

    Sorted on two integers, not the text of the order: each key as its rank in (event_id, fan_id) order, then the
    change's microsecond newest first. Only the keys whose newest microsecond is shared by two of their rows (rare)
    are put in the whole order of changes, on their own rows."""
    if rows.num_rows == 0:
        return rows
    events, fans = _whole_array(rows.column("event_id")), _whole_array(rows.column("fan_id"))
    if events.null_count or fans.null_count:
        return rows.take(_newest_positions_by_text(rows, order))
    key = _key_ranks(events, fans)
    time = _whole_array(order.columns(rows, within=True, time_only=True).column(_ORDER_COLUMNS[0]))
    by_key = pc.sort_indices(
        pa.table({"key": key, "time": time}), sort_keys=[("key", "ascending"), ("time", "descending")]
    )
    sorted_key, sorted_time = pc.take(key, by_key), pc.take(time, by_key)
    count = len(by_key)
    same_key = pc.equal(sorted_key.slice(1), sorted_key.slice(0, count - 1))
    first = pa.concat_arrays([pa.array([True]), pc.invert(same_key)])
    tied = pc.and_(same_key, pc.equal(sorted_time.slice(1), sorted_time.slice(0, count - 1)))
    winners = pc.filter(by_key, first)
    if pc.any(tied).as_py():
        # Keys with two rows of one microsecond (possibly not the newest: checked on the text of the whole order).
        tied_keys = pc.unique(pc.filter(sorted_key.slice(1), tied))
        winners = pc.filter(winners, pc.invert(pc.is_in(pc.take(key, winners), value_set=tied_keys)))
        subset = pc.indices_nonzero(pc.is_in(key, value_set=tied_keys))
        resolved = pc.take(subset, _newest_positions_by_text(rows.take(subset), order))
        winners = pa.concat_arrays([winners.cast(pa.uint64()), resolved.cast(pa.uint64())])
        winners = pc.take(winners, pc.sort_indices(pc.take(key, winners)))
    return rows.take(winners)


def _whole_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _key_ranks(events: pa.Array, fans: pa.Array) -> pa.Array:
    """Each row's (event_id, fan_id) as one int64 that orders as the pair of texts does (equal pairs, equal
    numbers): the rank of its event among the distinct events, then of its fan among the distinct fans."""
    encoded_events, encoded_fans = pc.dictionary_encode(events), pc.dictionary_encode(fans)
    event_ranks = pc.rank(encoded_events.dictionary, sort_keys="ascending").cast(pa.int64())
    fan_ranks = pc.rank(encoded_fans.dictionary, sort_keys="ascending").cast(pa.int64())
    fans_count = len(encoded_fans.dictionary) + 1
    return pc.add(
        pc.multiply(pc.take(event_ranks, encoded_events.indices), fans_count),
        pc.take(fan_ranks, encoded_fans.indices),
    )


def _newest_positions_by_text(rows: pa.Table, order: _Order) -> pa.Array:
    """Positions of the newest row (by ``order``) of each (event_id, fan_id) of ``rows``, in key order: one sort
    by the keys' and the order's text."""
    keys = order.columns(rows, within=True)
    index = pa.table(
        {
            "event_id": rows.column("event_id"),
            "fan_id": rows.column("fan_id"),
            **{name: keys.column(name) for name in _ORDER_COLUMNS},
        }
    )
    sorted_order = pc.sort_indices(
        index,
        sort_keys=[
            ("event_id", "ascending"),
            ("fan_id", "ascending"),
            *((name, "descending") for name in _ORDER_COLUMNS),
        ],
    )
    sorted_keys = index.select(["event_id", "fan_id"]).take(sorted_order)
    events, fans = sorted_keys.column("event_id").combine_chunks(), sorted_keys.column("fan_id").combine_chunks()
    if len(sorted_order) == 1:
        first = pa.array([True])
    else:
        differs = pc.or_(
            pc.not_equal(events.slice(1), events.slice(0, len(events) - 1)),
            pc.not_equal(fans.slice(1), fans.slice(0, len(fans) - 1)),
        )
        first = pa.concat_arrays([pa.array([True]), differs])
    return pc.filter(sorted_order, first)
