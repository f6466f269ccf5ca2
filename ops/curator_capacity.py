"""The curator's runs priced and sized: rows, seconds, S3 and Glue requests of one run, and the load one run fits.

One scheduled run every ``curationIntervalMinutes`` curates the raw objects the interval brought (docs/curation.md):
it reads them (a GET each, the raw prefix listed), rewrites each touched hour of ``registration_changes`` with its
committed rows (copy-on-write: the hour's files read back and written anew), rewrites the ``registrations`` files
holding a changed key, commits one snapshot per table, expires the snapshots past ``timeTravelDays`` (another
commit per table) and lists each table's location for unreferenced files. Its duration is priced at the function's
memory (``curationMemoryMb``), whatever its peak.

The rates are the measured ones named below (docs/curation.md, "Benchmarks" and "Cost of advancing
``registrations``"): one core, the shared development machine, so conservative; update them here and the docs'
figures (docs/curation.md "Scale", docs/architecture.md "Capacity and cost") follow from ``python -m ops.capacity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "CURATION_REWRITE_ROWS_PER_SECOND",
    "CURATION_ROWS_PER_SECOND",
    "CURATION_RUN_OVERHEAD_SECONDS",
    "GLUE_REQUESTS_PER_RUN",
    "HOUR_ROWS_BOUNDED",
    "REDELIVERED",
    "RUN_PEAK_MB",
    "SLICE_ROWS",
    "SPILL_MEMORY_MB",
    "STATE_FILE_ROWS",
    "STATE_REWRITE_ROWS_PER_SECOND",
    "CuratorLoad",
    "CuratorRun",
    "ScaleRow",
    "curator_run",
    "largest_fitting_shards",
    "scale_rows",
]

#: Raw rows a run reads per second, the whole run (fetch, decode and spill, deduplicate, sort and write the hour,
#: advance ``registrations`` by its keys, commit): ``python -m bench.curation --targets shard-hour``, 3,636,000 rows
#: (3,600,000 changes, 1 % re-delivered) in 27.6 s of CPU on one core on a quiet machine (load average 0.8-1.7;
#: docs/curation.md, "Benchmarks"; 37.8 s for the code before the second pass, measured beside it).
CURATION_ROWS_PER_SECOND = 131_700
#: Committed rows of a touched hour read back and written again, per second: the same run's deduplicate, sort and
#: write step, 3,600,000 rows in 63.0 s.
CURATION_REWRITE_ROWS_PER_SECOND = 57_143
#: ``registrations`` rows of a file holding a changed key read and written again, per second:
#: ``python -m bench.registrations``, 10,050,328 rows rewritten in 49.8 s of CPU.
STATE_REWRITE_ROWS_PER_SECOND = 201_814
#: Seconds of a run whatever it finds (assumed, not measured as one figure): importing pyiceberg's Glue catalog on
#: a cold start (1.5-2.3 s, issue 15), loading both tables, commits and retention (0.5 s in the shard-hour run).
CURATION_RUN_OVERHEAD_SECONDS = 3.0
#: Share of changes the stream delivers twice (the benchmarks' figure): rows read = changes x (1 + this).
REDELIVERED = 0.01
#: Rows per ``registration_changes`` data file (``curator.curation.SLICE_ROWS``) and per ``registrations`` file
#: (``curator.state.STATE_FILE_ROWS``); repeated here so the cost model does not import the curator's pyiceberg.
SLICE_ROWS = 500_000
STATE_FILE_ROWS = 250_000
#: Glue calls of a run: GetTable for each table when the run starts and again for retention (4), one per table
#: when retention refreshes it (2), and per commit (two data commits, two snapshot expiries) a GetTable and an
#: UpdateTable (8).
GLUE_REQUESTS_PER_RUN = 14
#: Objects the Iceberg commits of a run write (PUT): per data commit a manifest, a manifest list and a metadata
#: file (3 per table, the ledger one more for ``registration_changes``), per expiry a manifest list and a metadata
#: file (2 per table).
_METADATA_PUTS_PER_RUN = 2 * 3 + 1 + 2 * 2
#: Objects of a kept snapshot its table's retention reads each run (its manifest list and about one manifest).
_GETS_PER_KEPT_SNAPSHOT = 2
#: Objects under a table's location per kept snapshot (manifest list, manifest, ledger) besides the data files.
_OBJECTS_PER_KEPT_SNAPSHOT = 3
_LIST_PAGE = 1_000
#: Peak RSS of the shard-hour run (docs/curation.md, "Benchmarks"), bounded by design whatever the run's size: the
#: change side holds the spill's memory (``SPILL_MEMORY_MB``) and one group of hash slices, the ``registrations``
#: step the spill's memory, one bucket of the run's changes and four ranges of the state. Only the part beyond the
#: spill's memory grows, once an hour holds more than ``HOUR_ROWS_BOUNDED`` rows, when each of the 64 slices
#: outgrows ``SLICE_ROWS``: in proportion, beyond.
RUN_PEAK_MB = 1_647
#: Rows a spill keeps in memory before it writes them to local disk (``curator.spill.MEMORY_BYTES``, 768 MiB).
SPILL_MEMORY_MB = 768
HOUR_ROWS_BOUNDED = 64 * 500_000
#: Share of the function's memory a run may peak at (issue 15: at least 25 % headroom); the same share of its
#: local disk.
_MEMORY_SHARE = 0.75
#: Bytes a row takes in the spill's LZ4 files on local disk (realistic data, docs/curation.md "Memory, by design").
SPILL_BYTES_PER_ROW = 175
#: The curator's local disk (``components.curation.EPHEMERAL_STORAGE_MB``; repeated so the model does not import
#: the program).
EPHEMERAL_STORAGE_MB = 10_240


@dataclass(frozen=True)
class CuratorLoad:
    """What a run is given: the stream's load and the function's settings."""

    shards: int
    records_per_second_per_shard: float
    raw_objects_per_shard_hour: float
    interval_minutes: int = 15
    delete_grace_minutes: int = 15
    time_travel_days: int = 7
    state_rows: int = 10_000_000
    """Rows of ``registrations`` (live registrations): the files a run's changed keys fall in are rewritten."""
    rows_per_second: float = CURATION_ROWS_PER_SECOND

    def __post_init__(self) -> None:
        if self.shards < 1 or self.interval_minutes < 1 or self.time_travel_days < 1 or self.state_rows < 0:
            raise ValueError("shards, interval and time travel must be at least 1, state rows at least 0")
        if not (math.isfinite(self.rows_per_second) and self.rows_per_second > 0):
            raise ValueError(f"curation rows per second must be positive, got {self.rows_per_second!r}")
        if self.records_per_second_per_shard < 0 or self.raw_objects_per_shard_hour < 0:
            raise ValueError("records and objects per shard must not be negative")


