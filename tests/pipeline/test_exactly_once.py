"""Write-once objects under duplicates, partial S3 failures, crashes, bisection, discards and re-deliveries.

The raw layer is at least once: no record that was ever written goes missing, and a record is either durable or
re-sent. After de-duplication by ``change_id`` per shard (what compaction does), every change appears once.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import io
import json
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from pipeline.batch import decode_strict
from pipeline.columnar import decode_batch
from pipeline.config import Settings
from pipeline.decode import parse_kinesis_records
from pipeline.exceptions import WriteError
from pipeline.processor import MAX_CONCURRENT_WRITES, StreamProcessor
from pipeline.writer import MemoryObjectStore, parse_object_name, sequence_digest
from sandbox.changes import Change, DemandGenerator, changes_event
from tests.pipeline.conftest import BUCKET, invocation_logs, list_keys, read_quarantine, read_rows


def midnight_event(count: int = 300, seed: int = 3) -> dict[str, Any]:
    """Changes on both sides of midnight UTC: two partitions, hour=23 then hour=00."""
    generator = DemandGenerator(seed=seed, start=datetime(2026, 11, 28, 23, 59, 55, tzinfo=UTC))
    return changes_event(list(generator.changes(count)))


def disordered_changes(count: int, rng: random.Random, seed: int) -> list[Change]:
    """Changes whose change times are not in sequence order: jittered around an hour boundary, or shuffled over
    three days; some changes are delivered twice by DynamoDB (same change, a later sequence number)."""
    changes = list(DemandGenerator(seed=seed).changes(count))
    if rng.random() < 0.5:
        start = datetime(2026, 11, 28, 23, 59, 50, tzinfo=UTC)
        times = [start + timedelta(seconds=index * 0.1 + rng.uniform(-1.5, 1.5)) for index in range(count)]
    else:  # shuffled over three days: two hours a day, around midnight (each hour is an object of its own)
        hours = [datetime(2026, 11, day, hour, tzinfo=UTC) for day in (26, 27, 28) for hour in (0, 23)]
        times = [rng.choice(hours) + timedelta(seconds=rng.uniform(0, 3600)) for _ in range(count)]
    changes = [dataclasses.replace(change, time=moment) for change, moment in zip(changes, times, strict=True)]
    for _ in range(count // 25):  # a change the stream carries twice
        position = rng.randrange(len(changes))
        changes.insert(rng.randrange(position, len(changes) + 1), changes[position])
    return changes


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


def heal(handler_module: Any, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    handler_module.processor.store.client = s3


def sequences_of(event: dict[str, Any], start: int = 0, stop: int | None = None) -> Counter[str]:
    return Counter(record["kinesis"]["sequenceNumber"] for record in event["Records"][start:stop])


def assert_exactly_once(s3: Any, event: dict[str, Any]) -> None:
    assert Counter(row["sequence_number"] for row in read_rows(s3)) == sequences_of(event)


def assert_once_after_deduplication(s3: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Every record at least once, and every change once per shard after de-duplication by change_id."""
    rows = read_rows(s3)
    assert set(Counter(row["sequence_number"] for row in rows)) == set(sequences_of(event))
    distinct = {(row["shard_id"], row["change_id"]): row["sequence_number"] for row in rows}
    assert len(distinct) == len(sequences_of(event))
    return rows


def test_s3_failing_for_one_partition_reports_its_first_record_and_a_replay_lands_each_row_once(
    handler_module, s3, monkeypatch
):
    # GIVEN a batch over two partitions, and S3 refusing writes to the second one
    event = midnight_event()
    refused = fail_puts(s3, monkeypatch, "/hour=00/")
    # WHEN the handler runs
    response = handler_module.handler(event, None)
    # THEN it reports the first record of the hour=00 object, and only hour=23 rows are written
    rows_23 = read_rows(s3)
    assert {row["change_time"].hour for row in rows_23} == {23}
    (failure,) = response["batchItemFailures"]
    failed_at = position_of(event, failure["itemIdentifier"])
    assert failed_at == len(rows_23)
    assert refused
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    assert (log["rows_written"], log["records_failed"], log["records_resent"]) == (
        failed_at,
        300 - failed_at,
        300 - failed_at,
    )
    assert log["failure_sequence_number"] == failure["itemIdentifier"]
    assert "SlowDown" in log["failure_reason"]
    # WHEN S3 recovers and Lambda re-sends from the reported record on
    heal(handler_module, s3, monkeypatch)
    assert handler_module.handler(sub_event(event, failed_at), None) == {"batchItemFailures": []}
    # THEN every change is exactly one row (nothing durable was re-sent)
    assert_exactly_once(s3, event)
    assert len(list_keys(s3, "demand/events/")) == 2


