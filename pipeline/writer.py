"""The one writer module: object keys and partition prefixes, Parquet and quarantine encoding, the object store.

Object keys are pure functions of (prefix, partition, stream, shard, first sequence number of the run), so a
retried or re-sent run rewrites the same key; see ``pipeline.processor`` for why that gives exactly-once rows.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.exceptions import WriteError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "PARQUET_CONTENT_TYPE",
    "PARQUET_OPTIONS",
    "QUARANTINE_CONTENT_TYPE",
    "MemoryObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "encode_parquet",
    "encode_quarantine",
    "object_name",
    "parquet_writer",
    "partition_prefix",
    "quarantine_partition_prefix",
]

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
QUARANTINE_CONTENT_TYPE = "application/x-ndjson"
#: Fixed Parquet options: INT64 timestamps in the schema's own unit with isAdjustedToUTC (never INT96,
#: never nanoseconds), compliant nested lists and maps for Athena, zstd pages, statistics for pruning.
PARQUET_OPTIONS: Mapping[str, Any] = {
    "version": "2.6",
    "compression": "zstd",
    "use_dictionary": True,
    "write_statistics": True,
    "use_deprecated_int96_timestamps": False,
    "coerce_timestamps": None,
    "allow_truncated_timestamps": False,
    "use_compliant_nested_type": True,
}
# Columns that are (nearly) unique per row: dictionary pages would only cost time. Those whose min/max cannot
# prune a query (opaque ids, JSON text) get no statistics either.
_NO_DICTIONARY = frozenset({"fan_id", "change_id", "sequence_number", "change_time", "created_at", "updated_at"})
_NO_STATISTICS = frozenset({"fan_id", "change_id", "sequence_number", "extra_attributes", "attributes"})


def _column_options(schema: pa.Schema) -> dict[str, Any]:
    return {
        "use_dictionary": [name for name in schema.names if name not in _NO_DICTIONARY],
        "write_statistics": [name for name in schema.names if name not in _NO_STATISTICS],
    }


def partition_prefix(prefix: str, hour_start: datetime) -> str:
    """``<prefix>dt=YYYY-MM-DD/hour=HH/`` for the UTC hour a change falls in."""
    moment = hour_start.astimezone(UTC)
    return f"{prefix}dt={moment:%Y-%m-%d}/hour={moment:%H}/"


def quarantine_partition_prefix(prefix: str, moment: datetime) -> str:
    """``<prefix>dt=YYYY-MM-DD/`` for the UTC day a quarantined record arrived on the stream."""
    return f"{prefix}dt={moment.astimezone(UTC):%Y-%m-%d}/"


def object_name(stream_arn: str, shard_id: str, first_sequence: str, suffix: str) -> str:
    """``<stream tag>-<shard id>-<first sequence number><suffix>``: deterministic for a run of records.

    The stream tag (8 hex digits of the stream ARN's SHA-256) keeps two streams with equal shard ids apart, and
    starting with a hex digit means the name never begins with ``_`` or ``.``, which Athena would skip.
    """
    tag = hashlib.sha256(stream_arn.encode("utf-8")).hexdigest()[:8]
    return f"{tag}-{shard_id}-{first_sequence}{suffix}"


@contextmanager
def parquet_writer(sink: Any, schema: pa.Schema, *, page_index: bool = False) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer with the fixed options, closed in ``finally`` whatever happens.

    ``page_index`` adds the column and offset indexes (page-level min/max), worth it for the large compacted
    objects whose row groups hold many pages; the stream handler's small objects go without.
    """
    options = {**PARQUET_OPTIONS, **_column_options(schema), "write_page_index": page_index}
    writer = pq.ParquetWriter(sink, schema, **options)
    try:
        yield writer
    finally:
        writer.close()


def encode_parquet(table: pa.Table) -> bytes:
    """One Parquet object (a single row group) holding ``table``."""
    sink = io.BytesIO()
    with parquet_writer(sink, table.schema) as writer:
        writer.write_table(table, row_group_size=max(table.num_rows, 1))
    return sink.getvalue()


def encode_quarantine(lines: Sequence[Mapping[str, Any]]) -> bytes:
    """Gzipped JSON Lines, byte-identical for identical input (no timestamp in the gzip header)."""
    text = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


class ObjectStore(Protocol):
    """Where objects go: S3 in Lambda, memory in the benchmark."""

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Write ``body`` at ``key`` durably, or raise ``WriteError``."""


@dataclass
class S3ObjectStore:
    """Objects in one S3 bucket. The client is created on first use, from the environment (AWS_ENDPOINT_URL too)."""

    bucket: str
    client: S3Client | None = None

    def _client(self) -> S3Client:
        if self.client is None:
            import boto3  # noqa: PLC0415 - deferred: keeps the cold import of the handler cheap
            from botocore.config import Config  # noqa: PLC0415

            config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=30)
            self.client = boto3.client("s3", config=config)
        return self.client

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """PUT the object; any client error or exception becomes ``WriteError`` (not durable)."""
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except Exception as error:
            raise WriteError(key, error) from error


@dataclass
class MemoryObjectStore:
    """Objects kept in a dict: the handler's whole path minus the network."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Keep the object (overwriting, as S3 does)."""
        self.objects[key] = body
