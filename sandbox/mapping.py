"""The local Kinesis event source mapping: polls each shard and invokes the function in-process, as Lambda does.

Semantics follow AWS Lambda's Kinesis event source mapping with the settings the Pulumi component sets:

- a batch holds up to ``batch_size`` records of one shard, and stops before its event passes 6 MB (Lambda's
  synchronous payload limit); a smaller batch waits up to the batching window;
- ReportBatchItemFailures: the lowest reported sequence number becomes the checkpoint, and every record from
  it on is sent again (an empty, unknown or null ``itemIdentifier`` fails the whole batch, as in AWS);
- BisectBatchOnFunctionError: a batch whose invocation raises is split in two, and the halves are retried;
  splitting does not consume retry attempts;
- MaximumRetryAttempts / MaximumRecordAgeInSeconds: when a batch has failed that many times more than once, or
  its records are older than the maximum age, the mapping discards it and writes an on-failure record to the
  destination bucket, then moves on. As with an S3 destination in AWS ("Retain discarded batch records for a
  Kinesis Data Streams event source in Lambda"), the record holds the invocation metadata and ``payload``, the
  whole invocation event, under ``aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<UUID>``.

Retries wait with exponential back-off (AWS's exact timing is undocumented). Records fetched from the shard
but not yet checkpointed stay in memory, which is the same as re-reading the shard from the checkpoint.
Parallelization factor: one batch per shard at a time here (factor 1, the stacks' default).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.changes import KinesisEntry, lambda_event

__all__ = [
    "Function",
    "KinesisEventSourceMapping",
    "LocalLambdaContext",
    "MappingConfig",
    "MappingStats",
    "failure_object_key",
    "on_failure_record",
]

log = logging.getLogger(__name__)

Function = Callable[[dict[str, Any], Any], Any]
FAILURE_KEY_PREFIX = "aws/lambda/"
# Lambda's synchronous invocation payload limit, and what an event carries per record besides the base64 data
# (sequence number, partition key, eventID, ARNs: about 600 bytes on the sandbox's change records).
INVOCATION_PAYLOAD_BYTES = 6 * 1024 * 1024
EVENT_OVERHEAD_BYTES = 600
_BACKOFF_FIRST_SECONDS = 0.2
_BACKOFF_MAX_SECONDS = 2.0


@dataclass(frozen=True)
class MappingConfig:
    """The event source mapping's settings (names as in the Lambda API, values from the stack's settings)."""

    batch_size: int = 10_000
    batching_window_seconds: float = 5.0
    max_retry_attempts: int = 5  # -1: until the record expires
    max_record_age_seconds: int = 21600  # -1: never expires
    bisect_batch_on_function_error: bool = True
    report_batch_item_failures: bool = True
    parallelization_factor: int = 1
    max_payload_bytes: int = INVOCATION_PAYLOAD_BYTES
    backoff_first_seconds: float = _BACKOFF_FIRST_SECONDS
    backoff_max_seconds: float = _BACKOFF_MAX_SECONDS
    starting_position: str = "TRIM_HORIZON"  # or AT_TIMESTAMP (with the timestamp), LATEST
    starting_position_timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if self.starting_position not in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
            raise ValueError(
                f"starting_position {self.starting_position!r}: expected TRIM_HORIZON, LATEST or AT_TIMESTAMP"
            )
        if (self.starting_position == "AT_TIMESTAMP") != (self.starting_position_timestamp is not None):
            raise ValueError("starting_position_timestamp is required with AT_TIMESTAMP, and only with it")

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> MappingConfig:
        """The mapping the stack's settings describe (``components.settings.Settings``), with local overrides."""
        values: dict[str, Any] = {
            "batch_size": settings.batch_size,
            "batching_window_seconds": float(settings.batching_window_seconds),
            "max_retry_attempts": settings.max_retry_attempts,
            "max_record_age_seconds": settings.max_record_age_seconds,
            "parallelization_factor": settings.parallelization_factor,
        }
        values.update(overrides)
        return cls(**values)

    def api_fields(self) -> dict[str, Any]:
        """The settings as the Lambda API's EventSourceMapping reports them (GetEventSourceMapping)."""
        return {
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": int(self.batching_window_seconds),
            "ParallelizationFactor": self.parallelization_factor,
            "MaximumRetryAttempts": self.max_retry_attempts,
            "MaximumRecordAgeInSeconds": self.max_record_age_seconds,
            "BisectBatchOnFunctionError": self.bisect_batch_on_function_error,
            "FunctionResponseTypes": ["ReportBatchItemFailures"] if self.report_batch_item_failures else [],
        }

    def backoff(self, attempts: int) -> float:
        return min(self.backoff_first_seconds * 2 ** max(attempts - 1, 0), self.backoff_max_seconds)


