"""One export data file -> one write-once snapshot Parquet object (and one quarantine object), memory bounded.

Layout (``SNAPSHOT_PREFIX`` defaults to ``demand/snapshots/``, never under the change table's prefix):

    <SNAPSHOT_PREFIX>export_id=<export id>/<file stem>.parquet           the file's rows, several row groups
    <SNAPSHOT_PREFIX>export_id=<export id>/_<file stem>.counts.json      items, rows, quarantined (the "done" mark)
    <QUARANTINE_PREFIX>snapshots/export_id=<export id>/<file stem>.jsonl.gz   bad lines with data file and line

The data file is read as a gzip stream, ``CHUNK_LINES`` lines at a time; rows are buffered up to
``ROW_GROUP_ROWS`` and written as one row group into a Parquet stream that goes to S3 in parts
(``PART_BYTES``): a multipart upload, or one PUT when the object is small. Every object is created with a
conditional write (``If-None-Match: *``): "already exists" means a previous run made it, with the same rows
(the same file gives the same rows), so a re-run adds nothing. The counts object is written last: when it
exists, the file is done and a re-run returns its counts without reading the file. Names starting with ``_``
are skipped by Athena and Hive, so the counts object is not read as data.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.exceptions import ConfigError, PipelineError, WriteError
from pipeline.export import ExportFile, ItemCountError, LineError, decode_export_lines
from pipeline.schema import arrow_schema
from pipeline.writer import PARQUET_CONTENT_TYPE, QUARANTINE_CONTENT_TYPE, parquet_writer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "CHUNK_LINES",
    "DEFAULT_SNAPSHOT_PREFIX",
    "ENVIRONMENT_VARIABLES",
    "PART_BYTES",
    "ROW_GROUP_ROWS",
    "SNAPSHOT_PREFIX",
    "SOURCE_TABLE_NAME",
    "BackfillResult",
    "SnapshotConflictError",
    "SnapshotSettings",
    "backfill_file",
    "counts_key",
    "load_snapshot_settings",
    "quarantine_key",
    "snapshot_key",
]

SNAPSHOT_PREFIX = "SNAPSHOT_PREFIX"
SOURCE_TABLE_NAME = "SOURCE_TABLE_NAME"
DEFAULT_SNAPSHOT_PREFIX = "demand/snapshots/"
_DEFAULTS = {
    "QUARANTINE_PREFIX": "demand/quarantine/",
    "LOG_LEVEL": "INFO",
    "POWERTOOLS_SERVICE_NAME": "dmd-pipeline",
    "POWERTOOLS_METRICS_NAMESPACE": "DmdPipeline",
}
#: Every variable ``load_snapshot_settings`` reads (contract C3): the Pulumi program sets exactly these.
ENVIRONMENT_VARIABLES = (
    "OUTPUT_BUCKET",
    SNAPSHOT_PREFIX,
    "QUARANTINE_PREFIX",
    SOURCE_TABLE_NAME,
    "LOG_LEVEL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
)
CHUNK_LINES = 10_000  # lines decoded at a time: the stream handler's largest measured batch
ROW_GROUP_ROWS = 131_072  # rows per Parquet row group
PART_BYTES = 8 * 1024 * 1024  # multipart part size (S3's minimum is 5 MiB for all but the last part)
_READ_BYTES = 1024 * 1024  # decompressed bytes read at a time
_SPOOL_BYTES = 16 * 1024 * 1024  # quarantine text kept in memory up to this, then in a temporary file
_COUNTS_CONTENT_TYPE = "application/json"

# The same rules as pipeline.config: bucket names, and relative key prefixes ending with "/".
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^(?:[A-Za-z0-9!_.*'()=-]+/)+$")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")  # DynamoDB table names
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SnapshotConflictError(PipelineError):
    """An object of this data file exists from an earlier run with other contents: nothing is overwritten."""


@dataclass(frozen=True)
class SnapshotSettings:
    """Where the backfill function writes, and the table its rows are named after."""

    output_bucket: str
    source_table_name: str
    snapshot_prefix: str = DEFAULT_SNAPSHOT_PREFIX
    quarantine_prefix: str = _DEFAULTS["QUARANTINE_PREFIX"]
    log_level: str = "INFO"
    service_name: str = _DEFAULTS["POWERTOOLS_SERVICE_NAME"]
    metrics_namespace: str = _DEFAULTS["POWERTOOLS_METRICS_NAMESPACE"]

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.output_bucket) or ".." in self.output_bucket:
            raise ConfigError(f"OUTPUT_BUCKET={self.output_bucket!r} is not an S3 bucket name")
        if not _TABLE.match(self.source_table_name):
            raise ConfigError(
                f"{SOURCE_TABLE_NAME}={self.source_table_name!r} is not a DynamoDB table name "
                "(3-255 characters: letters, digits, '_', '-', '.')"
            )
        for name, prefix in ((SNAPSHOT_PREFIX, self.snapshot_prefix), ("QUARANTINE_PREFIX", self.quarantine_prefix)):
            if not _PREFIX.match(prefix) or any(part in (".", "..") for part in prefix.split("/")):
                raise ConfigError(
                    f"{name}={prefix!r} is not a key prefix: expected segments like 'demand/snapshots/' "
                    "(no leading '/', ending with '/', letters, digits and !_.*'()=- only)"
                )
        if self.snapshot_prefix.startswith(self.quarantine_prefix) or self.quarantine_prefix.startswith(
            self.snapshot_prefix
        ):
            raise ConfigError(
                f"{SNAPSHOT_PREFIX}={self.snapshot_prefix!r} and QUARANTINE_PREFIX={self.quarantine_prefix!r} "
                "must not contain one another"
            )
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        for name, value in (
            ("POWERTOOLS_SERVICE_NAME", self.service_name),
            ("POWERTOOLS_METRICS_NAMESPACE", self.metrics_namespace),
        ):
            if not value.strip():
                raise ConfigError(f"{name}={value!r} must not be blank")


def load_snapshot_settings(environ: Mapping[str, str] | None = None) -> SnapshotSettings:
    """The backfill function's settings from ``environ`` (the process environment by default)."""
    env = os.environ if environ is None else environ

    def read(name: str, default: str = "") -> str:
        return env.get(name, "").strip() or default

    bucket = read("OUTPUT_BUCKET")
    if not bucket:
        raise ConfigError("OUTPUT_BUCKET is required: the name of the bucket the snapshot objects go to")
    table = read(SOURCE_TABLE_NAME)
    if not table:
        raise ConfigError(f"{SOURCE_TABLE_NAME} is required: the table the export was taken of (rows' table_name)")
    return SnapshotSettings(
        output_bucket=bucket,
        source_table_name=table,
        snapshot_prefix=read(SNAPSHOT_PREFIX, DEFAULT_SNAPSHOT_PREFIX),
        quarantine_prefix=read("QUARANTINE_PREFIX", _DEFAULTS["QUARANTINE_PREFIX"]),
        log_level=read("LOG_LEVEL", "INFO").upper(),
        service_name=read("POWERTOOLS_SERVICE_NAME", _DEFAULTS["POWERTOOLS_SERVICE_NAME"]),
        metrics_namespace=read("POWERTOOLS_METRICS_NAMESPACE", _DEFAULTS["POWERTOOLS_METRICS_NAMESPACE"]),
    )


