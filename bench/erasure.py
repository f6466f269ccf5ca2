"""Erasing 1,000 fans from a lake of N days: time, peak RSS of a fresh process, and the S3 requests it makes.

    python -m bench.erasure [--days 30] [--rows-per-hour 2000] [--fans 1000] [--events 400] [--seed 7] [--cpu 0]
                            [--rows-per-run N]

The documented load (docs/curation.md) is 1,000 changes/s per shard: 3.6M rows per shard-hour, 2.6 billion in 30
days, which a laptop cannot build; ``--rows-per-hour`` scales it down (rows and files are what the erasure's work
follows, see below). The lake is built on the local AWS (moto server on 127.0.0.1): ``registration_changes`` with
``--rows-per-hour`` changes in each hour of ``--days`` days (the demo generator's columns, drawn at random, never a
tiled sample), committed one snapshot per day, and ``registrations`` with one row per key, in a versioned bucket
as the stack creates it (so the erasure also purges the old versions of the table files it deletes). Each erased fan has
three changes in random hours of the period (one key). The request is then carried out by ``ErasureRun`` alone in a
fresh process pinned to one core (``taskset -c``), and its S3 requests are counted by kind (the object store's
boto3 calls and the table files pyiceberg reads, writes and deletes). The figures include moto's work on the same
machine; they are not the Lambda's time. The extra cost is priced at S3 Standard list prices (us-east-1).

``--rows-per-run`` sets the rows of data files one run rewrites (the stack's ``erasureRowsPerRun``; default the
curator's ``ROWS_PER_RUN``): the same process then runs the erasure again until the request is complete, and prints
each run's time and the files it left, so a request bigger than one run's share is measured end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.curation import local_client_options, run_once_in_fresh_process, status_kib
from bench.registrations import _Rows

_BUCKET = "bench-erasure"
_DATABASE = "bench_erasure"
_START = datetime(2026, 3, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SALT = "bench-salt"
#: The variable the measured process reads ``--rows-per-run`` from (the curator function's own).
_ROWS_PER_RUN = "ERASURE_ROWS_PER_RUN"
#: S3 Standard request prices, us-east-1, USD per 1,000 requests (DELETE is free).
PRICE_PER_1000 = {"PUT": 0.005, "LIST": 0.005, "GET": 0.0004, "DELETE": 0.0}
#: The documented load: changes per second per shard (docs/curation.md).
DOCUMENTED_ROWS_PER_SHARD_HOUR = 3_600_000


def _curator(endpoint_url: str, client: Any = None) -> Any:
    import boto3  # noqa: PLC0415

    from curator.catalog import glue_catalog  # noqa: PLC0415
    from curator.curation import Curator, CuratorSettings  # noqa: PLC0415
    from curator.erasure import ROWS_PER_RUN  # noqa: PLC0415
    from curator.store import S3Store  # noqa: PLC0415

    options = local_client_options(endpoint_url)
    catalog = glue_catalog(
        "us-east-1",
        endpoint_url=endpoint_url,
        access_key_id=options["aws_access_key_id"],
        secret_access_key=options["aws_secret_access_key"],
    )
    settings = CuratorSettings(
        bucket=_BUCKET,
        raw_prefix="demand/events/",
        database=_DATABASE,
        erasure_salt=_SALT,
        erasure_rows_per_run=int(os.environ.get(_ROWS_PER_RUN, ROWS_PER_RUN)),
    )
    store = S3Store(_BUCKET, client=client or boto3.client("s3", **options))
    return Curator(catalog=catalog, store=store, settings=settings)


def _build(endpoint_url: str, days: int, rows_per_hour: int, fans: int, *, events: int, seed: int) -> dict[str, Any]:
    """Both tables (one ``registration_changes`` snapshot per day) and the request for ``fans`` fans."""
    import boto3  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    from curator.commits import commit_overwrite  # noqa: PLC0415
    from curator.erasure_requests import ErasureRequest  # noqa: PLC0415
    from curator.files import write_files  # noqa: PLC0415
    from curator.state import APPLIED_PROPERTY, STATE_FILE_ROWS, WATERMARK_PROPERTY  # noqa: PLC0415
    from curator.tables import changes_spec, registrations_spec  # noqa: PLC0415

    s3 = boto3.client("s3", **local_client_options(endpoint_url))
    s3.create_bucket(Bucket=_BUCKET)
    s3.put_bucket_versioning(Bucket=_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    changes, state = _curator(endpoint_url).tables()
    draw = _Rows(seed, events)
    erased = draw.uuids(fans)
    hours = days * 24
    # Each erased fan: three changes of one key (its event), in random hours of the period.
    erased_hours = draw.integers(0, hours, 3 * fans).to_pylist()
    erased_events = draw.integers(0, events, fans)
    start_us = (_START - _EPOCH) // timedelta(microseconds=1)
    hour_us = 3_600_000_000
    schema, state_schema = changes_spec().arrow_schema, registrations_spec().arrow_schema
    keys_order = [("event_id", "ascending"), ("fan_id", "ascending"), ("change_time", "ascending")]
    state_parts: list[Any] = []
    rows_total = 0
    for day in range(days):
        day_rows = []
        for hour in range(day * 24, day * 24 + 24):
            mine = [index for index, value in enumerate(erased_hours) if value == hour]
            count = rows_per_hour
            times = pc.add(draw.integers(0, hour_us, count), start_us + hour * hour_us)
            rows = draw.table(draw.integers(0, events, count), draw.uuids(count), times, ["INSERT"] * count, schema)
            if mine:
                picked = pa.array([index // 3 for index in mine], pa.int64())
                own_times = pc.add(draw.integers(0, hour_us, len(mine)), start_us + hour * hour_us)
                own = draw.table(
                    erased_events.take(picked), erased.take(picked), own_times, ["MODIFY"] * len(mine), schema
                )
                rows = pa.concat_tables([rows, own])
            day_rows.append(rows)
        rows = pa.concat_tables(day_rows)
        rows_total += rows.num_rows
        changes = commit_overwrite(changes, [], write_files(changes, rows.take(pc.sort_indices(rows, keys_order))), {})
        state_parts.append(rows.select(state_schema.names))
    # The state: one row per key (an erased fan's latest change among its three).
    everything = pa.concat_tables(state_parts)
    latest = everything.take(
        pc.sort_indices(
            everything,
            [("event_id", "ascending"), ("fan_id", "ascending"), ("change_time_us", "descending")],
        )
    )
    keys = pc.binary_join_element_wise(
        latest.column("event_id").cast(pa.string()), latest.column("fan_id").cast(pa.string()), "/"
    ).combine_chunks()
    first = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    latest = latest.filter(pa.concat_arrays([pa.array([True]), first]))
    files = []
    for offset in range(0, latest.num_rows, STATE_FILE_ROWS):
        files.extend(write_files(state, latest.slice(offset, STATE_FILE_ROWS).cast(state_schema)))
    end_us = start_us + hours * hour_us
    state = commit_overwrite(
        state,
        [],
        files,
        {APPLIED_PROPERTY: str(changes.current_snapshot().snapshot_id), WATERMARK_PROPERTY: str(end_us)},
    )
    request = ErasureRequest.new(tuple(erased.to_pylist()), now=datetime.now(UTC))
    s3.put_object(Bucket=_BUCKET, Key=request.key, Body=request.to_json())
    return {
        "changes_rows": rows_total,
        "state_rows": latest.num_rows,
        "changes_files": len(changes.inspect.files()),
        "state_files": len(files),
        "snapshots": len(changes.metadata.snapshots),
    }


def run_once(endpoint_url: str) -> dict[str, Any]:
    """Carry out the filed request (in this process, which should be fresh): time, memory, requests by kind."""
    from pyiceberg.io.pyarrow import PyArrowFile, PyArrowFileIO  # noqa: PLC0415

    from curator.store import s3_client  # noqa: PLC0415

    calls: Counter[str] = Counter()
    client = s3_client(**local_client_options(endpoint_url))  # the client the curator's store makes
    kinds = {
        "ListObjectsV2": "LIST",
        "ListObjectVersions": "LIST",
        "GetObject": "GET",
        "PutObject": "PUT",
        "DeleteObject": "DELETE",
    }
    client.meta.events.register(
        "after-call.s3", lambda **kw: calls.update([kinds.get(kw["model"].name, kw["model"].name)])
    )
    real_open, real_create, real_delete = PyArrowFile.open, PyArrowFile.create, PyArrowFileIO.delete

    def counted_open(self: Any, seekable: bool = True) -> Any:
        calls.update(["GET"])
        return real_open(self, seekable=seekable)

    def counted_create(self: Any, overwrite: bool = False) -> Any:
        calls.update(["PUT"])
        return real_create(self, overwrite=overwrite)

    def counted_delete(self: Any, location: Any) -> None:
        calls.update(["DELETE"])
        real_delete(self, location)

    PyArrowFile.open, PyArrowFile.create, PyArrowFileIO.delete = counted_open, counted_create, counted_delete  # type: ignore[method-assign]
    curator = _curator(endpoint_url, client)
    changes, state = curator.tables()
    calls.clear()
    baseline = status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    runs: list[dict[str, Any]] = []
    while True:  # a run per share of the rewrite, until the request is complete (one run when it fits)
        run_started, run_cpu = time.perf_counter(), time.process_time()
        outcome, changes, state = curator.erasure_run().run(changes, state, lambda c, r: (c, r))
        runs.append(
            {
                "seconds": round(time.perf_counter() - run_started, 1),
                "cpu_seconds": round(time.process_time() - run_cpu, 1),
                "data_files_left": outcome.data_files_left,
            }
        )
        if not outcome.data_files_left:
            break
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return {
        "requests_completed": len(outcome.requests_completed),
        "rows_removed": outcome.rows_removed,
        "versions_purged": outcome.versions_purged,
        "rows_per_run": curator.settings.erasure_rows_per_run,
        "runs": runs,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "rss_before_run_mb": round(baseline / 1024),
        "peak_rss_mb": round(status_kib("VmHWM") / 1024),
        "requests": dict(calls),
    }


def cost_usd(requests: dict[str, int]) -> float:
    """The requests' price at S3 Standard list prices."""
    return sum(PRICE_PER_1000.get(kind, 0.0) * count / 1000 for kind, count in requests.items())


