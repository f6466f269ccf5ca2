"""Pure decoding of a DynamoDB table export (DYNAMODB_JSON format): the backfill event, and lines -> rows.

An export data file is gzip text with one ``{"Item": {...}}`` object a line, the item in typed DynamoDB JSON.
Each line goes through the same contract as a stream record: it is wrapped into the change record that
"Kinesis Data Streams for DynamoDB" would write for an INSERT of that item, and decoded by
``pipeline.columnar.decode_batch`` (the fast path, falling back to the strict ``pipeline.decode`` /
``pipeline.normalize`` path for any row it is unsure about), so validation, conversion and quarantine reasons
are the stream's. The rows then get the snapshot's own metadata:

- ``op`` = ``SNAPSHOT``; ``change_time`` and ``change_time_us`` = the export time; ``table_name`` = the source table;
- ``change_id`` = ``<export id>:<data file name>:<line number>``; ``shard_id`` = the export id;
  ``sequence_number`` = the line number (1-based, decimal text);
- ``deleted_by_ttl`` = false, when the contract has that column.

The export id is the path segment after ``AWSDynamoDB/`` in the data key
(``<prefix>/AWSDynamoDB/<export id>/data/<file>``), which AWS also puts at the end of the export ARN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pybase64

from pipeline.batch import Quarantined
from pipeline.columnar import decode_batch
from pipeline.decode import KinesisBatch
from pipeline.exceptions import InvalidEventError, NotChangeRecordError, NotJsonError, PipelineError, RecordError
from pipeline.normalize import CHANGE_TIME_RANGE
from pipeline.schema import arrow_schema

__all__ = [
    "SNAPSHOT_OP",
    "TTL_COLUMN",
    "ExportChunk",
    "ExportFile",
    "ItemCountError",
    "LineError",
    "decode_export_lines",
]

SNAPSHOT_OP = "SNAPSHOT"
#: A contract column another change adds; filled with false here when the contract has it.
TTL_COLUMN = "deleted_by_ttl"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# <export prefix>/AWSDynamoDB/<export id>/data/<file>.json.gz (moto names its files <uuid>.gz)
_DATA_KEY = re.compile(
    r"^(?:[^/]+/)*AWSDynamoDB/(?P<export_id>[A-Za-z0-9-]{1,64})/data/(?P<name>[A-Za-z0-9][\w.-]*\.gz)$"
)
_ITEM_START = re.compile(r'\s*\{\s*"Item"\s*:\s*')
_ITEM_END = re.compile(r"\s*\}\s*")
_DECODER = json.JSONDecoder()
_quoted = json.encoder.encode_basestring  # JSON string literal (the C implementation when available)
_SHOWN = 80  # characters of a bad line quoted in a reason
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ItemCountError(PipelineError):
    """A data file holds another number of lines than the manifest's itemCount: nothing of it is committed."""


@dataclass(frozen=True)
class ExportFile:
    """One data file of an export, from the backfill event."""

    bucket: str
    data_key: str
    export_time: datetime
    export_id: str
    file_name: str
    item_count: int | None = None  # the manifest's itemCount for the file, when the caller has it

    @property
    def stem(self) -> str:
        """The file name without ``.json.gz`` (or ``.gz``): names the file's snapshot and quarantine objects."""
        for suffix in (".json.gz", ".gz"):
            if self.file_name.endswith(suffix):
                return self.file_name[: -len(suffix)]
        return self.file_name

    @property
    def export_time_micros(self) -> int:
        """The export time in microseconds since the epoch (the snapshot rows' ``change_time``)."""
        return (self.export_time - _EPOCH) // _MICROSECOND

    @classmethod
    def from_event(cls, event: Any) -> ExportFile:
        """Validate ``{"export_bucket", "data_key", "export_time"}`` (and ``item_count`` when given, the manifest's
        itemCount of the file); ``InvalidEventError`` names the bad value."""
        if not isinstance(event, Mapping):
            raise InvalidEventError(
                f"the event is {type(event).__name__}, expected an object with export_bucket, data_key, export_time"
            )
        values = {}
        for name in ("export_bucket", "data_key", "export_time"):
            value = event.get(name)
            if not isinstance(value, str) or not value:
                raise InvalidEventError(f"event {name} is {value!r}, expected non-empty text")
            values[name] = value
        bucket = values["export_bucket"]
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise InvalidEventError(f"event export_bucket {bucket!r} is not an S3 bucket name")
        match = _DATA_KEY.match(values["data_key"])
        if match is None:
            raise InvalidEventError(
                f"event data_key {values['data_key']!r} is not an export data file: expected "
                "'<prefix>/AWSDynamoDB/<export id>/data/<name>.json.gz'"
            )
        item_count = event.get("item_count")
        if item_count is not None and (type(item_count) is not int or item_count < 0):
            raise InvalidEventError(f"event item_count is {item_count!r}, expected a count (the manifest's itemCount)")
        return cls(
            bucket=bucket,
            data_key=values["data_key"],
            export_time=_export_time(values["export_time"]),
            export_id=match["export_id"],
            file_name=match["name"],
            item_count=item_count,
        )