def test_s3_failing_for_the_first_partition_reports_the_first_record_and_the_retry_finds_the_rest_durable(
    handler_module, s3, monkeypatch
):
    # GIVEN S3 refusing the first partition's object
    event = midnight_event()
    fail_puts(s3, monkeypatch, "/hour=23/")
    # WHEN the handler runs
    response = handler_module.handler(event, None)
    # THEN the first record is reported; the hour=00 object, written concurrently, is durable
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]}
    (hour_00,) = list_keys(s3)
    assert "/hour=00/" in hour_00
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    hour_00_rows = len(read_rows(s3))
    # failed counts the records not durable; resent every record from the failure point on
    assert (log["rows_written"], log["records_quarantined"]) == (hour_00_rows, 0)
    assert (log["records_failed"], log["records_resent"]) == (300 - hour_00_rows, 300)
    # WHEN Lambda re-sends the same batch
    heal(handler_module, s3, monkeypatch)
    assert handler_module.handler(event, None) == {"batchItemFailures": []}
    # THEN the hour=00 object already exists under the same name (same records): no duplicate row
    _, log = invocation_logs(handler_module.log_stream.getvalue())
    assert (log["objects_written"], log["objects_already_present"]) == (1, 1)
    assert_exactly_once(s3, event)


def test_a_failed_quarantine_write_is_reported_and_the_retry_duplicates_but_never_loses(
    handler_module, s3, monkeypatch
):
    # GIVEN hour=23 rows, a poison record, more hour=23 rows, then hour=00 rows, and S3 refusing the quarantine
    event = midnight_event(200)
    poison_at = 40
    event["Records"][poison_at]["kinesis"]["data"] = base64.b64encode(b"{not json").decode()
    fail_puts(s3, monkeypatch, "quarantine/")
    # WHEN the handler runs
    response = handler_module.handler(event, None)
    # THEN it reports the poison record; every row is durable already
    poison_sequence = event["Records"][poison_at]["kinesis"]["sequenceNumber"]
    assert response == {"batchItemFailures": [{"itemIdentifier": poison_sequence}]}
    assert len(read_rows(s3)) == 199
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    assert (log["rows_written"], log["records_quarantined"], log["records_failed"]) == (199, 0, 1)
    assert log["records_resent"] == 200 - poison_at
    # WHEN Lambda re-sends from there with S3 healthy
    heal(handler_module, s3, monkeypatch)
    assert handler_module.handler(sub_event(event, poison_at), None) == {"batchItemFailures": []}
    # THEN the re-sent rows are duplicated (another set of records, another name), and the poison record is
    # one quarantine line; after de-duplication each change is one row
    rows = read_rows(s3)
    good = sequences_of(event) - Counter([poison_sequence])
    hour_00_at = min(index for index, row in enumerate(read_event_rows(event)) if row["change_time"].hour == 0)
    # hour=23 after the poison record is a new set of records; hour=00 is the same set, so the same name (412)
    assert Counter(row["sequence_number"] for row in rows) == good + sequences_of(event, poison_at + 1, hour_00_at + 1)
    assert len({row["change_id"] for row in rows}) == 199
    assert [line["sequence_number"] for line in read_quarantine(s3)] == [poison_sequence]


