"""Exactly-once rows under duplicates, partial S3 failures, replays from the reported point and bisected retries."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from pipeline.batch import decode_strict
from pipeline.columnar import decode_batch
from pipeline.config import Settings
from pipeline.exceptions import WriteError
from pipeline.processor import StreamProcessor
from pipeline.writer import MemoryObjectStore
from sandbox.changes import Change, DemandGenerator, changes_event
from tests.pipeline.conftest import invocation_logs, list_keys, read_quarantine, read_rows


def midnight_event(count: int = 300, seed: int = 3) -> dict[str, Any]:
    """Changes on both sides of midnight UTC: two partitions, hour=23 then hour=00."""
    generator = DemandGenerator(seed=seed, start=datetime(2026, 11, 28, 23, 59, 55, tzinfo=UTC))
    return changes_event(list(generator.changes(count)))


def spread_changes(count: int, minutes: float, seed: int = 9) -> list[Change]:
    """Changes ``minutes`` apart, so a batch spans many hourly partitions."""
    start = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    changes = list(DemandGenerator(seed=seed).changes(count))
    return [
        dataclasses.replace(change, time=start + timedelta(minutes=minutes * i)) for i, change in enumerate(changes)
    ]


def sub_event(event: dict[str, Any], start: int, stop: int | None = None) -> dict[str, Any]:
    return {"Records": event["Records"][start:stop]}


def position_of(event: dict[str, Any], sequence: str) -> int:
    return [record["kinesis"]["sequenceNumber"] for record in event["Records"]].index(sequence)


def fail_puts(s3: Any, monkeypatch: pytest.MonkeyPatch, marker: str) -> list[str]:
    """Make the moto client's put_object fail for keys containing ``marker``; returns the keys refused."""
    refused: list[str] = []
    put = s3.put_object

    def flaky_put(**kwargs: Any) -> Any:
        if marker in kwargs["Key"]:
            refused.append(kwargs["Key"])
            raise ClientError(
                {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "PutObject"
            )
        return put(**kwargs)

    monkeypatch.setattr(s3, "put_object", flaky_put)
    return refused


def assert_exactly_once(s3: Any, event: dict[str, Any]) -> None:
    rows = read_rows(s3)
    counts = Counter(row["sequence_number"] for row in rows)
    assert counts == Counter(record["kinesis"]["sequenceNumber"] for record in event["Records"])


def test_s3_failing_for_one_partition_reports_its_first_record_and_a_replay_lands_each_row_once(
    handler_module, s3, monkeypatch
):
    # GIVEN a batch over two partitions, and S3 refusing writes to the second one
    event = midnight_event()
    refused = fail_puts(s3, monkeypatch, "/hour=00/")
    # WHEN the handler runs
    response = handler_module.handler(event, None)
    # THEN it reports the first record of the hour=00 run, and only hour=23 rows are written
    hours = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
    rows_23 = read_rows(s3)
    assert {row["change_time"].hour for row in rows_23} == {23}
    (failure,) = response["batchItemFailures"]
    failed_at = position_of(event, failure["itemIdentifier"])
    assert failed_at == len(rows_23)
    assert refused
    assert failure["itemIdentifier"] == hours[len(rows_23)]
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    assert (log["rows_written"], log["records_failed"]) == (len(rows_23), len(hours) - len(rows_23))
    assert log["failure_sequence_number"] == failure["itemIdentifier"]
    # WHEN S3 recovers and Lambda re-sends from the reported record on
    monkeypatch.undo()
    handler_module.processor.store.client = s3
    assert handler_module.handler(sub_event(event, failed_at), None) == {"batchItemFailures": []}
    # THEN every change is exactly one row
    assert_exactly_once(s3, event)
    assert len(list_keys(s3, "demand/events/")) == 2


def test_s3_failing_for_the_first_partition_writes_nothing_and_reports_the_first_record(
    handler_module, s3, monkeypatch
):
    event = midnight_event()
    fail_puts(s3, monkeypatch, "/hour=23/")
    response = handler_module.handler(event, None)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]}
    assert list_keys(s3) == []
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    assert (log["rows_written"], log["records_quarantined"], log["records_failed"]) == (0, 0, 300)


