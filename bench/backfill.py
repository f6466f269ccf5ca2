"""Benchmark of the backfill of one export data file: rows/s and peak memory, the whole path minus the network.

    python -m bench.backfill [--megabytes 100] [--seed 7] [--json]

Writes (once, cached in the temporary directory) a DynamoDB JSON export data file of about ``--megabytes``
gzip megabytes, as AWS writes it (compact ``{"Item":{...}}`` lines of generated registrations), then runs
``pipeline.snapshot.backfill_file`` on it in a fresh interpreter with an in-memory S3 stand-in that reads the
file from disk and keeps only the sizes of what is uploaded (so the objects do not count as the function's
memory). Reports items, rows/s, MB/s of gzip input, the Parquet size, row groups and parts, and the peak memory
growth (RSS high-water mark, reset through /proc/self/clear_refs, and Arrow's allocator peak). CPU seconds
(all threads) are reported beside wall time: on a shared machine they are the steadier figure.

On a terminal, progress bars on stderr follow the data file being generated and written, and the backfill
reading it (the fresh interpreter reports how far it has read); the figures go to stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

_ROOT = Path(__file__).resolve().parents[1]
_BUCKET = "bench-bucket"
_DATA_KEY = "demand/exports/AWSDynamoDB/01764201600000-bench000/data/bench.json.gz"
_GENERATED_CHANGES = 30_000  # distinct generated items the data file repeats (each line under a fan of its own)
_PROGRESS_TAG = "bench-progress"  # the probe's stderr lines that report how far it has read
_KIB = 1024

#: Progress callback: (what is done, the total).
Progress_ = Callable[[int, int], None]


def data_path(megabytes: float, seed: int) -> Path:
    """Where the data file of ``megabytes`` and ``seed`` is cached."""
    return Path(tempfile.gettempdir()) / f"dmd-bench-export-{megabytes:g}mb-seed{seed}.json.gz"


def data_file(
    megabytes: float, seed: int, *, generated: Progress_ | None = None, written: Progress_ | None = None
) -> Path:
    """A cached export data file of about ``megabytes`` compressed megabytes; ``generated`` and ``written`` are
    told how far the generation of the items and the writing of the file are (not called for a cached file)."""
    from sandbox.changes import DemandGenerator, to_dynamodb_json  # noqa: PLC0415

    path = data_path(megabytes, seed)
    if path.exists():
        return path
    distinct: list[bytes] = []
    for number, change in enumerate(DemandGenerator(seed=seed).changes(_GENERATED_CHANGES), start=1):
        if change.new_image is not None:
            distinct.append(json.dumps({"Item": to_dynamodb_json(change.new_image)}, separators=(",", ":")).encode())
        if generated is not None and (number % 500 == 0 or number == _GENERATED_CHANGES):
            generated(number, _GENERATED_CHANGES)
    target = int(megabytes * 1024 * 1024)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
        number = 0
        while raw.tell() < target:
            if written is not None:
                written(min(raw.tell(), target), target)
            block = []
            for _ in range(5_000):
                line = distinct[number % len(distinct)]
                # a distinct fan per line: keys stay unique however often a generated item is reused
                block.append(line.replace(b'"FAN#', b'"FAN#%d-' % number, 1))
                number += 1
            out.write(b"\n".join(block) + b"\n")
    partial.rename(path)
    if written is not None:
        written(target, target)
    return path


class _Body:
    """The data file's body; ``report`` is told the bytes read so far, about every hundredth of the file."""

    def __init__(self, path: Path, report: Callable[[int], None] | None = None) -> None:
        self.file = path.open("rb")
        self._report = report
        self._step = max(path.stat().st_size // 100, 64 * _KIB)
        self._reported = 0

    def read(self, size: int = -1) -> bytes:
        block = self.file.read(size)
        position = self.file.tell()
        due = position - self._reported >= self._step or (not block and position > self._reported)  # or at the end
        if self._report is not None and due:
            self._reported = position
            self._report(position)
        return block


def _report_to_stderr(position: int) -> None:
    sys.stderr.write(f"{_PROGRESS_TAG} {position}\n")
    sys.stderr.flush()


class DiskS3:
    """What ``backfill_file`` calls on an S3 client: the data file from disk, uploads kept as sizes only."""

    def __init__(self, path: Path, report: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.report = report
        self.sizes: dict[str, int] = {}
        self.parts = 0

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's argument names
        if Key == _DATA_KEY:
            return {"Body": _Body(self.path, self.report)}
        error = Exception(f"NoSuchKey: {Key}")
        error.response = {"Error": {"Code": "NoSuchKey"}}  # type: ignore[attr-defined]
        raise error

    def put_object(self, Bucket: str, Key: str, Body: Any, **_: Any) -> dict[str, Any]:  # noqa: N803
        self.sizes[Key] = len(Body) if isinstance(Body, bytes | bytearray) else len(Body.read())
        return {}

    def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {"UploadId": "bench"}

    def upload_part(self, Key: str, Body: bytes, PartNumber: int, **_: Any) -> dict[str, Any]:  # noqa: N803
        self.sizes[Key] = self.sizes.get(Key, 0) + len(Body)
        self.parts += 1
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {}

    def abort_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def probe(path: str, progress: bool = False) -> dict[str, Any]:
    """Run in a fresh process: one backfill of the data file; figures as a mapping. ``progress``: report the bytes
    read on stderr (a line about every hundredth of the file: nothing the figures would notice)."""
    import gc  # noqa: PLC0415

    import pyarrow as pa  # noqa: PLC0415

    from pipeline.export import ExportFile  # noqa: PLC0415
    from pipeline.snapshot import SnapshotSettings, backfill_file  # noqa: PLC0415

    export = ExportFile.from_event(
        {"export_bucket": _BUCKET, "data_key": _DATA_KEY, "export_time": "2026-03-31T23:10:00Z"}
    )
    settings = SnapshotSettings(output_bucket=_BUCKET, source_table_name="prd3292-dev1-us-east-1-demand-table")
    client = DiskS3(Path(path), _report_to_stderr if progress else None)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) to the current RSS
        high_water = "VmHWM"
    except OSError:
        high_water = "VmRSS"
    before = _rss_kib("VmRSS")
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory() or 0
    started, cpu_started = time.perf_counter(), time.process_time()
    result = backfill_file(export, settings, client)  # type: ignore[arg-type]
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "items": result.items,
        "rows": result.rows,
        "quarantined": result.quarantined,
        "seconds": round(seconds, 2),
        "rows_per_second": round(result.rows / seconds),
        "cpu_seconds": round(cpu_seconds, 2),  # all threads: the fast path decodes on two
        "rows_per_cpu_second": round(result.rows / cpu_seconds),
        "row_groups": result.row_groups,
        "parts": client.parts,
        "parquet_mb": round(client.sizes.get(result.object_key, 0) / 1024 / 1024, 1),
        "rss_growth_mb": round((_rss_kib(high_water) - before) / 1024, 1),
        "arrow_peak_mb": round(max((pool.max_memory() or 0) - arrow_before, 0) / 1024 / 1024, 1),
    }


