"""Column-wise decoding: the fast path, which accepts only what the strict path accepts, with the same values.

Per-record Python (``json.loads``, a typed-value deserializer, a validator) is what makes a naive decoder slow.
Here the decoded payloads are joined into newline-delimited JSON and parsed in one call by Arrow's JSON reader,
with an explicit schema for the usual DynamoDB-typed structure (derived from the Avro contract) and inference
for the rest (map keys, unknown attributes, rare type tags such as ``NULL`` or sets, whose inferred type is
checked before use). Validation and conversion are Arrow compute kernels over whole columns, on two threads.

Every row the columns cannot vouch for goes, alone, through the strict path (``pipeline.batch.decode_one``),
which is the definition of validity and writes the quarantine reason. A row is vouched for only when each
check is certain; anything unusual (a null list element, a number that is not plain digits, a
timestamp in a rarer ISO form, an unknown type tag) makes the row "unsure" rather than "bad". A payload the
reader cannot parse costs its sub-batch a bisection, so one poison record never costs the batch, and never
lands a good record in quarantine.
"""

from __future__ import annotations

import binascii
import concurrent.futures
import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pybase64

from pipeline.batch import DecodedBatch, Quarantined, decode_one, rows_table
from pipeline.decode import DYNAMODB_SOURCE, TTL_IDENTITY, KinesisBatch, KinesisRecord
from pipeline.exceptions import RecordError
from pipeline.normalize import CHANGE_TIME_RANGE, EXTRA_COLUMN, KEY_COLUMNS, item_specs
from pipeline.schema import FieldSpec, arrow_schema

__all__ = ["decode_batch", "payload_schema"]

_STRING = pa.string()
_SMALLEST_SUB_BATCH = 16  # below this, a sub-batch the reader refuses goes record by record
_PRECISIONS = ("MILLISECOND", "MICROSECOND")
_PLAIN_LONG = r"^-?[0-9]{1,18}$"
_PLAIN_INT = r"^-?[0-9]{1,10}$"
# Number text that str(Decimal(text)) writes back unchanged: no exponent, no leading zeros, not below 1E-6.
_PLAIN_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"
_TINY_NUMBER = r"^-?0\.0{6}"
_INT32 = (-(2**31), 2**31 - 1)
# The common ISO-8601 forms; others (space separator, basic format, 7+ fraction digits...) go the strict way.
_ISO_TIMESTAMP = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])$"
)
_TIME_DIVISORS = {"timestamp-millis": 1000, "timestamp-micros": 1}
_TIME_UNITS = {"timestamp-millis": "ms", "timestamp-micros": "us"}


def _attribute_type(spec: FieldSpec) -> pa.DataType:
    """The typed-JSON shape of one contract attribute, as the JSON reader should parse it.

    Only the usual tag is declared. The reader fills every declared field of every row, present or not, so a
    rarely seen tag (``NULL``, a set) would cost each row a null per image; left out, it is inferred in the
    blocks that hold it, and the decoders check its type before trusting it.
    """
    tags: list[tuple[str, pa.DataType]]
    if spec.kind in ("string", "enum", "timestamp-millis", "timestamp-micros"):
        tags = [("S", _STRING)]
    elif spec.kind in ("long", "int", "double"):
        tags = [("N", _STRING)]
    elif spec.kind == "boolean":
        tags = [("BOOL", pa.bool_())]
    elif spec.kind == "array" and spec.item_kind == "string":
        tags = [("L", pa.list_(pa.struct([("S", _STRING)])))]
    elif spec.kind == "array":
        tags = [("L", pa.list_(pa.struct([("N", _STRING)])))]
    else:  # map: its keys are data, so its shape is inferred
        tags = [("M", pa.struct([]))]
    return pa.struct(tags)


def payload_schema() -> pa.Schema:
    """Explicit schema of a change record for the JSON reader, derived from the contract.

    ``userIdentity`` (null, or an object for TTL deletions) is left to inference rather than declared: it is
    null in nearly every record, and ``_deleted_by_ttl`` checks its inferred type before reading it.
    """
    key = pa.struct([("S", _STRING)])
    image_fields = [(attribute, key) for attribute, _ in KEY_COLUMNS.values()]
    image_fields += [(spec.name, _attribute_type(spec)) for spec in item_specs()]
    image = pa.struct(image_fields)
    dynamodb = pa.struct(
        [
            ("ApproximateCreationDateTime", pa.int64()),
            ("ApproximateCreationDateTimePrecision", _STRING),
            ("Keys", pa.struct([(attribute, key) for attribute, _ in KEY_COLUMNS.values()])),
            ("NewImage", image),
            ("OldImage", image),
            ("SizeBytes", pa.int64()),
        ]
    )
    return pa.schema(
        [
            ("awsRegion", _STRING),
            ("eventID", _STRING),
            ("eventName", _STRING),
            ("recordFormat", _STRING),
            ("tableName", _STRING),
            ("dynamodb", dynamodb),
            ("eventSource", _STRING),
        ]
    )