def _export_prefix(prefix: str, export: ExportFile) -> str:
    return f"{prefix}export_id={export.export_id}/"


def snapshot_key(settings: SnapshotSettings, export: ExportFile) -> str:
    """``<SNAPSHOT_PREFIX>export_id=<id>/<file stem>.parquet``: one object per data file."""
    return f"{_export_prefix(settings.snapshot_prefix, export)}{export.stem}.parquet"


def counts_key(settings: SnapshotSettings, export: ExportFile) -> str:
    """``<SNAPSHOT_PREFIX>export_id=<id>/_<file stem>.counts.json``: written last, the file's counts."""
    return f"{_export_prefix(settings.snapshot_prefix, export)}_{export.stem}.counts.json"


def quarantine_key(settings: SnapshotSettings, export: ExportFile) -> str:
    """``<QUARANTINE_PREFIX>snapshots/export_id=<id>/<file stem>.jsonl.gz``: apart from the stream's days."""
    return f"{_export_prefix(settings.quarantine_prefix + 'snapshots/', export)}{export.stem}.jsonl.gz"


@dataclass
class BackfillResult:
    """What one data file gave; ``rows + quarantined == items`` always holds."""

    export_id: str
    data_key: str
    object_key: str
    quarantine_key: str | None
    items: int = 0
    rows: int = 0
    quarantined: int = 0
    quarantine_kinds: dict[str, int] = field(default_factory=dict)
    row_groups: int = 0
    bytes_written: int = 0
    already_done: bool = False
    duration_ms: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The counts and keys, as the handler returns and logs them."""
        return {**asdict(self), "duration_ms": round(self.duration_ms, 3)}


# -- conditional writes ---------------------------------------------------------------------------------------
def _already_exists(error: Exception) -> bool:
    """A conditional write refused because the object exists (412 PreconditionFailed)."""
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code == "PreconditionFailed" or status == 412


def _put_once(client: S3Client, bucket: str, key: str, body: bytes | IO[bytes], content_type: str) -> bool:
    """Create the object unless it exists; True when this call created it. Other failures raise ``WriteError``."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
    except Exception as error:
        if _already_exists(error):
            return False
        raise WriteError(key, error) from error
    return True


