"""One Kinesis batch -> at most one object per partition, written once, and a failure point Lambda re-sends from.

The guarantee (the reasoning the tests check): every record of a batch ends durably in the raw layer at least
once, or is re-sent; a record that was durably written is never erased by a retry. Duplicates are accepted and
removed downstream (compaction keeps each ``change_id`` once per shard-hour).

1. Each record has a *sink*: the Parquet partition of its change_time hour, or the quarantine partition of its
   arrival day. A batch writes one object per sink, whatever the order of change times (Kinesis Data Streams for
   DynamoDB does not order a shard by change time, and a re-driven batch can span days). The rows of an object
   keep sequence-number order.
2. An object is named by its partition, stream tag, shard, first sequence number and a 12-hex digest of every
   sequence number it holds (``pipeline.writer.object_name``): the same records give the same name, different
   records a different name. It is created with a conditional PUT (``If-None-Match: *``), so nothing is ever
   overwritten: "already exists" (412) means a previous attempt made it durable, and counts as written.
3. The objects are written concurrently, each within the invocation's remaining time; one that fails or misses
   its deadline is not durable. The lowest sequence number among records of objects that are not durable is
   reported in ``batchItemFailures``; Lambda re-sends every record from there on.
4. So a record is only ever re-sent from the reported point on, and a re-sent record is either written again
   under the same name (same batch boundaries: 412, no duplicate) or under another name (a duplicate). Which
   failures duplicate: an object written durably but after the failure point (objects of one batch interleave in
   sequence order), a write that landed but whose answer was lost or late, a crash or timeout after some writes
   (Lambda retries or bisects the batch), a batch delivered twice with other boundaries, and a re-delivery
   from an older checkpoint. None of them erases a row: a shorter retry that starts at the same record writes a
   new object beside the old one, and if the rest of the batch is then discarded, the old object still holds it.
   Kinesis Data Streams for DynamoDB can itself deliver a change twice (two sequence numbers, one ``change_id``).

Accounting: ``rows_written + quarantined + failed == received``, where ``failed`` counts the records in objects
that are not durable. ``resent`` counts the records Lambda re-sends (from the failure point on), durable or not.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.batch import DecodedBatch, Quarantined
from pipeline.config import Settings
from pipeline.decode import KinesisRecord, parse_kinesis_records
from pipeline.exceptions import WriteError
from pipeline.writer import (
    PARQUET_CONTENT_TYPE,
    QUARANTINE_CONTENT_TYPE,
    ObjectStore,
    encode_parquet,
    encode_quarantine,
    object_name,
    partition_prefix,
    quarantine_partition_prefix,
    sequence_digest,
)

__all__ = [
    "DEFAULT_WRITE_SECONDS",
    "MAX_CONCURRENT_WRITES",
    "BatchResult",
    "Decoder",
    "StreamProcessor",
    "WriteUnit",
    "WrittenObject",
    "plan_units",
    "write_budget",
]


class Decoder(Protocol):
    """A batch decoder: ``pipeline.columnar.decode_batch`` or ``pipeline.batch.decode_strict``."""

    def __call__(
        self, records: Sequence[KinesisRecord], precision: str, source_table: str | None = None
    ) -> DecodedBatch: ...


_HOUR_MICROS = 3_600_000_000
_DAY_SECONDS = 86_400
#: Objects of one invocation written at once (a batch rarely spans more hours than this; S3 takes far more).
MAX_CONCURRENT_WRITES = 8
#: Time for all writes when there is no Lambda context (tests, the benchmark, a replay from a shell).
DEFAULT_WRITE_SECONDS = 90.0
#: Kept back from the invocation's remaining time for the log line, the metrics and the response.
_RESERVED_SECONDS = 2.0
_MIN_WRITE_SECONDS = 0.5


@dataclass(frozen=True)
class WriteUnit:
    """One object to write: the records of one sink, in sequence order."""

    key: str
    first_sequence: str
    first_position: int  # batch position of its first record: the failure point if it is not durable
    records: int
    rows: pa.Table | None = None  # a Parquet object
    quarantined: tuple[Quarantined, ...] = ()  # a quarantine object


@dataclass(frozen=True)
class WrittenObject:
    """A durable object: its key, size and how many records it holds; ``created`` is False when it already
    existed (an earlier attempt wrote the same records)."""

    key: str
    bytes: int
    records: int
    kind: str  # "rows" or "quarantine"
    created: bool = True


@dataclass(frozen=True)
class BatchResult:
    """What one invocation did; ``rows_written + quarantined + failed == received`` always holds.

    ``failed`` counts the records in objects that are not durable; ``resent`` the records from the reported
    failure point on, which Lambda re-sends (some of them may be durable already: they will be duplicated).
    """

    received: int
    rows_written: int
    quarantined: int
    failed: int
    failure_sequence: str | None
    objects: tuple[WrittenObject, ...]
    newest_change_time: datetime | None
    shard_id: str | None
    duration_ms: float
    quarantine_kinds: dict[str, int] = field(default_factory=dict)
    failure_reason: str | None = None
    resent: int = 0

    @property
    def bytes_written(self) -> int:
        """Bytes of every object this invocation created."""
        return sum(written.bytes for written in self.objects if written.created)

    @property
    def objects_created(self) -> int:
        """Objects this invocation created (the others already existed)."""
        return sum(1 for written in self.objects if written.created)

    def batch_item_failures(self) -> dict[str, list[dict[str, str]]]:
        """The ReportBatchItemFailures response."""
        if self.failure_sequence is None:
            return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": self.failure_sequence}]}

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        """The counts, bytes, objects, duration and freshness of the invocation, for the log line."""
        freshness = None
        if self.newest_change_time is not None:
            freshness = round(((now or datetime.now(UTC)) - self.newest_change_time).total_seconds(), 3)
        return {
            "records_received": self.received,
            "rows_written": self.rows_written,
            "records_quarantined": self.quarantined,
            "records_failed": self.failed,
            "records_resent": self.resent,
            "failure_sequence_number": self.failure_sequence,
            "failure_reason": self.failure_reason,
            "objects_written": self.objects_created,
            "objects_already_present": len(self.objects) - self.objects_created,
            "bytes_written": self.bytes_written,
            "object_keys": [written.key for written in self.objects],
            "quarantine_kinds": self.quarantine_kinds,
            "duration_ms": round(self.duration_ms, 3),
            "freshness_seconds": freshness,
            "shard_id": self.shard_id,
        }


def _quarantine_line(record: KinesisRecord, item: Quarantined) -> dict[str, Any]:
    return {
        "sequence_number": record.sequence_number,
        "shard_id": record.shard_id,
        "partition_key": record.partition_key,
        "approximate_arrival_timestamp": record.approximate_arrival,
        "event_source_arn": record.event_source_arn,
        "event_id": record.event_id,
        "error_kind": item.error.kind,
        "reason": str(item.error),
        "data": record.data,
    }


def _digest(sequences: pa.Array) -> str:
    """``sequence_digest`` of a column slice already in sequence order, joined by Arrow rather than Python."""
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(sequences)], pa.int32()), sequences), "\n")
    return sequence_digest([joined[0].as_py()], ascending=True)


def _row_units(records: Sequence[KinesisRecord], decoded: DecodedBatch, settings: Settings) -> list[WriteUnit]:
    """One unit per change_time hour: rows grouped with Arrow (stable sort, so each group keeps sequence order)."""
    rows = decoded.rows
    if not rows.num_rows:
        return []
    hours = pc.divide(rows.column("change_time").combine_chunks().cast(pa.int64()), _HOUR_MICROS)
    low, high = pc.min_max(hours).values()
    if low == high:
        groups = [(low.as_py(), 0, rows.num_rows)]
        ordered, positions = rows, decoded.positions
    else:
        order = pc.sort_indices(hours)  # stable: equal hours keep their (sequence) order
        sorted_hours = hours.take(order)
        count = len(sorted_hours)
        changes = pc.indices_nonzero(pc.not_equal(sorted_hours.slice(1), sorted_hours.slice(0, count - 1)))
        starts = [0, *(index + 1 for index in changes.to_pylist())]
        stops = [*starts[1:], count]
        groups = [(sorted_hours[start].as_py(), start, stop) for start, stop in zip(starts, stops, strict=True)]
        ordered = rows.take(order)
        positions = pc.take(pa.array(decoded.positions, pa.int64()), order).to_pylist()
    sequences = ordered.column("sequence_number").combine_chunks()
    stream_arn, shard_id = records[0].event_source_arn, records[0].shard_id
    units = []
    for hour, start, stop in groups:
        first_position = positions[start]
        first = records[first_position].sequence_number
        prefix = partition_prefix(settings.output_prefix, datetime.fromtimestamp(hour * 3600, UTC))
        name = object_name(stream_arn, shard_id, first, _digest(sequences.slice(start, stop - start)), ".parquet")
        rows_slice = ordered.slice(start, stop - start)
        units.append(WriteUnit(prefix + name, first, first_position, stop - start, rows=rows_slice))
    return units


def _quarantine_units(records: Sequence[KinesisRecord], decoded: DecodedBatch, settings: Settings) -> list[WriteUnit]:
    """One unit per arrival day of the quarantined records (usually none or one)."""
    by_day: dict[int, list[Quarantined]] = {}
    for item in decoded.quarantined:
        by_day.setdefault(int(records[item.position].approximate_arrival // _DAY_SECONDS), []).append(item)
    stream_arn = records[0].event_source_arn if len(records) else ""
    units = []
    for day, items in by_day.items():
        sequences = [records[item.position].sequence_number for item in items]
        prefix = quarantine_partition_prefix(
            settings.quarantine_prefix, datetime.fromtimestamp(day * _DAY_SECONDS, UTC)
        )
        first = items[0]
        name = object_name(
            stream_arn,
            records[first.position].shard_id,
            sequences[0],
            sequence_digest(sequences, ascending=True),
            ".jsonl.gz",
        )
        units.append(WriteUnit(prefix + name, sequences[0], first.position, len(items), quarantined=tuple(items)))
    return units


def plan_units(records: Sequence[KinesisRecord], decoded: DecodedBatch, settings: Settings) -> list[WriteUnit]:
    """The batch's objects: one per hour partition of its rows, one per quarantine partition, by first record."""
    if not len(records):
        return []
    units = _row_units(records, decoded, settings) + _quarantine_units(records, decoded, settings)
    return sorted(units, key=lambda unit: unit.first_position)


