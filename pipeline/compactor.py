"""Compaction of hour partitions: per shard and hour, one deduplicated, sorted Parquet object, committed safely.

Why no row is ever lost (the reasoning the tests check):

1. The compacted object of a shard-hour, ``<tag>-<shard>-compacted.parquet``, is only ever created with
   ``If-None-Match: *`` or replaced with ``If-Match: <the ETag this run read>``, and a replacement holds every
   row of the version it replaces. So every committed version holds the rows of every earlier version: a
   conflict (412/409, or the object gone) means another run got there first, and this run abandons the
   shard-hour without deleting anything.
2. Its Parquet footer records the inputs it covers (key and ETag of each stream-handler object whose rows it
   holds). That record is committed atomically with the rows, so there is no separate bookkeeping to lose.
3. An input is deleted only when the compacted object, as read in the same run, lists it with the ETag the
   listing shows, with a conditional ``DeleteObject`` (``If-Match`` that ETag), and only once the compacted
   object is ``delete_grace_minutes`` old, so that a query which listed the inputs can still read them.
   By 1., the rows stay in every later version, so the deletion never opens a gap.
4. A crash at any step leaves either nothing changed, or a committed compacted object next to inputs it
   covers (duplicates until a later run deletes them), never a gap.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.change_order import CHANGE_TIME_US, change_time_us_of
from pipeline.exceptions import PipelineError
from pipeline.schema import arrow_schema
from pipeline.writer import PARQUET_CONTENT_TYPE, parquet_writer, partition_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "COMPACTED_SUFFIX",
    "HOUR_FORMAT",
    "INPUTS_METADATA_KEY",
    "ROW_GROUP_ROWS",
    "SORT_KEYS",
    "CommitConflictError",
    "CompactionError",
    "CompactionStore",
    "Compactor",
    "MemoryCompactionStore",
    "ObjectGoneError",
    "RunResult",
    "S3CompactionStore",
    "ShardHour",
    "ShardHourResult",
    "StoredObject",
    "encode_compacted",
    "format_hour",
    "group_shard_hours",
    "merge_tables",
    "parse_hour",
    "parse_object_name",
    "read_covered_inputs",
]

COMPACTED_SUFFIX = "-compacted.parquet"
#: Key of the Parquet footer entry that lists the inputs a compacted object covers (JSON: [[key, etag], ...]).
INPUTS_METADATA_KEY = "dmd.compaction.inputs"
ROW_GROUP_ROWS = 1_048_576
#: Row order of a compacted object: each registration's changes together, oldest first (``pipeline.change_order``).
SORT_KEYS = ("event_id", "fan_id", CHANGE_TIME_US)
HOUR_FORMAT = "%Y-%m-%dT%H"
_HOUR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")
# Object names of the stream handler (C1), parsed from the right because shard ids contain hyphens. The name
# without a digest is the layout before write-once objects; it is still compacted.
_COMPACTED = re.compile(r"^(?P<tag>[0-9a-f]{8})-(?P<shard>.+)-compacted\.parquet$")
_RAW = re.compile(r"^(?P<tag>[0-9a-f]{8})-(?P<shard>.+)-\d+-[0-9a-f]{12}\.parquet$")
_RAW_BEFORE_DIGEST = re.compile(r"^(?P<tag>[0-9a-f]{8})-(?P<shard>.+)-\d+\.parquet$")
_SEQUENCE_DIGITS = 64  # Kinesis sequence numbers are decimal text of up to ~56 digits
_FOOTER_PROBE = 256 * 1024
_IO_THREADS = 16


class CompactionError(PipelineError):
    """A shard-hour cannot be compacted (an input that does not fit the contract); its objects are left as they are."""


class CommitConflictError(PipelineError):
    """Another run changed the compacted object first (412/409, or it is gone): this run abandons the shard-hour."""


class ObjectGoneError(PipelineError):
    """An object listed a moment ago is gone (another run deleted it after committing its rows)."""


@dataclass(frozen=True)
class StoredObject:
    """An object as listed or read: key, ETag (with its quotes, as S3 returns it), size, last-modified time."""

    key: str
    etag: str
    size: int = 0
    last_modified: datetime | None = None


class CompactionStore(Protocol):
    """The S3 operations compaction needs, under the events prefix only."""

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix``."""

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        """The whole object; ``ObjectGoneError`` if it does not exist."""

    def get_tail(self, key: str, length: int) -> tuple[bytes, StoredObject]:
        """The last ``length`` bytes (all of a smaller object); ``ObjectGoneError`` if it does not exist."""

    def put(self, key: str, body: bytes, *, if_match: str | None) -> str:
        """Create (``if_match`` None: ``If-None-Match: *``) or replace (``If-Match``); the new ETag.

        ``CommitConflictError`` when the condition fails."""

    def delete(self, key: str, etag: str) -> bool:
        """Delete ``key`` if its ETag is still ``etag``; False when it changed or is already gone."""