def test_a_failed_quarantine_write_is_not_durable_and_rows_after_it_are_not_duplicated(handler_module, s3, monkeypatch):
    # GIVEN hour=23 rows, a poison record, more hour=23 rows, then hour=00 rows (the trap: one partition on both
    # sides of the failure point), and S3 refusing the quarantine write
    event = midnight_event(200)
    poison_at = 40
    event["Records"][poison_at]["kinesis"]["data"] = base64.b64encode(b"{not json").decode()
    fail_puts(s3, monkeypatch, "quarantine/")
    # WHEN the handler runs
    response = handler_module.handler(event, None)
    # THEN it reports the poison record, and the rows before it are the only ones written
    poison_sequence = event["Records"][poison_at]["kinesis"]["sequenceNumber"]
    assert response == {"batchItemFailures": [{"itemIdentifier": poison_sequence}]}
    assert len(read_rows(s3)) == poison_at
    # WHEN Lambda re-sends from there with S3 healthy
    monkeypatch.undo()
    handler_module.processor.store.client = s3
    assert handler_module.handler(sub_event(event, poison_at), None) == {"batchItemFailures": []}
    # THEN every good record is one row, the poison one is one quarantine line
    rows = read_rows(s3)
    assert Counter(row["sequence_number"] for row in rows) == Counter(
        record["kinesis"]["sequenceNumber"] for index, record in enumerate(event["Records"]) if index != poison_at
    )
    assert [line["sequence_number"] for line in read_quarantine(s3)] == [poison_sequence]


def test_a_crash_after_writing_then_a_bisected_retry_lands_each_row_once(handler_module, s3, monkeypatch):
    # GIVEN an invocation that wrote all its objects and then crashed (so Lambda will bisect the batch)
    event = midnight_event(300)

    def crash(result: Any) -> None:
        raise RuntimeError("out of time")

    monkeypatch.setattr(handler_module, "_publish", crash)
    with pytest.raises(RuntimeError):
        handler_module.handler(event, None)
    assert len(read_rows(s3)) == 300
    monkeypatch.undo()
    handler_module.processor.store.client = s3
    # WHEN Lambda retries the two halves, in order
    for start, stop in ((0, 150), (150, None)):
        assert handler_module.handler(sub_event(event, start, stop), None) == {"batchItemFailures": []}
    # THEN the first half rewrote the first object with fewer rows and each change is one row
    assert_exactly_once(s3, event)


@pytest.mark.parametrize("retry_size", [5, 60, None], ids=["smaller-retry", "bisected-retry", "same-retry"])
def test_a_replay_in_a_different_batch_size_lands_each_row_once(handler_module, s3, monkeypatch, retry_size):
    # GIVEN a failure in the second partition reported at s
    event = midnight_event(300)
    fail_puts(s3, monkeypatch, "/hour=00/")
    (failure,) = handler_module.handler(event, None)["batchItemFailures"]
    failed_at = position_of(event, failure["itemIdentifier"])
    monkeypatch.undo()
    handler_module.processor.store.client = s3
    # WHEN Lambda re-sends from s in batches of another size until the shard is drained
    position = failed_at
    while position < len(event["Records"]):
        stop = None if retry_size is None else position + retry_size
        assert handler_module.handler(sub_event(event, position, stop), None) == {"batchItemFailures": []}
        position = len(event["Records"]) if stop is None else stop
    # THEN each change is exactly one row
    assert_exactly_once(s3, event)