@dataclass(frozen=True)
class CuratorRun:
    """One run at a steady load: rows, seconds and requests."""

    changes: float
    raw_rows: float
    raw_objects: float
    committed_rows_rewritten: float
    """Rows already committed in the hours the run touches (mean over an hour's runs), read back and rewritten."""
    state_rows_rewritten: float
    seconds: float
    s3_gets: float
    s3_puts_and_lists: float
    glue_requests: int
    runs_per_day: float

    def gb_seconds(self, memory_mb: int) -> float:
        return self.seconds * memory_mb / 1024


def curator_run(load: CuratorLoad, *, last_of_hour: bool = False) -> CuratorRun:
    """One run of ``load``: the formulas of docs/curation.md, "Scale" and docs/architecture.md, "Capacity and cost".

    The mean run of an hour by default; ``last_of_hour``: the hour's last run, which rewrites the most committed
    rows (the run that must fit the timeout)."""
    minutes = load.interval_minutes
    changes = load.shards * load.records_per_second_per_shard * 60 * minutes
    raw_rows = changes * (1 + REDELIVERED)
    raw_objects = load.shards * load.raw_objects_per_shard_hour * minutes / 60
    # Runs at :15, :30, :45 and :60 of an hour find 0, 1, 2 and 3 runs' rows committed in it: 1.5 on average.
    runs_per_hour = max(1.0, 60 / minutes)
    committed = changes * (runs_per_hour - 1) / (1 if last_of_hour else 2)
    touched_hours = 1 + minutes / 60  # an interval crosses an hour's end with probability minutes / 60
    ranges = max(1, math.ceil(load.state_rows / STATE_FILE_ROWS))
    touched_share = 1 - (1 - 1 / ranges) ** changes if changes else 0.0  # keys spread over every range
    state_rewritten = load.state_rows * touched_share
    seconds = (
        CURATION_RUN_OVERHEAD_SECONDS
        + raw_rows / load.rows_per_second
        + committed / CURATION_REWRITE_ROWS_PER_SECOND
        + state_rewritten / STATE_REWRITE_ROWS_PER_SECOND
    )
    runs_per_day = 24 * 60 / minutes
    kept_snapshots = load.time_travel_days * runs_per_day
    change_files_read = math.ceil(committed / SLICE_ROWS) if committed else 0
    change_files_written = max(math.ceil(touched_hours), math.ceil((committed + changes) / SLICE_ROWS))
    if not changes:
        change_files_written = 0
    state_files = ranges * touched_share
    retention_gets = 2 * kept_snapshots * _GETS_PER_KEPT_SNAPSHOT
    listed_raw = load.shards * load.raw_objects_per_shard_hour * (minutes + load.delete_grace_minutes) / 60
    # Each table's location: its kept snapshots' metadata plus its data files (the change log's 24 an hour are kept
    # for good: a year of hours is 9 pages); priced at the time-travel window's metadata and a day of hour files.
    location_objects = kept_snapshots * _OBJECTS_PER_KEPT_SNAPSHOT + 24 * touched_hours
    lists = math.ceil(listed_raw / _LIST_PAGE) + 2 * math.ceil(location_objects / _LIST_PAGE)
    return CuratorRun(
        changes=changes,
        raw_rows=raw_rows,
        raw_objects=raw_objects,
        committed_rows_rewritten=committed,
        state_rows_rewritten=state_rewritten,
        seconds=seconds,
        s3_gets=raw_objects + change_files_read + state_files + retention_gets,
        s3_puts_and_lists=change_files_written + state_files + _METADATA_PUTS_PER_RUN + lists,
        glue_requests=GLUE_REQUESTS_PER_RUN,
        runs_per_day=runs_per_day,
    )