def _error_code(error: Exception) -> tuple[str, int]:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
_GONE_CODES = {"NoSuchKey", "404"}


@dataclass
class S3CompactionStore:
    """The compaction store on one S3 bucket; the client is created on first use (AWS_ENDPOINT_URL honoured)."""

    bucket: str
    client: S3Client | None = None

    def _client(self) -> S3Client:
        if self.client is None:
            import boto3  # noqa: PLC0415 - deferred: keeps the cold import cheap
            from botocore.config import Config  # noqa: PLC0415

            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=_IO_THREADS + 4,
            )
            self.client = boto3.client("s3", config=config)
        return self.client

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (paginated)."""
        found: list[StoredObject] = []
        for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(
                StoredObject(item["Key"], item["ETag"], int(item["Size"]), item["LastModified"])
                for item in page.get("Contents", [])
            )
        return found

    def _get(self, key: str, **extra: Any) -> tuple[bytes, StoredObject]:
        try:
            response = self._client().get_object(Bucket=self.bucket, Key=key, **extra)
        except Exception as error:
            code, status = _error_code(error)
            if code in _GONE_CODES or status == 404:
                raise ObjectGoneError(f"s3 object {key!r} is gone") from error
            raise
        body = response["Body"].read()
        return body, StoredObject(key, response["ETag"], int(response["ContentLength"]), response["LastModified"])

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        """The whole object."""
        return self._get(key)

    def get_tail(self, key: str, length: int) -> tuple[bytes, StoredObject]:
        """The last ``length`` bytes."""
        return self._get(key, Range=f"bytes=-{length}")

    def put(self, key: str, body: bytes, *, if_match: str | None) -> str:
        """Conditional PUT: create or replace the version that was read."""
        client = self._client()
        try:
            if if_match is None:
                response = client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType=PARQUET_CONTENT_TYPE, IfNoneMatch="*"
                )
            else:
                response = client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType=PARQUET_CONTENT_TYPE, IfMatch=if_match
                )
        except Exception as error:
            code, status = _error_code(error)
            if code in _CONFLICT_CODES or status in (404, 409, 412):
                raise CommitConflictError(f"s3 object {key!r} changed since it was read ({code or status})") from error
            raise
        return str(response["ETag"])

    def delete(self, key: str, etag: str) -> bool:
        """Conditional DeleteObject (``If-Match``)."""
        try:
            self._client().delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except Exception as error:
            code, status = _error_code(error)
            if code in _CONFLICT_CODES or status in (404, 409, 412):
                return False
            raise
        return True


@dataclass
class MemoryCompactionStore:
    """Objects kept in a dict, with S3's conditional semantics: the benchmark's store (no network)."""

    objects: dict[str, tuple[bytes, StoredObject]] = field(default_factory=dict)

    def add(self, key: str, body: bytes) -> StoredObject:
        """Create or overwrite ``key`` unconditionally (as a test or benchmark sets up a lake)."""
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        stored = StoredObject(key, f'"{digest}"', len(body), datetime.now(UTC))
        self.objects[key] = (body, stored)
        return stored

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix``, in key order."""
        return [stored for key, (_, stored) in sorted(self.objects.items()) if key.startswith(prefix)]

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        """The whole object."""
        if key not in self.objects:
            raise ObjectGoneError(f"object {key!r} is gone")
        return self.objects[key]

    def get_tail(self, key: str, length: int) -> tuple[bytes, StoredObject]:
        """The last ``length`` bytes."""
        body, stored = self.get(key)
        return body[-length:], stored

    def put(self, key: str, body: bytes, *, if_match: str | None) -> str:
        """Conditional create or replace."""
        current = self.objects.get(key)
        if (if_match is None and current is not None) or (
            if_match is not None and (current is None or current[1].etag != if_match)
        ):
            raise CommitConflictError(f"object {key!r} changed since it was read")
        return self.add(key, body).etag

    def delete(self, key: str, etag: str) -> bool:
        """Conditional delete."""
        current = self.objects.get(key)
        if current is None or current[1].etag != etag:
            return False
        del self.objects[key]
        return True


