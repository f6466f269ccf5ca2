"""Fixtures of the curator tests: the local AWS server (with Glue refusing stale table versions) and one Glue
catalog, both shared by the session; a bucket and a Glue database per test (state never leaks between tests), raw
objects written as the stream handler writes them, and a settable clock."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from botocore.config import Config

from curator.catalog import glue_catalog
from curator.curation import Curator, CuratorSettings
from curator.store import S3Store, s3_client
from pipeline.change_order import newer_order_key
from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from pipeline.writer import encode_parquet, partition_prefix
from sandbox.changes import FIRST_SEQUENCE, DemandGenerator, changes_event
from sandbox.server import MotoProcess

__all__ = [
    "HOUR",
    "OTHER_SHARD",
    "PREFIX",
    "Clock",
    "CuratedLake",
    "generated_rows",
    "latest_state",
    "object_name",
    "with_sequences",
]

REGION = "us-east-1"
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
class RawLake:
    """The raw layer of one bucket on the local S3 server: objects written as the stream handler writes them."""

    client: Any
    bucket: str

    def write(self, rows: pa.Table, hour: datetime = HOUR) -> str:
        """One stream-handler object (write-once, as the handler creates it)."""
        key = partition_prefix(PREFIX, hour) + object_name(rows)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=encode_parquet(rows), IfNoneMatch="*")
        return key

    def names(self, hour: datetime = HOUR) -> list[str]:
        prefix = partition_prefix(PREFIX, hour)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", []))


def change_ids(table: pa.Table) -> list[str]:
    return sorted(table.column("change_id").to_pylist()) if table.num_rows else []


@dataclass
class Clock:
    """A clock the test moves."""

    now: datetime = field(default_factory=lambda: HOUR + timedelta(hours=2))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class CuratedLake:
    """One bucket and one Glue database on the local AWS."""

    endpoint_url: str
    s3: Any
    glue: Any
    bucket: str
    database: str
    clock: Clock
    #: The session's catalog (building one costs a quarter of a second): tables are named with the database.
    shared_catalog: Any = None

    @property
    def settings(self) -> CuratorSettings:
        return CuratorSettings(bucket=self.bucket, raw_prefix=PREFIX, database=self.database)

    def catalog(self) -> Any:
        if self.shared_catalog is None:
            self.shared_catalog = self.new_catalog()
        return self.shared_catalog

    def new_catalog(self) -> Any:
        """A catalog of its own (for a test that patches or instruments one)."""
        return new_catalog(self.endpoint_url)

    def store(self) -> S3Store:
        return S3Store(self.bucket, client=self.s3)

    def curator(self, **overrides: Any) -> Curator:
        catalog = overrides.pop("catalog", None) or self.catalog()
        return Curator(catalog=catalog, store=self.store(), settings=self.settings, clock=self.clock, **overrides)

    def write(self, rows: pa.Table, hour: datetime = HOUR) -> str:
        """One stream-handler object, created write-once."""
        key = partition_prefix(PREFIX, hour) + object_name(rows)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=encode_parquet(rows), IfNoneMatch="*")
        return key

    def raw_keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=PREFIX)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def table(self, name: str) -> Any:
        return self.catalog().load_table((self.database, name))


def latest_state(changes: pa.Table) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Brute force: per (event, fan), the newest change by the contract's order (``newer_order_key``); keys whose
    newest change is a REMOVE are absent. Values: (change_id, status, quantity)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in changes.to_pylist():
        key = (row["event_id"], row["fan_id"])
        if key not in best or newer_order_key(row) > newer_order_key(best[key]):
            best[key] = row
    return {
        key: (row["change_id"], row["status"], row["quantity"]) for key, row in best.items() if row["op"] != "REMOVE"
    }


def state_of(registrations: pa.Table) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = registrations.to_pylist()
    state = {(row["event_id"], row["fan_id"]): (row["change_id"], row["status"], row["quantity"]) for row in rows}
    assert len(state) == len(rows), "registrations holds a key twice"
    return state


def is_sorted(table: pa.Table, keys: tuple[str, ...]) -> bool:
    order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in keys])
    return order.to_pylist() == list(range(table.num_rows))


def new_catalog(endpoint_url: str) -> Any:
    return glue_catalog(REGION, endpoint_url=endpoint_url, access_key_id="testing", secret_access_key="testing")


@pytest.fixture(scope="session")
def aws_server() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


@pytest.fixture(scope="session")
def session_catalog(aws_server: MotoProcess) -> Any:
    return new_catalog(aws_server.endpoint_url)


@pytest.fixture(scope="session")
def session_clients(aws_server: MotoProcess) -> tuple[Any, Any]:
    config = Config(retries={"mode": "standard", "max_attempts": 2}, max_pool_connections=32)
    options: dict[str, Any] = {
        "endpoint_url": aws_server.endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "config": config,
    }
    return s3_client(**options), boto3.client("glue", **options)


def new_lake(aws_server: MotoProcess, clients: tuple[Any, Any], catalog: Any) -> CuratedLake:
    """A fresh bucket and Glue database (names unique to the caller) on the session's server."""
    s3, glue = clients
    suffix = uuid.uuid4().hex[:12]
    bucket = f"curated-{suffix}"
    s3.create_bucket(Bucket=bucket)
    return CuratedLake(aws_server.endpoint_url, s3, glue, bucket, f"curated_{suffix}", Clock(), catalog)


@pytest.fixture
def lake(aws_server: MotoProcess, session_clients: tuple[Any, Any], session_catalog: Any) -> CuratedLake:
    return new_lake(aws_server, session_clients, session_catalog)