@dataclass(frozen=True)
class ScaleRow:
    """Whether one run fits its interval, timeout and memory at a shard count, every shard at its limit."""

    shards: int
    changes: float
    raw_rows: float
    seconds: float
    """The hour's last run (the most committed rows rewritten)."""
    peak_mb: float
    disk_mb: float
    """Local disk of the hour's last run: its raw rows and the hour's committed rows, spilled."""
    fits_time: bool
    fits_memory: bool
    fits_disk: bool


def _peak_mb(changes: float, interval_minutes: int) -> float:
    hour_rows = changes * (1 + REDELIVERED) * max(1.0, 60 / interval_minutes)
    return SPILL_MEMORY_MB + (RUN_PEAK_MB - SPILL_MEMORY_MB) * max(1.0, hour_rows / HOUR_ROWS_BOUNDED)


def scale_rows(
    shard_counts: list[int],
    *,
    timeout_seconds: int = 600,
    memory_mb: int = 4_096,
    interval_minutes: int = 15,
    state_rows: int = 10_000_000,
    rows_per_second: float = CURATION_ROWS_PER_SECOND,
    records_per_second_per_shard: float = 1_000,
) -> list[ScaleRow]:
    """One row per shard count: the run's changes, its seconds against the timeout (below the interval), its
    peak against 75 % of the memory, its spilled rows against 75 % of the local disk."""
    rows = []
    for shards in shard_counts:
        load = CuratorLoad(
            shards=shards,
            records_per_second_per_shard=records_per_second_per_shard,
            raw_objects_per_shard_hour=0.0,
            interval_minutes=interval_minutes,
            state_rows=state_rows,
            rows_per_second=rows_per_second,
        )
        run = curator_run(load, last_of_hour=True)
        peak = _peak_mb(run.changes, interval_minutes)
        disk = (run.raw_rows + run.committed_rows_rewritten) * SPILL_BYTES_PER_ROW / 1e6
        rows.append(
            ScaleRow(
                shards=shards,
                changes=run.changes,
                raw_rows=run.raw_rows,
                seconds=run.seconds,
                peak_mb=peak,
                disk_mb=disk,
                fits_time=run.seconds <= min(timeout_seconds, interval_minutes * 60),
                fits_memory=peak <= _MEMORY_SHARE * memory_mb,
                fits_disk=disk <= _MEMORY_SHARE * EPHEMERAL_STORAGE_MB,
            )
        )
    return rows


def largest_fitting_shards(
    *,
    timeout_seconds: int = 600,
    memory_mb: int = 4_096,
    interval_minutes: int = 15,
    state_rows: int = 10_000_000,
    rows_per_second: float = CURATION_ROWS_PER_SECOND,
) -> tuple[int, int]:
    """The most shards (each at 1,000 records/s) one run fits in time, and in memory; 0 when not even one does."""
    fitting = [0, 0]
    for shards in range(1, 1_001):
        (row,) = scale_rows(
            [shards],
            timeout_seconds=timeout_seconds,
            memory_mb=memory_mb,
            interval_minutes=interval_minutes,
            state_rows=state_rows,
            rows_per_second=rows_per_second,
        )
        fitting = [shards if row.fits_time else fitting[0], shards if row.fits_memory else fitting[1]]
        if not (row.fits_time or row.fits_memory):
            break
    return fitting[0], fitting[1]
