"""Curation benchmark: realistic raw objects on the local AWS, curated by one run in a fresh process on one core.

    python -m bench.curation [--targets shard-hour nine-shards backlog] [--scale 1] [--cpu 0] [--json] [--check]

Targets (issue 15), each printed with its figure and PASS/FAIL:

- ``shard-hour``: one shard's hour at 1,000 records/s with 1 % re-delivered (3.6M changes, built through the
  stream handler by ``bench.curation_data``, nothing tiled), curated by one run: >= 250,000 rows/s, and peak RSS
  <= 75 % of the function's 4,096 MB.
- ``nine-shards``: nine shards' 15-minute backlog at 1,000 records/s each (8.1M changes) in one run: it must end
  within the run's timeout (600 s) and the same memory.
- ``backlog``: every object of both above in one run (two hours, ten shards, 11.7M changes): the same memory.

The raw objects are uploaded to a local moto server first; the run (``Curator.run``: list, read, deduplicate,
sort, write ``registration_changes``, advance ``registrations``, commit both through Glue) happens in a fresh
process pinned with ``taskset -c CPU``, with the curator's default memory settings. Its peak RSS is the process's
high-water mark (``VmHWM``). The moto server runs on the same machine, unpinned: every S3 and Glue call's time,
on the server's side too, is in the run's time; it is not the Lambda's time against S3. The run reports where its
time went (wall seconds per step, summed over threads for the S3 reads), the CPU seconds of the run and the user +
sys seconds of the whole fresh process (the figure to compare on a shared machine, where wall time follows the
load). ``--scale`` shortens every stream (building 8.1M changes through the handler takes about 40 minutes of one
core); the printed targets are judged on the scaled run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.curation_data import RAW_PREFIX, ShardStream, cached_objects, segments

MEMORY_MB = 4_096
MEMORY_LIMIT_MB = MEMORY_MB * 0.75
ROWS_PER_SECOND = 250_000
TIMEOUT_SECONDS = 600
_BUCKET = "bench-curation"
_DATABASE = "bench_curation"
SHARD_HOUR = datetime(2026, 3, 31, 23, tzinfo=UTC)
NINE_SHARDS_START = datetime(2026, 4, 1, 1, tzinfo=UTC)


def _scaled(seconds: int, scale: float) -> int:
    return max(1, round(seconds * scale))


def shard_hour_streams(scale: float = 1.0) -> list[ShardStream]:
    return segments(0, SHARD_HOUR, _scaled(3_600, scale))


def nine_shard_streams(scale: float = 1.0) -> list[ShardStream]:
    return [ShardStream(shard, NINE_SHARDS_START, _scaled(900, scale)) for shard in range(1, 10)]


#: Each target's streams at a scale (1.0: the issue's load; a smaller scale shortens every stream's seconds).
TARGET_STREAMS: dict[str, Callable[[float], list[ShardStream]]] = {
    "shard-hour": shard_hour_streams,
    "nine-shards": nine_shard_streams,
    "backlog": lambda scale: shard_hour_streams(scale) + nine_shard_streams(scale),
}


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc (``VmRSS`` now, ``VmHWM`` its peak), in KiB; 0 if absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_once_in_fresh_process(module: str, endpoint_url: str, cpu: int | None) -> dict[str, Any]:
    """``python -m <module> --run-once <endpoint_url>`` in a fresh process (pinned to ``cpu`` with taskset when
    given and present): the figures its last line prints as JSON."""
    command = [sys.executable, "-m", module, "--run-once", endpoint_url]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"the measured run failed ({done.returncode}):\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def local_client_options(endpoint_url: str) -> dict[str, Any]:
    """boto3 client arguments for the benchmark's local moto server."""
    from sandbox.local_aws import FAKE_CREDENTIALS  # noqa: PLC0415

    return {
        "endpoint_url": endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def _upload(endpoint_url: str, streams: list[ShardStream]) -> int:
    """Put the streams' cached raw objects into the bucket; the rows they hold (re-deliveries included)."""
    import boto3  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    s3 = boto3.client("s3", config=Config(max_pool_connections=16), **local_client_options(endpoint_url))
    s3.create_bucket(Bucket=_BUCKET)
    files = [
        (folder, path)
        for stream in streams
        for folder in [cached_objects(stream)[0]]
        for path in folder.rglob("*.parquet")
    ]

    def put(item: tuple[Path, Path]) -> int:
        folder, path = item
        body = path.read_bytes()
        s3.put_object(Bucket=_BUCKET, Key=str(path.relative_to(folder)), Body=body)
        return int(pq.ParquetFile(path).metadata.num_rows)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(put, files))


_PEAKS: dict[str, int] = {}
#: CPU seconds of the whole process while each step ran, every thread's: the S3 reads (threads) run beside the
#: decoding, whose figure so includes theirs, and have none of their own.
_CPU: dict[str, float] = {}
_OVERLAPPING = frozenset({"_fetch"})


def _timed(owner: Any, name: str, timings: dict[str, float], label: str) -> None:
    """Wrap ``owner.name`` so its wall time (and, for a step no other overlaps, the process's CPU time) adds up
    under ``label``, and the process's peak RSS after it is kept."""
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            timings[label] = timings.get(label, 0.0) + time.perf_counter() - started
            if name not in _OVERLAPPING:
                _CPU[label] = _CPU.get(label, 0.0) + time.process_time() - cpu
            _PEAKS[label] = round(status_kib("VmHWM") / 1024)

    setattr(owner, name, wrapper)