def test_a_larger_retry_that_also_carries_newer_records_lands_each_row_once(handler_module, s3, monkeypatch):
    # GIVEN a first batch of 200 records out of 400, failing in its second partition
    event = midnight_event(400)
    fail_puts(s3, monkeypatch, "/hour=00/")
    (failure,) = handler_module.handler(sub_event(event, 0, 200), None)["batchItemFailures"]
    failed_at = position_of(event, failure["itemIdentifier"])
    monkeypatch.undo()
    handler_module.processor.store.client = s3
    # WHEN the retry from s also carries the next 200 records
    assert handler_module.handler(sub_event(event, failed_at), None) == {"batchItemFailures": []}
    # THEN each change is exactly one row
    assert_exactly_once(s3, event)


class FlakyStore(MemoryObjectStore):
    """A store that refuses a share of the writes, at random but reproducibly."""

    def __init__(self, rng: random.Random, failure_rate: float) -> None:
        super().__init__()
        self.rng = rng
        self.failure_rate = failure_rate

    def put(self, key: str, body: bytes, content_type: str) -> None:
        if self.rng.random() < self.failure_rate:
            raise WriteError(key, OSError("connection reset"))
        super().put(key, body, content_type)


def _simulate_event_source_mapping(event: dict[str, Any], processor: StreamProcessor, rng: random.Random) -> int:
    """Drive a shard through the processor the way Lambda does: batches of varying size, re-sent from the
    reported failure point, halved after a crash. Returns the number of invocations."""
    records = event["Records"]
    checkpoint, invocations = 0, 0
    pending_halves: list[tuple[int, int]] = []
    while checkpoint < len(records):
        invocations += 1
        if pending_halves:
            start, stop = pending_halves.pop(0)
        else:
            start, stop = checkpoint, min(len(records), checkpoint + rng.randint(1, 120))
        result = processor.process({"Records": records[start:stop]})
        assert result.rows_written + result.quarantined + result.failed == stop - start
        if result.failure_sequence is None and rng.random() < 0.15 and stop - start > 1:
            # a crash after the writes (timeout): nothing checkpointed, Lambda bisects this batch
            middle = (start + stop) // 2
            pending_halves = [(start, middle), (middle, stop)]
            continue
        if result.failure_sequence is not None:
            pending_halves = []
            checkpoint = start + [r["kinesis"]["sequenceNumber"] for r in records[start:stop]].index(
                result.failure_sequence
            )
        else:
            checkpoint = stop
    return invocations


@pytest.mark.parametrize("seed", range(12))
def test_random_failures_retries_and_bisections_leave_exactly_one_row_per_change(seed):
    # GIVEN a shard of changes spread over many hourly partitions, with a few poison records
    rng = random.Random(seed)
    event = changes_event(spread_changes(300, minutes=rng.choice((1.5, 7, 25)), seed=seed))
    for position in rng.sample(range(300), 4):
        event["Records"][position]["kinesis"]["data"] = "%%%"
    store = FlakyStore(rng, failure_rate=0.2)
    decoder = rng.choice((decode_batch, decode_strict))
    processor = StreamProcessor(Settings(output_bucket="lake"), store, decoder)
    # WHEN Lambda drives it with random write failures, re-sends and bisections
    invocations = _simulate_event_source_mapping(event, processor, rng)
    # THEN every good record is exactly one row and every poison record exactly one quarantine line
    rows: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for key, body in store.objects.items():
        if key.endswith(".parquet"):
            rows.update(pq.read_table(io.BytesIO(body)).column("sequence_number").to_pylist())
        else:
            lines.update(json.loads(line)["sequence_number"] for line in gzip.decompress(body).splitlines())
    poison = {r["kinesis"]["sequenceNumber"] for r in event["Records"] if r["kinesis"]["data"] == "%%%"}
    assert rows == Counter(r["kinesis"]["sequenceNumber"] for r in event["Records"] if r["kinesis"]["data"] != "%%%")
    assert lines == Counter(poison)
    assert invocations > 3
