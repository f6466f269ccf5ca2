"""Fixtures of the compaction tests: the local S3 server, a bucket per test, and objects written as the handler
writes them (rows decoded by the handler's own decoder, names per the object-key contract)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from botocore.config import Config

from pipeline.columnar import decode_batch
from pipeline.compactor import Compactor, S3CompactionStore
from pipeline.decode import parse_kinesis_records
from pipeline.writer import encode_parquet, partition_prefix
from sandbox.changes import FIRST_SEQUENCE, DemandGenerator, changes_event
from sandbox.server import MotoProcess

PREFIX = "demand/events/"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-dev1-dmnd-table-stream"
TAG = hashlib.sha256(STREAM_ARN.encode()).hexdigest()[:8]
HOUR = datetime(2026, 3, 31, 23, tzinfo=UTC)
SHARD = "shardId-000000000000"
OTHER_SHARD = "shardId-000000000001"


def generated_rows(count: int, *, hour: datetime = HOUR, shard_id: str = SHARD, seed: int = 3) -> pa.Table:
    """``count`` rows of one shard within ``hour``, through the handler's decoder, in sequence order."""
    generator = DemandGenerator(seed=seed, start=hour + timedelta(seconds=1))
    changes = list(generator.changes(count))
    assert changes[-1].time < hour + timedelta(hours=1), "generated changes spill out of the hour"
    event = changes_event(changes, shard_id=shard_id, stream_arn=STREAM_ARN, first_sequence=FIRST_SEQUENCE)
    decoded = decode_batch(parse_kinesis_records(event), "MILLISECOND")
    assert not decoded.quarantined
    return decoded.rows


def with_sequences(rows: pa.Table, sequences: Sequence[str]) -> pa.Table:
    index = rows.schema.get_field_index("sequence_number")
    return rows.set_column(index, rows.schema.field(index), pa.array(list(sequences), pa.string()))


def object_name(rows: pa.Table) -> str:
    """``<tag>-<shard>-<first seq>-<digest>.parquet`` (contract C1)."""
    sequences = sorted(int(value) for value in rows.column("sequence_number").to_pylist())
    shard = rows.column("shard_id")[0].as_py()
    digest = hashlib.sha256("\n".join(str(value) for value in sequences).encode()).hexdigest()[:12]
    return f"{TAG}-{shard}-{sequences[0]}-{digest}.parquet"


@dataclass
class LocalLake:
    """One bucket on the local S3 server."""

    client: Any
    bucket: str

    def store(self) -> S3CompactionStore:
        return S3CompactionStore(self.bucket, client=self.client)

    def compactor(self, store: Any = None, clock: Any = None) -> Compactor:
        compactor = Compactor(store or self.store(), PREFIX)
        if clock is not None:
            compactor.clock = clock
        return compactor

    def write(self, rows: pa.Table, hour: datetime = HOUR) -> str:
        """One stream-handler object (write-once, as the handler creates it)."""
        key = partition_prefix(PREFIX, hour) + object_name(rows)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=encode_parquet(rows), IfNoneMatch="*")
        return key

    def names(self, hour: datetime = HOUR) -> list[str]:
        prefix = partition_prefix(PREFIX, hour)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", []))

    def read(self, name: str, hour: datetime = HOUR) -> pa.Table:
        body = self.client.get_object(Bucket=self.bucket, Key=partition_prefix(PREFIX, hour) + name)["Body"].read()
        return pq.read_table(pa.BufferReader(body))

    def metadata(self, name: str, hour: datetime = HOUR) -> pq.FileMetaData:
        body = self.client.get_object(Bucket=self.bucket, Key=partition_prefix(PREFIX, hour) + name)["Body"].read()
        return pq.ParquetFile(pa.BufferReader(body)).metadata

    def rows(self, hour: datetime = HOUR) -> pa.Table:
        """Every row of the hour partition, as a query would read it."""
        tables = [self.read(name, hour) for name in self.names(hour) if not name.startswith("_")]
        return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def change_ids(table: pa.Table) -> list[str]:
    return sorted(table.column("change_id").to_pylist()) if table.num_rows else []


def sequence_of(table: pa.Table) -> dict[str, str]:
    return dict(zip(table.column("change_id").to_pylist(), table.column("sequence_number").to_pylist(), strict=True))


def is_sorted(table: pa.Table) -> bool:
    order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in ("event_id", "fan_id", "change_time")])
    return order.to_pylist() == list(range(table.num_rows))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


@pytest.fixture
def lake(s3_server: MotoProcess) -> LocalLake:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 2}, max_pool_connections=32),
    )
    bucket = f"compaction-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return LocalLake(client, bucket)