# -- names and hours --------------------------------------------------------------------------------------------
def parse_object_name(name: str) -> tuple[str, str, bool] | None:
    """``(stream tag, shard id, is compacted)`` of an events object name, or None for anything else."""
    for pattern, compacted in ((_COMPACTED, True), (_RAW, False), (_RAW_BEFORE_DIGEST, False)):
        match = pattern.match(name)
        if match:
            return match["tag"], match["shard"], compacted
    return None


def parse_hour(text: Any) -> datetime:
    """``YYYY-MM-DDTHH`` (UTC) -> the hour's start; ``ValueError`` naming the value otherwise."""
    if not isinstance(text, str) or not _HOUR.match(text):
        raise ValueError(f"hour {text!r} is not in the form YYYY-MM-DDTHH (UTC), e.g. '2026-03-31T23'")
    try:
        return datetime.strptime(text, HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"hour {text!r} is not a real date and hour (UTC)") from None


def format_hour(hour: datetime) -> str:
    """The hour's start as ``YYYY-MM-DDTHH``."""
    return hour.astimezone(UTC).strftime(HOUR_FORMAT)


@dataclass(frozen=True)
class ShardHour:
    """The objects of one stream shard in one hour partition: stream-handler objects and the compacted one."""

    hour: datetime
    prefix: str
    tag: str
    shard_id: str
    inputs: tuple[StoredObject, ...]
    compacted: StoredObject | None

    @property
    def output_key(self) -> str:
        return f"{self.prefix}{self.tag}-{self.shard_id}{COMPACTED_SUFFIX}"

    @property
    def objects(self) -> int:
        return len(self.inputs) + (self.compacted is not None)


def group_shard_hours(hour: datetime, prefix: str, listed: Iterable[StoredObject]) -> list[ShardHour]:
    """Group an hour partition's listing by stream tag and shard; names that are not ours are left out."""
    groups: dict[tuple[str, str], tuple[list[StoredObject], list[StoredObject]]] = {}
    for item in listed:
        name = item.key[len(prefix) :]
        if "/" in name or name.startswith(("_", ".")):
            continue  # bookkeeping, or something below the partition: not a table file of ours
        parsed = parse_object_name(name)
        if parsed is None:
            continue
        tag, shard, compacted = parsed
        inputs, outputs = groups.setdefault((tag, shard), ([], []))
        (outputs if compacted else inputs).append(item)
    return [
        ShardHour(hour, prefix, tag, shard, tuple(sorted(inputs, key=lambda o: o.key)), outputs[0] if outputs else None)
        for (tag, shard), (inputs, outputs) in sorted(groups.items())
    ]