_PAYLOAD_SCHEMA = payload_schema()
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=_PAYLOAD_SCHEMA, unexpected_field_behavior="infer")
_KNOWN_ATTRIBUTES = frozenset(field.name for field in _PAYLOAD_SCHEMA.field("dynamodb").type.field("NewImage").type)
_STRING_LIST = pa.list_(_STRING)


# -- small column helpers ---------------------------------------------------------------------------------------
def _field(array: Any, name: str) -> Any:
    """A struct child (parent nulls applied), or None when the inferred type has no such field."""
    index = -1 if array is None or not pa.types.is_struct(array.type) else array.type.get_field_index(name)
    if index < 0:
        return None
    return pc.struct_field(array, [index])  # by position: a data-borne name like "a.b" is not a path


def _valid(array: Any, length: int) -> pa.BooleanArray:
    if array is None:
        return _constant(False, length)
    return array.is_valid()


def _all(*masks: Any) -> Any:
    result = masks[0]
    for mask in masks[1:]:
        result = pc.and_(result, mask)
    return pc.fill_null(result, False) if result.null_count else result


def _tag_count(struct: Any, length: int) -> Any:
    """How many type tags are set in each typed value (1 for a well-formed DynamoDB value)."""
    total = _zeros(length)
    for index in range(struct.type.num_fields):
        total = pc.add(total, pc.struct_field(struct, [index]).is_valid().cast(pa.int32()))
    return total


def _only(struct: Any, tag: str, length: int) -> Any:
    """Rows where ``struct`` is present with exactly one tag, ``tag``."""
    child = _field(struct, tag)
    if child is None:
        return _constant(False, length)
    result = child.is_valid()
    for index, other in enumerate(struct.type):
        if other.name != tag:
            result = pc.and_(result, pc.struct_field(struct, [index]).is_null())
    return result


def _rows_with(bad_elements: Any, parents: Any, length: int) -> Any:
    """Rows owning at least one element flagged in ``bad_elements``."""
    bad_rows = pc.unique(pc.filter(parents, bad_elements))
    return pc.is_in(_straight(length), value_set=bad_rows.cast(pa.int64()))


@dataclass
class _Decoded:
    """A column decoded from one image, with the rows it is sure about."""

    values: Any
    sure: Any


# -- attribute decoders: (tag child, row count) -> values and the rows they are certain about ---------------------
def _string_values(child: Any, length: int) -> _Decoded:
    if child is None or child.type != _STRING:
        return _Decoded(pa.nulls(length, _STRING), _valid(None, length))
    return _Decoded(child, child.is_valid())


def _integer_values(child: Any, length: int, kind: str) -> _Decoded:
    target = pa.int64() if kind == "long" else pa.int32()
    if child is None:
        return _Decoded(pa.nulls(length, target), _valid(None, length))
    sure = pc.fill_null(pc.match_substring_regex(child, _PLAIN_LONG if kind == "long" else _PLAIN_INT), False)
    # values only where certain, null elsewhere (absent, NULL, or left to the strict path)
    numbers = pc.cast(pc.if_else(sure, child, pa.scalar(None, _STRING)), pa.int64())
    if kind == "int":
        sure = _all(sure, pc.greater_equal(numbers, _INT32[0]), pc.less_equal(numbers, _INT32[1]))
        numbers = pc.cast(pc.if_else(sure, numbers, pa.scalar(None, pa.int64())), pa.int32())
    return _Decoded(numbers, sure)


