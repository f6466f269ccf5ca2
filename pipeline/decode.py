"""Pure, strict decoding: Lambda Kinesis event -> envelopes -> DynamoDB change records -> Python values.

No AWS call and no I/O here. This module is the definition of what a valid record is: the column-wise
fast path (``pipeline.columnar``) only accepts rows that this strict path accepts with the same values,
and hands every row it is not sure about back to it.

Decisions where the wire format leaves room:
- JSON ``null`` in an item means absent: an attribute, a type tag beside the real one, a map entry (DynamoDB
  never writes one; Arrow's reader cannot tell null from absent, so both paths read it the same way);
- a typed value must have exactly one type tag; ``NULL`` must be ``true``; ``N`` is a finite decimal text;
- ``B``/``BS`` values are strict base64; sets may be empty (DynamoDB never writes an empty set, but the
  decoder does not need to refuse one).
"""

from __future__ import annotations

import binascii
import decimal
import itertools
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, overload

from pipeline.exceptions import (
    InvalidEventError,
    NotBase64Error,
    NotChangeRecordError,
    NotJsonError,
    WrongSourceError,
    WrongTableError,
)

__all__ = [
    "DECIMAL_CONTEXT",
    "DYNAMODB_SOURCE",
    "TTL_IDENTITY",
    "ChangeRecord",
    "EventName",
    "KinesisBatch",
    "KinesisRecord",
    "decode_data",
    "deserialize_value",
    "parse_change_record",
    "parse_kinesis_records",
    "present_tags",
    "sequence_key",
]

#: DynamoDB numbers have up to 38 significant digits; every number is parsed in this context.
DECIMAL_CONTEXT = decimal.Context(
    prec=38,
    Emin=-128,
    Emax=126,
    traps=[
        decimal.Clamped,
        decimal.Overflow,
        decimal.Inexact,
        decimal.Rounded,
        decimal.Underflow,
        decimal.InvalidOperation,
    ],
)
# The number text DynamoDB writes: no whitespace, no underscores, no NaN or Infinity.
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_SEQUENCE = re.compile(r"^[0-9]{1,128}$")
_PRECISIONS = ("MILLISECOND", "MICROSECOND")
#: ``eventSource`` of every change record Kinesis Data Streams for DynamoDB writes.
DYNAMODB_SOURCE = "aws:dynamodb"
#: ``userIdentity`` of a REMOVE that DynamoDB's Time to Live made (an expired item, not a user's delete).
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


class EventName(StrEnum):
    """The kind of change DynamoDB recorded."""

    INSERT = "INSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"


@dataclass(frozen=True)
class KinesisRecord:
    """One record of a Lambda Kinesis event: the envelope, with the payload still base64 text."""

    sequence_number: str
    shard_id: str
    partition_key: str
    data: str
    approximate_arrival: float
    event_source_arn: str
    event_id: str


@dataclass(frozen=True)
class ChangeRecord:
    """A DynamoDB change record, as Kinesis Data Streams for DynamoDB writes it; images in typed JSON."""

    change_id: str
    event_name: EventName
    table_name: str
    keys: Mapping[str, Any]
    new_image: Mapping[str, Any] | None
    old_image: Mapping[str, Any] | None
    approximate_creation: int
    precision: str
    deleted_by_ttl: bool = False

    @property
    def image(self) -> Mapping[str, Any] | None:
        """The image a row is built from: the new image, or the old one for a REMOVE."""
        return self.old_image if self.event_name is EventName.REMOVE else self.new_image

    @property
    def change_time_micros(self) -> int:
        """ApproximateCreationDateTime in microseconds since the epoch."""
        return self.approximate_creation * (1000 if self.precision == "MILLISECOND" else 1)


def sequence_key(sequence_number: str) -> tuple[int, str]:
    """Sort key of a Kinesis sequence number: decimal text of up to ~56 digits, compared as an integer."""
    return (len(sequence_number.lstrip("0")), sequence_number.lstrip("0"))


