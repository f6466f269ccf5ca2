"""What an erasure would remove: a fan's rows counted in every place the lake keeps them, by reading only.

``make erase ARGS=--dry-run`` prints these counts per place (``curator.erasure_requests.PLACES``); nothing is written.

- the curated Iceberg tables: a pyiceberg scan of each table filtered on ``fan_id`` (a table not created yet: 0);
- raw landing objects and backfill snapshot objects: Parquet, their ``fan_id`` column;
- quarantine lines (stream and snapshot) and the failure bucket's on-failure records: JSON (gzip or not), a line or
  a Kinesis record counted when its item names the fan (``FAN#<id>`` sort key or a ``fan_id`` value), its
  base64 ``data`` decoded;
- DynamoDB export data files (gzip DynamoDB JSON, one item a line): a line counted when it names the fan;
- old versions (on a versioned bucket a delete leaves the bytes as a noncurrent version, which the erasure purges):
  in each object place, the noncurrent versions holding one of the fans, read as the current objects are; under
  each table's location, every noncurrent version (a table file already deleted), counted from the listing alone.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PlaceCount", "count_json_records", "count_parquet_rows", "fans_named", "scan_places"]

_SORT_KEY_FAN = re.compile(r"FAN#([^\"\\\s]+)")
_FAN_ID_VALUE = re.compile(r"\"fan_id\"\s*:\s*(?:\{\s*\"S\"\s*:\s*)?\"([^\"\\]+)\"")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class PlaceCount:
    """A place's rows of the fans, and how many objects (or tables) were read to count them."""

    place: str
    rows: int
    objects_read: int
    where: str
    note: str = ""
    #: Noncurrent versions the erasure would purge (holding a fan; under a table's location, all of them).
    old_versions: int = 0

    def line(self) -> str:
        note = f" ({self.note})" if self.note else ""
        versions = f", {self.old_versions:,} old versions to purge" if self.old_versions else ""
        return (
            f"  {self.place:<21} {self.rows:>9,} rows   {self.objects_read:>6,} objects read in {self.where}"
            f"{versions}{note}"
        )


def fans_named(text: str) -> set[str]:
    """The fan ids a piece of JSON text names: ``FAN#<id>`` sort keys and ``fan_id`` values."""
    return {*_SORT_KEY_FAN.findall(text), *_FAN_ID_VALUE.findall(text)}


