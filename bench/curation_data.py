"""Realistic raw objects for the curation benchmark, built through the stream handler and cached on disk.

Each shard's changes come from ``sandbox.changes.DemandGenerator`` at ``rate`` records per second (its clock
advanced by a jittered 1/rate per change), are put into Kinesis records as the DynamoDB streaming destination
writes them, and go through the stream handler (``pipeline.processor.StreamProcessor``) in batches of
``batch_size`` records, which writes the raw objects: every row is a distinct change, nothing is tiled. A share
``redelivered`` of each batch is delivered again at the start of the next batch (a retried batch split
differently), so duplicates cross objects as they do on the stream.

Building costs about a millisecond per record on one core, so the objects are cached under
``$DMD_BENCH_CACHE`` (default ``dmd-bench-cache`` in the temporary folder), one folder per set of parameters.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["RAW_PREFIX", "ShardStream", "cached_objects", "segments"]

RAW_PREFIX = "demand/events/"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-dev1-dmnd-table-stream"


@dataclass(frozen=True)
class ShardStream:
    """``seconds`` of one shard's changes from ``start`` at ``rate`` records per second; ``first_record`` is the
    stream position of its first record (a later segment of the same shard continues the sequence numbers)."""

    shard: int
    start: datetime
    seconds: int
    first_record: int = 0
    rate: int = 1_000
    batch_size: int = 10_000
    redelivered: float = 0.01
    seed: int = 3
    #: The generated records' version, part of the cache's name (2: every change its own ``eventID``).
    records_version: int = 2

    @property
    def shard_id(self) -> str:
        return f"shardId-{self.shard:012d}"

    @property
    def records(self) -> int:
        return self.seconds * self.rate

    def folder(self) -> Path:
        fields = {**asdict(self), "start": self.start.isoformat()}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(os.environ.get("DMD_BENCH_CACHE") or Path(tempfile.gettempdir()) / "dmd-bench-cache")
        return root / f"curation-{self.shard_id}-{self.start:%Y%m%dT%H%M}-{self.seconds}s-{digest}"


def _attribute(value: Any) -> dict[str, Any]:
    """One value as typed DynamoDB JSON (the types the demand generator produces)."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, Decimal | int):
        return {"N": str(value)}
    if isinstance(value, list):
        return {"L": [_attribute(item) for item in value]}
    if isinstance(value, dict):
        return {"M": {name: _attribute(item) for name, item in value.items()}}
    if value is None:
        return {"NULL": True}
    raise TypeError(f"no DynamoDB type for {value!r}")


def _fast_dynamodb_json(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _attribute(value) for name, value in item.items()}


def _batches(stream: ShardStream) -> Iterator[tuple[list[Any], int]]:
    """The stream's changes in handler batches, with each batch's first sequence index (re-deliveries first)."""
    from sandbox.changes import DemandGenerator  # noqa: PLC0415

    step_us = 1_000_000 // stream.rate

    class _Paced(DemandGenerator):
        def _tick(self) -> datetime:
            self._clock += timedelta(microseconds=self._rng.randint(0, 2 * step_us))
            return self._clock

    seed = stream.seed * 1_000_000_000 + stream.shard * 100_000_000 + stream.first_record
    generator = _Paced(seed=seed, events=40, start=stream.start)
    changes = generator.changes(stream.records)
    fresh = stream.batch_size - int(stream.batch_size * stream.redelivered)
    previous: list[Any] = []
    first_index = stream.first_record
    while batch := list(itertools.islice(changes, fresh)):
        again = previous[len(previous) - (stream.batch_size - fresh) :] if previous else []
        yield again + batch, first_index - len(again)
        previous, first_index = batch, first_index + len(batch)


def _build(stream: ShardStream, folder: Path) -> None:
    import sandbox.changes as changes_module  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    step = 1_000_003
    # the generator's documents, as boto3's serializer types them, faster; only while building (the process may be
    # a test worker whose other tests serialize sets, which the fast version does not type)
    serializer, changes_module.to_dynamodb_json = changes_module.to_dynamodb_json, _fast_dynamodb_json
    try:
        written = _write_batches(stream, folder, changes_module, step)
    finally:
        changes_module.to_dynamodb_json = serializer
    (folder / "rows.txt").write_text(str(written))


def _write_batches(stream: ShardStream, folder: Path, changes_module: Any, step: int) -> int:
    from pipeline.columnar import decode_batch  # noqa: PLC0415
    from pipeline.config import Settings  # noqa: PLC0415
    from pipeline.processor import StreamProcessor  # noqa: PLC0415
    from pipeline.writer import MemoryObjectStore  # noqa: PLC0415

    written = 0
    for batch, first_index in _batches(stream):
        event = changes_module.changes_event(
            batch,
            shard_id=stream.shard_id,
            stream_arn=STREAM_ARN,
            first_sequence=changes_module.FIRST_SEQUENCE + first_index * step,
            sequence_step=step,
        )
        store = MemoryObjectStore()
        result = StreamProcessor(Settings(output_bucket="bench"), store, decode_batch).process(event)
        if result.rows_written != len(batch):
            raise RuntimeError(f"the handler wrote {result.rows_written} of {len(batch)} records: {result.summary()}")
        for key, body in store.objects.items():
            path = folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        written += len(batch)
    return written


def cached_objects(stream: ShardStream) -> tuple[Path, int]:
    """The folder holding the stream's raw objects (keys relative to it), built if missing; the rows in them."""
    folder = stream.folder()
    if not (folder / "rows.txt").exists():
        _build(stream, folder)
    return folder, int((folder / "rows.txt").read_text())


def segments(shard: int, start: datetime, seconds: int, segment_seconds: int = 900) -> list[ShardStream]:
    """One shard's ``seconds`` from ``start`` as consecutive segments (built in parallel, each its own cache)."""
    return [
        ShardStream(shard, start + timedelta(seconds=offset), min(segment_seconds, seconds - offset), offset * 1_000)
        for offset in range(0, seconds, segment_seconds)
    ]


if __name__ == "__main__":  # build one segment ahead: python -m bench.curation_data SHARD START SECONDS [FIRST]
    import sys

    first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    start_at = datetime.fromisoformat(sys.argv[2]).replace(tzinfo=UTC)
    print(cached_objects(ShardStream(int(sys.argv[1]), start_at, int(sys.argv[3]), first)))