def test_a_crash_after_writing_then_a_bisected_retry_keeps_every_row(handler_module, s3, monkeypatch):
    # GIVEN an invocation that wrote all its objects and then crashed (so Lambda will bisect the batch)
    event = midnight_event(300)

    def crash(result: Any) -> None:
        raise RuntimeError("out of time")

    monkeypatch.setattr(handler_module, "_publish", crash)
    with pytest.raises(RuntimeError):
        handler_module.handler(event, None)
    assert len(read_rows(s3)) == 300
    heal(handler_module, s3, monkeypatch)
    # WHEN Lambda retries the two halves, in order
    for start, stop in ((0, 150), (150, None)):
        assert handler_module.handler(sub_event(event, start, stop), None) == {"batchItemFailures": []}
    # THEN nothing was overwritten: every record is there, each change once after de-duplication
    rows = assert_once_after_deduplication(s3, event)
    hour_23 = sum(1 for row in read_event_rows(event) if row["change_time"].hour == 23)
    # the first half's hour=23 object is the first batch's set again (same name: 412, no duplicate); the hour=00
    # records are split over the halves, two new sets of records: duplicates
    assert len(rows) == 300 + (300 - hour_23)
    assert len(list_keys(s3)) == 2 + 2


def test_a_shorter_retry_from_the_same_record_then_a_discard_loses_no_written_row(handler_module, s3, monkeypatch):
    """The failure this layout exists for: a bisected retry that starts at the same record used to overwrite the
    durable object with a subset; when the rest was then discarded, rows that had been written were gone."""
    # GIVEN a batch whose objects are all durable, then a crash
    event = midnight_event(300)
    monkeypatch.setattr(handler_module, "_publish", lambda result: (_ for _ in ()).throw(RuntimeError("timeout")))
    with pytest.raises(RuntimeError):
        handler_module.handler(event, None)
    first_keys = list_keys(s3)
    first_bodies = {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in first_keys}
    # WHEN Lambda retries the first half (it starts at the same record), which crashes too, and then gives up
    # on the batch (retries exhausted: the records go to the on-failure destination)
    with pytest.raises(RuntimeError):
        handler_module.handler(sub_event(event, 0, 150), None)
    # THEN every row of the first attempt is still there, in objects that were never replaced
    assert {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in first_keys} == first_bodies
    assert set(Counter(row["sequence_number"] for row in read_rows(s3))) == set(sequences_of(event))


@pytest.mark.parametrize("retry_size", [5, 60, None], ids=["smaller-retry", "bisected-retry", "same-retry"])
def test_a_replay_in_a_different_batch_size_lands_each_change_once_after_deduplication(
    handler_module, s3, monkeypatch, retry_size
):
    # GIVEN a failure in the second partition reported at s
    event = midnight_event(300)
    fail_puts(s3, monkeypatch, "/hour=00/")
    (failure,) = handler_module.handler(event, None)["batchItemFailures"]
    failed_at = position_of(event, failure["itemIdentifier"])
    heal(handler_module, s3, monkeypatch)
    # WHEN Lambda re-sends from s in batches of another size until the shard is drained
    position = failed_at
    while position < len(event["Records"]):
        stop = None if retry_size is None else position + retry_size
        assert handler_module.handler(sub_event(event, position, stop), None) == {"batchItemFailures": []}
        position = len(event["Records"]) if stop is None else stop
    # THEN each change is exactly one row: nothing before s was re-sent
    assert_exactly_once(s3, event)


def test_the_same_batch_delivered_twice_writes_each_object_once(handler_module, s3):
    event = midnight_event(300)
    for _ in range(2):
        assert handler_module.handler(event, None) == {"batchItemFailures": []}
    first, second = invocation_logs(handler_module.log_stream.getvalue())
    assert (first["objects_written"], first["objects_already_present"]) == (2, 0)
    assert (second["objects_written"], second["objects_already_present"]) == (0, 2)
    assert second["rows_written"] == 300
    assert second["bytes_written"] == 0
    assert_exactly_once(s3, event)


class SlowContext:
    """A Lambda context with ``remaining_ms`` left."""

    def __init__(self, remaining_ms: int) -> None:
        self.deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