@dataclass(frozen=True)
class LocalLambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    function_version: str = "1"
    memory_limit_in_mb: int = 1024
    timeout_seconds: int = 120
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


@dataclass
class MappingStats:
    """What the mapping did: invocations, outcomes, and records checkpointed or discarded."""

    invocations: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    bisections: int = 0
    records_checkpointed: int = 0
    records_discarded: int = 0
    failure_messages: int = 0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_object_key(mapping_uuid: str, shard_id: str, when: datetime, object_uuid: str | None = None) -> str:
    """Where Lambda writes a discarded batch in an S3 on-failure destination (the AWS Lambda guide's layout)."""
    when = when.astimezone(UTC)
    return (
        f"{FAILURE_KEY_PREFIX}{mapping_uuid}/{shard_id}/{when:%Y/%m/%d}/{when:%Y-%m-%dT%H.%M.%S}-"
        f"{object_uuid or uuid.uuid4()}"
    )


def on_failure_record(
    batch: Sequence[KinesisEntry],
    *,
    shard_id: str,
    stream_arn: str,
    function_arn: str,
    condition: str,
    invoke_count: int,
    function_error: str | None,
    executed_version: str = "1",
    payload: dict[str, Any] | None = None,
    timestamp: float | None = None,
) -> dict[str, Any]:
    """The document Lambda sends to a Kinesis mapping's on-failure destination for a discarded batch.

    ``payload`` (the invocation event) is what an S3 destination adds; SQS and SNS destinations get the rest.
    """
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": executed_version}
    if function_error:
        response["functionError"] = function_error
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": _iso(time.time() if timestamp is None else timestamp),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": batch[0].sequence_number,
            "endSequenceNumber": batch[-1].sequence_number,
            "approximateArrivalOfFirstRecord": _iso(batch[0].arrival),
            "approximateArrivalOfLastRecord": _iso(batch[-1].arrival),
            "batchSize": len(batch),
            "streamArn": stream_arn,
        },
    }
    if payload is not None:
        record["payload"] = payload
    return record


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None
    pending: list[KinesisEntry] = field(default_factory=list)
    waiting_since: float | None = None
    splits: list[int] = field(default_factory=list)  # bisected sub-batch sizes still to deliver
    attempts: int = 0  # failed invocations of the batch at the head of ``pending``
    not_before: float = 0.0
    last_error: str | None = None