def _envelope(record: Any, position: int) -> KinesisRecord:
    try:
        kinesis = record["kinesis"]
        sequence = kinesis["sequenceNumber"]
        event_id = record["eventID"]
        data = kinesis["data"]
        arrival = kinesis.get("approximateArrivalTimestamp", 0.0)
        partition_key = kinesis.get("partitionKey", "")
        arn = record.get("eventSourceARN", "")
    except (KeyError, TypeError) as error:
        raise InvalidEventError(f"Records[{position}] is not a Kinesis event record: missing {error}") from None
    if not isinstance(sequence, str) or not _SEQUENCE.fullmatch(sequence):
        raise InvalidEventError(f"Records[{position}].kinesis.sequenceNumber {sequence!r} is not a decimal number")
    if not isinstance(event_id, str) or not event_id.endswith(f":{sequence}") or len(event_id) <= len(sequence) + 1:
        raise InvalidEventError(f"Records[{position}].eventID {event_id!r} is not '<shardId>:{sequence}'")
    if not isinstance(data, str):
        raise InvalidEventError(f"Records[{position}].kinesis.data is {type(data).__name__}, expected base64 text")
    if isinstance(arrival, bool) or not isinstance(arrival, int | float):
        raise InvalidEventError(f"Records[{position}].kinesis.approximateArrivalTimestamp {arrival!r} is not a number")
    return KinesisRecord(
        sequence_number=sequence,
        shard_id=event_id[: -len(sequence) - 1],
        partition_key=str(partition_key),
        data=data,
        approximate_arrival=float(arrival),
        event_source_arn=str(arn),
        event_id=event_id,
    )


@dataclass(frozen=True)
class KinesisBatch(Sequence[KinesisRecord]):
    """The envelopes of one event, column by column, in sequence-number order; indexing gives ``KinesisRecord``."""

    sequence_numbers: tuple[str, ...]
    data: tuple[str, ...]
    partition_keys: tuple[str, ...]
    arrivals: tuple[float, ...]
    event_ids: tuple[str, ...]
    event_source_arns: tuple[str, ...]
    shard_id: str | None

    def __len__(self) -> int:
        return len(self.sequence_numbers)

    @overload
    def __getitem__(self, position: int) -> KinesisRecord: ...

    @overload
    def __getitem__(self, position: slice) -> list[KinesisRecord]: ...

    def __getitem__(self, position: int | slice) -> KinesisRecord | list[KinesisRecord]:
        if isinstance(position, slice):
            return [self[index] for index in range(*position.indices(len(self)))]
        return KinesisRecord(
            sequence_number=self.sequence_numbers[position],
            shard_id=str(self.shard_id),
            partition_key=self.partition_keys[position],
            data=self.data[position],
            approximate_arrival=self.arrivals[position],
            event_source_arn=self.event_source_arns[position],
            event_id=self.event_ids[position],
        )

    @classmethod
    def from_records(cls, records: Sequence[KinesisRecord]) -> KinesisBatch:
        """A batch of already-parsed envelopes (sorted here)."""
        ordered = sorted(records, key=lambda record: sequence_key(record.sequence_number))
        shards = {record.shard_id for record in ordered}
        if len(shards) > 1:
            # A Kinesis event source mapping delivers one shard per invocation; a failure point is per shard.
            raise InvalidEventError(f"the event mixes shards {sorted(shards)}: expected one shard per invocation")
        for previous, current in itertools.pairwise(ordered):
            if previous.sequence_number == current.sequence_number:
                raise InvalidEventError(f"sequence number {current.sequence_number} appears twice in one event")
        return cls(
            sequence_numbers=tuple(record.sequence_number for record in ordered),
            data=tuple(record.data for record in ordered),
            partition_keys=tuple(record.partition_key for record in ordered),
            arrivals=tuple(record.approximate_arrival for record in ordered),
            event_ids=tuple(record.event_id for record in ordered),
            event_source_arns=tuple(record.event_source_arn for record in ordered),
            shard_id=ordered[0].shard_id if ordered else None,
        )