def run_probe(path: Path, read: Callable[[int], None]) -> dict[str, Any]:
    """``probe`` of ``path`` in a fresh interpreter; ``read`` is told the bytes it has read as it goes."""
    code = f"import json; from bench.backfill import probe; print(json.dumps(probe({str(path)!r}, progress=True)))"
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    others: list[str] = []
    for line in child.stderr or ():  # its stdout is one line of JSON: it cannot fill the pipe while this reads stderr
        tag, _, value = line.partition(" ")
        if tag == _PROGRESS_TAG and value.strip().isdigit():
            read(int(value))
        else:
            others.append(line)
    output = child.stdout.read() if child.stdout is not None else ""
    if child.wait() != 0:
        raise ProbeError(f"the backfill probe failed (exit status {child.returncode}):\n{''.join(others).strip()}")
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return figures


class ProbeError(RuntimeError):
    """The fresh interpreter running the backfill failed; the message holds its stderr."""


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def _updater(progress: Progress, task: TaskID, scale: int = 1) -> Progress_:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done // scale, total=total // scale)

    return update


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100.0, help="gzip size of the data file (default 100)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.megabytes <= 0:
        parser.error(f"--megabytes {args.megabytes} must be positive")
    sys.path.insert(0, str(_ROOT))
    console = console or Console(stderr=True)
    with _progress(console) as progress:  # drawn at once: the first item takes a while to generate
        if data_path(args.megabytes, args.seed).exists():
            path = data_file(args.megabytes, args.seed)
        else:
            generating = progress.add_task("generating items", total=_GENERATED_CHANGES, unit="items")
            writing = progress.add_task("writing the data file", total=None, unit="KiB")
            path = data_file(
                args.megabytes,
                args.seed,
                generated=_updater(progress, generating),
                written=_updater(progress, writing, _KIB),
            )
        size = path.stat().st_size
        reading = progress.add_task("backfill (fresh process)", total=size // _KIB, unit="KiB read")
        try:
            figures = run_probe(path, lambda position: progress.update(reading, completed=position // _KIB))
        except ProbeError as error:
            progress.stop()
            print(f"python -m bench.backfill: {error}", file=sys.stderr)
            return 1
    size_mb = size / 1024 / 1024
    figures.update(data_file_mb=round(size_mb, 1), cpus=len(os.sched_getaffinity(0)))
    print(f"data file: {size_mb:.1f} MB gzip, {figures['items']:,} items ({figures['cpus']} CPUs usable)")
    print(
        f"backfill: {figures['seconds']} s, {figures['rows_per_second']:,} rows/s, "
        f"{size_mb / figures['seconds']:.1f} MB/s of gzip input; {figures['cpu_seconds']} CPU s, "
        f"{figures['rows_per_cpu_second']:,} rows per CPU second"
    )
    print(
        f"Parquet: {figures['parquet_mb']} MB in {figures['row_groups']} row groups, {figures['parts']} upload parts; "
        f"{figures['quarantined']} quarantined"
    )
    print(f"peak memory growth: RSS {figures['rss_growth_mb']} MB, Arrow allocator {figures['arrow_peak_mb']} MB")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
