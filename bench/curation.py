"""First measurement of the curator: one run over a shard-hour of raw objects on the local AWS, in a fresh process.

    python -m bench.curation [--rows 200000] [--objects 40] [--duplicates 0.01] [--seed 3]

The raw objects are built as the stream handler writes them (rows from its decoder, names per the object-key
contract) and written to the local moto server before the measured run; the run then lists, reads, deduplicates,
sorts and writes ``registration_changes``, advances ``registrations`` and commits both through the Glue catalog.
The run's time includes the local server's S3 and Glue (same machine): it is not the Lambda's time. The run
happens in a fresh process that does nothing else: peak RSS is its high-water mark (``VmHWM``), and the growth
above its size before the run. Not yet the issue's benchmark: no pinned core, no backlog of hours, no targets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_PREFIX = "demand/events/"
_BUCKET = "bench-curation"
_HOUR = datetime(2026, 3, 31, 23, tzinfo=UTC)
_STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-dev1-dmnd-table-stream"
_SHARD = "shardId-000000000000"


def _rows(count: int, seed: int) -> Any:
    """``count`` rows of one shard through the handler's decoder, in sequence order, within the hour."""
    from pipeline.columnar import decode_batch  # noqa: PLC0415 - imported in the measuring process only
    from pipeline.decode import parse_kinesis_records  # noqa: PLC0415
    from sandbox.changes import DemandGenerator, changes_event  # noqa: PLC0415

    changes = list(DemandGenerator(seed=seed, events=40, start=_HOUR + timedelta(seconds=1)).changes(count))
    event = changes_event(changes, shard_id=_SHARD, stream_arn=_STREAM_ARN)
    return decode_batch(parse_kinesis_records(event), "MILLISECOND").rows


def _object_key(rows: Any) -> str:
    from pipeline.writer import object_name, partition_prefix, sequence_digest  # noqa: PLC0415

    sequences = rows.column("sequence_number").to_pylist()
    first = min(sequences, key=int)
    return partition_prefix(_PREFIX, _HOUR) + object_name(
        _STREAM_ARN, _SHARD, first, sequence_digest(sequences), ".parquet"
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _build_lake(endpoint_url: str, rows: int, objects: int, duplicates: float, seed: int) -> int:
    """Write the raw objects of one shard-hour to the local AWS; the number of rows written."""
    import boto3  # noqa: PLC0415 - imported in the building process only
    import pyarrow as pa  # noqa: PLC0415

    from pipeline.writer import encode_parquet  # noqa: PLC0415

    s3 = boto3.client("s3", **_client_options(endpoint_url))
    s3.create_bucket(Bucket=_BUCKET)
    table = _rows(rows, seed)
    per_object = -(-rows // objects)
    written = 0
    for start in range(0, rows, per_object):
        part = table.slice(start, per_object)
        redelivered = part.slice(0, int(part.num_rows * duplicates))
        if redelivered.num_rows:
            part = pa.concat_tables([part, redelivered])
        s3.put_object(Bucket=_BUCKET, Key=_object_key(part), Body=encode_parquet(part))
        written += part.num_rows
    return written


def _client_options(endpoint_url: str) -> dict[str, Any]:
    from sandbox.local_aws import FAKE_CREDENTIALS  # noqa: PLC0415

    return {
        "endpoint_url": endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def run_once(endpoint_url: str) -> dict[str, Any]:
    """One curation run (in this process, which should be fresh): its counts, time and memory."""
    import boto3  # noqa: PLC0415

    from curator.catalog import glue_catalog  # noqa: PLC0415
    from curator.curation import Curator, CuratorSettings  # noqa: PLC0415
    from pipeline.compactor import S3CompactionStore  # noqa: PLC0415

    options = _client_options(endpoint_url)
    catalog = glue_catalog(
        "us-east-1",
        endpoint_url=endpoint_url,
        access_key_id=options["aws_access_key_id"],
        secret_access_key=options["aws_secret_access_key"],
    )
    settings = CuratorSettings(bucket=_BUCKET, raw_prefix=_PREFIX, database="bench_curation")
    store = S3CompactionStore(_BUCKET, client=boto3.client("s3", **options))
    curator = Curator(catalog=catalog, store=store, settings=settings)
    curator.tables()
    baseline = _status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    result = curator.run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return {
        "rows_read": result.rows_read,
        "changes_added": result.changes_added,
        "state_changes_applied": result.state_changes_applied,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "rows_per_second": round(result.rows_read / seconds),
        "rss_before_run_mb": round(baseline / 1024),
        "peak_rss_mb": round(_status_kib("VmHWM") / 1024),
        "peak_above_start_mb": round((_status_kib("VmHWM") - baseline) / 1024),
    }


def measure(rows: int, objects: int, duplicates: float, seed: int) -> dict[str, Any]:
    """Build the raw objects, then run the curator once in a fresh process; its figures."""
    from sandbox.server import MotoProcess  # noqa: PLC0415

    with MotoProcess() as server:
        written = _build_lake(server.endpoint_url, rows, objects, duplicates, seed)
        output = subprocess.run(
            [sys.executable, "-m", "bench.curation", "--run-once", server.endpoint_url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    figures: dict[str, Any] = json.loads(output)
    return {"rows_written": written, **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--duplicates", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--run-once", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_once:
        print(json.dumps(run_once(args.run_once)))
        return 0
    print(json.dumps(measure(args.rows, args.objects, args.duplicates, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
