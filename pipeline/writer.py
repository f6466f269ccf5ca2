"""The one writer module: object keys and partition prefixes, Parquet and quarantine encoding, the object store.

An object's key is a pure function of (prefix, partition, stream, shard, the sequence numbers it holds): the
same records give the same name, so objects are created write-once (a conditional PUT, ``If-None-Match: *``)
and "already exists" means "already durable". See ``pipeline.processor`` for the guarantee this gives.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    "ObjectName",
    "ObjectStore",
    "S3ObjectStore",
    "encode_parquet",
    "encode_quarantine",
    "object_name",
    "parquet_writer",
    "parse_object_name",
    "partition_prefix",
    "quarantine_partition_prefix",
    "sequence_digest",
    "stream_tag",
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
_NO_DICTIONARY = frozenset(
    {"fan_id", "change_id", "sequence_number", "change_time", "change_time_us", "created_at", "updated_at"}
)
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


def stream_tag(stream_arn: str) -> str:
    """8 hex digits of the stream ARN's SHA-256: keeps two streams with equal shard ids apart."""
    return hashlib.sha256(stream_arn.encode("utf-8")).hexdigest()[:8]


def sequence_digest(sequence_numbers: Iterable[str], *, ascending: bool = False) -> str:
    """12 hex digits of the SHA-256 of the sequence numbers, sorted as integers and joined with newlines.

    ``ascending=True`` says they already are in integer order (a batch's records are), which skips the sort.
    """
    ordered = list(sequence_numbers) if ascending else sorted(sequence_numbers, key=int)
    return hashlib.sha256("\n".join(ordered).encode("ascii")).hexdigest()[:12]


def object_name(stream_arn: str, shard_id: str, first_sequence: str, digest: str, suffix: str) -> str:
    """``<stream tag>-<shard id>-<first sequence number>-<digest><suffix>``: the name of one set of records.

    ``digest`` is ``sequence_digest`` of every sequence number the object holds, so two objects that start at
    the same record but hold different records never share a name. Starting with a hex digit, the name never
    begins with ``_`` or ``.``, which Athena would skip.
    """
    return f"{stream_tag(stream_arn)}-{shard_id}-{first_sequence}-{digest}{suffix}"


@dataclass(frozen=True)
class ObjectName:
    """The parts of an object name (``object_name``'s inverse)."""

    tag: str
    shard_id: str
    first_sequence: str
    digest: str
    suffix: str


_OBJECT_NAME = re.compile(
    r"^(?P<tag>[0-9a-f]{8})-(?P<shard_id>.+)-(?P<first_sequence>[0-9]{1,128})-(?P<digest>[0-9a-f]{12})"
    r"(?P<suffix>\.parquet|\.jsonl\.gz)$"
)


def parse_object_name(name: str) -> ObjectName:
    """Split an object's file name (the key's last segment) into its parts; shard ids hold hyphens, so the
    fixed-shape parts are read from the right. Raises ``ValueError`` naming the text when it is not one."""
    match = _OBJECT_NAME.match(name.rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(f"{name!r} is not an object name like '<8 hex>-<shard id>-<first sequence>-<12 hex>.parquet'")
    return ObjectName(**match.groupdict())


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
        """Write ``body`` at ``key`` durably (replacing what is there), or raise ``WriteError``."""

    def create(self, key: str, body: bytes, content_type: str, timeout: float | None = None) -> bool:
        """Create ``key`` only if it does not exist: True when created, False when it already existed (which is
        durable too, and never replaced). Raise ``WriteError`` when neither is known within ``timeout`` seconds."""


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


@dataclass
class S3ObjectStore:
    """Objects in one S3 bucket. The client is created on first use, from the environment (AWS_ENDPOINT_URL too)."""

    bucket: str
    client: S3Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def _client(self) -> S3Client:
        with self._lock:  # the writer pool's threads share one client (boto3 clients are thread-safe once made)
            if self.client is None:
                import boto3  # noqa: PLC0415 - deferred: keeps the cold import of the handler cheap
                from botocore.config import Config  # noqa: PLC0415

                config = Config(
                    retries={"mode": "standard", "max_attempts": 4},
                    connect_timeout=5,
                    read_timeout=30,
                    max_pool_connections=16,
                )
                self.client = boto3.client("s3", config=config)
            return self.client

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """PUT the object; any client error or exception becomes ``WriteError`` (not durable)."""
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except Exception as error:
            raise WriteError(key, error) from error

    def create(self, key: str, body: bytes, content_type: str, timeout: float | None = None) -> bool:
        """Conditional PUT (``If-None-Match: *``); 412 PreconditionFailed means the object already exists.

        ``timeout`` is enforced by the caller (the processor waits on the write with a deadline); botocore's own
        connect and read timeouts bound each attempt.
        """
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
        except Exception as error:
            if _error_code(error) in ("PreconditionFailed", "412"):
                return False
            # 409 ConditionalRequestConflict (a concurrent write of the same key) and everything else: not known
            # to be durable; the retry from the reported record finds the object, or writes it.
            raise WriteError(key, error) from error
        return True


@dataclass
class MemoryObjectStore:
    """Objects kept in a dict: the handler's whole path minus the network."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Keep the object (overwriting, as S3 does)."""
        self.objects[key] = body

    def create(self, key: str, body: bytes, content_type: str, timeout: float | None = None) -> bool:
        """Keep the object unless the key exists, as S3 does for ``If-None-Match: *``."""
        if key in self.objects:
            return False
        self.objects[key] = body
        return True
