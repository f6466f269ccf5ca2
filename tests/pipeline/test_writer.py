"""The writer: keys and prefixes, Parquet types Athena reads, deterministic quarantine objects."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from pipeline.writer import (
    MemoryObjectStore,
    ObjectName,
    encode_parquet,
    encode_quarantine,
    object_name,
    parse_object_name,
    partition_prefix,
    quarantine_partition_prefix,
    sequence_digest,
    stream_tag,
)
from sandbox.changes import DemandGenerator, changes_event


def test_partition_prefixes_are_hive_style_utc():
    moment = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert partition_prefix("demand/events/", moment) == "demand/events/dt=2026-11-28/hour=23/"
    assert quarantine_partition_prefix("q/", moment) == "q/dt=2026-11-28/"


def test_object_names_are_deterministic_and_never_hidden_from_athena():
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/_hidden"
    digest = sequence_digest(["4960", "4959", "10000"])
    name = object_name(arn, "shardId-000000000001", "4959", digest, ".parquet")
    assert name == object_name(arn, "shardId-000000000001", "4959", digest, ".parquet")
    assert name == f"{hashlib.sha256(arn.encode()).hexdigest()[:8]}-shardId-000000000001-4959-{digest}.parquet"
    assert name[0] in "0123456789abcdef"
    assert name != object_name(arn.replace("_hidden", "other"), "shardId-000000000001", "4959", digest, ".parquet")


def test_the_digest_is_of_the_sequence_numbers_sorted_as_integers():
    # sorted as integers, not as text: "10000" comes after "4960"
    expected = hashlib.sha256(b"4959\n4960\n10000").hexdigest()[:12]
    assert sequence_digest(["10000", "4960", "4959"]) == expected
    assert sequence_digest(["4959", "4960", "10000"], ascending=True) == expected
    # another set of records, even one starting at the same record, gets another digest
    assert sequence_digest(["4959", "4960"]) != expected
    assert len(expected) == 12


def test_object_names_parse_from_the_right_as_shard_ids_hold_hyphens():
    name = object_name("arn:aws:kinesis:x", "shardId-000000000001-b", "4959", "0123456789ab", ".jsonl.gz")
    parsed = parse_object_name("demand/quarantine/dt=2026-11-28/" + name)
    assert parsed == ObjectName(
        stream_tag("arn:aws:kinesis:x"), "shardId-000000000001-b", "4959", "0123456789ab", ".jsonl.gz"
    )
    for bad in ("e1fcb32f-shardId-1-4959.parquet", "ab-shardId-1-4959-0123456789ab.parquet", "x-compacted.parquet"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_object_name(bad)


def test_the_memory_store_creates_once_like_a_conditional_put():
    store = MemoryObjectStore()
    assert store.create("a", b"first", "text/plain") is True
    assert store.create("a", b"second", "text/plain") is False
    assert store.objects == {"a": b"first"}


def test_parquet_timestamps_are_int64_adjusted_to_utc_and_no_integer_is_unsigned():
    event = changes_event(list(DemandGenerator(seed=4).changes(50)))
    rows = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows
    metadata = pq.ParquetFile(io.BytesIO(encode_parquet(rows))).metadata
    columns = {metadata.schema.column(index).name: metadata.schema.column(index) for index in range(len(rows.schema))}
    for name, unit in (("created_at", "milliseconds"), ("updated_at", "milliseconds"), ("change_time", "microseconds")):
        assert columns[name].physical_type == "INT64"
        assert f"isAdjustedToUTC=true, timeUnit={unit}" in str(columns[name].logical_type)
    physical = {metadata.schema.column(index).physical_type for index in range(metadata.num_columns)}
    assert "INT96" not in physical
    assert "UINT" not in str(metadata.schema)
    assert metadata.num_row_groups == 1
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(io.BytesIO(encode_parquet(rows))).equals(rows)


def test_quarantine_objects_are_gzipped_json_lines_and_byte_identical_on_retry():
    lines = [{"sequence_number": "1", "reason": "zoë", "data": "eyJ9"}, {"sequence_number": "2", "reason": "x"}]
    body = encode_quarantine(lines)
    assert body == encode_quarantine(lines)
    assert [json.loads(line) for line in gzip.decompress(body).decode("utf-8").splitlines()] == lines
