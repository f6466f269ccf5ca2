"""Batches whose change times are not in sequence order, and the figures ``make bench`` reports for them.

- live-like: change times within +-1.5 s of sequence order, crossing an hour boundary (two partitions);
- shuffled: change times spread over three days in no order (72 hour partitions).

Each is timed in memory against the naive reference (which writes one object per hour partition too), on the
CPUs this process may use and pinned to one of them (in a child process, ``os.sched_setaffinity``), and the
shuffled batch end to end against the local S3 (``sandbox.server``, the moto server the demo uses).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.naive import naive_process
from pipeline.columnar import decode_batch
from pipeline.config import Settings
from pipeline.processor import BatchResult, StreamProcessor
from pipeline.writer import MemoryObjectStore, S3ObjectStore
from sandbox.changes import DemandGenerator, changes_event

__all__ = ["LAYOUT_TARGETS", "layout_figures", "live_like_event", "one_core_figures", "shuffled_event"]

#: live-like speed-up over the naive reference (two cores, one core); shuffled batch against the local S3.
LAYOUT_TARGETS = {"live_speedup": 8.0, "live_speedup_one_core": 6.0, "shuffled_local_s3_ms": 1000.0}
_ROOT = Path(__file__).resolve().parents[1]
_HOUR = 3600


def live_like_event(size: int, seed: int) -> dict[str, Any]:
    """``size`` changes whose times are their sequence order's, jittered by up to 1.5 s, crossing midnight."""
    rng = random.Random(seed)
    changes = list(DemandGenerator(seed=seed, start=datetime(2026, 11, 28, 23, 56, tzinfo=UTC)).changes(size))
    return changes_event(
        [
            dataclasses.replace(change, time=change.time + timedelta(seconds=rng.uniform(-1.5, 1.5)))
            for change in changes
        ]
    )


def shuffled_event(size: int, seed: int) -> dict[str, Any]:
    """``size`` changes at random times over three days, in no order (a replay or catch-up batch)."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 26, tzinfo=UTC)
    return changes_event(
        [
            dataclasses.replace(change, time=start + timedelta(seconds=rng.uniform(0, 3 * 86_400)))
            for change in DemandGenerator(seed=seed).changes(size)
        ]
    )


def _hours(event: dict[str, Any]) -> int:
    """Distinct change-time hours of the event's changes (the partitions it must write)."""
    from pipeline.decode import parse_kinesis_records  # noqa: PLC0415

    rows = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows
    return len({int(moment.timestamp()) // _HOUR for moment in rows.column("change_time").to_pylist()})


def _process(event: dict[str, Any], store: Any = None, prefix: str = "demand/events/") -> BatchResult:
    settings = Settings(output_bucket="bench-bucket", output_prefix=prefix)
    result = StreamProcessor(settings, store or MemoryObjectStore(), decode_batch).process(event)
    if result.rows_written + result.quarantined != result.received:
        raise RuntimeError(f"benchmark batch not fully written: {result.summary()}")
    return result


def _best_ms(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) of ``run``, in ms. On a shared machine the CPU
    time is the steadier figure: it does not count the time spent waiting for a core."""
    run()  # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu_started) * 1000)
    return min(walls), min(cpus)


def _speed(event: dict[str, Any], repeat: int) -> dict[str, Any]:
    handler_ms, handler_cpu_ms = _best_ms(functools.partial(_process, event), repeat)
    naive_ms, naive_cpu_ms = _best_ms(functools.partial(naive_process, event), repeat)
    return {
        "handler_ms": round(handler_ms, 1),
        "naive_ms": round(naive_ms, 1),
        "speedup": round(naive_ms / handler_ms, 1),
        "handler_cpu_ms": round(handler_cpu_ms, 1),
        "naive_cpu_ms": round(naive_cpu_ms, 1),
        "cpu_speedup": round(naive_cpu_ms / handler_cpu_ms, 1),
        "objects": len(_process(event).objects),
        "naive_objects": len(naive_process(event)),
        "hours": _hours(event),
    }


def _local_s3_ms(event: dict[str, Any], repeat: int) -> float:
    """Best end-to-end time of the handler path writing to the local S3 server (a new prefix each run, so each
    run creates its objects rather than finding them)."""
    from sandbox.server import MotoProcess  # noqa: PLC0415 - starts a child process; only this figure needs it

    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with MotoProcess() as server:
            import boto3  # noqa: PLC0415

            client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
            client.create_bucket(Bucket="bench-bucket")
            store = S3ObjectStore("bench-bucket", client)
            timings = []
            for run in range(repeat + 1):
                started = time.perf_counter()
                result = _process(event, store, prefix=f"run{run}/events/")
                timings.append((time.perf_counter() - started) * 1000)
                if result.objects_created != len(result.objects):
                    raise RuntimeError("a benchmark run found objects of another run")
            return min(timings[1:])  # the first run warms the connection pool
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def layout_figures(size: int, seed: int, repeat: int) -> dict[str, Any]:
    """Live-like and shuffled batches of ``size`` records: speed against the naive reference, objects written,
    and the shuffled batch end to end against the local S3."""
    live, shuffled = live_like_event(size, seed), shuffled_event(size, seed)
    shuffled_figures = _speed(shuffled, repeat)
    shuffled_figures["local_s3_ms"] = round(_local_s3_ms(shuffled, repeat), 1)
    return {"records": size, "live_like": _speed(live, repeat), "shuffled": shuffled_figures}


def one_core_figures(size: int, seed: int, repeat: int) -> dict[str, Any]:
    """The live-like batch's speed in a child process pinned to one CPU (what a 1,024 MB Lambda gets, roughly)."""
    cpu = min(os.sched_getaffinity(0))
    code = (
        f"import json, os; os.sched_setaffinity(0, {{{cpu}}}); "
        "from bench.layouts import _speed, live_like_event; "
        f"print(json.dumps(_speed(live_like_event({size}, {seed}), {repeat})))"
    )
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"cpu": cpu, **figures}