def _timestamp_values(child: Any, length: int, kind: str) -> _Decoded:
    target = pa.timestamp(_TIME_UNITS[kind], tz="UTC")
    if child is None or child.type != _STRING:
        return _Decoded(pa.nulls(length, target), _valid(None, length))
    sure = pc.fill_null(pc.match_substring_regex(child, _ISO_TIMESTAMP), False)
    try:
        micros = pc.cast(pc.if_else(sure, child, pa.scalar(None, _STRING)), pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:  # an impossible date (30 February) somewhere: let the strict path sort them out
        return _Decoded(pa.nulls(length, target), _valid(None, length))
    integers = micros.cast(pa.int64())
    sure = _all(sure, pc.greater_equal(integers, 0))  # floor and truncation agree only from 1970 on
    scaled = pc.divide(pc.if_else(sure, integers, pa.scalar(None, pa.int64())), _TIME_DIVISORS[kind])
    return _Decoded(scaled.cast(target), sure)


def _string_list_values(attribute: Any, length: int) -> tuple[_Decoded, Any, Any]:
    """``L`` of ``S`` or ``SS`` -> list<string>; returns the values and the rows holding each tag."""
    target = pa.list_(_STRING)
    lists, sets = _field(attribute, "L"), _field(attribute, "SS")
    sure_l = _valid(lists, length)
    values = pa.nulls(length, target)
    if lists is not None:
        elements = pc.list_flatten(lists)
        texts = _field(elements, "S")
        element_ok = (
            _only(elements, "S", len(elements))
            if texts is not None and texts.type == _STRING
            else _constant(False, len(elements))
        )
        bad = _rows_with(pc.invert(element_ok), pc.list_parent_indices(lists), length)
        sure_l = _all(sure_l, pc.invert(bad))
        if texts is not None and texts.type == _STRING:
            inner = pc.struct_field(lists.values, "S")
            values = pa.ListArray.from_arrays(lists.offsets, inner, mask=pc.invert(lists.is_valid()))
    if sets is None or sets.type != _STRING_LIST:  # absent, or inferred as something else: left to the strict path
        return _Decoded(values, sure_l), _valid(lists, length), _valid(None, length)
    # a set member that is JSON null is refused by the strict path: such rows go its way
    null_members = _rows_with(pc.list_flatten(sets).is_null(), pc.list_parent_indices(sets), length)
    sets_ok = _all(sets.is_valid(), pc.invert(null_members))
    merged = pc.take(pa.concat_arrays([values, sets]), pc.if_else(sets.is_valid(), _shifted(length), _straight(length)))
    return _Decoded(merged, pc.or_(sure_l, sets_ok)), _valid(lists, length), sets.is_valid()


@functools.lru_cache(maxsize=16)
def _constant(value: bool, length: int) -> pa.BooleanArray:
    """An all-``value`` boolean column (cached: made once per batch size)."""
    return pa.array([value] * length, pa.bool_())


@functools.lru_cache(maxsize=8)
def _zeros(length: int) -> pa.Array:
    return pa.array([0] * length, pa.int32())


@functools.lru_cache(maxsize=8)
def _arange(start: int, stop: int) -> pa.Array:
    return pa.array(range(start, stop), pa.int64())


def _straight(length: int) -> pa.Array:
    """0 .. length-1: take() indices of the first of two concatenated columns."""
    return _arange(0, length)


def _shifted(length: int) -> pa.Array:
    """length .. 2*length-1: take() indices of the second of two concatenated columns."""
    return _arange(length, 2 * length)


def _string_map_values(maps: Any, length: int) -> _Decoded:
    """``M`` of ``S`` -> map<string, string>, entries sorted by key as the strict path writes them."""
    target = pa.map_(_STRING, _STRING)
    if maps is None:
        return _Decoded(pa.nulls(length, target), _valid(None, length))
    present = maps.is_valid()
    sure = present
    counts = _zeros(length)
    rows, ranks, keys, items = [], [], [], []
    for rank, name in enumerate(sorted(field.name for field in maps.type)):
        entry = _field(maps, name)
        has = entry.is_valid()
        text = _field(entry, "S")
        if text is None or text.type != _STRING:
            sure = _all(sure, pc.invert(has))
            continue
        sure = _all(sure, pc.or_(pc.invert(has), _only(entry, "S", length)))
        where = pc.indices_nonzero(has)
        counts = pc.add(counts, has.cast(pa.int32()))
        rows.append(where)
        ranks.append(pa.repeat(pa.scalar(rank, pa.int32()), len(where)))
        keys.append(pa.repeat(pa.scalar(name, _STRING), len(where)))
        items.append(pc.take(text, where))
    if not rows:
        offsets = pa.array([0] * (length + 1), pa.int32())
        empty = pa.array([], _STRING)
        return _Decoded(pa.MapArray.from_arrays(offsets, empty, empty, mask=pc.invert(present)), sure)
    entries = pa.table(
        {"row": pa.concat_arrays(rows), "rank": pa.concat_arrays(ranks), "key": pa.concat_arrays(keys)}
    ).append_column("item", pa.concat_arrays(items))
    entries = entries.sort_by([("row", "ascending"), ("rank", "ascending")])
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(counts).cast(pa.int32())])
    values = pa.MapArray.from_arrays(
        offsets,
        entries.column("key").combine_chunks(),
        entries.column("item").combine_chunks(),
        mask=pc.invert(present),
    )
    return _Decoded(values, sure)