def _decoded(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == _GZIP_MAGIC else body


def _texts(value: Any) -> Iterator[str]:
    """Every base64 ``data`` field of a JSON value, decoded (a Kinesis record's item)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                try:
                    yield base64.b64decode(item, validate=True).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, str) and value.startswith("{"):
        try:  # an on-failure record's payload is the invocation event as a JSON string
            yield from _texts(json.loads(value))
        except ValueError:
            return


def _records(document: Any) -> list[str]:
    """The items of one JSON document: its base64 ``data`` fields, or the document itself when it has none."""
    texts = list(_texts(document))
    return texts or [json.dumps(document)]


def count_json_records(body: bytes, fans: set[str], *, per_line: bool) -> int:
    """Records of ``fans`` in a JSON object (``per_line``: JSON Lines, a line counted once; else every Kinesis
    record of the one document counted). Lines that are not JSON are searched as text."""
    text = _decoded(body).decode("utf-8", "replace")
    if per_line:
        count = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                items = _records(json.loads(line))
            except ValueError:
                items = [line]
            count += any(fans_named(item) & fans for item in items)
        return count
    try:
        items = _records(json.loads(text))
    except ValueError:
        items = [text]
    return sum(bool(fans_named(item) & fans) for item in items)


def count_parquet_rows(body: bytes, fans: set[str]) -> int:
    """Rows of ``fans`` in a Parquet object (its ``fan_id`` column; an object without one holds no fan)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    source = pq.ParquetFile(io.BytesIO(body))
    if "fan_id" not in source.schema_arrow.names:
        return 0
    column = source.read(columns=["fan_id"]).column("fan_id")
    return int(pc.sum(pc.is_in(column, value_set=pa.array(sorted(fans), type=column.type))).as_py() or 0)


def _keys(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield str(item["Key"])


def _count_objects(
    s3: Any, bucket: str, prefix: str, keep: Callable[[str], bool], count: Callable[[bytes], int]
) -> tuple[int, int, list[str]]:
    """Rows counted, objects read, and the keys that could not be decoded (named, not skipped in silence)."""
    rows = objects = 0
    unreadable = []
    for key in _keys(s3, bucket, prefix):
        if not keep(key):
            continue
        objects += 1
        try:
            rows += count(bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        except (ValueError, OSError, EOFError):  # pyarrow's ArrowInvalid is a ValueError; a truncated gzip an EOFError
            unreadable.append(key)
    return rows, objects, unreadable


def _noncurrent(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(key, version id) of every noncurrent object version under ``prefix`` (on a bucket never versioned: none)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            if not item["IsLatest"]:
                yield str(item["Key"]), str(item["VersionId"])


def _count_old_versions(
    s3: Any, bucket: str, prefix: str, keep: Callable[[str], bool], count: Callable[[bytes], int] | None
) -> tuple[int, list[str]]:
    """Noncurrent versions holding a fan (``count`` None: all of them, unread), and those that could not be read."""
    found = 0
    unreadable = []
    for key, version_id in _noncurrent(s3, bucket, prefix):
        if not keep(key):
            continue
        if count is None:
            found += 1
            continue
        try:
            body = bytes(s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read())
            found += count(body) > 0
        except (ValueError, OSError, EOFError):
            unreadable.append(f"{key}?versionId={version_id}")
    return found, unreadable


TableScan = Callable[[str, set[str]], "int | None"]
"""Rows of the fans in a curated table (its name), or None when the table does not exist yet."""


def scan_places(
    s3: Any,
    *,
    bucket: str,
    events_prefix: str,
    snapshot_prefix: str,
    quarantine_prefix: str,
    failure_bucket: str,
    fans: Iterable[str],
    table_rows: TableScan,
    tables: Iterable[str],
    tables_prefix: str = "curated/",
    exports_prefix: str = "demand/exports/",
) -> list[PlaceCount]:
    """Every place's rows of ``fans``, in ``PLACES`` order (tables first, then the objects), and the old versions
    the erasure would purge there, read only. A table's location is ``<tables_prefix><table>/``."""
    from curator.erasure_objects import is_export_data_file  # noqa: PLC0415 - pyarrow: only when counting

    wanted = set(fans)
    counts = []
    for table in tables:
        rows = table_rows(table, wanted)
        old, _ = _count_old_versions(s3, bucket, f"{tables_prefix}{table}/", lambda _key: True, None)
        counts.append(
            PlaceCount(
                table,
                rows or 0,
                0 if rows is None else 1,
                "Iceberg table",
                "" if rows is not None else "not created yet",
                old,
            )
        )

    def parquet(key: str) -> bool:
        return key.endswith(".parquet")

    def counted(
        place: str, where_bucket: str, prefix: str, keep: Callable[[str], bool], how: Callable[[bytes], int]
    ) -> None:
        rows, objects, unreadable = _count_objects(s3, where_bucket, prefix, keep, how)
        old, old_unreadable = _count_old_versions(s3, where_bucket, prefix, keep, how)
        unreadable += old_unreadable
        note = f"{len(unreadable)} unreadable, e.g. {unreadable[0]}" if unreadable else ""
        counts.append(PlaceCount(place, rows, objects, f"s3://{where_bucket}/{prefix}", note, old))

    counted("raw_events", bucket, events_prefix, parquet, lambda body: count_parquet_rows(body, wanted))
    counted("snapshots", bucket, snapshot_prefix, parquet, lambda body: count_parquet_rows(body, wanted))
    counted(
        "quarantine",
        bucket,
        quarantine_prefix,
        lambda _key: True,
        lambda b: count_json_records(b, wanted, per_line=True),
    )
    counted("failures", failure_bucket, "", lambda _key: True, lambda b: count_json_records(b, wanted, per_line=False))
    counted(
        "exports",
        bucket,
        exports_prefix,
        is_export_data_file,
        lambda b: count_json_records(b, wanted, per_line=True),
    )
    return counts