class PartUpload:
    """A write-only stream to one S3 object: parts of ``part_bytes`` through a multipart upload, created only by
    ``commit`` (conditionally); a small object is one conditional PUT. ``abort`` drops what was uploaded."""

    def __init__(self, client: S3Client, bucket: str, key: str, content_type: str, part_bytes: int = PART_BYTES):
        self.client, self.bucket, self.key, self.content_type = client, bucket, key, content_type
        self.part_bytes = part_bytes
        self.buffer = bytearray()
        self.position = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.closed = False

    # the file-like methods pyarrow's writer uses
    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buffer += data
        self.position += len(data)
        if len(self.buffer) >= self.part_bytes:
            self._upload_part()
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        """Parts go out when they are full; nothing to do here."""

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def _upload_part(self) -> None:
        try:
            if self.upload_id is None:
                created = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self.content_type
                )
                self.upload_id = created["UploadId"]
            number = len(self.parts) + 1
            response = self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
            )
        except Exception as error:
            raise WriteError(self.key, error) from error
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self.buffer.clear()

    def commit(self) -> bool:
        """Create the object from what was written unless it exists; True when this call created it."""
        if self.upload_id is None:
            return _put_once(self.client, self.bucket, self.key, bytes(self.buffer), self.content_type)
        if self.buffer:
            self._upload_part()
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
                IfNoneMatch="*",
            )
        except Exception as error:
            if _already_exists(error):
                self.abort()
                return False
            raise WriteError(self.key, error) from error
        self.upload_id = None
        return True

    def abort(self) -> None:
        """Drop the parts of an upload that will not be completed (best effort: a lifecycle rule is the backstop)."""
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            # the object was never created; parts left by a failed abort expire by the bucket's lifecycle rule
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)