def _export_time(text: str) -> datetime:
    expected = "ISO-8601 UTC time like 2026-03-31T23:10:00Z (the export's ExportTime)"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEventError(f"event export_time {text!r} is not {expected}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidEventError(f"event export_time {text!r} has no UTC offset: expected {expected}")
    micros = (moment - _EPOCH) // _MICROSECOND
    if not CHANGE_TIME_RANGE[0] <= micros < CHANGE_TIME_RANGE[1]:
        raise InvalidEventError(f"event export_time {text!r} is not between 2000 and 2100")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class LineError:
    """A line of the data file that is quarantined: its number, its bytes and why."""

    line_number: int
    line: bytes
    error: RecordError


@dataclass(frozen=True)
class ExportChunk:
    """Consecutive lines decoded: the rows (in line order) and the bad lines; together they cover every line."""

    rows: pa.Table
    bad_lines: tuple[LineError, ...]


def _shown(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _item_text(line: bytes, line_number: int) -> tuple[str, Mapping[str, Any]]:
    """The JSON text of a line's item and the item; ``RecordError`` when the line is not ``{"Item": {...}}``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotJsonError(f"line {line_number} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    start = _ITEM_START.match(text)
    if start is not None:
        # the usual shape: parse the item once, in place, and pass its text on unchanged
        try:
            item, end = _DECODER.raw_decode(text, start.end())
        except ValueError:
            item, end = None, -1
        if isinstance(item, dict) and _ITEM_END.fullmatch(text, end):
            _check_unicode(text, item, line_number)
            return text[start.end() : end], item
    try:
        document = json.loads(text)
    except ValueError as error:
        raise NotJsonError(f"line {line_number} is not JSON ({error}): {_shown(line)}") from None
    if not isinstance(document, dict) or list(document) != ["Item"] or not isinstance(document["Item"], dict):
        raise NotChangeRecordError(
            f'line {line_number} is not an export item {{"Item": {{...}}}} (one key, an object): {_shown(line)}'
        )
    item = document["Item"]
    _check_unicode(text, item, line_number)
    return json.dumps(item), item


def _check_unicode(text: str, item: Mapping[str, Any], line_number: int) -> None:
    """Refuse a ``\\u`` escape of a lone surrogate (DynamoDB never writes one; no row could hold it)."""
    if "\\ud" in text or "\\uD" in text:  # the only way valid UTF-8 JSON text can spell a surrogate
        try:
            json.dumps(item, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise NotJsonError(f"line {line_number} escapes a lone surrogate: not Unicode text") from None


@dataclass(frozen=True)
class _RecordTemplate:
    """The parts of the wrapped change record that are the same for every line of a file."""

    head: str  # up to the line number in eventID
    middle: str  # from the end of eventID to the Keys

    @classmethod
    def of(cls, export: ExportFile, table_name: str) -> _RecordTemplate:
        change_id_prefix = json.dumps(f"{export.export_id}:{export.file_name}:")[:-1]  # without the closing quote
        return cls(
            head=f'{{"eventID":{change_id_prefix}',
            middle=(
                f'","eventName":"INSERT","eventSource":"aws:dynamodb","tableName":{json.dumps(table_name)},'
                f'"dynamodb":{{"ApproximateCreationDateTime":{export.export_time_micros},'
                '"ApproximateCreationDateTimePrecision":"MICROSECOND","Keys":'
            ),
        )

    def record(self, line_number: int, item_text: str, item: Mapping[str, Any]) -> str:
        """The stream's change record for an INSERT of the item, at the export time (the decoders' input)."""
        return f'{self.head}{line_number}{self.middle}{_keys_text(item)},"NewImage":{item_text}}}}}'


def _keys_text(item: Mapping[str, Any]) -> str:
    """``{"pk": ..., "sk": ...}`` of the item as JSON (what is there: the decoders judge it)."""
    pk, sk = item.get("pk"), item.get("sk")
    if type(pk) is dict and type(sk) is dict and len(pk) == 1 and len(sk) == 1:
        pk_text, sk_text = pk.get("S"), sk.get("S")
        if type(pk_text) is str and type(sk_text) is str:  # the usual shape, without a general encoder
            return f'{{"pk":{{"S":{_quoted(pk_text)}}},"sk":{{"S":{_quoted(sk_text)}}}}}'
    return json.dumps({name: item[name] for name in ("pk", "sk") if name in item})


def _snapshot_columns(rows: pa.Table) -> pa.Table:
    """INSERT rows of the wrapped items -> SNAPSHOT rows in the contract's schema; ``deleted_by_ttl`` is false
    when the contract has it (whether or not the decoders already fill it)."""
    schema = arrow_schema()
    count = rows.num_rows
    columns = []
    for field in schema:
        if field.name == "op":
            columns.append(pa.repeat(pa.scalar(SNAPSHOT_OP, field.type), count))
        elif field.name == TTL_COLUMN:
            columns.append(pa.repeat(pa.scalar(False, pa.bool_()), count).cast(field.type))
        else:
            columns.append(rows.column(field.name))
    return pa.Table.from_arrays(columns, schema=schema)


def decode_export_lines(lines: Sequence[bytes], first_line: int, export: ExportFile, table_name: str) -> ExportChunk:
    """Lines ``first_line, first_line + 1, ...`` of ``export`` -> snapshot rows and quarantined lines."""
    template = _RecordTemplate.of(export, table_name)
    bad: list[LineError] = []
    numbers: list[int] = []
    data: list[str] = []
    for offset, line in enumerate(lines):
        number = first_line + offset
        try:
            item_text, item = _item_text(line.rstrip(b"\r\n"), number)
        except RecordError as error:
            bad.append(LineError(number, line, error))
            continue
        record = template.record(number, item_text, item)
        numbers.append(number)
        data.append(pybase64.b64encode(record.encode("utf-8")).decode("ascii"))
    sequences = tuple(str(number) for number in numbers)
    batch = KinesisBatch(
        sequence_numbers=sequences,
        data=tuple(data),
        partition_keys=("",) * len(numbers),
        arrivals=(0.0,) * len(numbers),
        event_ids=tuple(f"{export.export_id}:{sequence}" for sequence in sequences),
        event_source_arns=("",) * len(numbers),
        shard_id=export.export_id,
    )
    decoded = decode_batch(batch, "MICROSECOND") if numbers else None
    if decoded is None:
        return ExportChunk(arrow_schema().empty_table(), tuple(bad))
    bad.extend(_line_error(item, numbers, lines, first_line) for item in decoded.quarantined)
    bad.sort(key=lambda error: error.line_number)
    return ExportChunk(_snapshot_columns(decoded.rows), tuple(bad))


def _line_error(item: Quarantined, numbers: Sequence[int], lines: Sequence[bytes], first_line: int) -> LineError:
    number = numbers[item.position]
    error = item.error
    # the decoders name attributes and keys; say which line they were found on
    message = f"line {number}: {error}"
    renamed = type(error)(message)
    return LineError(number, lines[number - first_line], renamed)
