"""An hour's rows split into slices, in memory up to a budget and on local disk past it, so a run holds at most
the budget and one group of slices, never a whole hour of any size.

A run streams its raw objects (and the committed files of each hour they touch) a record batch at a time into
``partitions`` slices per hour of change time, by a hash of ``change_id`` (``curator.rows.slice_of``): every copy
of a change lands in the same slice, so each slice is deduplicated on its own. Rows wait in memory until
``flush_bytes`` of them (``MEMORY_BYTES``, or ``flush_rows`` rows when given) are buffered, then all go to Arrow
IPC files (LZ4) in a temporary folder; reading a group of slices back brings exactly their rows, from disk and
memory. Memory: the buffer plus one group of slices, whatever the hour's size.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curator.rows import slice_of

__all__ = ["MEMORY_BYTES", "SpilledBuckets", "SpilledHours"]

# LZ4 rather than zstd: the files live for one run on local disk, where a row's CPU counts more than its bytes
# (909,000 realistic rows: zstd 0.78 s to write and 1.2 s to read back, LZ4 0.52 s and 0.2-0.5 s, for 2.5x the
# bytes). One thread each way: the run has one core, and handing buffers to a pool only costs there.
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)
_PREFIX = "curator-spill-"
#: ``SpilledBuckets.add`` slices rows in place when they come in runs of one value: at most this many runs, or
#: runs of this many rows on average.
_FEW_RUNS = 64
_ROWS_PER_RUN = 32
#: Bytes of rows (Arrow buffers) a spill keeps in memory; past them every buffered row goes to local disk. Memory
#: the function has anyway (the shard-hour run peaked at 1.1 GB of the 3,072 MB it may use while its spill held
#: nothing in memory, 1.8 GB with this): rows that fit are never written to disk and read back, and any run still
#: holds at most this much at once. Arrow's buffer sizes understate the resident memory by about a third.
MEMORY_BYTES = 768 * 2**20
#: A spill folder untouched this long is a run that died (a Lambda timeout keeps /tmp for the next invocation).
STALE_SECONDS = 2 * 3600


@dataclass
class _Slice:
    committed: int = 0
    new: int = 0
    files: dict[bool, list[Path]] = field(default_factory=lambda: {True: [], False: []})


@dataclass
class _Buffered:
    """Rows of one ``add`` waiting in memory, in (hour, slice) order: each slice's rows are one range of them, so
    a group of consecutive slices is one range too."""

    rows: pa.Table
    committed: bool
    ranges: dict[tuple[datetime, int], tuple[int, int]]


class SpilledHours:
    """Rows of the run by hour of change time and slice: committed rows and new rows kept apart."""

    def __init__(
        self,
        partitions: int = 64,
        flush_rows: int | None = None,
        folder: str | None = None,
        clock: Callable[[], float] = time.time,
        flush_bytes: int = MEMORY_BYTES,
    ) -> None:
        self.partitions = partitions
        self.flush_rows = flush_rows
        self.flush_bytes = flush_bytes
        parent = Path(folder or tempfile.gettempdir())
        now = clock()  # epoch seconds, as file modification times are
        for stale in parent.glob(f"{_PREFIX}*"):
            try:
                modified = stale.stat().st_mtime
            except FileNotFoundError:  # another run (another process sharing /tmp) just removed its own folder
                continue
            if now - modified > STALE_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        self._folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
        self._slices: dict[tuple[datetime, int], _Slice] = {}
        self._buffered: list[_Buffered] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._files = 0

    def __enter__(self) -> SpilledHours:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._slices.clear()
        self._buffered.clear()
        shutil.rmtree(self._folder, ignore_errors=True)

    # -- adding ---------------------------------------------------------------------------------------------
    def add(self, rows: pa.Table, *, committed: bool) -> None:
        """Spread ``rows`` (with a ``change_time`` and a ``change_id`` column) over their hours and slices."""
        if rows.num_rows == 0:
            return
        times = pc.cast(rows.column("change_time"), pa.timestamp("us", tz="UTC"))
        if (pc.min(times).value or 0) < 0:  # before 1970: integer division rounds towards zero, not down
            times = pc.floor_temporal(times, unit="hour")
        hour_numbers = pc.divide(pc.cast(times, pa.int64()), 3_600_000_000)
        slices = slice_of(rows.column("change_id"), self.partitions)
        bucket = pc.add(pc.multiply(hour_numbers, self.partitions), slices)
        order = pc.sort_indices(bucket)
        ordered = rows.take(order)
        runs = pc.run_end_encode(pc.take(bucket, order).combine_chunks())
        ranges: dict[tuple[datetime, int], tuple[int, int]] = {}
        start = 0
        for value, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
            hour_number, partition = divmod(int(value), self.partitions)
            hour = datetime.fromtimestamp(hour_number * 3600, UTC)
            piece = self._slices.setdefault((hour, partition), _Slice())
            ranges[(hour, partition)] = (start, end)
            if committed:
                piece.committed += end - start
            else:
                piece.new += end - start
            start = end
        self._buffered.append(_Buffered(ordered, committed, ranges))
        self._buffered_rows += rows.num_rows
        self._buffered_bytes += ordered.nbytes
        if _over(self._buffered_rows, self._buffered_bytes, self.flush_rows, self.flush_bytes):
            self.flush()

    def flush(self) -> None:
        """Write every buffered row to disk."""
        pieces: dict[tuple[datetime, int, bool], list[pa.Table]] = {}
        for buffered in self._buffered:
            for (hour, partition), (start, end) in buffered.ranges.items():
                pieces.setdefault((hour, partition, buffered.committed), []).append(
                    buffered.rows.slice(start, end - start)
                )
        self._buffered.clear()
        for (hour, partition, committed), tables in pieces.items():
            self._files += 1
            path = self._folder / f"{hour:%Y%m%d%H}-{partition}-{'c' if committed else 'n'}-{self._files}.arrow"
            rows = pa.concat_tables(tables).combine_chunks()  # one record batch: compressed whole, not in bits
            with (
                pa.OSFile(str(path), "wb") as sink,
                pa.ipc.new_stream(sink, rows.schema, options=_WRITE_OPTIONS) as out,
            ):
                out.write_table(rows)
            self._slices[(hour, partition)].files[committed].append(path)
        self._buffered_rows = 0
        self._buffered_bytes = 0

    # -- reading --------------------------------------------------------------------------------------------
    def hours(self) -> list[datetime]:
        """The hours with new rows, oldest first."""
        return sorted({hour for (hour, _), piece in self._slices.items() if piece.new})

    def all_hours(self) -> list[datetime]:
        """Every hour with rows, oldest first."""
        return sorted({hour for hour, _ in self._slices})

    def groups(self, hour: datetime, rows_per_group: int) -> list[list[int]]:
        """The hour's slices in consecutive groups of at most ``rows_per_group`` rows (a bigger slice alone)."""
        groups: list[list[int]] = []
        size = 0
        for partition in range(self.partitions):
            piece = self._slices.get((hour, partition))
            if piece is None:
                continue
            rows = piece.committed + piece.new
            if not groups or size + rows > rows_per_group:
                groups.append([])
                size = 0
            groups[-1].append(partition)
            size += rows
        return groups

    def read(self, hour: datetime, partitions: Iterable[int], *, committed: bool, schema: pa.Schema) -> pa.Table:
        """The rows of ``partitions`` of ``hour``, committed or new ones: a chunk per file and buffered range, not
        copied into one (the caller takes them into file order, a copy it makes anyway)."""
        tables: list[pa.Table] = []
        wanted = list(partitions)
        for partition in wanted:
            piece = self._slices.get((hour, partition))
            if piece is None:
                continue
            for path in piece.files[committed]:
                with pa.OSFile(str(path), "rb") as source:
                    tables.append(pa.ipc.open_stream(source, options=_READ_OPTIONS).read_all())
        for buffered in self._buffered:
            if buffered.committed != committed:
                continue
            # The wanted slices' ranges, adjacent ones joined: one piece per add for a group of consecutive slices.
            ranges = sorted(span for partition in wanted if (span := buffered.ranges.get((hour, partition))))
            joined: list[list[int]] = []
            for start, end in ranges:
                if joined and joined[-1][1] == start:
                    joined[-1][1] = end
                else:
                    joined.append([start, end])
            tables.extend(buffered.rows.slice(start, end - start) for start, end in joined)
        if not tables:
            return schema.empty_table()
        return pa.concat_tables(tables)

    def drop(self, hour: datetime) -> None:
        """Forget the hour and delete its files."""
        for buffered in self._buffered:
            buffered.ranges = {key: span for key, span in buffered.ranges.items() if key[0] != hour}
        self._buffered = [buffered for buffered in self._buffered if buffered.ranges]
        for key in [key for key in self._slices if key[0] == hour]:
            for paths in self._slices.pop(key).files.values():
                for path in paths:
                    path.unlink(missing_ok=True)