def _fast_batch(records: list[Any]) -> KinesisBatch | None:
    """The common case, checked column by column; None when anything is unusual (the slow path explains it)."""
    try:  # C-level item getters: no Python bytecode per record
        kinesis = list(map(operator.itemgetter("kinesis"), records))
        event_ids = list(map(operator.itemgetter("eventID"), records))
        arns = list(map(operator.itemgetter("eventSourceARN"), records))
        sequences = list(map(operator.itemgetter("sequenceNumber"), kinesis))
        data = list(map(operator.itemgetter("data"), kinesis))
        arrivals = list(map(operator.itemgetter("approximateArrivalTimestamp"), kinesis))
        partition_keys = list(map(operator.itemgetter("partitionKey"), kinesis))
    except (KeyError, TypeError):
        return None
    if not records or set(map(type, itertools.chain(data, partition_keys, arns))) != {str}:
        return None
    try:
        digits = "".join(sequences)  # also proves they are all text
        shard_id = event_ids[0][: -len(sequences[0]) - 1]
    except (TypeError, AttributeError):
        return None
    lengths = set(map(len, sequences))
    well_formed = (
        digits.isascii()
        and digits.encode("ascii").isdigit()  # bytes.isdigit: a table lookup per byte, 10x str.isdigit
        and min(lengths) > 0
        and max(lengths) <= 128
        and bool(shard_id)
        and set(map(type, arrivals)) <= {float, int}
    )
    # equal to the expected text means every eventID is text of the form <shard>:<sequence number>
    if not well_formed or event_ids != list(map(f"{shard_id}:".__add__, sequences)):
        return None
    # increasing as integers; decimal text of one length (the usual case) compares the same way as text
    ordered = sequences if len(lengths) == 1 and min(lengths) > 0 else list(map(int, sequences))
    if not all(map(operator.lt, ordered, itertools.islice(ordered, 1, None))):
        return None  # out of order or repeated: the slow path sorts or refuses
    return KinesisBatch(
        sequence_numbers=tuple(sequences),
        data=tuple(data),
        partition_keys=tuple(partition_keys),
        arrivals=tuple(map(float, arrivals)),
        event_ids=tuple(event_ids),
        event_source_arns=tuple(arns),
        shard_id=shard_id,
    )


def parse_kinesis_records(event: Any) -> KinesisBatch:
    """The event's records, in sequence-number order. Raises ``InvalidEventError`` for a malformed event."""
    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        raise InvalidEventError("the event has no 'Records' list: is this function wired to a Kinesis stream?")
    fast = _fast_batch(event["Records"])
    if fast is not None:
        return fast
    return KinesisBatch.from_records([_envelope(record, position) for position, record in enumerate(event["Records"])])


def decode_data(data: str) -> bytes:
    """Strict base64 -> bytes (characters outside the alphabet are an error, not skipped)."""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        raise NotBase64Error(f"kinesis data is not base64 ({error}): {data[:60]!r}") from None


