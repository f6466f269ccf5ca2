"""The local event source mapping honours Lambda's Kinesis semantics (batching, partial failures, bisect, retries)."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox.mapping import KinesisEventSourceMapping, MappingConfig

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/test"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:test:live"
FAILURE_BUCKET = "prd3292-qa1-us-east-1-demand-processor-failures"
MAPPING_UUID = "a1b2c3d4-0000-4000-8000-00000000e5f6"
# aws/lambda/<ESM UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>
FAILURE_KEY = re.compile(
    rf"^aws/lambda/{MAPPING_UUID}/shardId-000000000000/(\d{{4}})/(\d{{2}})/(\d{{2}})/"
    r"(\d{4})-(\d{2})-(\d{2})T\d{2}\.\d{2}\.\d{2}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
)


class FakeKinesis:
    """Shards as lists of records; iterators are (shard, position) strings."""

    def __init__(self, shards: dict[str, list[tuple[str, float]]]) -> None:
        self.shards = {
            shard_id: [
                {
                    "SequenceNumber": sequence,
                    "Data": f"record {sequence}".encode(),
                    "PartitionKey": "key",
                    "ApproximateArrivalTimestamp": datetime.fromtimestamp(arrival, tz=UTC),
                }
                for sequence, arrival in records
            ]
            for shard_id, records in shards.items()
        }

    def list_shards(self, StreamName: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter names
        return {"Shards": [{"ShardId": shard_id} for shard_id in self.shards]}

    def get_shard_iterator(self, StreamName: str, ShardId: str, ShardIteratorType: str) -> dict[str, Any]:  # noqa: N803
        return {"ShardIterator": f"{ShardId}|0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        shard_id, position = ShardIterator.split("|")
        start = int(position)
        records = self.shards[shard_id][start : start + Limit]
        return {"Records": records, "NextShardIterator": f"{shard_id}|{start + len(records)}"}


class FakeS3:
    """The failure bucket: the objects Lambda would PUT, by key (optionally failing the first ``fail`` PUTs)."""

    def __init__(self, fail: int = 0) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.buckets: list[str] = []
        self.fail = fail

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:  # noqa: N803
        if self.fail:
            self.fail -= 1
            raise ConnectionError("S3 is down")
        assert ContentType == "application/json"
        self.buckets.append(Bucket)
        self.objects[Key] = json.loads(Body)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.objects.values())


class Recorder:
    """A function that records every invocation's sequence numbers and answers through ``behaviour``."""

    def __init__(self, behaviour: Any = None) -> None:
        self.batches: list[list[str]] = []
        self.behaviour = behaviour

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        sequences = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
        self.batches.append(sequences)
        if self.behaviour is not None:
            return self.behaviour(sequences, len(self.batches))
        return {"batchItemFailures": []}

    def succeeded(self, failed_batches: set[int]) -> list[str]:
        return [seq for number, batch in enumerate(self.batches, 1) if number not in failed_batches for seq in batch]


def records(count: int, *, arrival: float | None = None) -> list[tuple[str, float]]:
    now = datetime.now(tz=UTC).timestamp() if arrival is None else arrival
    return [(str(1000 + index), now) for index in range(count)]


def make_mapping(function: Any, shard_records: list[tuple[str, float]], s3: FakeS3 | None = None, **config: Any):
    settings: dict[str, Any] = {
        "batch_size": 10,
        "batching_window_seconds": 0.0,
        "max_retry_attempts": 2,
        "backoff_first_seconds": 0.0,
    }
    settings.update(config)
    return KinesisEventSourceMapping(
        kinesis=FakeKinesis({"shardId-000000000000": shard_records}),
        s3=s3 if s3 is not None else FakeS3(),
        stream_name="test",
        stream_arn=STREAM_ARN,
        function=function,
        function_name="test",
        function_arn=FUNCTION_ARN,
        on_failure_bucket=FAILURE_BUCKET,
        mapping_uuid=MAPPING_UUID,
        config=MappingConfig(**settings),
    )


