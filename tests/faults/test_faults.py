"""Failures the pipeline must survive, injected into the local AWS; each ends with every change accounted for
(distinct rows + quarantined + failed = changes written). The raw layer is at least once: where a failure
re-sends records that were already durable, they are duplicated (one change_id, two rows), never lost."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ops.replay import in_process_invoker, replay_failures, replay_quarantine
from pipeline.writer import (
    QUARANTINE_CONTENT_TYPE,
    encode_quarantine,
    object_name,
    quarantine_partition_prefix,
    sequence_digest,
)
from sandbox.server import FaultRule
from sandbox.targets import LocalTarget
from tests.faults.conftest import FaultRun

pytestmark = pytest.mark.slow


def _payloads(event: dict[str, Any]) -> list[str]:
    return [base64.b64decode(record["kinesis"]["data"]).decode() for record in event["Records"]]


def test_s3_rejecting_writes_for_a_while_recovers_through_retries(run: FaultRun, local_target: LocalTarget):
    outputs = local_target.outputs
    before = local_target.pipeline.mapping.stats.partial_failures
    # 6 rejected PUTs (503 SlowDown): the handler's client gives up once (4 attempts), so the handler reports its
    # failure point and the mapping re-sends from there after a back-off; the client's own retries absorb the rest.
    rule = FaultRule("s3", method="PUT", path_contains=f"/{outputs.bucket_name}/{outputs.events_prefix}", count=6)
    with local_target.aws.faults(rule) as server:
        run.write(run.make(300))
        run.settle()
        assert server.fault_hits() == [6]
    assert local_target.pipeline.mapping.stats.partial_failures > before, "the handler reported a failure point"
    accounting = run.accounting()
    assert accounting.failed == 0
    assert accounting.total == len(run.changes)
    assert accounting.rows == accounting.distinct, "no duplicate row"


def test_a_crash_on_large_batches_is_isolated_by_bisection(run: FaultRun, local_target: LocalTarget):
    """Like a function that times out on big batches after writing part of them: bisect halves until it fits."""
    handler = local_target.pipeline.handler

    def crashes_on_large_batches(event: dict[str, Any], context: Any) -> Any:
        response = handler(event, context)  # objects are written, then the invocation fails
        if len(event["Records"]) > 30:
            raise TimeoutError("Task timed out after 120.00 seconds")
        return response

    stats = local_target.pipeline.mapping.stats
    errors, bisections = stats.function_errors, stats.bisections
    with local_target.pipeline.using(crashes_on_large_batches):
        run.write(run.make(240, seed=2))
        run.settle()
    assert stats.function_errors > errors
    assert stats.bisections > bisections
    accounting = run.accounting()
    assert accounting.failed == 0
    assert accounting.total == len(run.changes)
    # the halves are other sets of records than the crashed batch, so other objects: rows written before the
    # crash are kept (never overwritten by a subset) and written again, to be removed by change_id downstream
    assert accounting.rows > accounting.distinct, "the crashed batches' rows were kept, and re-sent in halves"


def test_a_record_that_always_fails_goes_to_the_failure_bucket_and_replays_after_the_fix(
    run: FaultRun, local_target: LocalTarget
):
    doomed = run.make(1, seed=99)  # a single INSERT of its own fan
    marker = str(doomed[0].keys["sk"])

    handler = local_target.pipeline.handler

    def fails_on_one_record(event: dict[str, Any], context: Any) -> Any:
        if any(marker in payload for payload in _payloads(event)):
            raise ValueError(f"cannot handle {marker}")
        return handler(event, context)

    pipe = local_target.pipeline
    config = replace(pipe.mapping.config, max_retry_attempts=2, backoff_first_seconds=0.02)
    messages_before = len(pipe.mapping.failure_records)
    with pipe.using(fails_on_one_record, config):
        run.write(run.make(60, seed=3) + doomed + run.make(60, seed=4))
        run.settle()
    [message] = pipe.mapping.failure_records[messages_before:]
    info = message["KinesisBatchInfo"]
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"] == local_target.outputs.stream_arn
    assert run.accounting().total == len(run.changes), "rows + quarantined + failed"
    assert run.accounting().failed == 1

    # The same record is an object in the failure bucket, holding the invocation event; after the fix (the real
    # handler), replay it from there: no read from the stream needed.
    outputs = local_target.outputs
    s3 = local_target.aws.client("s3")  # the operator's replay: the CI role may only list the failure bucket
    [key] = pipe.mapping.failure_keys[messages_before:]
    assert key.startswith(f"aws/lambda/{pipe.mapping.uuid}/{info['shardId']}/")
    stored = json.loads(s3.get_object(Bucket=outputs.failure_bucket_name, Key=key)["Body"].read())
    assert stored["KinesisBatchInfo"] == info
    [record] = stored["payload"]["Records"]
    assert record["kinesis"]["sequenceNumber"] == info["startSequenceNumber"]
    assert marker in base64.b64decode(record["kinesis"]["data"]).decode()
    report = replay_failures(
        outputs, in_process_invoker(outputs, "dev1"), s3=s3, bucket=outputs.failure_bucket_name, keys=[key]
    )
    assert report.kept == []
    assert (report.records, report.rows, report.failed) == (1, 1, {})
    accounting = run.accounting(failed=0)
    assert accounting.quarantined == 0
    assert accounting.distinct == len(run.changes), "the replayed record is now a row"
    assert accounting.rows == accounting.distinct, "no duplicate row"
    remaining = s3.list_objects_v2(Bucket=outputs.failure_bucket_name, Prefix=key).get("Contents", [])
    assert remaining == [], "the replayed failure object is deleted"


def test_quarantined_records_replay_through_the_fixed_handler(run: FaultRun, local_target: LocalTarget):
    """A faulty release quarantined every change of one market; after the fix, replay turns them into rows."""
    outputs = local_target.outputs
    s3 = local_target.aws.client("s3")  # the faulty release's writes and the operator's replay
    written_keys: list[str] = []

    handler = local_target.pipeline.handler

    def faulty_release(event: dict[str, Any], context: Any) -> Any:
        good: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        for record, payload in zip(event["Records"], _payloads(event), strict=True):
            (bad if '"market_id":{"N":"101"}' in payload else good).append(record)
        if bad:
            first = bad[0]
            lines = [
                {
                    "sequence_number": record["kinesis"]["sequenceNumber"],
                    "shard_id": record["eventID"].split(":")[0],
                    "partition_key": record["kinesis"]["partitionKey"],
                    "approximate_arrival_timestamp": record["kinesis"]["approximateArrivalTimestamp"],
                    "event_source_arn": record["eventSourceARN"],
                    "event_id": record["eventID"],
                    "error_kind": "schema",
                    "reason": "attribute 'market_id': 101 is not a known market (faulty release)",
                    "data": record["kinesis"]["data"],
                }
                for record in bad
            ]
            prefix = quarantine_partition_prefix(outputs.quarantine_prefix, datetime.now(UTC))
            name = object_name(
                first["eventSourceARN"],
                first["eventID"].split(":")[0],
                lines[0]["sequence_number"],
                sequence_digest(line["sequence_number"] for line in lines),
                ".jsonl.gz",
            )
            s3.put_object(
                Bucket=outputs.bucket_name,
                Key=prefix + name,
                Body=encode_quarantine(lines),
                ContentType=QUARANTINE_CONTENT_TYPE,
            )
            written_keys.append(prefix + name)
        return handler(dict(event, Records=good), context) if good else {"batchItemFailures": []}

    with local_target.pipeline.using(faulty_release):
        run.write(run.make(150, seed=5))
        run.settle()
    before = run.accounting()
    assert before.quarantined > 0, "the faulty release quarantined the market's changes"
    assert before.total == len(run.changes)

    report = replay_quarantine(outputs, in_process_invoker(outputs, "dev1"), s3=s3, keys=written_keys)
    assert report.kept == []
    assert sorted(report.removed) == sorted(set(written_keys))
    assert (report.records, report.rows, sum(report.quarantined.values()), report.failed) == (
        before.quarantined,
        before.quarantined,
        0,
        {},
    )
    after = run.accounting()
    assert after.quarantined == 0, "replayed objects leave the quarantine"
    assert after.distinct == len(run.changes)
    assert after.rows == after.distinct, "no duplicate row"