def _require(mapping: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = mapping.get(name)
    if value is None:
        raise NotChangeRecordError(f"{where}{name} is missing")
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise NotChangeRecordError(f"{where}{name} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _deleted_by_ttl(event_name: str, identity: Any) -> bool:
    """A REMOVE whose ``userIdentity`` names DynamoDB's TTL service; any other identity (or none) is not."""
    return (
        event_name == EventName.REMOVE
        and isinstance(identity, dict)
        and all(identity.get(name) == value for name, value in TTL_IDENTITY.items())
    )


def parse_change_record(payload: bytes, default_precision: str, source_table: str | None = None) -> ChangeRecord:
    """Bytes of one stream record -> ``ChangeRecord``; ``default_precision`` applies when the record has none.

    ``source_table``, when given, is the only table whose changes are accepted (``WrongTableError`` otherwise);
    an ``eventSource`` other than ``aws:dynamodb`` is always refused (``WrongSourceError``).
    """
    try:
        document = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise NotJsonError(f"payload is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except ValueError as error:
        raise NotJsonError(f"payload is not JSON ({error}): {payload[:60]!r}") from None
    if not isinstance(document, dict):
        raise NotJsonError(f"payload is JSON {type(document).__name__}, expected an object: {payload[:60]!r}")
    source = document.get("eventSource")
    if source is not None and source != DYNAMODB_SOURCE:
        # another producer's record: its other fields mean nothing to this function
        raise WrongSourceError(f"eventSource is {_shown_value(source)}, expected {DYNAMODB_SOURCE!r}")
    change_id = _require(document, "eventID", str, "")
    event_name = _require(document, "eventName", str, "")
    if event_name not in EventName.__members__:
        raise NotChangeRecordError(f"eventName {event_name!r} is not one of INSERT, MODIFY, REMOVE")
    table_name = _require(document, "tableName", str, "")
    if not change_id or not table_name:
        raise NotChangeRecordError(f"eventID {change_id!r} and tableName {table_name!r} must not be empty")
    _require(document, "eventSource", str, "")
    if source_table is not None and table_name != source_table:
        raise WrongTableError(
            f"tableName is {table_name!r}, expected {source_table!r} (SOURCE_TABLE_NAME): "
            "a change of another table on this stream"
        )
    body = _require(document, "dynamodb", dict, "")
    created = _require(body, "ApproximateCreationDateTime", int, "dynamodb.")
    precision = body.get("ApproximateCreationDateTimePrecision")
    if precision is None:
        precision = default_precision
    elif precision not in _PRECISIONS:
        raise NotChangeRecordError(
            f"dynamodb.ApproximateCreationDateTimePrecision {precision!r} is not one of {', '.join(_PRECISIONS)}"
        )
    keys = _require(body, "Keys", dict, "dynamodb.")
    images = []
    for name in ("NewImage", "OldImage"):
        image = body.get(name)
        if image is not None and not isinstance(image, dict):
            raise NotChangeRecordError(f"dynamodb.{name} is {type(image).__name__}, expected an object")
        images.append(image)
    return ChangeRecord(
        change_id=change_id,
        event_name=EventName(event_name),
        table_name=table_name,
        keys=keys,
        new_image=images[0],
        old_image=images[1],
        approximate_creation=created,
        precision=precision,
        deleted_by_ttl=_deleted_by_ttl(event_name, document.get("userIdentity")),
    )


def _shown_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _number(text: Any) -> decimal.Decimal:
    if not isinstance(text, str):
        raise ValueError(f"N must hold decimal text, got {text!r}")
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"N value {text!r} is not a decimal number")
    try:
        return DECIMAL_CONTEXT.create_decimal(text)
    except decimal.DecimalException:
        raise ValueError(f"N value {text!r} is outside DynamoDB's number range or 38-digit precision") from None


def _binary(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"B must hold base64 text, got {text!r}")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"B value {text[:40]!r} is not base64") from None


def _strings(values: Any, tag: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise ValueError(f"{tag} must hold a list of strings, got {values!r}")
    return values


def _s(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"S must hold a string, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"BOOL must hold true or false, got {value!r}")
    return value


def _null(value: Any) -> None:
    if value is not True:
        raise ValueError(f"NULL must hold true, got {value!r}")


def _m(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"M must hold an object, got {value!r}")
    return {name: deserialize_value(item) for name, item in value.items() if item is not None}


def _l(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"L must hold a list, got {value!r}")
    return [deserialize_value(item) for item in value]


_DESERIALIZERS: dict[str, Callable[[Any], Any]] = {
    "S": _s,
    "N": _number,
    "BOOL": _bool,
    "NULL": _null,
    "M": _m,
    "L": _l,
    "B": _binary,
    "SS": lambda value: set(_strings(value, "SS")),
    "NS": lambda value: {_number(item) for item in _strings(value, "NS")},
    "BS": lambda value: {_binary(item) for item in _strings(value, "BS")},
}


def present_tags(typed: Any) -> dict[str, Any] | None:
    """A typed value's tags without the JSON-null ones (null means absent), or None when it is not an object."""
    if not isinstance(typed, dict):
        return None
    return {tag: value for tag, value in typed.items() if value is not None}


def deserialize_value(typed: Any) -> Any:
    """Typed DynamoDB JSON (one value) -> Python: str, Decimal, bytes, bool, None, dict, list, or a set.

    A tag or map entry whose value is JSON null counts as absent. Raises ``ValueError`` naming the offending
    value when ``typed`` is not a DynamoDB attribute value.
    """
    present = present_tags(typed)
    if present is None or len(present) != 1:
        raise ValueError(f"expected one DynamoDB typed value like {{'S': ...}}, got {typed!r}")
    ((tag, value),) = present.items()
    deserializer = _DESERIALIZERS.get(tag)
    if deserializer is None:
        raise ValueError(f"unknown DynamoDB type tag {tag!r} (expected one of {', '.join(sorted(_DESERIALIZERS))})")
    return deserializer(value)
