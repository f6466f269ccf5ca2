"""The record contract: one Avro schema, and the views derived from it (fields, Arrow, Glue)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

__all__ = [
    "SCHEMA_FILE",
    "FieldSpec",
    "GlueColumn",
    "arrow_schema",
    "field_specs",
    "glue_columns",
    "load_schema",
]

SCHEMA_FILE = "demand_change.avsc"

# Avro primitive and logical types -> (Arrow type, Glue/Hive type). Anything else is a contract error.
_SCALARS: dict[str, tuple[pa.DataType, str]] = {
    "string": (pa.string(), "string"),
    "long": (pa.int64(), "bigint"),
    "int": (pa.int32(), "int"),
    "boolean": (pa.bool_(), "boolean"),
    "double": (pa.float64(), "double"),
    "timestamp-millis": (pa.timestamp("ms", tz="UTC"), "timestamp"),
    "timestamp-micros": (pa.timestamp("us", tz="UTC"), "timestamp"),
}


@dataclass(frozen=True)
class FieldSpec:
    """One field of the contract, flattened: its kind, nullability, and enum symbols or item kind."""

    name: str
    kind: str  # a key of _SCALARS, or "enum", "array", "map"
    nullable: bool
    doc: str = ""
    symbols: tuple[str, ...] = ()
    item_kind: str | None = None  # element kind of an array, value kind of a map


@dataclass(frozen=True)
class GlueColumn:
    """A Glue table column: name, Hive type string and comment."""

    name: str
    type: str
    comment: str = ""


@cache
def load_schema(name: str = SCHEMA_FILE) -> dict[str, Any]:
    """Read an Avro schema shipped in ``pipeline/schemas``."""
    text = resources.files("pipeline.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    if schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        raise ValueError(f"schema {name!r} must be an Avro record with a list of fields")
    return schema


def _kind_of(avro_type: Any, where: str) -> tuple[str, dict[str, Any]]:
    """Return the kind name of a non-union Avro type and its definition."""
    if isinstance(avro_type, str):
        if avro_type not in _SCALARS:
            raise ValueError(f"field {where!r}: Avro type {avro_type!r} is not supported by the contract")
        return avro_type, {}
    if not isinstance(avro_type, dict):
        raise ValueError(f"field {where!r}: unsupported Avro type {avro_type!r}")
    logical = avro_type.get("logicalType")
    if logical is not None:
        if logical not in _SCALARS:
            raise ValueError(f"field {where!r}: logical type {logical!r} is not supported by the contract")
        return str(logical), avro_type
    kind = avro_type.get("type")
    if kind in ("enum", "array", "map"):
        return str(kind), avro_type
    if isinstance(kind, str) and kind in _SCALARS:
        return kind, avro_type
    raise ValueError(f"field {where!r}: unsupported Avro type {avro_type!r}")


def _field_spec(field: dict[str, Any]) -> FieldSpec:
    name = field["name"]
    avro_type = field["type"]
    nullable = False
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        if len(branches) != 1 or len(avro_type) != 2:
            raise ValueError(f"field {name!r}: only ['null', T] unions are supported, got {avro_type!r}")
        nullable, avro_type = True, branches[0]
    kind, definition = _kind_of(avro_type, name)
    symbols: tuple[str, ...] = ()
    item_kind = None
    if kind == "enum":
        symbols = tuple(definition["symbols"])
    elif kind in ("array", "map"):
        item_kind, _ = _kind_of(definition["items" if kind == "array" else "values"], name)
        if item_kind not in _SCALARS:
            raise ValueError(f"field {name!r}: nested {kind} of {item_kind!r} is not supported by the contract")
    return FieldSpec(name, kind, nullable, field.get("doc", ""), symbols, item_kind)


@cache
def field_specs(name: str = SCHEMA_FILE) -> tuple[FieldSpec, ...]:
    """The contract's fields, in schema order."""
    return tuple(_field_spec(field) for field in load_schema(name)["fields"])


def _arrow_type(spec: FieldSpec) -> pa.DataType:
    if spec.kind == "enum":
        return pa.string()
    if spec.kind == "array":
        return pa.list_(_SCALARS[str(spec.item_kind)][0])
    if spec.kind == "map":
        return pa.map_(pa.string(), _SCALARS[str(spec.item_kind)][0])
    return _SCALARS[spec.kind][0]


def _glue_type(spec: FieldSpec) -> str:
    if spec.kind == "enum":
        return "string"
    if spec.kind == "array":
        return f"array<{_SCALARS[str(spec.item_kind)][1]}>"
    if spec.kind == "map":
        return f"map<string,{_SCALARS[str(spec.item_kind)][1]}>"
    return _SCALARS[spec.kind][1]


@cache
def arrow_schema(name: str = SCHEMA_FILE) -> pa.Schema:
    """The Arrow (and so Parquet) schema of an output row."""
    return pa.schema(
        [
            pa.field(spec.name, _arrow_type(spec), nullable=spec.nullable, metadata={"doc": spec.doc})
            for spec in field_specs(name)
        ]
    )


def glue_columns(name: str = SCHEMA_FILE) -> list[GlueColumn]:
    """The Glue table columns (partition keys excluded) of the output rows."""
    return [GlueColumn(spec.name, _glue_type(spec), spec.doc[:255]) for spec in field_specs(name)]
