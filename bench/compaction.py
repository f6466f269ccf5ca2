"""Benchmark of compaction: one shard's hour (3.6 million rows at 1,000 records/s) merged, deduplicated, sorted
and encoded, on one core, with its peak memory.

    python -m bench.compaction [--rows 3600000] [--objects 720] [--duplicates 0.01] [--cores 1] [--json] [--check]

The inputs are built as the stream handler writes them (rows from its decoder, names per the object-key contract)
and held in memory, so the figure is compaction's own work: reading and decoding the inputs, deduplicating,
sorting, encoding the output (row groups of 1,048,576 rows, page index on), minus the network. The measurement
runs in a fresh process pinned to ``--cores`` CPUs (``taskset -c 0`` for one), so the RSS high-water mark is its own.
The target is judged on CPU time (user + system) of that pinned process, which is the time it takes on a core of
its own; wall time is printed too and agrees with it only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TARGETS = {"rows_per_second": 200_000}
_ROOT = Path(__file__).resolve().parents[1]
_HOUR = datetime(2026, 3, 31, 23, tzinfo=UTC)
_PREFIX = "demand/events/"
_STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-dev1-dmnd-table-stream"
_BASE_ROWS = 50_000
# Lambda's runtime, Python, pyarrow and boto3 loaded: measured as this process's RSS before the inputs exist.
_LAMBDA_SIZES_MB = (1024, 1536, 2048, 3008, 4096, 5120, 6144, 8192, 10240)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _base_rows(seed: int) -> Any:
    """``_BASE_ROWS`` rows of one shard through the handler's decoder, spread over the hour."""
    from pipeline.columnar import decode_batch  # noqa: PLC0415 - imported in the measuring process only
    from pipeline.decode import parse_kinesis_records  # noqa: PLC0415
    from sandbox.changes import DemandGenerator, changes_event  # noqa: PLC0415

    changes = list(DemandGenerator(seed=seed, events=40, start=_HOUR + timedelta(seconds=1)).changes(_BASE_ROWS))
    event = changes_event(changes, stream_arn=_STREAM_ARN)
    return decode_batch(parse_kinesis_records(event), "MILLISECOND").rows