# -- rows -------------------------------------------------------------------------------------------------------
def _conform(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: a column an older object lacks is null (as Athena shows it)."""
    unknown = [name for name in table.column_names if name not in schema.names]
    if unknown:
        raise CompactionError(
            f"{source} has column(s) {', '.join(unknown)} that the record contract does not know: "
            "compacting it would drop them"
        )
    columns = []
    for schema_field in schema:
        if schema_field.name in table.column_names:
            columns.append(table.column(schema_field.name).cast(schema_field.type))
        elif schema_field.name == CHANGE_TIME_US and "change_time" in table.column_names:
            # an object written before the column existed: its order column follows from its change time
            columns.append(change_time_us_of(table.column("change_time")).cast(schema_field.type))
        else:
            columns.append(pa.nulls(table.num_rows, schema_field.type))
    return pa.Table.from_arrays(columns, schema=_relaxed(schema, columns))


def _relaxed(schema: pa.Schema, columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Schema:
    """``schema``, with a non-null field made nullable where the rows hold nulls (a column older objects lack)."""
    fields = [
        schema_field.with_nullable(True) if not schema_field.nullable and column.null_count else schema_field
        for schema_field, column in zip(schema, columns, strict=True)
    ]
    return pa.schema(fields, metadata=schema.metadata)


def _combined(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """One table with one chunk per column, built a column at a time while the inputs are released: the rows
    exist about once, not twice. ``tables`` is emptied."""
    columns = pa.concat_tables(tables, promote_options="permissive").select(schema.names).columns
    tables.clear()
    combined: list[pa.Array] = []
    for index in range(len(columns)):
        combined.append(columns[index].combine_chunks())
        columns[index] = None
    return pa.Table.from_arrays(combined, schema=_relaxed(schema, combined))


def _first_of_each_change(rows: pa.Table) -> pa.Array | None:
    """Positions of the rows to keep, one per ``change_id`` (the lowest sequence number, then the lowest
    ``shard_id``: the copy rule of ``pipeline.change_order``); None if all are distinct.

    Duplicates are rare: they are found by hashing, and only their rows are sorted."""
    counts = rows.group_by("change_id", use_threads=False).aggregate([("change_id", "count")])
    if counts.num_rows == rows.num_rows:
        return None
    repeated = counts.filter(pc.greater(counts["change_id_count"], 1))["change_id"]
    is_repeated = pc.is_in(rows["change_id"], value_set=repeated)
    positions = pc.indices_nonzero(is_repeated)
    sequences = pc.take(rows["sequence_number"], positions)
    longest = pc.max(pc.utf8_length(sequences)).as_py()
    if longest > _SEQUENCE_DIGITS:
        raise CompactionError(f"a sequence number has {longest} digits; at most {_SEQUENCE_DIGITS} are expected")
    # Zero-padded decimal text orders as the integers do: the lowest sequence number of a change comes first.
    keys = pa.table(
        {
            "change_id": pc.take(rows["change_id"], positions),
            "sequence": pc.utf8_lpad(sequences, width=_SEQUENCE_DIGITS, padding="0"),
            "shard_id": pc.take(rows["shard_id"], positions),
        }
    )
    by_change = pc.sort_indices(
        keys, sort_keys=[("change_id", "ascending"), ("sequence", "ascending"), ("shard_id", "ascending")]
    )
    ordered = pc.take(keys["change_id"], by_change)
    first = pc.not_equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    winners = pc.take(positions, pc.filter(by_change, pa.concat_arrays([pa.array([True]), first.combine_chunks()])))
    singles = pc.indices_nonzero(pc.invert(is_repeated))
    return pa.concat_arrays([singles.cast(pa.uint64()), winners.cast(pa.uint64())])


def merge_tables(tables: list[pa.Table], schema: pa.Schema | None = None) -> tuple[pa.Table, pa.Array]:
    """Concatenate, keep one row per ``change_id`` (the lowest sequence number), order by ``SORT_KEYS``.

    Returns the concatenated rows and the indices of the kept rows in output order: the caller takes row groups
    one at a time, so that the sorted copy never has to exist whole. ``tables`` is emptied as it is consumed.
    """
    schema = schema or arrow_schema()
    if not tables:
        return schema.empty_table(), pa.array([], pa.uint64())
    rows = _combined(tables, schema)
    if rows.num_rows == 0:
        return rows, pa.array([], pa.uint64())
    keep = _first_of_each_change(rows)
    if keep is None:
        return rows, _sort_order(rows.select(list(SORT_KEYS)))
    return rows, pc.take(keep, _sort_order(rows.select(list(SORT_KEYS)).take(keep)))


def _sort_order(keys: pa.Table) -> pa.Array:
    """Indices that order ``keys`` by ``SORT_KEYS`` (a stable sort).

    The first key (event_id: a few hundred values an hour) is sorted as its rank among the distinct values, an
    integer; then each event's rows, gathered next to each other, are sorted by the other keys on their own. The
    order is the same as one sort by all the keys, at a fraction of the cost: the strings compared are close
    together in memory instead of spread over the whole hour."""
    first, *rest = SORT_KEYS
    encoded = pc.dictionary_encode(keys[first]).combine_chunks()
    ranks = pc.rank(encoded.dictionary, sort_keys="ascending").cast(pa.int32())
    row_ranks = pc.take(ranks, encoded.indices)
    by_first = pc.sort_indices(row_ranks)
    run_ends = pc.run_end_encode(pc.take(row_ranks, by_first)).run_ends.to_pylist()
    others = keys.select(rest).take(by_first).combine_chunks()
    pieces: list[pa.Array] = []
    start = 0
    for end in run_ends:
        local = pc.sort_indices(others.slice(start, end - start), sort_keys=[(name, "ascending") for name in rest])
        pieces.append(pc.take(by_first.slice(start, end - start), local))
        start = end
    return pa.concat_arrays(pieces) if pieces else pa.array([], pa.uint64())


def encode_compacted(rows: pa.Table, order: pa.Array, covered: Mapping[str, str]) -> bytes:
    """The compacted object: ``rows`` taken in ``order``, row groups of ``ROW_GROUP_ROWS``, page index on, and
    the covered inputs (key -> ETag) in the footer."""
    inputs = json.dumps(sorted([key, etag] for key, etag in covered.items()), separators=(",", ":"))
    schema = rows.schema.with_metadata({**(rows.schema.metadata or {}), INPUTS_METADATA_KEY: inputs})
    sink = io.BytesIO()
    with parquet_writer(sink, schema, page_index=True) as writer:
        for start in range(0, max(len(order), 1), ROW_GROUP_ROWS):
            group = rows.take(order.slice(start, ROW_GROUP_ROWS)).replace_schema_metadata(schema.metadata)
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
    return sink.getvalue()


def read_covered_inputs(metadata: pq.FileMetaData | None, key: str) -> dict[str, str]:
    """The inputs (key -> ETag) a compacted object's footer says it covers."""
    entries = (metadata.metadata or {}) if metadata is not None else {}
    raw = entries.get(INPUTS_METADATA_KEY.encode())
    if raw is None:
        raise CompactionError(f"compacted object {key!r} has no {INPUTS_METADATA_KEY!r} footer entry")
    return {str(item_key): str(etag) for item_key, etag in json.loads(raw)}


def _footer(store: CompactionStore, key: str) -> tuple[pq.FileMetaData, StoredObject]:
    """The footer of a Parquet object, read with one or two ranged GETs."""
    tail, read = store.get_tail(key, _FOOTER_PROBE)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise CompactionError(f"{key!r} is not a Parquet object")
    length = int.from_bytes(tail[-8:-4], "little") + 8
    if length > len(tail):
        tail, read = store.get_tail(key, length)
    # The footer alone is enough for the metadata; the leading magic makes it look like a (tiny) file.
    return pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-length:])), read