class KinesisEventSourceMapping:
    """Polls every shard of a Kinesis stream and invokes ``function`` with Lambda-shaped events."""

    def __init__(
        self,
        *,
        kinesis: Any,
        s3: Any,
        stream_name: str,
        stream_arn: str,
        function: Function,
        function_name: str,
        function_arn: str,
        on_failure_bucket: str | None,
        config: MappingConfig,
        region: str = "us-east-1",
        mapping_uuid: str | None = None,
    ) -> None:
        self._kinesis = kinesis
        self._s3 = s3
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.function = function
        self.function_name = function_name
        self.function_arn = function_arn
        self.on_failure_bucket = on_failure_bucket
        self.uuid = mapping_uuid or str(uuid.uuid4())
        """The mapping's UUID (Lambda's ``UUID``): the first level under ``aws/lambda/`` in the failure bucket."""
        self.config = config
        self.region = region
        self.stats = MappingStats()
        self.failure_records: list[dict[str, Any]] = []
        self.failure_keys: list[str] = []
        self._lock = threading.RLock()
        self._shards: list[_Shard] = []
        position: dict[str, Any] = {"ShardIteratorType": config.starting_position}
        if config.starting_position_timestamp is not None:
            position["Timestamp"] = config.starting_position_timestamp
        for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
            iterator = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard["ShardId"], **position)[
                "ShardIterator"
            ]
            self._shards.append(_Shard(shard["ShardId"], iterator))

    @property
    def shard_ids(self) -> list[str]:
        return [shard.shard_id for shard in self._shards]

    def pending_records(self) -> int:
        """Records read from the shards and not yet checkpointed or discarded."""
        with self._lock:
            return sum(len(shard.pending) for shard in self._shards)

    def poll(self) -> int:
        """One pass over every shard: fetch what is new, deliver what is due; return records settled."""
        with self._lock:
            return sum(self._poll_shard(shard) for shard in self._shards)

    def _fetch(self, shard: _Shard) -> None:
        if shard.iterator is None or len(shard.pending) >= self.config.batch_size:
            return
        response = self._kinesis.get_records(ShardIterator=shard.iterator, Limit=min(10_000, self.config.batch_size))
        shard.iterator = response.get("NextShardIterator")
        for record in response.get("Records", []):
            arrival = record["ApproximateArrivalTimestamp"]
            shard.pending.append(
                KinesisEntry(
                    data=record["Data"],
                    partition_key=record["PartitionKey"],
                    sequence_number=record["SequenceNumber"],
                    arrival=arrival.timestamp() if isinstance(arrival, datetime) else float(arrival),
                )
            )
        if shard.pending and shard.waiting_since is None:
            shard.waiting_since = time.monotonic()

    def _poll_shard(self, shard: _Shard) -> int:
        self._fetch(shard)
        now = time.monotonic()
        if not shard.pending or now < shard.not_before:
            return 0
        expired = self._expired(shard)
        if expired:
            return expired
        fits = self._fits(shard.pending)
        full = fits < len(shard.pending) or len(shard.pending) >= self.config.batch_size
        waited = now - (now if shard.waiting_since is None else shard.waiting_since)
        retrying = shard.attempts > 0
        if not shard.splits and not full and not retrying and waited < self.config.batching_window_seconds:
            return 0
        size = shard.splits[0] if shard.splits else fits
        batch = shard.pending[:size]
        return self._deliver(shard, batch)

    def _fits(self, pending: Sequence[KinesisEntry]) -> int:
        """How many of the pending records one event holds: ``batch_size``, or fewer at the payload limit."""
        total = 0
        for count, entry in enumerate(pending[: self.config.batch_size]):
            total += 4 * -(-len(entry.data) // 3) + EVENT_OVERHEAD_BYTES
            if total > self.config.max_payload_bytes:
                return max(count, 1)
        return min(len(pending), self.config.batch_size)

    def _expired(self, shard: _Shard) -> int:
        if self.config.max_record_age_seconds < 0:
            return 0
        oldest_allowed = time.time() - self.config.max_record_age_seconds
        count = 0
        while count < len(shard.pending) and shard.pending[count].arrival < oldest_allowed:
            count += 1
        if count:
            self._discard(shard, shard.pending[:count], "RecordAgeExceeded")
            shard.splits.clear()
        return count

    def _event(self, shard: _Shard, batch: Sequence[KinesisEntry]) -> dict[str, Any]:
        return lambda_event(batch, shard_id=shard.shard_id, stream_arn=self.stream_arn, region=self.region)

    def _invoke(self, shard: _Shard, batch: Sequence[KinesisEntry]) -> tuple[int | None, str | None]:
        """Invoke once; return (index of the checkpoint in the batch, or None for success) and the error kind."""
        event = self._event(shard, batch)
        context = LocalLambdaContext(function_name=self.function_name, invoked_function_arn=self.function_arn)
        self.stats.invocations += 1
        try:
            response = self.function(event, context)
        except Exception as error:
            self.stats.function_errors += 1
            log.warning(
                "function error on %s [%s..%s]: %r",
                shard.shard_id,
                batch[0].sequence_number,
                batch[-1].sequence_number,
                error,
            )
            return 0, "Unhandled"
        if not self.config.report_batch_item_failures or not isinstance(response, Mapping):
            return None, None
        failures = response.get("batchItemFailures") or []
        if not failures:
            return None, None
        self.stats.partial_failures += 1
        positions = {entry.sequence_number: index for index, entry in enumerate(batch)}
        identifiers = [failure.get("itemIdentifier") if isinstance(failure, Mapping) else None for failure in failures]
        if any(identifier not in positions for identifier in identifiers):
            return 0, None  # AWS treats an empty, null or unknown identifier as a failure of the whole batch
        return min(positions[str(identifier)] for identifier in identifiers), None

    def _deliver(self, shard: _Shard, batch: list[KinesisEntry]) -> int:
        checkpoint, error = self._invoke(shard, batch)
        if checkpoint is None:
            self._settle(shard, len(batch))
            return len(batch)
        if error and self.config.bisect_batch_on_function_error and len(batch) > 1:
            half = len(batch) // 2
            shard.splits[:1] = [half, len(batch) - half]
            shard.attempts = 0
            self.stats.bisections += 1
            return 0
        settled = 0
        if checkpoint > 0:  # records before the lowest failure are done
            self._settle(shard, checkpoint, keep_split=True)
            settled = checkpoint
            shard.attempts = 0
        shard.attempts += 1
        shard.last_error = error
        if 0 <= self.config.max_retry_attempts < shard.attempts:
            remaining = batch[checkpoint:]
            self._discard(shard, remaining, "RetryAttemptsExhausted")
            return settled + len(remaining)
        shard.not_before = time.monotonic() + self.config.backoff(shard.attempts)
        return settled

    def _settle(self, shard: _Shard, count: int, *, keep_split: bool = False) -> None:
        del shard.pending[:count]
        self.stats.records_checkpointed += count
        self._advance(shard, count, keep_split=keep_split)

    def _advance(self, shard: _Shard, count: int, *, keep_split: bool = False) -> None:
        if shard.splits:
            shard.splits[0] -= count
            if shard.splits[0] <= 0 or not keep_split:
                shard.splits.pop(0)
        if not keep_split:
            shard.attempts = 0
            shard.last_error = None
            shard.waiting_since = time.monotonic() if shard.pending else None

    def _discard(self, shard: _Shard, batch: Sequence[KinesisEntry], condition: str) -> None:
        now = time.time()
        record = on_failure_record(
            batch,
            shard_id=shard.shard_id,
            stream_arn=self.stream_arn,
            function_arn=self.function_arn,
            condition=condition,
            invoke_count=shard.attempts,
            function_error=shard.last_error,
            payload=self._event(shard, batch),
            timestamp=now,
        )
        log.warning("discarding %d records of %s (%s)", len(batch), shard.shard_id, condition)
        if self.on_failure_bucket:
            # Written before the records leave ``pending``: if this PUT fails, the poll fails and the records stay
            # pending, so none is dropped without its on-failure record.
            key = failure_object_key(self.uuid, shard.shard_id, datetime.fromtimestamp(now, tz=UTC))
            self._s3.put_object(
                Bucket=self.on_failure_bucket,
                Key=key,
                Body=json.dumps(record).encode("utf-8"),
                ContentType="application/json",
            )
            self.failure_keys.append(key)
        self.failure_records.append(record)
        self.stats.failure_messages += 1
        self.stats.records_discarded += len(batch)
        del shard.pending[: len(batch)]
        self._advance(shard, len(batch))