def _attribute(spec: FieldSpec, attribute: Any, length: int) -> _Decoded:
    """One contract attribute of one image -> its column and the rows the column is certain about."""
    present = _valid(attribute, length)
    absent_ok = _constant(spec.nullable, length)
    null_tag = None
    null_child = _field(attribute, "NULL") if spec.nullable else None
    if null_child is not None and pa.types.is_boolean(null_child.type):  # otherwise its rows are not sure
        null_tag = _all(_only(attribute, "NULL", length), pc.fill_null(null_child, False))
    if spec.kind in ("string", "enum"):
        decoded = _string_values(_field(attribute, "S"), length)
        if spec.kind == "enum":
            decoded.sure = _all(decoded.sure, pc.is_in(decoded.values, value_set=pa.array(spec.symbols)))
        decoded.sure = _all(decoded.sure, _only(attribute, "S", length))
    elif spec.kind in ("long", "int"):
        decoded = _integer_values(_field(attribute, "N"), length, spec.kind)
        decoded.sure = _all(decoded.sure, _only(attribute, "N", length))
    elif spec.kind in _TIME_UNITS:
        decoded = _timestamp_values(_field(attribute, "S"), length, spec.kind)
        decoded.sure = _all(decoded.sure, _only(attribute, "S", length))
    elif spec.kind == "array" and spec.item_kind == "string":
        decoded, _, _ = _string_list_values(attribute, length)
        one_tag = pc.equal(_tag_count(attribute, length), 1) if attribute is not None else present
        decoded.sure = _all(decoded.sure, one_tag)
    elif spec.kind == "map" and spec.item_kind == "string":
        decoded = _string_map_values(_field(attribute, "M"), length)
        decoded.sure = _all(decoded.sure, _only(attribute, "M", length))
    else:  # a kind the fast path does not handle: rows holding it go the strict way
        decoded = _Decoded(pa.nulls(length, arrow_schema().field(spec.name).type), _valid(None, length))
    if null_tag is not None:
        decoded.sure = pc.or_(decoded.sure, null_tag)
    # every decoder leaves its values null where the attribute is absent or {"NULL": true}
    sure = pc.if_else(present, decoded.sure, absent_ok)
    return _Decoded(decoded.values, pc.fill_null(sure, False))


def _quote(texts: Any) -> Any:
    """JSON string literals, as ``json.dumps(..., ensure_ascii=False)`` writes them (no control characters)."""
    escaped = pc.replace_substring(pc.replace_substring(texts, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _render(typed: Any, length: int) -> tuple[Any, Any]:
    """Typed DynamoDB values (a struct column of tags) -> JSON text of their plain values, and the rows that text
    is certain about. Rarer shapes (sets, binary, numbers in exponent form) are left to the strict path."""
    if not pa.types.is_struct(typed.type):
        return pa.nulls(length, _STRING), pc.invert(typed.is_valid())
    texts: list[Any] = []
    sure = pc.or_(pc.invert(typed.is_valid()), pc.equal(_tag_count(typed, length), 1))
    for index, tag_field in enumerate(typed.type):
        child = pc.struct_field(typed, [index])
        has = child.is_valid()
        if tag_field.name == "S" and tag_field.type == _STRING:
            plain = pc.invert(pc.fill_null(pc.match_substring_regex(child, "[\x00-\x1f]"), False))
            text, ok = _quote(child), plain
        elif tag_field.name == "N" and tag_field.type == _STRING:
            ok = _all(pc.match_substring_regex(child, _PLAIN_NUMBER), pc.less_equal(pc.utf8_length(child), 38))
            ok = _all(ok, pc.invert(pc.fill_null(pc.match_substring_regex(child, _TINY_NUMBER), False)))
            text = child
        elif tag_field.name == "BOOL" and pa.types.is_boolean(tag_field.type):
            text, ok = pc.if_else(child, "true", "false"), has
        elif tag_field.name == "NULL" and pa.types.is_boolean(tag_field.type):
            text, ok = pc.if_else(child, "null", None), pc.fill_null(child, False)
        elif tag_field.name == "M":
            text, ok = _render_object(child, length)
        elif tag_field.name == "L" and pa.types.is_list(tag_field.type):
            text, ok = _render_list(child, length)
        else:
            text, ok = pa.nulls(length, _STRING), _constant(False, length)
        sure = _all(sure, pc.or_(pc.invert(has), ok))
        texts.append(pc.if_else(has, text.cast(_STRING), None))
    if not texts:
        return pa.nulls(length, _STRING), pc.invert(typed.is_valid())
    return pc.coalesce(*texts), sure


def _render_object(struct: Any, length: int, names: Sequence[str] | None = None) -> tuple[Any, Any]:
    """A struct of typed values -> JSON object text with its present members sorted by name."""
    if not pa.types.is_struct(struct.type):
        return pa.nulls(length, _STRING), pc.invert(struct.is_valid())
    members: list[Any] = []
    sure = _constant(True, length)
    for name in sorted(names if names is not None else [field.name for field in struct.type]):
        text, ok = _render(_field(struct, name), length)
        sure = _all(sure, ok)
        member = pc.binary_join_element_wise(",", json.dumps(name, ensure_ascii=False), ":", text, "")
        members.append(pc.fill_null(member, ""))
    # each present member is ",name:value"; the first comma is cut. (null_handling="skip" is not used: in
    # pyarrow 26 it drops the rows where every input is null.)
    body = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*members, ""), 1) if members else ""
    text = pc.binary_join_element_wise("{", body, "}", "")
    return pc.if_else(struct.is_valid(), text, None), sure