# -- one shard-hour, and a run ----------------------------------------------------------------------------------
@dataclass
class ShardHourResult:
    """What happened to one shard-hour."""

    hour: str
    shard_id: str
    key: str
    status: str  # committed, up_to_date, conflict, failed, deferred
    objects_in: int = 0
    objects_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    deleted: int = 0
    pending_deletion: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def duplicates_removed(self) -> int:
        return self.rows_in - self.rows_out


@dataclass
class RunResult:
    """What one compaction run did; ``rows_in - rows_out == duplicates_removed`` always holds."""

    hours: list[str]
    shard_hours: list[ShardHourResult] = field(default_factory=list)
    deferred_hours: list[str] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(int(getattr(result, name)) for result in self.shard_hours)

    def _count(self, status: str) -> int:
        return sum(result.status == status for result in self.shard_hours)

    @property
    def failures(self) -> list[ShardHourResult]:
        return [result for result in self.shard_hours if result.status == "failed"]

    def summary(self) -> dict[str, Any]:
        """The counts of the run, for the return value and the log line."""
        return {
            "hours": self.hours,
            "objects_in": self._sum("objects_in"),
            "objects_out": self._sum("objects_out"),
            "rows_in": self._sum("rows_in"),
            "rows_out": self._sum("rows_out"),
            "duplicates_removed": self._sum("duplicates_removed"),
            "objects_deleted": self._sum("deleted"),
            "objects_pending_deletion": self._sum("pending_deletion"),
            "conflicts": self._count("conflict"),
            "failures": [f"{result.key}: {result.error}" for result in self.failures],
            "deferred_hours": self.deferred_hours,
        }


Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class Compactor:
    """Compacts the hour partitions of one events prefix through a ``CompactionStore``."""

    store: CompactionStore
    output_prefix: str
    schema: pa.Schema = field(default_factory=arrow_schema)
    clock: Clock = _utc_now
    io_threads: int = _IO_THREADS

    def hour_prefix(self, hour: datetime) -> str:
        return partition_prefix(self.output_prefix, hour)

    def shard_hours(self, hour: datetime) -> list[ShardHour]:
        """The shard-hours of one hour partition, from a fresh listing."""
        prefix = self.hour_prefix(hour)
        return group_shard_hours(hour, prefix, self.store.list(prefix))

    def scheduled_hours(self, delay_minutes: int, lookback_hours: int) -> list[datetime]:
        """Hours that ended ``delay_minutes`` ago or more, started less than ``lookback_hours`` ago, and hold more
        than one object for some shard; oldest first."""
        now = self.clock()
        newest = _floor_hour(now - timedelta(minutes=delay_minutes, hours=1))
        start = now - timedelta(hours=lookback_hours)
        oldest = _floor_hour(start)
        if oldest < start:
            oldest += timedelta(hours=1)  # an hour that started before the window is not younger than it
        candidates = []
        hour = oldest
        while hour <= newest:
            candidates.append(hour)
            hour += timedelta(hours=1)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(candidates)))) as pool:
            listings = list(pool.map(self.shard_hours, candidates))
        return [hour for hour, groups in zip(candidates, listings, strict=True) if any(g.objects > 1 for g in groups)]

    def run(
        self,
        hours: Sequence[datetime],
        *,
        delete_grace: timedelta,
        remaining_seconds: Callable[[], float] | None = None,
        reserve_seconds: float = 60.0,
    ) -> RunResult:
        """Compact every shard of ``hours``; stop starting shard-hours when the time left gets short."""
        result = RunResult(hours=[format_hour(hour) for hour in hours])
        longest = 0.0
        for index, hour in enumerate(hours):
            if remaining_seconds is not None and remaining_seconds() < reserve_seconds + 2 * longest:
                result.deferred_hours = [format_hour(later) for later in hours[index:]]
                break
            try:
                groups = self.shard_hours(hour)
            except Exception as error:  # an hour that cannot be listed is reported; the others go on
                failed = ShardHourResult(format_hour(hour), "*", self.hour_prefix(hour), "failed")
                failed.error = f"listing failed: {type(error).__name__}: {error}"
                result.shard_hours.append(failed)
                continue
            for group in groups:
                outcome = self.compact(group, delete_grace=delete_grace)
                longest = max(longest, outcome.seconds)
                result.shard_hours.append(outcome)
        return result

    def compact(self, group: ShardHour, *, delete_grace: timedelta) -> ShardHourResult:
        """Compact one shard-hour, then delete the inputs its committed object covers (after the grace period)."""
        started = time.perf_counter()
        outcome = ShardHourResult(format_hour(group.hour), group.shard_id, group.output_key, "up_to_date")
        try:
            self._compact(group, delete_grace, outcome)
        except (CommitConflictError, ObjectGoneError) as error:
            outcome.status, outcome.error = "conflict", str(error)
            outcome.objects_in = outcome.objects_out = outcome.rows_in = outcome.rows_out = 0
        except Exception as error:  # one bad shard-hour must not stop the others; the run reports it
            outcome.status, outcome.error = "failed", f"{type(error).__name__}: {error}"
            outcome.objects_in = outcome.objects_out = outcome.rows_in = outcome.rows_out = 0
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _compact(self, group: ShardHour, delete_grace: timedelta, outcome: ShardHourResult) -> None:
        covered: dict[str, str] = {}
        committed_at: datetime | None = None
        if group.compacted is not None:
            metadata, read = _footer(self.store, group.compacted.key)
            covered = read_covered_inputs(metadata, group.compacted.key)
            committed_at = read.last_modified
        new_inputs = [item for item in group.inputs if covered.get(item.key) != item.etag]
        if new_inputs:
            covered, committed_at = self._commit(group, new_inputs, outcome), self.clock()
        deletable = [item for item in group.inputs if covered.get(item.key) == item.etag]
        due = committed_at is not None and (delete_grace <= timedelta(0) or self.clock() - committed_at >= delete_grace)
        if not due:
            outcome.pending_deletion = len(deletable)
            return
        with ThreadPoolExecutor(max_workers=self.io_threads) as pool:
            deleted = list(pool.map(lambda item: self.store.delete(item.key, item.etag), deletable))
        outcome.deleted = sum(deleted)
        outcome.pending_deletion = len(deleted) - outcome.deleted

    def _read(self, key: str) -> tuple[pa.Table, pq.FileMetaData, StoredObject]:
        body, read = self.store.get(key)
        try:
            parquet = pq.ParquetFile(pa.BufferReader(body))
            return parquet.read(), parquet.metadata, read
        except (pa.ArrowInvalid, OSError) as error:
            raise CompactionError(f"{key!r} is not a readable Parquet object: {error}") from error

    def _commit(self, group: ShardHour, new_inputs: Sequence[StoredObject], outcome: ShardHourResult) -> dict[str, str]:
        """Read the compacted object and the new inputs, merge, commit conditionally; return the inputs covered."""
        if_match: str | None = None
        tables: list[pa.Table] = []
        covered: dict[str, str] = {}
        if group.compacted is not None:
            rows, metadata, read = self._read(group.compacted.key)
            # The version read now is the one replaced (If-Match its ETag): its record of inputs carries over.
            if_match, covered = read.etag, read_covered_inputs(metadata, read.key)
            tables.append(_conform(rows, self.schema, read.key))
        with ThreadPoolExecutor(max_workers=self.io_threads) as pool:
            reads = list(pool.map(self._read, [item.key for item in new_inputs]))
        tables.extend(_conform(rows, self.schema, read.key) for rows, _, read in reads)
        # Entries for inputs that no longer exist (deleted) are dropped, so the record stays as small as the hour.
        listed = {item.key: item.etag for item in group.inputs}
        covered = {key: etag for key, etag in covered.items() if listed.get(key) == etag}
        covered.update((read.key, read.etag) for _, _, read in reads)
        outcome.objects_in = len(tables)
        del reads
        merged, order = merge_tables(tables, self.schema)
        body = encode_compacted(merged, order, covered)
        outcome.rows_in = merged.num_rows
        outcome.rows_out = len(order)
        del merged, order
        self.store.put(group.output_key, body, if_match=if_match)
        outcome.status, outcome.objects_out = "committed", 1
        return covered