class SlowStore(MemoryObjectStore):
    """S3 that answers when the test says: creates of keys containing ``slow`` wait until ``answer`` is set; with
    ``gather``, every create waits until that many run at once. Counts the writes running at once, and the keys
    whose create has returned. Every wait is bounded (a minute), so a wrong processor fails instead of hanging."""

    def __init__(self, slow: str = "", gather: int = 0) -> None:
        super().__init__()
        self.slow, self.gather = slow, gather
        self.answer = threading.Event()
        self.changed = threading.Condition()
        self.running = self.most_running = 0
        self.answered: list[str] = []

    def create(self, key: str, body: bytes, content_type: str, timeout: float | None = None) -> bool:
        with self.changed:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most_running >= self.gather, timeout=60)
        try:
            if self.slow and self.slow in key:
                self.answer.wait(timeout=60)
            created = super().create(key, body, content_type, timeout)
            self.answered.append(key)
            return created
        finally:
            with self.changed:
                self.running -= 1
                self.changed.notify_all()

    def wait_idle(self) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: not self.running, timeout=60)


def test_a_write_that_misses_the_invocation_deadline_is_reported_not_durable():
    # GIVEN S3 not answering the hour=00 write, and an invocation with 4 s left (2 s are kept back)
    event = midnight_event(300)
    store = SlowStore(slow="/hour=00/")
    processor = StreamProcessor(Settings(output_bucket="lake"), store, decode_batch)
    # WHEN the batch is processed
    result = processor.process(event, SlowContext(4000))
    # THEN the handler answers at its deadline, before S3 answers the hour=00 write (a handler that waited for it
    # would only return once that write had returned), reporting the first hour=00 record
    assert [key for key in store.answered if "/hour=00/" in key] == []
    hour_00_at = min(index for index, row in enumerate(read_event_rows(event)) if row["change_time"].hour == 0)
    assert result.failure_sequence == event["Records"][hour_00_at]["kinesis"]["sequenceNumber"]
    assert result.failure_reason is not None
    assert "got no answer within" in result.failure_reason
    assert (result.rows_written, result.failed) == (hour_00_at, 300 - hour_00_at)
    # the late write lands after the invocation answered: durable, but reported, so re-sent (a duplicate at worst)
    store.answer.set()
    store.wait_idle()
    assert len(store.objects) == 2


