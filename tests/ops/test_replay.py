"""Replay from the command line: discarded batches in the failure bucket replay once, wrong arguments are refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from ops import replay
from ops.outputs import StackOutputs
from ops.replay import replay_failure_messages
from sandbox.changes import KinesisEntry, lambda_event
from tests.ops.conftest import REGION, outputs_values

STREAM = "prd3292-qa1-dmnd-table-stream"


FAILURE_BUCKET = outputs_values()["failure_bucket_name"]
FAILURE_KEY = (
    "aws/lambda/a1b2c3d4-0000-4000-8000-00000000e5f6/shardId-000000000000/2026/11/30/"
    "2026-11-30T10.15.02-0f1e2d3c-0000-4000-8000-000000000001"
)


def _on_failure_record(stream_arn: str, sequences: list[str], *, payload: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 6},
        "responseContext": {"statusCode": 200, "executedVersion": "1", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-30T10:15:02.000Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": sequences[0],
            "endSequenceNumber": sequences[-1],
            "batchSize": len(sequences),
            "streamArn": stream_arn,
        },
    }
    if payload:
        record["payload"] = lambda_event(
            [KinesisEntry(f'{{"n": {n}}}'.encode(), "pk", sequence, 1.0e9) for n, sequence in enumerate(sequences)],
            shard_id="shardId-000000000000",
            stream_arn=stream_arn,
            region=REGION,
        )
    return record


@pytest.fixture
def failed_batch(aws: None) -> StackOutputs:
    """Three records on the stream, and the failure bucket holding the discarded batch's invocation record."""
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName=STREAM, ShardCount=1)
    stream_arn = kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["StreamARN"]
    sequences = [
        kinesis.put_record(StreamName=STREAM, Data=f'{{"n": {n}}}'.encode(), PartitionKey="pk")["SequenceNumber"]
        for n in range(3)
    ]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=FAILURE_BUCKET)
    s3.put_object(Bucket=FAILURE_BUCKET, Key=FAILURE_KEY, Body=json.dumps(_on_failure_record(stream_arn, sequences)))
    return StackOutputs.from_mapping(outputs_values(stream_arn=stream_arn), source="test")


def _replay(outputs: StackOutputs, invoke: Any, *, dry_run: bool = False, messages: Any = None) -> Any:
    return replay_failure_messages(
        outputs,
        invoke,
        kinesis=boto3.client("kinesis", region_name=REGION),
        s3=boto3.client("s3", region_name=REGION),
        messages=messages,
        dry_run=dry_run,
        region=REGION,
    )


def _failure_keys() -> list[str]:
    listing = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=FAILURE_BUCKET)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_a_dry_run_keeps_the_failure_object_and_a_replay_sends_its_payload(failed_batch: StackOutputs):
    events: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        return {"batchItemFailures": []}

    dry = _replay(failed_batch, invoke, dry_run=True)
    assert (dry.records, dry.sources_failed, events) == (3, [], [])
    assert _failure_keys() == [FAILURE_KEY], "a dry run changes nothing"

    report = _replay(failed_batch, invoke)
    assert (report.records, len(report.sources_done), report.sources_failed) == (3, 1, [])
    [event] = events
    assert [base64.b64decode(record["kinesis"]["data"]) for record in event["Records"]] == [
        b'{"n": 0}',
        b'{"n": 1}',
        b'{"n": 2}',
    ]
    assert _failure_keys() == [], "the replayed object is deleted"


def test_a_batch_that_fails_again_keeps_its_failure_object(failed_batch: StackOutputs):
    def fails(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("still broken")

    report = _replay(failed_batch, fails)
    assert report.records == 0
    assert len(report.sources_failed) == 1
    assert _failure_keys() == [FAILURE_KEY], "kept for the next replay"


def test_a_record_without_payload_reads_its_range_from_the_stream(failed_batch: StackOutputs):
    """An on-failure record saved from an SQS destination (--message-file) names a range still on the stream."""
    kinesis = boto3.client("kinesis", region_name=REGION)
    shard = kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["Shards"][0]
    iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    sequences = [
        record["SequenceNumber"] for record in kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    ]
    events: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        return {"batchItemFailures": []}

    record = _on_failure_record(failed_batch.stream_arn, sequences, payload=False)
    report = _replay(failed_batch, invoke, messages=[(record, None)])
    assert (report.records, report.sources_failed) == (3, [])
    assert [r["kinesis"]["sequenceNumber"] for r in events[0]["Records"]] == sequences
    assert _failure_keys() == [FAILURE_KEY], "a record given on the command line deletes no object"


def test_a_prefix_outside_the_quarantine_prefix_is_refused_without_a_traceback(aws, outputs_file, capsys):
    argv = ["quarantine", "qa1", "--outputs-file", str(outputs_file), "--prefix", "demand/events/", "--dry-run"]

    assert replay.main(argv) == 2

    assert "replay: --prefix 'demand/events/' is not under the quarantine prefix" in capsys.readouterr().err
