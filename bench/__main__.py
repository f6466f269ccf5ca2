"""Benchmark of the handler's whole path minus the network, against a naive reference, in one process.

    python -m bench [--sizes 1000 10000] [--repeat 5] [--seed 7] [--layout-size 10000] [--json] [--check]

Measures records/s and ms per batch (best of ``--repeat`` after a warm-up, the same for both paths), peak
memory growth of the 10,000-record batch (RSS high-water mark, reset through /proc/self/clear_refs, and Arrow's
allocator peak, which tracemalloc cannot see), Parquet bytes per record, the cold import time of
``pipeline.handler`` in fresh processes, and the speed-up over the naive reference. With ``--check`` it exits
non-zero when a target is missed. Then batches whose change times are not in sequence order
(``bench.layouts``): live-like (jittered by +-1.5 s, crossing an hour) and shuffled over three days, with the
objects each writes, the live-like speed-up pinned to one CPU, and the shuffled batch against the local S3.
Last, the curated tables against the raw layout in DuckDB (``bench.queries``; ``--skip-queries`` leaves it out).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.layouts import LAYOUT_TARGETS, layout_figures, one_core_figures
from bench.naive import naive_process
from bench.queries import main as query_main
from pipeline.columnar import decode_batch
from pipeline.config import Settings
from pipeline.processor import StreamProcessor
from pipeline.writer import MemoryObjectStore
from sandbox.changes import DemandGenerator, changes_event

TARGETS = {"speedup": 8.0, "records_per_second": 40_000, "peak_memory_mb": 150.0, "import_ms": 400.0}
_ROOT = Path(__file__).resolve().parents[1]


def _processor() -> StreamProcessor:
    return StreamProcessor(Settings(output_bucket="bench-bucket"), MemoryObjectStore(), decode_batch)


def _handler_path(event: dict[str, Any]) -> int:
    processor = _processor()
    result = processor.process(event)
    if result.rows_written + result.quarantined != result.received:
        raise RuntimeError(f"benchmark batch not fully written: {result.summary()}")
    return result.bytes_written


def _best_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: caches, allocator pools
    timings = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _memory_probe(size: int, seed: int) -> dict[str, float]:
    """Run in a fresh process: the handler path once on a new ``size``-record batch; peak growth in MB."""
    event = changes_event(list(DemandGenerator(seed=seed).changes(size)))
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) to the current RSS
        high_water = "VmHWM"
    except OSError:
        high_water = "VmRSS"
    before = _rss_kib("VmRSS")
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory() or 0
    _handler_path(event)
    return {
        "rss_growth_mb": (_rss_kib(high_water) - before) / 1024,
        "arrow_peak_mb": max((pool.max_memory() or 0) - arrow_before, 0) / 1024 / 1024,
    }


def _peak_memory_mb(size: int, seed: int) -> tuple[float, float]:
    """(RSS high-water growth, Arrow allocator peak) in MB, measured in a fresh interpreter: tracemalloc cannot
    see Arrow's allocator, and a warm process would reuse memory freed by the timing runs."""
    code = f"import json; from bench.__main__ import _memory_probe; print(json.dumps(_memory_probe({size}, {seed})))"
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    return float(probe["rss_growth_mb"]), float(probe["arrow_peak_mb"])