# -- reading the data file ------------------------------------------------------------------------------------
def _chunks(stream: IO[bytes], size: int) -> Iterator[list[bytes]]:
    """Lists of at most ``size`` lines (without their line break) of the gzip text stream. A last line without a
    line break is a line too; an empty file has none. Read in blocks: line by line costs a call per line."""
    text = gzip.GzipFile(fileobj=stream, mode="rb")
    pending: list[bytes] = []
    rest = b""
    while block := text.read(_READ_BYTES):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        pending.extend(lines)
        while len(pending) >= size:
            yield pending[:size]
            del pending[:size]
    if rest:
        pending.append(rest)
    while pending:
        yield pending[:size]
        del pending[:size]


def _quarantine_line(export: ExportFile, bad: LineError) -> dict[str, Any]:
    return {
        "export_bucket": export.bucket,
        "data_key": export.data_key,
        "data_file": export.file_name,
        "export_id": export.export_id,
        "line_number": bad.line_number,
        "error_kind": bad.error.kind,
        "reason": str(bad.error),
        "data": base64.b64encode(bad.line.rstrip(b"\r\n")).decode("ascii"),  # the line's exact bytes
    }


def _read_counts(client: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        response = getattr(error, "response", None) or {}
        if response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    counts: dict[str, Any] = json.loads(body)
    return counts


@dataclass(frozen=True)
class _Sizes:
    chunk_lines: int
    row_group_rows: int
    part_bytes: int


def backfill_file(
    export: ExportFile,
    settings: SnapshotSettings,
    client: S3Client,
    *,
    chunk_lines: int = CHUNK_LINES,
    row_group_rows: int = ROW_GROUP_ROWS,
    part_bytes: int = PART_BYTES,
) -> BackfillResult:
    """Read ``export``'s data file and write its snapshot objects; a file already done is not read again."""
    started = time.perf_counter()
    bucket = settings.output_bucket
    result = BackfillResult(export.export_id, export.data_key, snapshot_key(settings, export), None)
    done = _read_counts(client, bucket, counts_key(settings, export))
    if done is not None:
        result.items, result.rows, result.quarantined = int(done["items"]), int(done["rows"]), int(done["quarantined"])
        result.quarantine_key = done.get("quarantine_key")
        result.quarantine_kinds = dict(done.get("quarantine_kinds") or {})
        result.already_done = True
        _check_item_count(export, result.items)
    else:
        body = client.get_object(Bucket=export.bucket, Key=export.data_key)["Body"]
        _write_file(
            export, settings, client, body, result=result, sizes=_Sizes(chunk_lines, row_group_rows, part_bytes)
        )
        if result.rows + result.quarantined != result.items:  # every line is a row or quarantined; never expected
            raise RuntimeError(f"{export.data_key}: {result.items} lines, {result.rows} rows + {result.quarantined}")
        counts = {
            "export_id": result.export_id,
            "data_key": result.data_key,
            "object_key": result.object_key,
            "quarantine_key": result.quarantine_key,
            "items": result.items,
            "rows": result.rows,
            "quarantined": result.quarantined,
            "quarantine_kinds": result.quarantine_kinds,
        }
        text = json.dumps(counts, sort_keys=True).encode("utf-8")
        _put_once(client, bucket, counts_key(settings, export), text, _COUNTS_CONTENT_TYPE)
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def _write_file(
    export: ExportFile,
    settings: SnapshotSettings,
    client: S3Client,
    body: Any,
    *,
    result: BackfillResult,
    sizes: _Sizes,
) -> None:
    """Stream the data file into the snapshot object and its bad lines into the quarantine object."""
    upload = PartUpload(client, settings.output_bucket, result.object_key, PARQUET_CONTENT_TYPE, sizes.part_bytes)
    # bad lines: gzip JSON Lines, byte-identical on a re-run (no timestamp in the header); spilled to disk if large
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed in finally
    quarantine = gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6, mtime=0)
    try:
        with parquet_writer(upload, arrow_schema()) as writer:
            pending: list[pa.Table] = []
            for chunk in _chunks(body, sizes.chunk_lines):
                decoded = decode_export_lines(chunk, result.items + 1, export, settings.source_table_name)
                result.items += len(chunk)
                for bad in decoded.bad_lines:
                    quarantine.write(json.dumps(_quarantine_line(export, bad), sort_keys=True).encode("utf-8") + b"\n")
                    result.quarantine_kinds[bad.error.kind] = result.quarantine_kinds.get(bad.error.kind, 0) + 1
                result.quarantined += len(decoded.bad_lines)
                pending.append(decoded.rows)
                if sum(table.num_rows for table in pending) >= sizes.row_group_rows:
                    _write_row_groups(writer, pending, sizes.row_group_rows, result)
            _write_row_groups(writer, pending, sizes.row_group_rows, result, final=True)
        quarantine.close()
        _check_item_count(export, result.items)  # before anything is committed
        bucket = settings.output_bucket
        if result.quarantined:
            result.quarantine_key = quarantine_key(settings, export)
            spool.seek(0)
            if not _put_once(client, bucket, result.quarantine_key, spool, QUARANTINE_CONTENT_TYPE):
                _check_stored(result.quarantine_key, _stored_lines(client, bucket, result.quarantine_key), result)
        # the snapshot object only after its bad lines are durable: no line is ever only in memory
        result.already_done = not upload.commit()
        result.bytes_written = 0 if result.already_done else upload.position
        if result.already_done:  # made by an earlier run: the counts must describe what is stored
            _check_stored(result.object_key, _stored_rows(client, bucket, result.object_key), result)
            if not result.quarantined and _stored_lines(client, bucket, quarantine_key(settings, export)):
                raise SnapshotConflictError(
                    f"{quarantine_key(settings, export)} exists from an earlier run, but this run quarantined nothing"
                )
    except BaseException:
        upload.abort()
        raise
    finally:
        quarantine.close()
        spool.close()


