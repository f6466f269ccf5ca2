"""Strict normalisation: a decoded change record -> one output row, every rule derived from the Avro contract.

Which columns come from where is the only thing named here: the change metadata columns, the two key-derived
columns and ``extra_attributes``. Every other column is an item attribute whose type, nullability and
symbols are read from ``pipeline.schema.field_specs()``.

Decisions where the issue leaves room (documented in docs/handler.md):
- JSON ``null`` anywhere in an item means absent: an attribute, a type tag next to the real one, a map entry
  (DynamoDB never writes one; a list element or set member that is null is still refused);
- ``event_id``/``fan_id`` come from the keys ``pk = EVENT#<event_id>``, ``sk = FAN#<fan_id>`` (non-empty);
  an image that also holds ``pk``/``sk``/``event_id``/``fan_id`` must agree with the keys;
- integers accept any integral DynamoDB number text (``3``, ``3.0``, ``3E0``) inside the column's range;
- timestamps are ISO-8601 text with an explicit offset (``Z``, ``+00:00`` or any other offset, converted to
  UTC); text without an offset is refused; digits below the millisecond are truncated;
- arrays accept ``L`` of the item type or the matching set (``SS``/``NS``), maps take ``M`` and are written
  with their entries sorted by key;
- unknown attributes go to ``extra_attributes`` as a JSON object sorted by name: numbers as JSON numbers
  with DynamoDB's exact digits, sets as sorted lists, binary as base64 text;
- ``change_time`` must fall in [2000-01-01, 2100-01-01) UTC, which catches a precision mix-up
  (microseconds read as milliseconds land in year ~58000).
"""

from __future__ import annotations

import base64
import decimal
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.change_order import CHANGE_TIME_US
from pipeline.decode import ChangeRecord, EventName, KinesisRecord, deserialize_value, present_tags
from pipeline.exceptions import NotChangeRecordError, SchemaViolationError
from pipeline.schema import FieldSpec, field_specs

__all__ = [
    "CHANGE_COLUMNS",
    "CHANGE_TIME_RANGE",
    "EXTRA_COLUMN",
    "KEY_COLUMNS",
    "item_specs",
    "normalize",
    "plain_json",
]

#: Columns filled from the change record and the Kinesis envelope rather than from the item.
CHANGE_COLUMNS = (
    "op",
    "change_id",
    "change_time",
    CHANGE_TIME_US,
    "shard_id",
    "sequence_number",
    "table_name",
    "deleted_by_ttl",
)
#: Key-derived columns: column -> (key attribute, prefix of its value).
KEY_COLUMNS = {"event_id": ("pk", "EVENT#"), "fan_id": ("sk", "FAN#")}
EXTRA_COLUMN = "extra_attributes"
#: change_time bounds in microseconds since the epoch: [2000-01-01, 2100-01-01).
CHANGE_TIME_RANGE = (946_684_800_000_000, 4_102_444_800_000_000)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TIME_UNITS = {"timestamp-millis": timedelta(milliseconds=1), "timestamp-micros": timedelta(microseconds=1)}
_SHOWN = 120  # characters of a bad value quoted in a reason


def _check_contract() -> tuple[FieldSpec, ...]:
    specs = field_specs()
    names = {spec.name for spec in specs}
    missing = (set(CHANGE_COLUMNS) | set(KEY_COLUMNS) | {EXTRA_COLUMN}) - names
    if missing:
        raise ValueError(f"the record contract lacks the columns the handler fills: {sorted(missing)}")
    return tuple(spec for spec in specs if spec.name not in CHANGE_COLUMNS and spec.name != EXTRA_COLUMN)


def item_specs() -> tuple[FieldSpec, ...]:
    """The contract fields that come from the item (keys included), in schema order."""
    return _ITEM_SPECS


_ITEM_SPECS = _check_contract()
_ITEM_NAMES = frozenset(spec.name for spec in _ITEM_SPECS) | {key for key, _ in KEY_COLUMNS.values()}


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _violation(name: str, typed: Any, expected: str) -> SchemaViolationError:
    return SchemaViolationError(f"attribute {name!r}: expected {expected}, got {_shown(typed)}")


def _tagged(name: str, typed: Any, tag: str, expected: str) -> Any:
    present = present_tags(typed)
    if present is None or len(present) != 1 or tag not in present:
        raise _violation(name, typed, expected)
    return typed[tag]


