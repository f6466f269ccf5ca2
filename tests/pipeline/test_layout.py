"""Object layout independent of the order of change times: one object per hour partition and per quarantine day."""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.columnar import decode_batch
from pipeline.config import Settings
from pipeline.decode import parse_kinesis_records
from pipeline.processor import StreamProcessor, plan_units
from pipeline.writer import MemoryObjectStore, S3ObjectStore, parse_object_name, sequence_digest
from sandbox.changes import DemandGenerator, changes_event
from tests.pipeline.conftest import BUCKET

SETTINGS = Settings(output_bucket="lake")


def _event(order: str, count: int = 3000, seed: int = 11) -> dict[str, Any]:
    rng = random.Random(seed)
    changes = list(DemandGenerator(seed=seed, start=datetime(2026, 11, 28, 23, 58, 30, tzinfo=UTC)).changes(count))
    if order == "jittered":  # within 1.5 s of sequence order, across midnight
        changes = [
            dataclasses.replace(change, time=change.time + timedelta(seconds=rng.uniform(-1.5, 1.5)))
            for change in changes
        ]
    elif order == "shuffled":  # over three days, in no order
        start = datetime(2026, 11, 26, tzinfo=UTC)
        changes = [
            dataclasses.replace(change, time=start + timedelta(seconds=rng.uniform(0, 3 * 86_400)))
            for change in changes
        ]
    return changes_event(changes)


def _hours(event: dict[str, Any]) -> set[str]:
    rows = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows
    return {moment.strftime("dt=%Y-%m-%d/hour=%H") for moment in rows.column("change_time").to_pylist()}


@pytest.mark.parametrize("order", ["sorted", "jittered", "shuffled"])
def test_one_object_per_hour_partition_whatever_the_order_of_change_times(order):
    # GIVEN a batch whose change times are in order, jittered, or shuffled over three days
    event = _event(order)
    store = MemoryObjectStore()
    # WHEN it is processed
    result = StreamProcessor(SETTINGS, store, decode_batch).process(event)
    # THEN there is one object per hour its rows fall in, holding exactly that hour's rows in sequence order
    hours = _hours(event)
    assert len(store.objects) == len(hours) == result.objects_created
    assert {"sorted": 2, "jittered": 2, "shuffled": 72}[order] == len(hours)
    sequences = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
    seen: list[str] = []
    for key, body in store.objects.items():
        table = pq.read_table(io.BytesIO(body))
        held = table.column("sequence_number").to_pylist()
        assert held == sorted(held, key=int)
        assert {moment.strftime("dt=%Y-%m-%d/hour=%H") for moment in table.column("change_time").to_pylist()} == {
            key.split("/")[2] + "/" + key.split("/")[3]
        }
        name = parse_object_name(key)
        assert (name.first_sequence, name.digest) == (held[0], sequence_digest(held))
        seen.extend(held)
    assert sorted(seen, key=int) == sequences
    assert (result.rows_written, result.failed, result.failure_sequence) == (3000, 0, None)


def test_quarantined_records_make_one_object_per_arrival_day():
    # GIVEN poison records arriving on two days, between good records
    event = _event("shuffled", count=400)
    for position in (10, 50, 300, 310):
        event["Records"][position]["kinesis"]["data"] = "%%%"
        event["Records"][position]["kinesis"]["approximateArrivalTimestamp"] = (
            datetime(2026, 11, 28, 12, tzinfo=UTC) if position < 100 else datetime(2026, 11, 29, 12, tzinfo=UTC)
        ).timestamp()
    store = MemoryObjectStore()
    # WHEN it is processed
    result = StreamProcessor(SETTINGS, store, decode_batch).process(event)
    # THEN two quarantine objects, one per arrival day, each with its records in sequence order
    quarantine = {key: body for key, body in store.objects.items() if key.startswith("demand/quarantine/")}
    assert sorted(key.split("/")[2] for key in quarantine) == ["dt=2026-11-28", "dt=2026-11-29"]
    lines = {
        key.split("/")[2]: [json.loads(line)["sequence_number"] for line in gzip.decompress(body).splitlines()]
        for key, body in quarantine.items()
    }
    records = event["Records"]
    assert lines == {
        "dt=2026-11-28": [records[10]["kinesis"]["sequenceNumber"], records[50]["kinesis"]["sequenceNumber"]],
        "dt=2026-11-29": [records[300]["kinesis"]["sequenceNumber"], records[310]["kinesis"]["sequenceNumber"]],
    }
    assert (result.quarantined, result.rows_written, result.quarantine_kinds) == (4, 396, {"not_base64": 4})
    assert len(store.objects) == len(_hours(event)) + 2


def test_planning_is_a_function_of_the_records():
    # the same batch planned twice (a retry) names the same objects with the same rows
    event = _event("shuffled", count=500)
    records = parse_kinesis_records(event)
    first = plan_units(records, decode_batch(records, "MILLISECOND"), SETTINGS)
    second = plan_units(records, decode_batch(records, "MILLISECOND"), SETTINGS)
    assert [unit.key for unit in first] == [unit.key for unit in second]
    assert all(
        a.rows is not None and b.rows is not None and a.rows.equals(b.rows) for a, b in zip(first, second, strict=True)
    )
    # units are ordered by their first record, which is the failure point reported if a unit is not durable
    assert [unit.first_position for unit in first] == sorted(unit.first_position for unit in first)
    assert first[0].first_position == 0


def test_the_s3_store_creates_once_and_reads_412_as_already_durable(s3):
    store = S3ObjectStore(BUCKET, s3)
    assert store.create("demand/events/a.parquet", b"first", "application/octet-stream") is True
    assert store.create("demand/events/a.parquet", b"second", "application/octet-stream") is False
    assert s3.get_object(Bucket=BUCKET, Key="demand/events/a.parquet")["Body"].read() == b"first"


def test_the_benchmark_batches_are_out_of_order_as_described():
    from bench.layouts import _speed, live_like_event, shuffled_event  # noqa: PLC0415

    def times(event: dict[str, Any]) -> list[datetime]:
        rows = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows
        return list(rows.column("change_time").to_pylist())

    live_event = live_like_event(10_000, 7)  # the benchmark's size: it crosses midnight
    live = times(live_event)
    # jittered by at most 1.5 s each way around an increasing clock, so never more than 3 s back, and out of order
    assert live != sorted(live)
    assert max(earlier - later for earlier, later in itertools.pairwise(live)) < timedelta(seconds=3)
    assert len(_hours(live_event)) == 2
    shuffled = times(shuffled_event(2000, 7))
    assert shuffled != sorted(shuffled)
    assert len(_hours(shuffled_event(2000, 7))) == 72
    figures = _speed(shuffled_event(300, 7), repeat=1)
    assert figures["objects"] == figures["naive_objects"] == figures["hours"] > 50
    assert figures["speedup"] > 0
    assert figures["cpu_speedup"] > 0