@functools.cache
def _writers() -> concurrent.futures.ThreadPoolExecutor:
    """The bounded pool of object writers, made on first use and kept for the life of the process (starting
    threads in every invocation costs more than the writes of a small batch)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_WRITES, thread_name_prefix="writer")


def write_budget(context: Any) -> float:
    """Seconds the writes may take: the invocation's remaining time less what the response needs, or
    ``DEFAULT_WRITE_SECONDS`` without a Lambda context."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return DEFAULT_WRITE_SECONDS
    return max(remaining() / 1000 - _RESERVED_SECONDS, _MIN_WRITE_SECONDS)


@dataclass
class StreamProcessor:
    """Decode -> plan one object per partition -> create them concurrently -> report the lowest failure."""

    settings: Settings
    store: ObjectStore
    decoder: Decoder | Callable[..., DecodedBatch]

    def process(self, event: Any, context: Any = None) -> BatchResult:
        """Handle one Lambda Kinesis event; never loses a record: each is written, quarantined or reported."""
        started = time.perf_counter()
        records = parse_kinesis_records(event)
        decoded = self.decoder(records, self.settings.change_time_precision, self.settings.source_table_name)
        units = plan_units(records, decoded, self.settings)
        outcomes = self._write_all(records, units, write_budget(context))
        durable = [(unit, outcome) for unit, outcome in outcomes if isinstance(outcome, WrittenObject)]
        failures = [(unit, outcome) for unit, outcome in outcomes if isinstance(outcome, str)]
        kinds: dict[str, int] = {}
        for unit, _ in durable:
            for item in unit.quarantined:
                kinds[item.error.kind] = kinds.get(item.error.kind, 0) + 1
        failure_sequence = failure_reason = None
        resent = 0
        if failures:
            first_failed, reason = min(failures, key=lambda failure: failure[0].first_position)
            failure_sequence = first_failed.first_sequence
            resent = len(records) - first_failed.first_position
            others = len(failures) - 1
            failure_reason = reason + (f" (and {others} other object(s) not written)" if others else "")
        newest = None
        if decoded.rows.num_rows:
            newest_value = pc.max(decoded.rows.column("change_time")).as_py()
            newest = newest_value if isinstance(newest_value, datetime) else None
        return BatchResult(
            received=len(records),
            rows_written=sum(unit.records for unit, _ in durable if unit.rows is not None),
            quarantined=sum(kinds.values()),
            failed=sum(unit.records for unit, _ in failures),
            failure_sequence=failure_sequence,
            objects=tuple(written for _, written in durable),
            newest_change_time=newest,
            shard_id=records[0].shard_id if len(records) else None,
            duration_ms=(time.perf_counter() - started) * 1000,
            quarantine_kinds=kinds,
            failure_reason=failure_reason,
            resent=resent,
        )

    def _write_all(
        self, records: Sequence[KinesisRecord], units: list[WriteUnit], budget: float
    ) -> list[tuple[WriteUnit, WrittenObject | str]]:
        """Each unit's outcome: the durable object, or why it is not durable (an error, or no answer in time)."""
        if not units:
            return []
        deadline = time.monotonic() + budget
        futures = [_writers().submit(self._write, records, unit, budget) for unit in units]
        concurrent.futures.wait(futures, timeout=max(deadline - time.monotonic(), 0.0))
        outcomes: list[tuple[WriteUnit, WrittenObject | str]] = []
        for unit, future in zip(units, futures, strict=True):
            # A write still queued is dropped; one still running past the deadline is not durable (if it lands
            # later, the re-sent records find it, or are duplicated). Its thread is not waited for.
            if not future.done() and (future.cancel() or not future.done()):
                outcomes.append((unit, f"writing s3 object {unit.key!r} got no answer within {budget:.1f} s"))
                continue
            try:
                outcomes.append((unit, future.result()))
            except WriteError as error:
                outcomes.append((unit, str(error)))
        return outcomes

    def _write(self, records: Sequence[KinesisRecord], unit: WriteUnit, budget: float) -> WrittenObject:
        if unit.rows is not None:
            body = encode_parquet(unit.rows)
            created = self.store.create(unit.key, body, PARQUET_CONTENT_TYPE, budget)
            return WrittenObject(unit.key, len(body), unit.records, "rows", created)
        lines = [_quarantine_line(records[item.position], item) for item in unit.quarantined]
        body = encode_quarantine(lines)
        created = self.store.create(unit.key, body, QUARANTINE_CONTENT_TYPE, budget)
        return WrittenObject(unit.key, len(body), unit.records, "quarantine", created)