def measure(
    days: int,
    rows_per_hour: int,
    fans: int,
    *,
    events: int,
    seed: int,
    cpu: int | None,
    rows_per_run: int | None = None,
) -> dict[str, Any]:
    from sandbox.server import MotoProcess  # noqa: PLC0415

    if rows_per_run is not None:
        os.environ[_ROWS_PER_RUN] = str(rows_per_run)  # read by the measured fresh process

    with MotoProcess() as server:
        started = time.perf_counter()
        built = _build(server.endpoint_url, days, rows_per_hour, fans, events=events, seed=seed)
        built["build_seconds"] = round(time.perf_counter() - started, 1)
        figures = run_once_in_fresh_process("bench.erasure", server.endpoint_url, cpu)
    figures["cost_usd"] = round(cost_usd(figures["requests"]), 4)
    return {
        "days": days,
        "rows_per_hour": rows_per_hour,
        "fans": fans,
        "events": events,
        "cpu": cpu,
        **built,
        **figures,
    }


def report(figures: dict[str, Any]) -> None:
    scale = figures["rows_per_hour"] / DOCUMENTED_ROWS_PER_SHARD_HOUR
    print(
        f"erasure of {figures['fans']:,} fans from {figures['days']} days at {figures['rows_per_hour']:,} rows/hour "
        f"({scale:.4%} of one shard at the documented load): registration_changes {figures['changes_rows']:,} rows "
        f"in {figures['changes_files']:,} files ({figures['snapshots']} snapshots), registrations "
        f"{figures['state_rows']:,} rows in {figures['state_files']:,} files"
    )
    print(
        f"  {figures['seconds']} s (CPU {figures['cpu_seconds']} s), peak RSS {figures['peak_rss_mb']:,} MB of a fresh "
        f"process ({figures['rss_before_run_mb']:,} MB before the run); rows removed {figures['rows_removed']}"
    )
    print(f"  old versions purged {figures.get('versions_purged', {})}")
    runs = figures["runs"]
    if len(runs) > 1:
        each = "; ".join(
            f"{run['seconds']} s (CPU {run['cpu_seconds']} s), {run['data_files_left']:,} files left" for run in runs
        )
        print(f"  {len(runs)} runs of at most {figures['rows_per_run']:,} rows rewritten: {each}")
    requests = figures["requests"]
    listed = ", ".join(f"{kind} {count:,}" for kind, count in sorted(requests.items()))
    print(f"  S3 requests: {listed}; extra cost at list prices ${figures['cost_usd']:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.erasure", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-hour", type=int, default=2_000, help="scale of the documented load")
    parser.add_argument("--fans", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=0, help="the core the measured process is pinned to")
    parser.add_argument(
        "--rows-per-run", type=int, help="rows of data files one run rewrites (erasureRowsPerRun); runs until complete"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--run-once", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_once:
        print(json.dumps(run_once(args.run_once)))
        return 0
    if min(args.days, args.rows_per_hour, args.fans, args.events, args.rows_per_run or 1) <= 0:
        print("--days, --rows-per-hour, --fans, --events and --rows-per-run must be positive", file=sys.stderr)
        return 2
    figures = measure(
        args.days,
        args.rows_per_hour,
        args.fans,
        events=args.events,
        seed=args.seed,
        cpu=args.cpu,
        rows_per_run=args.rows_per_run,
    )
    report(figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