def drain(mapping: KinesisEventSourceMapping, rounds: int = 200) -> None:
    quiet = 0
    for _ in range(rounds):
        settled = mapping.poll()
        quiet = quiet + 1 if not settled and not mapping.pending_records() else 0
        if quiet == 2:
            return
    raise AssertionError(f"mapping did not drain: {mapping.pending_records()} pending")


def test_batches_hold_at_most_batch_size_records_in_shard_order():
    function = Recorder()
    mapping = make_mapping(function, records(25))
    drain(mapping)
    assert [len(batch) for batch in function.batches] == [10, 10, 5]
    assert [seq for batch in function.batches for seq in batch] == [str(1000 + i) for i in range(25)]
    assert mapping.stats.records_checkpointed == 25


def test_a_short_batch_waits_for_the_batching_window():
    function = Recorder()
    mapping = make_mapping(function, records(3), batching_window_seconds=30.0)
    mapping.poll()
    mapping.poll()
    assert function.batches == []
    with mapping._lock:
        mapping._shards[0].waiting_since = 0.0  # the window has passed
    mapping.poll()
    assert function.batches == [["1000", "1001", "1002"]]


def test_reported_failure_checkpoints_at_the_lowest_sequence_and_resends_from_there():
    def fail_once(sequences: list[str], call: int) -> dict[str, Any]:
        if call == 1:
            return {"batchItemFailures": [{"itemIdentifier": "1007"}, {"itemIdentifier": "1004"}]}
        return {"batchItemFailures": []}

    function = Recorder(fail_once)
    mapping = make_mapping(function, records(10))
    drain(mapping)
    assert function.batches == [[str(1000 + i) for i in range(10)], [str(1004 + i) for i in range(6)]]
    assert mapping.stats.records_checkpointed == 10
    assert mapping.stats.partial_failures == 1


def test_unknown_item_identifier_fails_the_whole_batch():
    def bad_identifier(sequences: list[str], call: int) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": ""}]} if call == 1 else {"batchItemFailures": []}

    function = Recorder(bad_identifier)
    mapping = make_mapping(function, records(4))
    drain(mapping)
    assert function.batches == [["1000", "1001", "1002", "1003"]] * 2