def _lake(rows: int, objects: int, duplicates: float, seed: int) -> tuple[Any, int]:
    """An in-memory lake holding one shard-hour of ``rows`` rows in ``objects`` objects, plus re-delivered objects
    holding ``duplicates`` of the rows again; returns the store and the rows written."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    from pipeline.compactor import MemoryCompactionStore  # noqa: PLC0415
    from pipeline.writer import encode_parquet, partition_prefix  # noqa: PLC0415

    base = _base_rows(seed)
    first = int(base.column("sequence_number")[0].as_py())
    tiles = []
    for tile in range(-(-rows // _BASE_ROWS)):
        suffix = pa.scalar(f"-{tile:04d}")
        table = base
        for name in ("change_id", "fan_id"):
            index = table.schema.get_field_index(name)
            joined = pc.binary_join_element_wise(table[name], suffix, "")
            table = table.set_column(index, table.schema.field(index), joined)
        sequences = [str(first + (tile * _BASE_ROWS + offset) * 1_000_003) for offset in range(_BASE_ROWS)]
        index = table.schema.get_field_index("sequence_number")
        table = table.set_column(index, table.schema.field(index), pa.array(sequences, pa.string()))
        tiles.append(table)
    hour_rows = pa.concat_tables(tiles).slice(0, rows).combine_chunks()
    store = MemoryCompactionStore()
    prefix = partition_prefix(_PREFIX, _HOUR)
    tag = hashlib.sha256(_STREAM_ARN.encode()).hexdigest()[:8]

    def put(part: Any) -> int:
        sequences = sorted(int(value) for value in part.column("sequence_number").to_pylist())
        digest = hashlib.sha256("\n".join(map(str, sequences)).encode()).hexdigest()[:12]
        shard = part.column("shard_id")[0].as_py()
        store.add(f"{prefix}{tag}-{shard}-{sequences[0]}-{digest}.parquet", encode_parquet(part))
        return part.num_rows

    size = -(-rows // objects)
    written = sum(put(hour_rows.slice(start, size)) for start in range(0, rows, size))
    redelivered = int(rows * duplicates)
    for start in range(size // 2, size // 2 + redelivered, size):  # batches re-sent with other boundaries
        written += put(hour_rows.slice(start, min(size, size // 2 + redelivered - start)))
    return store, written


def measure(rows: int, objects: int, duplicates: float, seed: int) -> dict[str, Any]:
    """Run in a fresh process: build the lake, then compact it once; time, throughput and memory."""
    from pipeline.compactor import Compactor  # noqa: PLC0415

    baseline_mb = _rss_kib("VmRSS") / 1024
    store, written = _lake(rows, objects, duplicates, seed)
    input_mb = sum(len(body) for body, _ in store.objects.values()) / 1024 / 1024
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        high_water = "VmHWM"
    except OSError:
        high_water = "VmRSS"
    before_mb = _rss_kib("VmRSS") / 1024
    compactor = Compactor(store, _PREFIX)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = compactor.run([_HOUR], delete_grace=timedelta(0))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    summary = result.summary()
    if summary["failures"] or summary["rows_in"] != written or summary["objects_out"] != 1:
        raise RuntimeError(f"compaction did not complete: {summary}")
    output_mb = sum(len(body) for body, _ in store.objects.values()) / 1024 / 1024
    # The peak of the run is at least where it started; the kernel's counters lag by a few pages, so a run that
    # frees memory can read a high-water mark a little below the RSS taken just after the reset.
    peak_growth_mb = max(_rss_kib(high_water) / 1024, before_mb) - before_mb
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "rows_in": summary["rows_in"],
        "rows_out": summary["rows_out"],
        "duplicates_removed": summary["duplicates_removed"],
        "objects_in": summary["objects_in"],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "rows_per_second": round(summary["rows_in"] / seconds),
        "rows_per_cpu_second": round(summary["rows_in"] / cpu_seconds),
        "load_average": round(os.getloadavg()[0], 1),
        "input_mb": round(input_mb, 1),
        "output_mb": round(output_mb, 1),
        "runtime_baseline_mb": round(baseline_mb, 1),
        "peak_growth_mb": round(peak_growth_mb, 1),
    }


def recommended_memory_mb(figures: dict[str, Any]) -> int:
    """The smallest Lambda size above the runtime baseline plus the peak growth, with half as much again as margin
    (and the inputs' bodies in flight, which the in-memory benchmark counts before the peak)."""
    need = (figures["runtime_baseline_mb"] + figures["peak_growth_mb"]) * 1.5
    return next((size for size in _LAMBDA_SIZES_MB if size >= need), _LAMBDA_SIZES_MB[-1])


def _run_pinned(args: argparse.Namespace) -> dict[str, Any]:
    cores = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0))[: args.cores])
    code = (
        "import json; from bench.compaction import measure; "
        f"print(json.dumps(measure({args.rows}, {args.objects}, {args.duplicates}, {args.seed})))"
    )
    command = [sys.executable, "-c", code]
    taskset = shutil.which("taskset")
    if taskset is not None:
        command = [taskset, "-c", cores, *command]
    else:  # pin the child from inside instead
        code = f"import os; os.sched_setaffinity(0, {{{cores}}}); " + code
        command = [sys.executable, "-c", code]
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the compaction benchmark failed:\n{done.stderr[-4000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["command"] = " ".join(command[:3]) + " ..." if taskset else "python (sched_setaffinity) ..."
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compaction", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_600_000, help="rows of the shard-hour (default 3,600,000)")
    parser.add_argument("--objects", type=int, default=720, help="stream-handler objects holding them (default 720)")
    parser.add_argument("--duplicates", type=float, default=0.01, help="share of rows delivered twice (0.01)")
    parser.add_argument("--cores", type=int, default=1, help="CPUs to pin the measurement to (default 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit non-zero when the target is missed")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.objects < 1 or not 0 <= args.duplicates < 1 or args.cores < 1:
        parser.error("--rows, --objects and --cores must be at least 1, --duplicates in [0, 1)")
    figures = _run_pinned(args)
    figures["recommended_memory_mb"] = recommended_memory_mb(figures)
    print(
        f"compaction of one shard-hour on {figures['cpus']} CPU(s): {figures['rows_in']:,} rows in "
        f"{figures['objects_in']} objects ({figures['input_mb']:.0f} MB) -> {figures['rows_out']:,} rows "
        f"({figures['duplicates_removed']:,} duplicates removed, {figures['output_mb']:.0f} MB)"
    )
    print(
        f"  {figures['seconds']:.1f} s wall, {figures['rows_per_second']:,} rows/s; "
        f"{figures['cpu_seconds']:.1f} s CPU, {figures['rows_per_cpu_second']:,} rows per CPU second "
        f"(load average {figures['load_average']})"
    )
    print(
        f"  memory: runtime {figures['runtime_baseline_mb']:.0f} MB + peak growth {figures['peak_growth_mb']:.0f} MB "
        f"-> function memory {figures['recommended_memory_mb']} MB"
    )
    # Pinned to one core, CPU time is the time on a core of its own: wall time only agrees when nothing else runs.
    ok = figures["rows_per_cpu_second"] >= TARGETS["rows_per_second"]
    print(f"  {'PASS' if ok else 'MISS'}  compaction >= {TARGETS['rows_per_second']:,} rows per second of one core")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