def _render_list(lists: Any, length: int) -> tuple[Any, Any]:
    """A list of typed values -> JSON array text."""
    elements = pc.list_flatten(lists)
    count = len(elements)
    if count:
        texts, ok = _render(elements, count)
        ok = _all(ok, texts.is_valid())
        bad = _rows_with(pc.invert(ok), pc.list_parent_indices(lists), length)
        flat = pc.fill_null(texts, "")
    else:
        bad, flat = _constant(False, length), pa.array([], _STRING)
    sizes = pc.fill_null(pc.list_value_length(lists), 0).cast(pa.int32())
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(sizes).cast(pa.int32())])
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, flat), ",")
    text = pc.binary_join_element_wise("[", joined, "]", "")
    return pc.if_else(lists.is_valid(), text, None), pc.invert(bad)


def _extra_attributes(image: Any, length: int) -> tuple[Any, Any]:
    """Unknown attributes of one image as JSON text (null when none), and the rows that text is certain about."""
    unknown = [field.name for field in image.type if field.name not in _KNOWN_ATTRIBUTES]
    if not unknown:
        return pa.nulls(length, _STRING), _constant(True, length)
    has_any = _constant(False, length)
    for name in unknown:
        has_any = pc.or_(has_any, _field(image, name).is_valid())
    # render only the rows that have unknown attributes (usually few), then put the text back in place
    where = pc.indices_nonzero(has_any)
    count = len(where)
    fields = [image.type.field(name) for name in unknown]
    extras = pa.StructArray.from_arrays([pc.take(_field(image, name), where) for name in unknown], fields=fields)
    text, sure = _render_object(extras, count, unknown)
    slot = pc.subtract(pc.cumulative_sum(has_any.cast(pa.int64())), 1)
    index = pc.if_else(has_any, slot, count)
    texts = pc.take(pa.concat_arrays([text, pa.nulls(1, _STRING)]), index)
    sures = pc.take(pa.concat_arrays([sure, pa.array([True], pa.bool_())]), index)
    return texts, sures


def _pick(is_remove: Any, new: Any, old: Any, length: int) -> Any:
    """Per row, the old image's value for a REMOVE and the new image's otherwise (any type, nested too)."""
    if not pa.types.is_nested(new.type):
        return pc.if_else(is_remove, old, new)
    index = pc.if_else(is_remove, _shifted(length), _straight(length))
    return pc.take(pa.concat_arrays([new, old]), index)


def _unified(first: Any, second: Any, length: int) -> tuple[Any, Any] | None:
    """The two columns with one type: a struct field (or tag) only one side has is added to the other as nulls,
    which is what absent means, at every struct level. None when a child is typed differently otherwise."""
    if first.type == second.type:
        return first, second
    if pa.types.is_null(first.type) or pa.types.is_null(second.type):  # all null: absent everywhere
        kind = second.type if pa.types.is_null(first.type) else first.type
        return (first if first.type == kind else pa.nulls(length, kind)), (
            second if second.type == kind else pa.nulls(length, kind)
        )
    if not (pa.types.is_struct(first.type) and pa.types.is_struct(second.type)):
        return None
    names = [field.name for field in first.type] + [
        field.name for field in second.type if first.type.get_field_index(field.name) < 0
    ]
    sides: list[list[Any]] = [[], []]
    fields = []
    for name in names:
        left, right = _field(first, name), _field(second, name)
        if left is None and right is None:  # a name the struct holds twice: not resolved here
            return None
        pair = _unified(
            left if left is not None else pa.nulls(length, right.type),
            right if right is not None else pa.nulls(length, left.type),
            length,
        )
        if pair is None:
            return None
        fields.append(pa.field(name, pair[0].type))
        sides[0].append(pair[0])
        sides[1].append(pair[1])
    first, second = (
        pa.StructArray.from_arrays(side, fields=fields, mask=pc.invert(column.is_valid()))
        for side, column in zip(sides, (first, second), strict=True)
    )
    return first, second