def _integer(kind: str) -> Callable[[str, Any], int]:
    low, high = _INT_RANGES[kind]

    def convert(name: str, typed: Any) -> int:
        expected = f"a number (N) holding an {kind}"
        try:
            number = deserialize_value({"N": _tagged(name, typed, "N", expected)})
        except ValueError:
            raise _violation(name, typed, expected) from None
        if number != number.to_integral_value() or not low <= number <= high:
            raise _violation(name, typed, f"an {kind} in [{low}, {high}]")
        return int(number)

    return convert


def _double(name: str, typed: Any) -> float:
    try:
        return float(deserialize_value({"N": _tagged(name, typed, "N", "a number (N)")}))
    except ValueError:
        raise _violation(name, typed, "a number (N)") from None


def _string(name: str, typed: Any) -> str:
    value = _tagged(name, typed, "S", "a string (S)")
    if not isinstance(value, str):
        raise _violation(name, typed, "a string (S)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _violation(name, typed, "a string of Unicode scalar values (no lone surrogates)") from None
    return value


def _boolean(name: str, typed: Any) -> bool:
    value = _tagged(name, typed, "BOOL", "a boolean (BOOL)")
    if not isinstance(value, bool):
        raise _violation(name, typed, "a boolean (BOOL)")
    return value


def _timestamp(kind: str) -> Callable[[str, Any], int]:
    unit = _TIME_UNITS[kind]

    def convert(name: str, typed: Any) -> int:
        expected = "ISO-8601 text (S) with a UTC offset, like 2026-11-28T23:50:00.000Z"
        text = _string(name, typed) if isinstance(typed, dict) and "S" in typed else None
        if text is None:
            raise _violation(name, typed, expected)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _violation(name, typed, expected) from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise _violation(name, typed, expected + " (this text has no offset, so its UTC time is unknown)")
        return (moment - _EPOCH) // unit

    return convert


_SCALAR_CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "string": _string,
    "long": _integer("long"),
    "int": _integer("int"),
    "double": _double,
    "boolean": _boolean,
    "timestamp-millis": _timestamp("timestamp-millis"),
    "timestamp-micros": _timestamp("timestamp-micros"),
}
_SET_TAGS = {"string": "SS", "long": "NS", "int": "NS", "double": "NS"}


def _array(spec: FieldSpec, typed: Any) -> list[Any]:
    item_kind = str(spec.item_kind)
    convert = _SCALAR_CONVERTERS[item_kind]
    set_tag = _SET_TAGS.get(item_kind)
    expected = f"a list (L) of {item_kind}" + (f" or a set ({set_tag})" if set_tag else "")
    present = present_tags(typed)
    if present is not None and len(present) == 1 and set_tag in present:
        values = present[set_tag]
        if not isinstance(values, list):
            raise _violation(spec.name, typed, expected)
        scalar_tag = "S" if set_tag == "SS" else "N"
        return [convert(f"{spec.name}[{index}]", {scalar_tag: value}) for index, value in enumerate(values)]
    values = _tagged(spec.name, typed, "L", expected)
    if not isinstance(values, list):
        raise _violation(spec.name, typed, expected)
    return [convert(f"{spec.name}[{index}]", value) for index, value in enumerate(values)]


def _map(spec: FieldSpec, typed: Any) -> list[tuple[str, Any]]:
    convert = _SCALAR_CONVERTERS[str(spec.item_kind)]
    entries = _tagged(spec.name, typed, "M", f"a map (M) of {spec.item_kind}")
    if not isinstance(entries, dict):
        raise _violation(spec.name, typed, f"a map (M) of {spec.item_kind}")
    return sorted((key, convert(f"{spec.name}.{key}", value)) for key, value in entries.items() if value is not None)


def _enum(spec: FieldSpec, typed: Any) -> str:
    value = _string(spec.name, typed)
    if value not in spec.symbols:
        raise _violation(spec.name, typed, f"one of {', '.join(spec.symbols)}")
    return value


def _attribute(spec: FieldSpec, typed: Any) -> Any:
    if spec.kind == "enum":
        return _enum(spec, typed)
    if spec.kind == "array":
        return _array(spec, typed)
    if spec.kind == "map":
        return _map(spec, typed)
    return _SCALAR_CONVERTERS[spec.kind](spec.name, typed)


def _plain_mapping(value: dict[str, Any]) -> str:
    members = (f"{json.dumps(key, ensure_ascii=False)}:{_plain(value[key])}" for key in sorted(value))
    return "{" + ",".join(members) + "}"


