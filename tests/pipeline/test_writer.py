"""The writer: keys and prefixes, Parquet types Athena reads, deterministic quarantine objects."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import pyarrow.parquet as pq

from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from pipeline.writer import (
    encode_parquet,
    encode_quarantine,
    object_name,
    partition_prefix,
    quarantine_partition_prefix,
)
from sandbox.changes import DemandGenerator, changes_event


def test_partition_prefixes_are_hive_style_utc():
    moment = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert partition_prefix("demand/events/", moment) == "demand/events/dt=2026-11-28/hour=23/"
    assert quarantine_partition_prefix("q/", moment) == "q/dt=2026-11-28/"


def test_object_names_are_deterministic_and_never_hidden_from_athena():
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/_hidden"
    name = object_name(arn, "shardId-000000000001", "4959", ".parquet")
    assert name == object_name(arn, "shardId-000000000001", "4959", ".parquet")
    assert name.endswith("-shardId-000000000001-4959.parquet")
    assert name[0] in "0123456789abcdef"
    assert name != object_name(arn.replace("_hidden", "other"), "shardId-000000000001", "4959", ".parquet")


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