def _row_image(is_remove: Any, new: Any, old: Any, length: int) -> tuple[Any, Any]:
    """Per row, the image it carries (old for REMOVE, new otherwise) as one struct column, and the rows that
    selection is certain about (a field the two images typed differently leaves REMOVE rows to the strict path)."""
    if new.type == old.type:  # the usual case: nothing to unify
        return _pick(is_remove, new, old, length), _constant(True, length)
    unified = _unified(new, old, length)
    if unified is None:
        return new, pc.invert(is_remove)
    return _pick(is_remove, unified[0], unified[1], length), _constant(True, length)


def _agrees(attribute: Any, expected: Any, length: int) -> Any:
    """Rows where ``attribute`` is absent, or is exactly ``{"S": <expected>}``."""
    if attribute is None:
        return _constant(True, length)
    text = _field(attribute, "S")
    if text is None or text.type != _STRING:
        return pc.invert(attribute.is_valid())
    same = _all(_only(attribute, "S", length), pc.equal(text, expected))
    return pc.or_(pc.invert(attribute.is_valid()), same)


# -- the batch -------------------------------------------------------------------------------------------------
_NESTED_KINDS = frozenset({"array", "map"})


@functools.cache
def _worker() -> concurrent.futures.ThreadPoolExecutor:
    """One thread, made on first use and kept for the life of the process."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="columns")


def _nested_columns(picked: concurrent.futures.Future[Any], length: int) -> tuple[dict[str, Any], Any]:
    """The list and map attributes and ``extra_attributes`` of the row images (``picked``, the result of
    ``_row_image``), and the rows they are sure about."""
    image, _ = picked.result()
    columns: dict[str, Any] = {}
    sure = _constant(True, length)
    for spec in item_specs():
        if spec.kind in _NESTED_KINDS and spec.name not in KEY_COLUMNS:
            decoded = _attribute(spec, _field(image, spec.name), length)
            columns[spec.name] = decoded.values
            sure = _all(sure, decoded.sure)
    columns[EXTRA_COLUMN], extra_sure = _extra_attributes(image, length)
    return columns, _all(sure, extra_sure)


def _deleted_by_ttl(table: pa.Table, is_remove: Any, length: int) -> Any:
    """REMOVE rows whose ``userIdentity`` is DynamoDB's TTL service, as ``pipeline.decode`` decides it: a field
    inferred as anything but text cannot hold the service's name, so such rows are simply not TTL deletions."""
    if "userIdentity" not in table.column_names:
        return _constant(False, length)
    identity = table.column("userIdentity").chunk(0)
    result = is_remove
    for name, value in TTL_IDENTITY.items():
        child = _field(identity, name)
        if child is None or child.type != _STRING:
            return _constant(False, length)
        result = pc.and_(result, pc.equal(child, value))
    return pc.fill_null(result, False)


