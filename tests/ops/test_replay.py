"""Replay from the command line: on-failure messages left in the queue stay visible, wrong arguments are refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from ops import replay
from ops.outputs import StackOutputs
from ops.replay import replay_failure_messages
from tests.ops.conftest import REGION, outputs_values

STREAM = "prd3292-qa1-dmnd-table-stream"


@pytest.fixture
def failed_batch(aws: None) -> StackOutputs:
    """Three records on the stream and an on-failure message naming their range in the failure queue."""
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName=STREAM, ShardCount=1)
    stream_arn = kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["StreamARN"]
    sequences = [
        kinesis.put_record(StreamName=STREAM, Data=f'{{"n": {n}}}'.encode(), PartitionKey="pk")["SequenceNumber"]
        for n in range(3)
    ]
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="prd3292-qa1-failures")["QueueUrl"]
    message = {
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 6},
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": sequences[0],
            "endSequenceNumber": sequences[-1],
            "batchSize": 3,
            "streamArn": stream_arn,
        },
    }
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))
    return StackOutputs.from_mapping(outputs_values(failure_queue_url=queue_url), source="test")


def _replay(outputs: StackOutputs, invoke: Any, *, dry_run: bool = False) -> Any:
    return replay_failure_messages(
        outputs,
        invoke,
        kinesis=boto3.client("kinesis", region_name=REGION),
        sqs=boto3.client("sqs", region_name=REGION),
        s3=boto3.client("s3", region_name=REGION),
        dry_run=dry_run,
        region=REGION,
    )


def _visible_messages(outputs: StackOutputs) -> int:
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(
        QueueUrl=outputs.failure_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_a_replay_right_after_a_dry_run_finds_the_messages(failed_batch: StackOutputs):
    events: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        return {"batchItemFailures": []}

    dry = _replay(failed_batch, invoke, dry_run=True)
    assert (dry.records, dry.kept, events) == (3, [], [])
    assert "would replay 3 records" in dry.line()
    assert _visible_messages(failed_batch) == 1, "a dry run leaves the message visible in the queue"

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=failed_batch.bucket_name)
    report = _replay(failed_batch, invoke)
    # The function said "done" but wrote nothing: no record is a row, so the message stays for the next replay.
    assert (report.records, report.rows, len(report.failed), report.removed) == (3, 0, 3, [])
    assert len(events) == 1
    assert _visible_messages(failed_batch) == 1, "kept: none of its records is durable anywhere else"


def test_a_message_whose_range_failed_is_visible_again(failed_batch: StackOutputs):
    def fails(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("still broken")

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=failed_batch.bucket_name)
    report = _replay(failed_batch, fails)
    assert (report.records, report.rows, len(report.failed), len(report.kept)) == (3, 0, 3, 1)
    assert set(report.failed.values()) == {"the invocation failed: still broken"}
    assert _visible_messages(failed_batch) == 1, "kept for the next replay, not hidden for the visibility timeout"


def test_a_prefix_outside_the_quarantine_prefix_is_refused_without_a_traceback(aws, outputs_file, capsys):
    argv = ["quarantine", "qa1", "--outputs-file", str(outputs_file), "--prefix", "demand/events/", "--dry-run"]

    assert replay.main(argv) == 2

    err = capsys.readouterr().err
    assert err == (
        "python -m ops.replay: error: --prefix 'demand/events/' is not under the quarantine prefix "
        "'demand/quarantine/'\n"
    )


class _Payload:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def read(self) -> bytes:
        return self._body


class _LambdaClient:
    """Answers Invoke as Lambda does with LogType=Tail: the payload, the log tail, FunctionError on a crash."""

    def __init__(self, payload: dict[str, Any], error: str | None = None) -> None:
        self.payload, self.error = payload, error
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        response = {
            "Payload": _Payload(json.dumps(self.payload).encode()),
            "LogResult": base64.b64encode(b"START RequestId: 1\nbatch processed\nEND RequestId: 1\n").decode(),
        }
        return response | ({"FunctionError": self.error} if self.error else {})


def test_lambda_invoker_writes_the_log_tail_to_the_log_file(tmp_path):
    client = _LambdaClient({"batchItemFailures": [{"itemIdentifier": "7"}]})
    log = tmp_path / "replay.log"
    invoke = replay.lambda_invoker("arn:aws:lambda:us-east-1:123456789012:function:f:live", client, log)

    assert invoke({"Records": []}) == {"batchItemFailures": [{"itemIdentifier": "7"}]}

    assert client.calls[0]["LogType"] == "Tail"
    assert client.calls[0]["FunctionName"].endswith(":live")
    assert "batch processed" in log.read_text(encoding="utf-8")


def test_lambda_invoker_raises_on_a_function_error():
    client = _LambdaClient({"errorMessage": "boom"}, error="Unhandled")
    invoke = replay.lambda_invoker("arn:aws:lambda:us-east-1:123456789012:function:f:live", client)

    with pytest.raises(replay.ReplayError, match="failed: boom"):
        invoke({"Records": []})
