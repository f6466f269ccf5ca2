"""Queries in DuckDB, curated tables against the raw layout, on the same data.

    python -m bench.queries [--snapshot-rows 200000] [--changes-per-day 20000] [--days 30] [--seed 5] [--json]

The data: a published snapshot of ``--snapshot-rows`` live registrations over 40 events at T, then ``--days``
days of changes (30 % registrations, 40 % status changes, 30 % removals, so the number of live registrations
stays about the snapshot's), two shards, 1 % of the changes delivered twice. Rows are built column-wise with
the value distributions of ``sandbox.changes.DemandGenerator`` (every row distinct, nothing tiled): the
handler's own path runs about 2,000 records/s on the shared development machine, too slow for a million changes.

The layouts, as Parquet files on local disk read by DuckDB in place (one thread):

- raw, as the stream handler writes it: objects under ``dt=YYYY-MM-DD/hour=HH/`` (``pipeline.writer``), one
  per shard per 15 minutes, duplicates included; the snapshot under ``export_id=<id>/``. The handler writes one
  object per invocation and hour (a five-second batching window), so the real raw layer holds more, smaller
  objects: this is the raw layout's best case short of compaction, and the speed-ups are understated;
- curated, as the curator writes it (``curator.tables``): ``registration_changes`` one file per hour of change
  time, each change once, sorted by event, fan, change time; ``registrations`` one file per event, sorted by
  fan, holding the latest state per key (snapshot plus changes). The files are written here with the curator's
  layout and zstd compression, not by a curator run: the local AWS's S3 and Glue would dominate the build time.
  A read of ``registration_changes`` is planned from each file's ``change_time`` bounds, recorded once as an
  Iceberg manifest records them (``AthenaOnDuckDB.add_data_files``): a 7-day window reads its 153 hour files, not
  all 720, as Athena reads an Iceberg table and as the raw table's ``dt`` partitions are pruned by path. DuckDB
  prunes ``registrations``' files by their statistics (an event's file).

Targets (issue 15): demand per event per day (last 7 days) >= 5x faster curated; one event's rows (its current
registrations) >= 20x; the current state read in flat time over 1, 7 and 30 days of changes since the snapshot
(slowest within 1.5x of fastest), against today's snapshot-plus-changes query. Each pair of queries must give
the same answer. Timings are robust to a shared machine's changing load: each figure is the fastest of several runs
after a warm-up, and the runs compared with each other are taken in turn (raw and curated demand alternately for
``--repeat`` rounds; the curated current-state reads at 1, 7 and 30 days in turn for at least 9 rounds, the spread
taken from each read's fastest and printed from the medians too), so a burst of load falls on all of them.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.catalog import CHANGES_TABLE, REGISTRATIONS_TABLE, named_queries, unique_changes_cte
from components.current_state import current_registrations_sql
from pipeline.change_order import newest_first_sql
from pipeline.schema import arrow_schema
from pipeline.writer import encode_parquet
from sandbox.athena_duckdb import AthenaOnDuckDB
from sandbox.changes import CHANNELS, PRICE_LEVELS, STATUSES

__all__ = ["QUERY_TARGETS", "main", "query_figures"]

QUERY_TARGETS = {"demand_speedup": 5.0, "event_speedup": 20.0, "flat_ratio": 1.5}
DATABASE, RAW_TABLE, SNAPSHOTS = "demand_db", "demand_changes", "demand_changes_snapshots"
EXPORT_ID = "01796000000000-bench000"
T = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SHARDS = ("shardId-000000000000", "shardId-000000000001")
_HORIZONS = (1, 7, 30)
_DEMAND_WINDOW_DAYS = 7
#: Rounds of the three curated current-state reads (1, 7, 30 days), interleaved: the flat-time target compares
#: three reads of a few hundred milliseconds with each other, on a shared machine whose load changes by the minute.
_FLAT_ROUNDS = 9
_EVENTS = 40
_SOURCE = "prd3292-dev1-us-east-1-demand-table"


# -- data -----------------------------------------------------------------------------------------------------
@dataclass
class _Keys:
    """Every registration ever made: its immutable attributes, by key index."""

    event: list[int] = field(default_factory=list)
    fan: list[str] = field(default_factory=list)
    market: list[int] = field(default_factory=list)
    quantity: list[int] = field(default_factory=list)
    levels: list[list[str] | None] = field(default_factory=list)
    channel: list[str | None] = field(default_factory=list)
    presale: list[str | None] = field(default_factory=list)
    attributes: list[list[tuple[str, str]] | None] = field(default_factory=list)
    extra: list[str | None] = field(default_factory=list)
    created_us: list[int] = field(default_factory=list)

    def add(self, rng: random.Random, created_us: int) -> int:
        """A new registration (DemandGenerator's distributions); its index."""
        self.event.append(rng.randrange(_EVENTS))
        self.fan.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        self.market.append(rng.choice((1, 2, 3, 7, 11, 27, 101)))
        self.quantity.append(rng.randint(1, 8))
        self.levels.append(rng.sample(PRICE_LEVELS, k=rng.randint(1, 3)) if rng.random() < 0.8 else None)
        self.channel.append(rng.choice(CHANNELS) if rng.random() < 0.9 else None)
        self.presale.append(f"PRESALE{rng.randint(100, 999)}" if rng.random() < 0.3 else None)
        locale = rng.choice(("en-US", "en-GB", "fr-FR", "es-MX"))
        self.attributes.append([("locale", locale), ("utm_source", "email")] if rng.random() < 0.6 else None)
        extra = {"marketing": {"opt_in": rng.random() < 0.5, "source": {"campaign": "onsale"}}}
        self.extra.append(json.dumps(extra) if rng.random() < 0.15 else None)
        self.created_us.append(created_us // 1000 * 1000)
        return len(self.fan) - 1


def _timestamps(micros: list[int]) -> pa.Array:
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", "UTC"))


def _rows(keys: _Keys, index: list[int], columns: dict[str, Any], event_ids: list[str]) -> pa.Table:
    """Rows of the record contract: the keys' attributes at ``index`` plus the per-change ``columns``."""
    values: dict[str, Any] = {
        "event_id": [event_ids[keys.event[i]] for i in index],
        "fan_id": [keys.fan[i] for i in index],
        "market_id": [keys.market[i] for i in index],
        "quantity": [keys.quantity[i] for i in index],
        "price_levels": [keys.levels[i] for i in index],
        "channel": [keys.channel[i] for i in index],
        "presale_code": [keys.presale[i] for i in index],
        "created_at": _timestamps([keys.created_us[i] for i in index]),
        "attributes": [keys.attributes[i] for i in index],
        "extra_attributes": [keys.extra[i] for i in index],
        **columns,
    }
    arrays = []
    for item in arrow_schema():
        value = values[item.name]
        arrays.append(value.cast(item.type) if isinstance(value, pa.Array) else pa.array(value, item.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema())


@dataclass
class _Lake:
    snapshot: pa.Table
    changes: pa.Table  # every delivery, duplicates included, in delivery order
    event_ids: list[str]


def build_lake(snapshot_rows: int, changes_per_day: int, days: int, seed: int) -> _Lake:
    """The snapshot at T and ``days`` days of changes after it (see the module's docstring)."""
    rng = random.Random(seed)
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    event_ids = ["vv" + "".join(rng.choices(alphabet, k=14)) for _ in range(_EVENTS)]
    t_us = (T - _EPOCH) // timedelta(microseconds=1)
    keys = _Keys()
    for _ in range(snapshot_rows):
        keys.add(rng, t_us - rng.randrange(30 * 86_400_000_000))
    live = list(range(snapshot_rows))
    slot = {key: position for position, key in enumerate(live)}
    total = changes_per_day * days
    times = sorted(t_us + rng.randrange(days * 86_400_000_000) // 1000 * 1000 for _ in range(total))
    touched: list[int] = []
    ops: list[str] = []
    statuses: list[str] = []
    updated: list[int | None] = []
    for moment in times:
        roll = rng.random()
        if roll < 0.3 or not live:  # a registration
            key = keys.add(rng, moment)
            slot[key] = len(live)
            live.append(key)
            ops.append("INSERT")
            statuses.append("REGISTERED")
            updated.append(None)
        else:
            key = live[rng.randrange(len(live))]
            if roll < 0.7:  # a status change
                ops.append("MODIFY")
                statuses.append(rng.choice(STATUSES[1:]))
                updated.append(moment)
            else:  # a removal (cancelled, or expired with its event)
                last = live.pop()
                if last != key:
                    live[slot[key]] = last
                    slot[last] = slot[key]
                del slot[key]
                ops.append("REMOVE")
                statuses.append(rng.choice(STATUSES))
                updated.append(None)
        touched.append(key)
    columns = {
        "status": statuses,
        "updated_at": pa.array(updated, pa.int64()).cast(pa.timestamp("us", "UTC")),
        "op": ops,
        "change_id": [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(total)],
        "change_time": _timestamps(times),
        "shard_id": [_SHARDS[keys.event[key] % len(_SHARDS)] for key in touched],
        "sequence_number": [str(10**20 + number * 1000) for number in range(total)],
        "table_name": [_SOURCE] * total,
        "deleted_by_ttl": [False] * total,
        "change_time_us": pa.array(times, pa.int64()),
    }
    changes = _rows(keys, touched, columns, event_ids)
    # 1 % delivered again (a retried batch): the same change, a later sequence number.
    again = sorted(rng.sample(range(total), k=total // 100))
    copies = changes.take(pa.array(again, pa.int64()))
    later = pa.array([str(10**20 + (total + number) * 1000) for number in range(len(again))], pa.string())
    index = copies.schema.get_field_index("sequence_number")
    copies = copies.set_column(index, copies.schema.field(index), later)
    changes = pa.concat_tables([changes, copies])
    lines = range(1, snapshot_rows + 1)
    snapshot = _rows(
        keys,
        list(range(snapshot_rows)),
        {
            "status": [rng.choice(STATUSES) for _ in lines],
            "updated_at": [None] * snapshot_rows,
            "op": ["SNAPSHOT"] * snapshot_rows,
            "change_id": [f"{EXPORT_ID}:data.json.gz:{line}" for line in lines],
            "change_time": _timestamps([t_us] * snapshot_rows),
            "shard_id": [EXPORT_ID] * snapshot_rows,
            "sequence_number": [str(line) for line in lines],
            "table_name": [_SOURCE] * snapshot_rows,
            "deleted_by_ttl": [False] * snapshot_rows,
            "change_time_us": pa.array([t_us] * snapshot_rows, pa.int64()),
        },
        event_ids,
    )
    return _Lake(snapshot, changes, event_ids)


# -- layouts --------------------------------------------------------------------------------------------------
def _runs(values: list[Any]) -> list[tuple[int, int]]:
    """(start, end) of each run of equal consecutive values."""
    starts = [0] + [index for index in range(1, len(values)) if values[index] != values[index - 1]]
    return list(zip(starts, [*starts[1:], len(values)], strict=True))


def write_raw(lake: _Lake, root: Path) -> tuple[list[tuple[datetime, str]], list[str]]:
    """The raw layout: one object per shard per 15 minutes under dt=/hour=, and the snapshot's files.
    Returns each hour partition (its start, a glob of its objects) and the snapshot's files."""
    changes = lake.changes
    slices = pc.floor_temporal(changes.column("change_time"), multiple=15, unit="minute")
    order = pc.sort_indices(
        pa.table({"slice": slices, "shard": changes.column("shard_id")}),
        [("slice", "ascending"), ("shard", "ascending")],
    )
    ordered = changes.take(order)
    slice_values = slices.take(order).to_pylist()
    shard_values = ordered.column("shard_id").to_pylist()
    hours: dict[datetime, str] = {}
    for start, end in _runs(list(zip(slice_values, shard_values, strict=True))):
        part = ordered.slice(start, end - start)
        moment = slice_values[start]
        folder = root / "raw" / f"dt={moment:%Y-%m-%d}" / f"hour={moment:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"0a1b2c3d-{shard_values[start]}-{part.column('sequence_number')[0].as_py()}.parquet"
        path.write_bytes(encode_parquet(part))
        hours[moment.replace(minute=0)] = str(folder / "*.parquet")
    folder = root / "snapshots" / f"export_id={EXPORT_ID}"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    per_file = -(-lake.snapshot.num_rows // 8)
    for number, start in enumerate(range(0, lake.snapshot.num_rows, per_file)):
        path = folder / f"part-{number:05d}.parquet"
        path.write_bytes(encode_parquet(lake.snapshot.slice(start, per_file)))
        files.append(str(path))
    return sorted(hours.items()), files


def _unique(changes: pa.Table) -> pa.Table:
    """Each change once: the copy with the lowest sequence number (all copies here share a shard and the
    sequence numbers their length)."""
    order = pc.sort_indices(changes, [("change_id", "ascending"), ("sequence_number", "ascending")])
    ids = changes.column("change_id").take(order).to_pylist()
    first = [True] + [ids[index] != ids[index - 1] for index in range(1, len(ids))]
    return changes.take(order.filter(pa.array(first)))


def write_curated_changes(lake: _Lake, root: Path) -> list[str]:
    """``registration_changes`` as the curator lays it out: one zstd file per hour of change time, each change
    once, sorted by event, fan, change time."""
    unique = _unique(lake.changes)
    hours = pc.floor_temporal(unique.column("change_time"), unit="hour")
    order = pc.sort_indices(
        pa.table(
            {
                "hour": hours,
                "event_id": unique.column("event_id"),
                "fan_id": unique.column("fan_id"),
                "t": unique.column("change_time"),
            }
        ),
        [("hour", "ascending"), ("event_id", "ascending"), ("fan_id", "ascending"), ("t", "ascending")],
    )
    ordered = unique.take(order)
    hour_values = hours.take(order).to_pylist()
    files = []
    for start, end in _runs(hour_values):
        moment = hour_values[start]
        folder = root / CHANGES_TABLE / "data" / f"change_hour={moment:%Y-%m-%d-%H}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "00000-0.parquet"
        pq.write_table(ordered.slice(start, end - start), path, compression="zstd")
        files.append(str(path))
    return files


def write_registrations(lake: _Lake, root: Path, days: int) -> list[str]:
    """``registrations`` after ``days`` days of changes: the latest of the snapshot row and the changes per key,
    removed keys dropped; one zstd file per event, sorted by fan (the curator's partitioning and order)."""
    until = (T + timedelta(days=days) - _EPOCH) // timedelta(microseconds=1)
    changes = lake.changes.filter(pc.less(lake.changes.column("change_time_us"), until))
    rows = pa.concat_tables([lake.snapshot, _unique(changes)])
    import duckdb  # noqa: PLC0415

    connection = duckdb.connect()
    connection.execute("SET threads = 1")
    connection.register("candidates", rows)
    state_names = [name for name in arrow_schema().names if name not in ("op", "deleted_by_ttl")]
    latest = connection.sql(
        f"""SELECT {", ".join(state_names)} FROM (
              SELECT *, row_number() OVER (PARTITION BY event_id, fan_id ORDER BY {newest_first_sql()}) AS newest
              FROM candidates)
            WHERE newest = 1 AND op <> 'REMOVE'
            ORDER BY event_id, fan_id"""  # noqa: S608 - the bench's own columns
    ).to_arrow_table()
    events = latest.column("event_id").to_pylist()
    files = []
    for start, end in _runs(events):
        folder = root / f"{REGISTRATIONS_TABLE}-{days}d" / "data" / f"event_id={events[start]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "00000-0.parquet"
        pq.write_table(latest.slice(start, end - start), path, compression="zstd")
        files.append(str(path))
    return files


# -- queries --------------------------------------------------------------------------------------------------
def raw_demand_sql(window_days: int) -> str:
    """Today's demand_per_event_per_day over the raw table (as main holds it): each change once by the rule,
    then each fan's last change of the day."""
    from components.catalog import recent_partitions  # noqa: PLC0415

    window = recent_partitions(window_days)
    source = f'(SELECT * FROM "{DATABASE}"."{RAW_TABLE}" WHERE {window}) AS recent_changes'  # noqa: S608
    return f"""WITH {unique_changes_cte(source)},
last_of_day AS (
  SELECT dt, event_id, fan_id, status, quantity, op,
         row_number() OVER (PARTITION BY dt, event_id, fan_id ORDER BY {newest_first_sql()}) AS newest
  FROM unique_changes
)
SELECT dt, event_id, status, count(*) AS fans, sum(quantity) AS tickets
FROM last_of_day
WHERE newest = 1 AND op <> 'REMOVE'
GROUP BY dt, event_id, status
ORDER BY dt, event_id, status"""  # noqa: S608 - the bench's own names


def _best(run: Callable[[], pa.Table], repeat: int) -> tuple[float, pa.Table]:
    result = run()  # warm-up: file cache, DuckDB's metadata cache
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        timings.append(time.perf_counter() - started)
    return min(timings) * 1000, result


def _interleaved(runs: Mapping[Any, Callable[[], pa.Table]], rounds: int) -> dict[Any, list[float]]:
    """Milliseconds of each run over ``rounds`` rounds, the runs taken in turn within a round (after one warm-up
    each), so a change of the machine's load in the meantime falls on every run alike rather than on one."""
    for run in runs.values():
        run()
    timings: dict[Any, list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            timings[key].append((time.perf_counter() - started) * 1000)
    return timings


def _spread(times: list[float]) -> float:
    """The slowest of ``times`` over the fastest."""
    return round(max(times) / min(times), 2)


def _runner(now: datetime) -> AthenaOnDuckDB:
    runner = AthenaOnDuckDB(now=now)
    runner.connection.execute("SET threads = 1")
    # Footers read once and kept, for both layouts: Athena plans an Iceberg table from its manifests and a Hive
    # table from the listing, without re-reading every data file's footer per query.
    runner.connection.execute("SET parquet_metadata_cache = true")
    return runner


def _sorted_rows(table: pa.Table, columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(row[name] for name in columns) for row in table.select(columns).to_pylist())


def query_figures(snapshot_rows: int, changes_per_day: int, days: int, seed: int, repeat: int) -> dict[str, Any]:
    """Build the lake, write both layouts in a temporary directory, time the queries."""
    if days < max(_HORIZONS):
        raise ValueError(f"days must be at least {max(_HORIZONS)}, got {days}")
    built = time.perf_counter()
    lake = build_lake(snapshot_rows, changes_per_day, days, seed)
    root = Path(tempfile.mkdtemp(prefix="bench-queries-"))
    try:
        raw_hours, snapshot_files = write_raw(lake, root)
        curated_changes = write_curated_changes(lake, root)
        registrations = {horizon: write_registrations(lake, root, horizon) for horizon in _HORIZONS}
        figures: dict[str, Any] = {
            "snapshot_rows": snapshot_rows,
            "changes": lake.changes.num_rows,
            "days": days,
            "raw_objects": sum(1 for _ in (root / "raw").glob("*/*/*.parquet")),
            "curated_change_files": len(curated_changes),
            "build_seconds": round(time.perf_counter() - built, 1),
        }
        queries = {query.name: query.sql for query in named_queries(DATABASE, RAW_TABLE, window_days=7)}
        end = T + timedelta(days=days)

        # Demand per event per day, the last 7 days, at the end of the data.
        runner = _runner(end)
        runner.add_parquet(DATABASE, RAW_TABLE, [glob for _, glob in raw_hours], hive_partitioning=True)
        # Planned as Athena plans the Iceberg table: the change-time bounds each manifest entry records (read once
        # from the files' footers here), so a window reads only its hours' files, as the raw table's partition
        # projection reads only its days' objects.
        runner.add_data_files(DATABASE, CHANGES_TABLE, curated_changes, bounds=("change_time",))
        raw_run = functools.partial(runner.query, raw_demand_sql(_DEMAND_WINDOW_DAYS))
        curated_run = functools.partial(runner.query, queries["demand_per_event_per_day"])
        raw_demand, curated_demand = raw_run(), curated_run()
        demand_times = _interleaved({"raw": raw_run, "curated": curated_run}, repeat)
        raw_ms, curated_ms = min(demand_times["raw"]), min(demand_times["curated"])
        same = raw_demand.to_pylist() == curated_demand.to_pylist()
        figures["demand"] = {
            "raw_ms": round(raw_ms, 1),
            "curated_ms": round(curated_ms, 1),
            "rows": curated_demand.num_rows,
            "same_answer": same,
            "speedup": round(raw_ms / curated_ms, 1),
        }

        # One event's rows (its current registrations) and the current state, over 1, 7 and 30 days: one runner per
        # horizon (the lake as it stands at T + horizon), the raw reads timed per horizon, the curated reads
        # interleaved (see _interleaved).
        event = lake.event_ids[0]
        columns = ["event_id", "fan_id", "status", "quantity", "last_change_time"]
        flat: dict[int, Any] = {}
        runners: dict[int, AthenaOnDuckDB] = {}
        today_sql = current_registrations_sql(
            DATABASE, RAW_TABLE, SNAPSHOTS, export_id=EXPORT_ID, export_time=T, lead=timedelta(0)
        )
        for horizon in _HORIZONS:
            now = T + timedelta(days=horizon)
            runner = runners[horizon] = _runner(now)
            # The lake as it stands at T + horizon: the hour partitions written so far.
            written = [glob for hour, glob in raw_hours if hour < now]
            runner.add_parquet(DATABASE, RAW_TABLE, written, hive_partitioning=True)
            runner.add_parquet(DATABASE, SNAPSHOTS, snapshot_files, hive_partitioning=True)
            runner.add_parquet(DATABASE, REGISTRATIONS_TABLE, registrations[horizon])
            raw_ms, raw_state = _best(functools.partial(runner.query, today_sql), repeat)
            curated_state = runner.query(queries["current_registrations"])
            flat[horizon] = {
                "raw_ms": round(raw_ms, 1),
                "rows": curated_state.num_rows,
                "same_answer": _sorted_rows(raw_state, columns) == _sorted_rows(curated_state, columns),
            }
        rounds = max(repeat, _FLAT_ROUNDS)
        state_sql = queries["current_registrations"]
        reads = {horizon: functools.partial(runners[horizon].query, state_sql) for horizon in _HORIZONS}
        timings = _interleaved(reads, rounds)
        for horizon in _HORIZONS:
            flat[horizon]["curated_ms"] = round(min(timings[horizon]), 1)
            flat[horizon]["curated_median_ms"] = round(statistics.median(timings[horizon]), 1)
        runner = runners[max(_HORIZONS)]
        one = f"SELECT * FROM ({{}}) AS state WHERE event_id = '{event}'"  # noqa: S608 - the bench's own
        raw_ms, raw_event = _best(functools.partial(runner.query, one.format(today_sql)), repeat)
        curated_ms, curated_event = _best(
            functools.partial(runner.query, one.format(queries["current_registrations"])), repeat
        )
        figures["one_event"] = {
            "raw_ms": round(raw_ms, 1),
            "curated_ms": round(curated_ms, 1),
            "rows": curated_event.num_rows,
            "same_answer": _sorted_rows(raw_event, columns) == _sorted_rows(curated_event, columns),
            "speedup": round(raw_ms / curated_ms, 1),
        }
        figures["current_state"] = {str(h): flat[h] for h in _HORIZONS}
        figures["flat_rounds"] = rounds
        figures["flat_ratio"] = _spread([flat[h]["curated_ms"] for h in _HORIZONS])
        figures["flat_ratio_median"] = _spread([flat[h]["curated_median_ms"] for h in _HORIZONS])
        return figures
    finally:
        shutil.rmtree(root, ignore_errors=True)


def checks(figures: dict[str, Any]) -> dict[str, bool]:
    """Each target, met or not (a target whose two queries disagree is not met)."""
    state = figures["current_state"]
    return {
        f"demand per event per day: curated {figures['demand']['speedup']}x faster (>= 5x)": figures["demand"][
            "same_answer"
        ]
        and figures["demand"]["speedup"] >= QUERY_TARGETS["demand_speedup"],
        f"one event's rows: curated {figures['one_event']['speedup']}x faster (>= 20x)": figures["one_event"][
            "same_answer"
        ]
        and figures["one_event"]["speedup"] >= QUERY_TARGETS["event_speedup"],
        f"current state over 1/7/30 days: slowest {figures['flat_ratio']}x the fastest (<= 1.5x)": all(
            row["same_answer"] for row in state.values()
        )
        and figures["flat_ratio"] <= QUERY_TARGETS["flat_ratio"],
    }


def report(figures: dict[str, Any]) -> list[str]:
    lines = [
        f"queries in DuckDB (one thread): snapshot {figures['snapshot_rows']:,} registrations, {figures['changes']:,}"
        f" change rows over {figures['days']} days; raw {figures['raw_objects']:,} objects,"
        f" curated {figures['curated_change_files']:,} hour files (built in {figures['build_seconds']} s)",
        f"{'query':>34} {'raw ms':>9} {'curated ms':>11} {'speed-up':>9} {'rows':>8} {'same':>5}",
    ]
    for label, row in (
        (f"demand per event per day ({_DEMAND_WINDOW_DAYS} d)", figures["demand"]),
        ("one event's registrations", figures["one_event"]),
    ):
        lines.append(
            f"{label:>34} {row['raw_ms']:>9.1f} {row['curated_ms']:>11.1f} {row['speedup']:>8.1f}x {row['rows']:>8,}"
            f" {'yes' if row['same_answer'] else 'NO':>5}"
        )
    for horizon, row in figures["current_state"].items():
        label = f"current state, {horizon} d since snapshot"
        lines.append(
            f"{label:>34} {row['raw_ms']:>9.1f} {row['curated_ms']:>11.1f} {row['raw_ms'] / row['curated_ms']:>8.1f}x"
            f" {row['rows']:>8,} {'yes' if row['same_answer'] else 'NO':>5}   median {row['curated_median_ms']:.1f}"
        )
    lines.append(
        f"  timings: the fastest of --repeat rounds after a warm-up, raw and curated demand taken in turn; the three"
        f" curated current-state reads taken in turn (1, 7, 30 d) for {figures['flat_rounds']} rounds, the flat-time"
        f" spread from each read's fastest (from the medians: {figures['flat_ratio_median']}x)"
    )
    for name, ok in checks(figures).items():
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot-rows", type=int, default=200_000)
    parser.add_argument("--changes-per-day", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit non-zero when a target is missed")
    args = parser.parse_args(argv)
    for name in ("snapshot_rows", "changes_per_day", "repeat"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.days < max(_HORIZONS):
        print(f"--days must be at least {max(_HORIZONS)}, got {args.days}", file=sys.stderr)
        return 2
    figures = query_figures(args.snapshot_rows, args.changes_per_day, args.days, args.seed, args.repeat)
    for line in report(figures):
        print(line)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 1 if args.check and not all(checks(figures).values()) else 0


if __name__ == "__main__":
    sys.exit(main())