def _columns(
    table: pa.Table, shard_id: str, sequences: Sequence[str], precision: str, source_table: str | None = None
) -> tuple[pa.Table, Any]:
    """Output columns for one parsed sub-batch, and the rows they are certain about."""
    length = table.num_rows
    table = table.combine_chunks()
    change_id, op, table_name = (table.column(name).chunk(0) for name in ("eventID", "eventName", "tableName"))
    body = table.column("dynamodb").chunk(0)
    # The row images are picked, then their lists, maps and extra_attributes built, on a second thread while
    # this one checks the envelope fields, the keys and the scalar attributes: Arrow kernels release the GIL,
    # so the two overlap on a second core.
    is_remove = pc.fill_null(pc.equal(op, "REMOVE"), False)
    new, old = pc.struct_field(body, "NewImage"), pc.struct_field(body, "OldImage")
    picked = _worker().submit(_row_image, is_remove, new, old, length)
    nested = _worker().submit(_nested_columns, picked, length)
    sure = _all(
        pc.greater(pc.utf8_length(change_id), 0),
        pc.is_in(op, value_set=pa.array(["INSERT", "MODIFY", "REMOVE"])),
        pc.greater(pc.utf8_length(table_name), 0),
        # another producer's record or another table's change: the strict path quarantines it with the reason
        pc.equal(table.column("eventSource").chunk(0), DYNAMODB_SOURCE),
    )
    if source_table is not None:
        sure = _all(sure, pc.equal(table_name, source_table))
    # change_time: the record's own precision wins, the configured one applies when it has none
    created = pc.struct_field(body, "ApproximateCreationDateTime")
    own = pc.struct_field(body, "ApproximateCreationDateTimePrecision")
    sure = _all(sure, pc.or_(own.is_null(), pc.is_in(own, value_set=pa.array(_PRECISIONS))))
    micros = pc.fill_null(pc.equal(pc.fill_null(own, precision), "MICROSECOND"), False)
    low = pc.if_else(micros, CHANGE_TIME_RANGE[0], CHANGE_TIME_RANGE[0] // 1000)
    high = pc.if_else(micros, CHANGE_TIME_RANGE[1], CHANGE_TIME_RANGE[1] // 1000)
    in_range = _all(pc.greater_equal(created, low), pc.less(created, high))
    sure = _all(sure, in_range)
    safe = pc.if_else(in_range, created, 0)
    change_time_us = pc.if_else(micros, safe, pc.multiply(safe, 1000))
    change_time = change_time_us.cast(pa.timestamp("us", tz="UTC"))
    # keys: pk = EVENT#<event_id>, sk = FAN#<fan_id>
    keys = pc.struct_field(body, "Keys")
    columns: dict[str, Any] = {}
    key_texts: dict[str, Any] = {}
    for column, (attribute, prefix) in KEY_COLUMNS.items():
        key = pc.struct_field(keys, attribute)
        text = key_texts[column] = pc.struct_field(key, "S")
        sure = _all(sure, _only(key, "S", length), pc.starts_with(text, prefix))
        sure = _all(sure, pc.greater(pc.utf8_length(text), len(prefix)))
        columns[column] = pc.utf8_slice_codeunits(text, len(prefix))
    columns.update(
        op=op,
        change_id=change_id,
        change_time=change_time,
        change_time_us=change_time_us,
        shard_id=pa.repeat(pa.scalar(shard_id, _STRING), length),
        sequence_number=pa.array(sequences, _STRING),
        table_name=table_name,
        deleted_by_ttl=_deleted_by_ttl(table, is_remove, length),
    )
    image, selected = picked.result()
    sure = _all(sure, selected, image.is_valid())
    for column, (attribute, _) in KEY_COLUMNS.items():
        # the image's own pk/sk, and event_id/fan_id if it has them, must agree with the key
        sure = _all(sure, _agrees(_field(image, attribute), key_texts[column], length))
        sure = _all(sure, _agrees(_field(image, column), columns[column], length))
    for spec in item_specs():
        if spec.name in KEY_COLUMNS or spec.kind in _NESTED_KINDS:
            continue
        decoded = _attribute(spec, _field(image, spec.name), length)
        columns[spec.name] = decoded.values
        sure = _all(sure, decoded.sure)
    nested_columns, nested_sure = nested.result()
    columns.update(nested_columns)
    sure = _all(sure, nested_sure)
    schema = arrow_schema()
    output = pa.Table.from_arrays([columns[name].cast(schema.field(name).type) for name in schema.names], schema=schema)
    return output, sure


def _parse(payloads: Sequence[bytes], joined: bytes | None = None) -> pa.Table | None:
    """Newline-delimited JSON -> table, or None when the reader refuses it or the row count is off."""
    if joined is None:
        joined = b"\n".join(payloads)
    try:
        table = pj.read_json(pa.py_buffer(joined), parse_options=_PARSE_OPTIONS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, UnicodeDecodeError):
        return None
    return table if table.num_rows == len(payloads) else None


def _parsed_runs(
    positions: list[int], payloads: Sequence[bytes], joined: bytes | None = None
) -> tuple[list[tuple[list[int], pa.Table]], list[int]]:
    """Parse the positions' payloads, bisecting around what the reader refuses; returns (parsed runs, leftovers)."""
    table = _parse([payloads[position] for position in positions], joined)
    if table is not None:
        return [(positions, table)], []
    if len(positions) <= _SMALLEST_SUB_BATCH:
        return [], positions
    middle = len(positions) // 2
    first, first_left = _parsed_runs(positions[:middle], payloads)
    second, second_left = _parsed_runs(positions[middle:], payloads)
    return first + second, first_left + second_left


_STRICT_BASE64 = functools.partial(binascii.a2b_base64, strict_mode=True)
# SIMD base64, about three times faster. It accepts a subset of what strict binascii accepts (it refuses excess
# padding, which binascii lets through) and decodes it identically, so a refusal just sends the chunk to binascii.
# Called as b64decode(text, None, True), i.e. altchars=None, validate=True: positional arguments through map()
# cost a quarter less per record than a partial with keywords.
_FAST_BASE64 = pybase64.b64decode


def _payloads(data: Sequence[str]) -> tuple[list[bytes], list[int], list[int]]:
    """Base64 -> bytes; returns the payloads, the positions fit for the reader, and the others.

    The common case runs as C-level ``map`` calls; a record that is not base64 sends the chunk record by record.
    """
    try:
        payloads = list(map(_FAST_BASE64, data, itertools.repeat(None), itertools.repeat(True)))
    except (binascii.Error, ValueError):
        return _payloads_one_by_one(data)
    # one JSON object per line: a payload that does not start as an object (or is empty) goes the strict way
    if all(map(bytes.startswith, payloads, itertools.repeat(b"{"))):
        return payloads, list(range(len(payloads))), []
    objects = list(map(bytes.startswith, payloads, itertools.repeat(b"{")))
    return (
        payloads,
        [position for position, ok in enumerate(objects) if ok],
        [position for position, ok in enumerate(objects) if not ok],
    )


def _payloads_one_by_one(data: Sequence[str]) -> tuple[list[bytes], list[int], list[int]]:
    payloads: list[bytes] = [b""] * len(data)
    candidates: list[int] = []
    unsure: list[int] = []
    for position, text in enumerate(data):
        try:
            payload = _STRICT_BASE64(text)
        except (binascii.Error, ValueError):
            unsure.append(position)
            continue
        payloads[position] = payload
        (candidates if payload[:1] == b"{" else unsure).append(position)
    return payloads, candidates, unsure


def _read(payloads: list[bytes], candidates: list[int]) -> tuple[list[tuple[list[int], pa.Table]], list[int]]:
    """Parse the candidates' payloads as newline-delimited JSON; returns (parsed runs, positions left over).

    A payload with line breaks of its own needs no check: it either makes the reader fail or yields more rows
    than payloads, and both send its sub-batch the way of bisection.
    """
    if not candidates:
        return [], []
    # candidates ascend without repeats: as many as the payloads means all of them, in order
    chosen = payloads if len(candidates) == len(payloads) else [payloads[position] for position in candidates]
    return _parsed_runs(candidates, payloads, b"\n".join(chosen))


def decode_batch(records: Sequence[KinesisRecord], precision: str, source_table: str | None = None) -> DecodedBatch:
    """Decode a batch column-wise, sending only the rows the columns are unsure about through the strict path.

    ``source_table``: see ``pipeline.decode.parse_change_record``."""
    batch = records if isinstance(records, KinesisBatch) else KinesisBatch.from_records(records)
    payloads, candidates, unsure = _payloads(batch.data)
    parsed, leftovers = _read(payloads, candidates)
    unsure.extend(leftovers)
    tables: list[pa.Table] = []
    fast_positions: list[int] = []
    sequences = batch.sequence_numbers
    for positions, table in parsed:
        run_sequences = sequences if len(positions) == len(sequences) else [sequences[p] for p in positions]
        output, sure = _columns(table, str(batch.shard_id), run_sequences, precision, source_table)
        if sure.false_count == 0:
            tables.append(output)
            fast_positions.extend(positions)
            continue
        tables.append(output.filter(sure))
        for position, ok in zip(positions, sure.to_pylist(), strict=True):
            (fast_positions if ok else unsure).append(position)
    strict_rows: list[dict[str, Any]] = []
    strict_positions: list[int] = []
    quarantined: list[Quarantined] = []
    for position in sorted(unsure):
        try:
            strict_rows.append(decode_one(batch[position], precision, source_table))
        except RecordError as error:
            quarantined.append(Quarantined(position, error))
        else:
            strict_positions.append(position)
    if strict_rows:
        tables.append(rows_table(strict_rows))
    positions = fast_positions + strict_positions
    rows = pa.concat_tables(tables) if tables else rows_table([])
    if strict_positions and positions != sorted(positions):  # runs and their filtered rows are in order
        order = sorted(range(len(positions)), key=positions.__getitem__)
        rows = rows.take(pa.array(order, pa.int64()))
        positions = [positions[index] for index in order]
    return DecodedBatch(rows.combine_chunks(), tuple(positions), tuple(quarantined))