def test_bisect_isolates_a_crashing_record_and_retries_exhaust_to_the_failure_destination():
    poison = "1006"

    def crash_on_poison(sequences: list[str], call: int) -> dict[str, Any]:
        if poison in sequences:
            raise RuntimeError("boom")
        return {"batchItemFailures": []}

    function = Recorder(crash_on_poison)
    s3 = FakeS3()
    mapping = make_mapping(function, records(10), s3, max_retry_attempts=2)
    drain(mapping)
    succeeded = [seq for batch in function.batches if poison not in batch for seq in batch]
    assert sorted(succeeded) == sorted(str(1000 + i) for i in range(10) if str(1000 + i) != poison)
    assert len(succeeded) == 9, "every good record succeeded exactly once"
    assert function.batches.count([poison]) == 3, "the isolated record: first try plus two retries"
    assert mapping.stats.bisections >= 3
    [(key, message)] = s3.objects.items()
    assert s3.buckets == [FAILURE_BUCKET]
    assert mapping.failure_keys == [key]
    match = FAILURE_KEY.match(key)
    assert match, key
    assert match.group(1, 2, 3) == match.group(4, 5, 6), "the day folders repeat the object's date"
    assert set(message) == {"requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo", "payload"}
    # The S3 destination keeps the whole invocation event: the discarded record itself, not only its range.
    [record] = message["payload"]["Records"]
    assert record["kinesis"]["sequenceNumber"] == poison
    assert base64.b64decode(record["kinesis"]["data"]) == f"record {poison}".encode()
    assert record["eventSourceARN"] == STREAM_ARN
    assert record["eventID"].startswith("shardId-000000000000:")
    assert message["timestamp"].startswith(f"{match.group(4)}-{match.group(5)}-{match.group(6)}T")
    info = message["KinesisBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poison
    assert info["batchSize"] == 1
    assert info["shardId"] == "shardId-000000000000"
    assert info["streamArn"] == STREAM_ARN
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["functionArn"] == FUNCTION_ARN
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert mapping.stats.records_discarded == 1
    assert mapping.stats.records_checkpointed == 9


def test_without_bisect_the_whole_batch_is_retried_then_discarded():
    function = Recorder(lambda sequences, call: (_ for _ in ()).throw(RuntimeError("down")))
    s3 = FakeS3()
    mapping = make_mapping(function, records(4), s3, bisect_batch_on_function_error=False, max_retry_attempts=1)
    drain(mapping)
    assert function.batches == [["1000", "1001", "1002", "1003"]] * 2
    [message] = s3.messages
    assert [r["kinesis"]["sequenceNumber"] for r in message["payload"]["Records"]] == ["1000", "1001", "1002", "1003"]
    assert message["KinesisBatchInfo"]["startSequenceNumber"] == "1000"
    assert message["KinesisBatchInfo"]["endSequenceNumber"] == "1003"
    assert message["KinesisBatchInfo"]["batchSize"] == 4


def test_records_older_than_the_maximum_age_are_discarded_without_invoking():
    function = Recorder()
    s3 = FakeS3()
    old = datetime.now(tz=UTC).timestamp() - 7200
    mapping = make_mapping(function, records(3, arrival=old), s3, max_record_age_seconds=3600)
    drain(mapping)
    assert function.batches == []
    [message] = s3.messages
    assert len(message["payload"]["Records"]) == 3
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["KinesisBatchInfo"]["batchSize"] == 3


@pytest.mark.parametrize("attempts", [0, 3])
def test_retry_attempts_bound_the_invocations_of_a_failing_record(attempts: int):
    function = Recorder(lambda sequences, call: {"batchItemFailures": [{"itemIdentifier": sequences[0]}]})
    mapping = make_mapping(function, records(1), max_retry_attempts=attempts)
    drain(mapping)
    assert len(function.batches) == attempts + 1
    assert mapping.stats.records_discarded == 1


def test_a_discarded_batch_stays_pending_until_its_failure_object_is_written():
    function = Recorder(lambda sequences, call: (_ for _ in ()).throw(RuntimeError("down")))
    s3 = FakeS3(fail=1)
    mapping = make_mapping(function, records(2), s3, bisect_batch_on_function_error=False, max_retry_attempts=0)
    with pytest.raises(ConnectionError):
        mapping.poll()
    assert mapping.pending_records() == 2, "no record leaves the shard before its on-failure object is durable"
    assert mapping.stats.records_discarded == 0
    drain(mapping)
    [message] = s3.messages
    assert message["KinesisBatchInfo"]["batchSize"] == 2
    assert mapping.stats.records_discarded == 2


def test_a_batch_stops_before_its_event_passes_the_payload_limit():
    function = Recorder()
    per_record = 4 * 4 + 600  # "record 1000" is 11 bytes: 16 in base64, plus the event's own fields
    mapping = make_mapping(function, records(7), batch_size=10_000, max_payload_bytes=3 * per_record)
    drain(mapping)
    assert [len(batch) for batch in function.batches] == [3, 3, 1]
    assert mapping.stats.records_checkpointed == 7


def test_the_default_batch_is_lambdas_largest_and_six_megabytes_of_event():
    config = MappingConfig()
    assert (config.batch_size, config.max_payload_bytes) == (10_000, 6 * 1024 * 1024)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"starting_position": "EARLIEST"},
            "starting_position 'EARLIEST': expected TRIM_HORIZON, LATEST or AT_TIMESTAMP",
        ),
        ({"starting_position": "AT_TIMESTAMP"}, "starting_position_timestamp is required with AT_TIMESTAMP"),
        (
            {"starting_position": "LATEST", "starting_position_timestamp": datetime(2026, 11, 30, tzinfo=UTC)},
            "and only with it",
        ),
    ],
)
def test_a_starting_position_is_one_lambda_knows(settings: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        MappingConfig(**settings)