def read_event_rows(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows the strict path makes of ``event``, in record order."""
    rows: list[dict[str, Any]] = decode_strict(parse_kinesis_records(event), "MILLISECOND").rows.to_pylist()
    return rows


def test_the_objects_of_a_batch_are_written_concurrently_with_a_bounded_pool():
    # GIVEN a batch over three days (72 hour partitions), and S3 answering no write until eight run at once
    rng = random.Random(5)
    start = datetime(2026, 11, 26, tzinfo=UTC)
    changes = [
        dataclasses.replace(change, time=start + timedelta(seconds=rng.uniform(0, 3 * 86_400)))
        for change in DemandGenerator(seed=5).changes(2000)
    ]
    store = SlowStore(gather=MAX_CONCURRENT_WRITES)
    processor = StreamProcessor(Settings(output_bucket="lake"), store, decode_batch)
    # WHEN it is processed
    result = processor.process(changes_event(changes))
    # THEN one object per hour, written eight at a time (never more)
    assert len(store.objects) == result.objects_created == 72
    assert store.most_running == MAX_CONCURRENT_WRITES == 8


class FlakyStore(MemoryObjectStore):
    """S3 as a retry sees it, reproducibly whatever the thread order: a create fails (not durable), lands but
    fails to answer (durable, reported failed), or crashes the invocation. ``put`` overwrites, as S3 does, so a
    processor that used it would be caught replacing a durable object."""

    def __init__(self, seed: int, failure_rate: float) -> None:
        super().__init__()
        self.seed, self.failure_rate = seed, failure_rate
        self.crash_rate = 0.0
        self.attempts: Counter[str] = Counter()
        self.durable: dict[str, bytes] = {}  # every object that was ever durable, with its first body
        self.lock = threading.Lock()

    def put(self, key: str, body: bytes, content_type: str) -> None:
        super().put(key, body, content_type)
        self.durable.setdefault(key, body)

    def create(self, key: str, body: bytes, content_type: str, timeout: float | None = None) -> bool:
        with self.lock:
            self.attempts[key] += 1
            roll = random.Random(f"{self.seed}/{key}/{self.attempts[key]}").random()
            if roll < self.crash_rate:
                raise RuntimeError("Task timed out")
            if roll < self.failure_rate:
                raise WriteError(key, OSError("connection reset"))
            created = super().create(key, body, content_type, timeout)
            self.durable.setdefault(key, body)
            if roll < self.failure_rate * 1.3:  # landed, but the answer was lost
                raise WriteError(key, TimeoutError("read timeout"))
            return created


@dataclasses.dataclass
class Shard:
    """What the simulated event source mapping did to one shard."""

    invocations: int = 0
    crashes: int = 0
    partial_failures: int = 0
    duplicate_deliveries: int = 0
    rewinds: int = 0
    discarded: set[int] = dataclasses.field(default_factory=set)


def _simulate_event_source_mapping(
    event: dict[str, Any], processor: StreamProcessor, store: FlakyStore, rng: random.Random
) -> Shard:
    """Drive a shard the way Lambda does: batches of varying size from the checkpoint, re-sent from a reported
    failure point; after a crash, bisected, and a sub-batch that keeps crashing discarded (retries exhausted);
    now and then a batch delivered twice, or the shard re-read from an older checkpoint."""
    records = event["Records"]
    sequences = [record["kinesis"]["sequenceNumber"] for record in records]
    shard = Shard()
    checkpoint = 0
    pending: list[tuple[int, int, int]] = []  # bisected sub-batches: (start, stop, attempts)
    while checkpoint < len(records) or pending:
        shard.invocations += 1
        assert shard.invocations < 3000, "the shard does not drain"
        start, stop, attempts = (
            pending.pop(0) if pending else (checkpoint, min(len(records), checkpoint + rng.randint(1, 150)), 0)
        )
        store.crash_rate = 0.04 if rng.random() < 0.3 else 0.0
        try:
            result = processor.process({"Records": records[start:stop]})
            assert result.rows_written + result.quarantined + result.failed == result.received == stop - start
            assert result.resent == (
                stop - start - sequences[start:stop].index(result.failure_sequence) if result.failure_sequence else 0
            )
            if rng.random() < 0.1:
                raise RuntimeError("Task timed out after the writes")
        except RuntimeError:
            shard.crashes += 1
            attempts += 1
            if attempts > 2:  # retries exhausted: Lambda discards the sub-batch and moves on
                shard.discarded.update(range(start, stop))
                checkpoint = max(checkpoint, stop)
            elif stop - start > 1:
                middle = (start + stop) // 2
                pending[:0] = [(start, middle, attempts), (middle, stop, attempts)]
            else:
                pending.insert(0, (start, stop, attempts))
            continue
        if result.failure_sequence is not None:
            shard.partial_failures += 1
            pending = []
            checkpoint = start + sequences[start:stop].index(result.failure_sequence)
            continue
        if rng.random() < 0.05:  # the same batch delivered again
            shard.duplicate_deliveries += 1
            processor.process({"Records": records[start:stop]})
        checkpoint = max(checkpoint, stop)
        if not pending and rng.random() < 0.03:  # re-read from an older checkpoint
            shard.rewinds += 1
            checkpoint = rng.randint(0, checkpoint)
    return shard


SEEDS = range(24)
# The seeds' tests and the test over all seeds share simulated_shard's cache on one worker (make unit: loadgroup).
SIMULATED = pytest.mark.xdist_group("simulated_shards")


@functools.cache
def simulated_shard(seed: int) -> tuple[dict[str, Any], FlakyStore, Shard]:
    """A shard of changes whose change times are not in sequence order, some delivered twice by DynamoDB, with
    a few poison records, driven through the processor by the simulated event source mapping."""
    rng = random.Random(seed)
    event = changes_event(disordered_changes(200, rng, seed))
    for position in rng.sample(range(len(event["Records"])), 4):
        event["Records"][position]["kinesis"]["data"] = "%%%"
    store = FlakyStore(seed, failure_rate=0.15)
    processor = StreamProcessor(Settings(output_bucket="lake"), store, rng.choice((decode_batch, decode_strict)))
    return event, store, _simulate_event_source_mapping(event, processor, store, rng)


@SIMULATED
@pytest.mark.parametrize("seed", SEEDS)
def test_random_failures_crashes_discards_and_redeliveries_lose_no_written_record(seed):
    # GIVEN a shard driven with write failures, crashes, bisection, discards, duplicate deliveries and rewinds
    event, store, shard = simulated_shard(seed)
    records = event["Records"]
    # THEN no durable object was ever replaced, and the store holds every object that was ever durable
    assert store.objects == store.durable
    rows: list[tuple[str, str]] = []
    lines: set[str] = set()
    for key, body in store.objects.items():
        name = parse_object_name(key)
        if key.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(body))
            held = table.column("sequence_number").to_pylist()
            rows.extend(zip(held, table.column("change_id").to_pylist(), strict=True))
            hours = {moment.strftime("dt=%Y-%m-%d/hour=%H/") for moment in table.column("change_time").to_pylist()}
            assert hours == {key.split("/", 2)[2].rsplit("/", 1)[0] + "/"}
        else:
            held = [json.loads(line)["sequence_number"] for line in gzip.decompress(body).splitlines()]
            lines.update(held)
        # each object holds exactly the records its name says, in sequence order
        assert (name.first_sequence, name.digest) == (held[0], sequence_digest(held))
        assert held == sorted(held, key=int)
    # every record not discarded is in the raw layer at least once
    poison = {r["kinesis"]["sequenceNumber"] for r in records if r["kinesis"]["data"] == "%%%"}
    kept = {r["kinesis"]["sequenceNumber"] for index, r in enumerate(records) if index not in shard.discarded}
    written = {sequence for sequence, _ in rows}
    assert kept - poison <= written
    assert kept & poison <= lines
    assert not written & poison
    # after de-duplication by change_id (per shard: one here), every change appears once
    change_ids = dict(zip([r["kinesis"]["sequenceNumber"] for r in records], _change_ids(event), strict=True))
    assert all(change_ids[sequence] == change_id for sequence, change_id in rows)
    deduplicated = {change_id: sequence for sequence, change_id in rows}
    assert set(deduplicated) == {change_ids[sequence] for sequence in written}
    assert {change_ids[sequence] for sequence in kept - poison} <= set(deduplicated)


def _change_ids(event: dict[str, Any]) -> list[str | None]:
    ids: list[str | None] = []
    for record in event["Records"]:
        try:
            ids.append(json.loads(base64.b64decode(record["kinesis"]["data"], validate=True))["eventID"])
        except ValueError:
            ids.append(None)
    return ids


@SIMULATED
def test_the_simulation_exercises_every_kind_of_retry():
    """The seeds, together, crash, fail partially, discard, deliver twice, rewind and duplicate rows (some
    changes twice by DynamoDB, others by retries)."""
    totals: Counter[str] = Counter()
    for seed in SEEDS:
        event, store, shard = simulated_shard(seed)
        totals.update(
            crashes=shard.crashes,
            partial_failures=shard.partial_failures,
            duplicate_deliveries=shard.duplicate_deliveries,
            rewinds=shard.rewinds,
            discards=bool(shard.discarded),
            disordered=any(
                pq.read_table(io.BytesIO(body)).column("change_time").to_pylist()
                != sorted(pq.read_table(io.BytesIO(body)).column("change_time").to_pylist())
                for key, body in store.objects.items()
                if key.endswith(".parquet")
            ),
        )
        held = Counter(
            sequence
            for key, body in store.objects.items()
            if key.endswith(".parquet")
            for sequence in pq.read_table(io.BytesIO(body)).column("sequence_number").to_pylist()
        )
        totals.update(retry_duplicates=sum(count - 1 for count in held.values()))
        totals.update(stream_duplicates=len(_change_ids(event)) - len(set(_change_ids(event))))
    assert all(totals[kind] > 0 for kind in ("crashes", "partial_failures", "duplicate_deliveries", "rewinds")), totals
    assert all(totals[kind] > 0 for kind in ("discards", "disordered", "retry_duplicates", "stream_duplicates")), totals