class SpilledBuckets:
    """Rows split into ``buckets`` by a hash of one text column (``curator.rows.slice_of``), in memory up to a budget
    and on local disk past it, so every row of one value of that column is in one bucket, and a caller holds the
    budget and one bucket in memory at a time.

    Rows wait in memory until ``flush_bytes`` of them (``MEMORY_BYTES``, or ``flush_rows`` rows when given) are
    buffered, then each bucket's go to its own Arrow IPC stream (LZ4); ``finish`` closes the streams, after which
    ``read`` returns a bucket's rows, from disk and memory."""

    def __init__(
        self,
        column: str,
        buckets: int,
        flush_rows: int | None = None,
        folder: str | None = None,
        flush_bytes: int = MEMORY_BYTES,
    ) -> None:
        self.column = column
        self.buckets = buckets
        self.flush_rows = flush_rows
        self.flush_bytes = flush_bytes
        self._folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=folder))
        self._buffered: list[list[pa.Table]] = [[] for _ in range(buckets)]
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._writers: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._closed = False

    def __enter__(self) -> SpilledBuckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close_writers()
        self._buffered = [[] for _ in range(self.buckets)]
        shutil.rmtree(self._folder, ignore_errors=True)

    def add(self, rows: pa.Table) -> None:
        """Spread ``rows`` over the buckets (every call with the same schema)."""
        if rows.num_rows == 0:
            return
        values = rows.column(self.column)
        runs = pc.run_end_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
        if len(runs.run_ends) <= max(_FEW_RUNS, rows.num_rows // _ROWS_PER_RUN):
            # Rows already in runs of one value (a data file sorted by this column): each run goes to its bucket as
            # a slice, without hashing every row or copying any.
            ordered = rows
            run_buckets = slice_of(runs.values, self.buckets).to_pylist()
            run_ends = runs.run_ends.to_pylist()
        else:
            bucket = slice_of(values, self.buckets)
            order = pc.sort_indices(bucket)
            ordered = rows.take(order)
            bucket_runs = pc.run_end_encode(pc.take(bucket, order))
            run_buckets, run_ends = bucket_runs.values.to_pylist(), bucket_runs.run_ends.to_pylist()
        start = 0
        for value, end in zip(run_buckets, run_ends, strict=True):
            self._buffered[int(value)].append(ordered.slice(start, end - start))
            start = end
        self._buffered_rows += rows.num_rows
        self._buffered_bytes += ordered.nbytes
        if _over(self._buffered_rows, self._buffered_bytes, self.flush_rows, self.flush_bytes):
            self._flush()

    def _flush(self) -> None:
        for bucket, tables in enumerate(self._buffered):
            if not tables:
                continue
            rows = pa.concat_tables(tables).combine_chunks()
            if bucket not in self._writers:
                sink = pa.OSFile(str(self._folder / f"{bucket}.arrow"), "wb")
                self._writers[bucket] = (sink, pa.ipc.new_stream(sink, rows.schema, options=_WRITE_OPTIONS))
            self._writers[bucket][1].write_table(rows)
            tables.clear()
        self._buffered_rows = 0
        self._buffered_bytes = 0

    def _close_writers(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sink, writer in self._writers.values():
            writer.close()
            sink.close()

    def finish(self) -> None:
        """No more rows: the streams on disk are closed (rows still in memory stay there) and buckets can be read."""
        self._close_writers()

    def read(self, bucket: int) -> pa.Table | None:
        """The bucket's rows, from disk and memory, one chunk per column (None: no row); after ``finish``. Copied
        into one chunk, unlike ``SpilledHours.read``: a bucket's rows come as hundreds of small slices (a run of
        one event per record batch), and kernels and takes over that many chunks cost more than the copy."""
        tables: list[pa.Table] = []
        if bucket in self._writers:
            with pa.OSFile(str(self._folder / f"{bucket}.arrow"), "rb") as source:
                tables.append(pa.ipc.open_stream(source, options=_READ_OPTIONS).read_all())
        tables.extend(self._buffered[bucket])
        if not tables:
            return None
        return pa.concat_tables(tables).combine_chunks()


def _over(rows: int, size: int, most_rows: int | None, most_bytes: int) -> bool:
    """Whether a spill's buffered rows (``rows``, of ``size`` bytes) must go to disk now."""
    return size >= most_bytes or (most_rows is not None and rows >= most_rows)