_PLAIN_SCALARS: dict[type, Callable[[Any], str]] = {
    type(None): lambda _: "null",
    bool: lambda value: "true" if value else "false",
    str: lambda value: json.dumps(value, ensure_ascii=False),
    # str() of a finite Decimal is always a valid JSON number, with DynamoDB's exact digits.
    decimal.Decimal: str,
    bytes: lambda value: json.dumps(base64.b64encode(value).decode("ascii")),
    dict: _plain_mapping,
    list: lambda value: "[" + ",".join(_plain(item) for item in value) + "]",
    set: lambda value: "[" + ",".join(_plain(item) for item in sorted(value)) + "]",
}


def _plain(value: Any) -> str:
    render = _PLAIN_SCALARS.get(type(value))
    if render is None:
        raise TypeError(f"not a DynamoDB value: {value!r}")
    return render(value)


def plain_json(value: Any) -> str:
    """A deserialized DynamoDB value as compact JSON text (keys and sets sorted, numbers exact, binary base64)."""
    return _plain(value)


def _key_value(change: ChangeRecord, column: str) -> str:
    attribute, prefix = KEY_COLUMNS[column]
    typed = change.keys.get(attribute)
    present = present_tags(typed)
    text = present.get("S") if present is not None and len(present) == 1 else None
    if not isinstance(text, str) or not text.startswith(prefix) or len(text) == len(prefix):
        raise NotChangeRecordError(f'key {attribute!r} is {_shown(typed)}, expected {{"S": "{prefix}<{column}>"}}')
    return text[len(prefix) :]


def _item_values(change: ChangeRecord, image: Mapping[str, Any], row: dict[str, Any]) -> None:
    for column, (attribute, _) in KEY_COLUMNS.items():
        if image.get(attribute) is not None and present_tags(image[attribute]) != present_tags(
            change.keys.get(attribute)
        ):
            raise SchemaViolationError(
                f"attribute {attribute!r}: image holds {_shown(image[attribute])} but the key is "
                f"{_shown(change.keys.get(attribute))}"
            )
        typed = image.get(column)
        if typed is not None and _string(column, typed) != row[column]:
            raise SchemaViolationError(
                f"attribute {column!r}: image holds {_shown(typed)} but the key {attribute!r} says {row[column]!r}"
            )
    for spec in _ITEM_SPECS:
        if spec.name in KEY_COLUMNS:
            continue
        typed = image.get(spec.name)
        if typed is None or (spec.nullable and present_tags(typed) == {"NULL": True}):
            if not spec.nullable:
                raise SchemaViolationError(f"attribute {spec.name!r} is required but missing")
            row[spec.name] = None
            continue
        row[spec.name] = _attribute(spec, typed)


def _extra_attributes(image: Mapping[str, Any]) -> str | None:
    extra = {}
    for name, typed in image.items():
        if name in _ITEM_NAMES or typed is None:
            continue
        try:
            extra[name] = deserialize_value(typed)
        except ValueError as error:
            raise SchemaViolationError(f"attribute {name!r}: {error}") from None
    return plain_json(extra) if extra else None


def normalize(envelope: KinesisRecord, change: ChangeRecord) -> dict[str, Any]:
    """One output row (column -> Python value, timestamps as integers in the column's unit)."""
    change_time = change.change_time_micros
    if not CHANGE_TIME_RANGE[0] <= change_time < CHANGE_TIME_RANGE[1]:
        raise NotChangeRecordError(
            f"dynamodb.ApproximateCreationDateTime {change.approximate_creation} read as {change.precision} "
            "is not between 2000 and 2100: is CHANGE_TIME_PRECISION right?"
        )
    image = change.image
    if image is None:
        which = "OldImage" if change.event_name is EventName.REMOVE else "NewImage"
        raise NotChangeRecordError(
            f"{change.event_name} record has no dynamodb.{which}: a row needs the item "
            "(is the stream view type NEW_AND_OLD_IMAGES?)"
        )
    row: dict[str, Any] = {column: _key_value(change, column) for column in KEY_COLUMNS}
    _item_values(change, image, row)
    row.update(
        op=change.event_name.value,
        change_id=change.change_id,
        change_time=change_time,
        change_time_us=change_time,
        shard_id=envelope.shard_id,
        sequence_number=envelope.sequence_number,
        table_name=change.table_name,
    )
    row[EXTRA_COLUMN] = _extra_attributes(image)
    row["deleted_by_ttl"] = change.deleted_by_ttl
    return row