def _import_ms(samples: int = 3) -> float:
    """Median wall time of ``import pipeline.handler`` in fresh interpreters."""
    code = "import time; t = time.perf_counter(); import pipeline.handler; print((time.perf_counter() - t) * 1000)"
    env = dict(os.environ, OUTPUT_BUCKET="bench-bucket", PYTHONPATH=str(_ROOT))
    timings = []
    for _ in range(samples):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        timings.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--layout-size", type=int, default=10_000, help="records of the live-like and shuffled batches")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit non-zero when a target is missed")
    parser.add_argument("--skip-queries", action="store_true", help="leave out the curated-vs-raw query benchmark")
    args = parser.parse_args(argv)

    cpus = len(os.sched_getaffinity(0))  # what this process may run on (taskset), not the machine's count
    figures: dict[str, Any] = {"cpus": cpus, "python": sys.version.split()[0], "pyarrow": pa.__version__}
    print(f"python {figures['python']}, pyarrow {figures['pyarrow']}, {cpus} CPUs usable")
    print(f"{'records':>8} {'handler ms':>11} {'records/s':>11} {'naive ms':>10} {'naive rec/s':>12} {'speed-up':>9}")
    largest: dict[str, Any] = {}
    for size in args.sizes:
        event = changes_event(list(DemandGenerator(seed=args.seed).changes(size)))
        handler_ms = _best_ms(functools.partial(_handler_path, event), args.repeat)
        naive_ms = _best_ms(functools.partial(naive_process, event), args.repeat)
        row = {
            "records": size,
            "handler_ms": round(handler_ms, 1),
            "records_per_second": round(size / handler_ms * 1000),
            "naive_ms": round(naive_ms, 1),
            "naive_records_per_second": round(size / naive_ms * 1000),
            "speedup": round(naive_ms / handler_ms, 1),
            "parquet_bytes_per_record": round(_handler_path(event) / size, 1),
        }
        figures.setdefault("batches", []).append(row)
        print(
            f"{size:>8} {handler_ms:>11.1f} {row['records_per_second']:>11,} {naive_ms:>10.1f} "
            f"{row['naive_records_per_second']:>12,} {row['speedup']:>8.1f}x"
        )
        largest = {"event": event, **row}
    rss_mb, arrow_mb = _peak_memory_mb(largest["records"], args.seed)
    import_ms = _import_ms()
    figures.update(
        peak_rss_growth_mb=round(rss_mb, 1),
        arrow_peak_mb=round(arrow_mb, 1),
        import_ms=round(import_ms, 1),
        parquet_bytes_per_record=largest["parquet_bytes_per_record"],
    )
    print(f"ms per {largest['records']:,}-record batch: {largest['handler_ms']:.1f}")
    print(
        f"peak memory growth ({largest['records']:,} records): RSS {rss_mb:.1f} MB, Arrow allocator {arrow_mb:.1f} MB"
    )
    print(f"Parquet bytes per record: {largest['parquet_bytes_per_record']}")
    print(f"cold import of pipeline.handler: {import_ms:.0f} ms (median of 3 fresh processes)")
    layouts = layout_figures(args.layout_size, args.seed, args.repeat)
    one_core = one_core_figures(args.layout_size, args.seed, args.repeat)
    figures.update(layouts=layouts, one_core=one_core)
    live, shuffled = layouts["live_like"], layouts["shuffled"]
    print(f"{'batch':>16} {'handler ms':>11} {'naive ms':>9} {'speed-up':>9} {'objects':>8} {'naive':>6} {'hours':>6}")
    for name, row in (
        ("live-like", live),
        ("shuffled 3 days", shuffled),
        (f"live-like, CPU {one_core['cpu']}", one_core),
    ):
        print(
            f"{name:>16} {row['handler_ms']:>11.1f} {row['naive_ms']:>9.1f} {row['speedup']:>8.1f}x "
            f"{row['objects']:>8} {row['naive_objects']:>6} {row['hours']:>6}"
        )
    print(f"shuffled {args.layout_size:,} records against the local S3 (moto server): {shuffled['local_s3_ms']:.0f} ms")
    print(
        f"process CPU time, handler / naive: live-like {live['handler_cpu_ms']:.0f} / {live['naive_cpu_ms']:.0f} ms "
        f"({live['cpu_speedup']:.1f}x), pinned to one CPU {one_core['handler_cpu_ms']:.0f} / "
        f"{one_core['naive_cpu_ms']:.0f} ms ({one_core['cpu_speedup']:.1f}x)"
    )
    checks = {
        "speed-up >= 8x": largest["speedup"] >= TARGETS["speedup"],
        "live-like speed-up >= 8x": live["speedup"] >= LAYOUT_TARGETS["live_speedup"],
        "live-like speed-up on one core >= 6x": one_core["speedup"] >= LAYOUT_TARGETS["live_speedup_one_core"],
        "shuffled batch against the local S3 <= 1 s": shuffled["local_s3_ms"] <= LAYOUT_TARGETS["shuffled_local_s3_ms"],
        "objects <= distinct hours (live-like, shuffled)": live["objects"] <= live["hours"]
        and shuffled["objects"] <= shuffled["hours"],
        "records/s >= 40,000": largest["records_per_second"] >= TARGETS["records_per_second"],
        "peak memory growth < 150 MB": rss_mb < TARGETS["peak_memory_mb"],
        "handler import < 400 ms": import_ms < TARGETS["import_ms"],
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'MISS'}  {name}")
    if args.json:
        print(json.dumps(figures, indent=2))
    queries_missed = 0 if args.skip_queries else query_main(["--check"] if args.check else [])
    return 1 if args.check and (not all(checks.values()) or queries_missed) else 0


if __name__ == "__main__":
    sys.exit(main())