def _check_item_count(export: ExportFile, items: int) -> None:
    if export.item_count is not None and items != export.item_count:
        raise ItemCountError(
            f"{export.data_key} holds {items} lines but the manifest's itemCount is {export.item_count}"
        )


def _stored_rows(client: S3Client, bucket: str, key: str) -> int:
    """Rows of an existing Parquet object, from its footer (two ranged GETs, whatever the object's size)."""
    last = client.get_object(Bucket=bucket, Key=key, Range="bytes=-8")["Body"].read()
    if len(last) != 8 or last[4:] != b"PAR1":
        raise SnapshotConflictError(f"{key} exists but does not end like a Parquet file")
    footer = int.from_bytes(last[:4], "little") + 8
    tail = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{footer}")["Body"].read()
    rows: int = pq.read_metadata(io.BytesIO(tail)).num_rows
    return rows


def _stored_lines(client: S3Client, bucket: str, key: str) -> int:
    """Lines of an existing quarantine object; 0 when there is none."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if (getattr(error, "response", None) or {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return 0
        raise
    return gzip.decompress(body).count(b"\n")


def _check_stored(key: str, stored: int, result: BackfillResult) -> None:
    expected = result.quarantined if key == result.quarantine_key else result.rows
    if stored != expected:
        raise SnapshotConflictError(
            f"{key} exists from an earlier run with {stored} records, but this run made {expected} of "
            f"{result.data_key}: the code or the file changed; back-fill a new export rather than mix the two"
        )


def _write_row_groups(
    writer: Any, pending: list[pa.Table], row_group_rows: int, result: BackfillResult, *, final: bool = False
) -> None:
    """Write full row groups from ``pending`` (and the rest when ``final``); keep the remainder in ``pending``."""
    table = pa.concat_tables(pending) if pending else arrow_schema().empty_table()
    pending.clear()
    start = 0
    while table.num_rows - start >= row_group_rows or (final and start < table.num_rows):
        group = table.slice(start, row_group_rows)
        writer.write_table(group, row_group_size=group.num_rows)
        result.rows += group.num_rows
        result.row_groups += 1
        start += group.num_rows
    if start < table.num_rows:
        pending.append(table.slice(start))