def run_once(endpoint_url: str) -> dict[str, Any]:
    """One curation run in this (fresh) process: counts, time, where the time went, and memory."""
    from botocore.config import Config  # noqa: PLC0415

    from curator import curation  # noqa: PLC0415
    from curator.catalog import glue_catalog  # noqa: PLC0415
    from curator.store import S3Store, s3_client  # noqa: PLC0415

    options = local_client_options(endpoint_url)
    catalog = glue_catalog(
        "us-east-1",
        endpoint_url=endpoint_url,
        access_key_id=options["aws_access_key_id"],
        secret_access_key=options["aws_secret_access_key"],
    )
    settings = curation.CuratorSettings(bucket=_BUCKET, raw_prefix=RAW_PREFIX, database=_DATABASE)
    client = s3_client(config=Config(max_pool_connections=20), **options)  # the client the curator's store makes
    curator = curation.Curator(catalog=catalog, store=S3Store(_BUCKET, client=client), settings=settings)
    curator.tables()
    timings: dict[str, float] = {}
    for name, label in (
        ("_fetch", "s3 get raw objects (summed over threads)"),
        ("_consume", "decode raw objects, spill to disk"),
        ("_spill_committed", "read committed files of touched hours"),
        ("_write_hour", "deduplicate, sort, write data files"),
        ("_delete_covered", "delete covered raw objects"),
        ("_retain", "expire snapshots, remove orphans"),
    ):
        _timed(curation.Curator, name, timings, label)
    _timed(curation, "advance_registrations", timings, "advance registrations")
    _timed(
        curation, "write_partition", timings, "(within the above) parquet encode + s3 put of registration_changes files"
    )
    _timed(curation, "_commit_overwrite", timings, "iceberg commits (manifests, glue)")
    baseline = status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    result = curator.run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    if result.conflict or result.unreadable:
        raise RuntimeError(f"the run did not complete: {result.summary()}")
    return {
        "rows_read": result.rows_read,
        "changes_added": result.changes_added,
        "hours_written": result.hours_written,
        "state_changes_applied": result.state_changes_applied,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "rows_per_second": round(result.rows_read / seconds),
        "rss_before_run_mb": round(baseline / 1024),
        "peak_rss_mb": round(status_kib("VmHWM") / 1024),
        "timings": {label: round(value, 2) for label, value in timings.items()},
        "cpu_timings": {label: round(value, 2) for label, value in _CPU.items()},
        "peak_rss_mb_after": dict(_PEAKS),
    }


def measure(target: str, cpu: int, scale: float = 1.0) -> dict[str, Any]:
    """Upload the target's raw objects (at ``scale``) to a fresh local AWS, then curate them in a fresh pinned
    process."""
    from sandbox.server import MotoProcess  # noqa: PLC0415

    streams = TARGET_STREAMS[target](scale)
    with MotoProcess() as server:
        uploaded = _upload(server.endpoint_url, streams)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        figures = run_once_in_fresh_process("bench.curation", server.endpoint_url, cpu)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # user + sys of the whole fresh process (imports included), as /usr/bin/time reports it
    process_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "target": target,
        "scale": scale,
        "rows_uploaded": uploaded,
        "changes": sum(s.records for s in streams),
        "process_cpu_seconds": round(process_cpu, 2),
        **figures,
    }


def checks(target: str, figures: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured figure, met) for one measured run."""
    memory = (
        f"peak RSS <= {MEMORY_LIMIT_MB:,.0f} MB (75 % of {MEMORY_MB:,} MB)",
        f"{figures['peak_rss_mb']:,} MB",
        figures["peak_rss_mb"] <= MEMORY_LIMIT_MB,
    )
    if target == "shard-hour":
        rate = (
            f"rows/s >= {ROWS_PER_SECOND:,}",
            f"{figures['rows_per_second']:,}",
            figures["rows_per_second"] >= ROWS_PER_SECOND,
        )
        return [rate, memory]
    if target == "nine-shards":
        timeout = (
            f"run <= {TIMEOUT_SECONDS} s (the timeout)",
            f"{figures['seconds']:.0f} s",
            figures["seconds"] <= TIMEOUT_SECONDS,
        )
        return [timeout, memory]
    return [memory]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.curation", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets", nargs="+", choices=sorted(TARGET_STREAMS), default=["shard-hour", "nine-shards", "backlog"]
    )
    parser.add_argument("--cpu", type=int, default=0, help="the CPU the run is pinned to (taskset -c)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="every stream's seconds times this (1.0: the issue's load; the targets are judged at any scale)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit non-zero when a target is missed")
    parser.add_argument("--run-once", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_once:
        print(json.dumps(run_once(args.run_once)))
        return 0
    if not 0 < args.scale <= 1:
        print("--scale must be above 0 and at most 1", file=sys.stderr)
        return 2
    met = True
    for target in args.targets:
        figures = measure(target, args.cpu, args.scale)
        scaled = f" (scale {args.scale:g})" if args.scale != 1 else ""
        print(
            f"{target}{scaled}: {figures['changes']:,} changes, {figures['rows_read']:,} rows read, "
            f"{figures['changes_added']:,} added, {figures['seconds']:.1f} s "
            f"({figures['cpu_seconds']:.1f} s CPU of the run, "
            f"{figures['process_cpu_seconds']:.1f} s user+sys of the fresh process), "
            f"hours {', '.join(figures['hours_written'])}"
        )
        for label, seconds in figures["timings"].items():
            peak = figures["peak_rss_mb_after"].get(label, 0)
            cpu = figures["cpu_timings"].get(label)
            used = f", {cpu:.2f} s CPU" if cpu is not None else ""
            print(f"    {seconds:8.2f} s  {label} (peak RSS after it: {peak:,} MB{used})")
        for name, figure, ok in checks(target, figures):
            met = met and ok
            print(f"  {'PASS' if ok else 'FAIL'}  {target}: {name}: {figure}")
        if args.json:
            print(json.dumps(figures, indent=2))
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
