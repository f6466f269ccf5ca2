"""The two Iceberg tables: schemas derived from the one Avro contract, partitioning, sort order, properties.

Both tables are created on the first run, idempotently, and only ever evolve by adding columns (a column the
contract gains is added as optional, so files written before it read it as null).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import HourTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

from pipeline.schema import FieldSpec, field_specs

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

__all__ = [
    "CHANGES_TABLE",
    "REGISTRATIONS_TABLE",
    "STATE_EXCLUDED",
    "TableSpec",
    "changes_spec",
    "ensure_table",
    "iceberg_schema",
    "registrations_spec",
    "table_properties",
]

CHANGES_TABLE = "registration_changes"
REGISTRATIONS_TABLE = "registrations"
#: Contract fields that describe a change rather than a registration: not columns of the current state.
STATE_EXCLUDED = frozenset({"op", "deleted_by_ttl"})
#: How many previous metadata files the table's metadata log keeps (older ones are deleted after a commit):
#: a little over a day of runs every 15 minutes. Time travel goes through snapshots, not this log.
PREVIOUS_METADATA_VERSIONS = 100

_SCALARS: dict[str, IcebergType] = {
    "string": StringType(),
    "long": LongType(),
    "int": IntegerType(),
    "boolean": BooleanType(),
    "double": DoubleType(),
    # Iceberg timestamps are microseconds: millisecond values widen without loss.
    "timestamp-millis": TimestamptzType(),
    "timestamp-micros": TimestamptzType(),
}


def _iceberg_type(spec: FieldSpec, next_id: list[int]) -> IcebergType:
    if spec.kind == "enum":
        return StringType()
    if spec.kind == "array":
        next_id[0] += 1
        return ListType(element_id=next_id[0], element_type=_SCALARS[str(spec.item_kind)], element_required=False)
    if spec.kind == "map":
        next_id[0] += 2
        return MapType(
            key_id=next_id[0] - 1,
            key_type=StringType(),
            value_id=next_id[0],
            value_type=_SCALARS[str(spec.item_kind)],
            value_required=False,
        )
    return _SCALARS[spec.kind]


def iceberg_schema(excluded: frozenset[str] = frozenset()) -> Schema:
    """The contract's fields (less ``excluded``) as an Iceberg schema: field ids 1..n in contract order, nested
    ids after them; a non-null contract field is required."""
    specs = [spec for spec in field_specs() if spec.name not in excluded]
    next_id = [len(specs)]
    fields = [
        NestedField(
            field_id=index,
            name=spec.name,
            field_type=_iceberg_type(spec, next_id),
            required=not spec.nullable,
            doc=spec.doc or None,
        )
        for index, spec in enumerate(specs, start=1)
    ]
    return Schema(*fields)


@dataclass(frozen=True)
class TableSpec:
    """What a curated table is: name, schema, partitioning and sort order."""

    name: str
    schema: Schema
    partition_spec: PartitionSpec
    sort_order: SortOrder

    def field_id(self, name: str) -> int:
        return self.schema.find_field(name).field_id

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema rows are written with (the table's own, field ids included)."""
        return self.schema.as_arrow()


def _sort_order(schema: Schema, names: tuple[str, ...]) -> SortOrder:
    return SortOrder(
        *(
            SortField(
                source_id=schema.find_field(name).field_id,
                transform=IdentityTransform(),
                direction=SortDirection.ASC,
                null_order=NullOrder.NULLS_FIRST,
            )
            for name in names
        )
    )


def changes_spec() -> TableSpec:
    """``registration_changes``: every change once, partitioned by hour of change time, sorted by event, fan,
    change time."""
    schema = iceberg_schema()
    partition = PartitionSpec(
        PartitionField(
            source_id=schema.find_field("change_time").field_id,
            field_id=1000,
            transform=HourTransform(),
            name="change_hour",
        )
    )
    return TableSpec(CHANGES_TABLE, schema, partition, _sort_order(schema, ("event_id", "fan_id", "change_time")))


def registrations_spec() -> TableSpec:
    """``registrations``: one row per live (event, fan), with its last change; partitioned by event, so a run
    rewrites only the events it touched."""
    schema = iceberg_schema(STATE_EXCLUDED)
    partition = PartitionSpec(
        PartitionField(
            source_id=schema.find_field("event_id").field_id,
            field_id=1000,
            transform=IdentityTransform(),
            name="event_id",
        )
    )
    return TableSpec(REGISTRATIONS_TABLE, schema, partition, _sort_order(schema, ("event_id", "fan_id")))


def table_properties(time_travel: timedelta) -> dict[str, str]:
    """Properties of both tables: bounded metadata, merged manifests, no automatic commit retry (a commit that
    meets a conflict is abandoned and the next run starts over from what is committed)."""
    return {
        "format-version": "2",
        "write.parquet.compression-codec": "zstd",
        "write.metadata.delete-after-commit.enabled": "true",
        "write.metadata.previous-versions-max": str(PREVIOUS_METADATA_VERSIONS),
        "commit.manifest-merge.enabled": "true",
        "commit.manifest.min-count-to-merge": "10",
        "commit.retry.num-retries": "0",
        "history.expire.max-snapshot-age-ms": str(int(time_travel.total_seconds() * 1000)),
        "history.expire.min-snapshots-to-keep": "1",
    }


def _create_table(catalog: Catalog, database: str, location: str, spec: TableSpec, time_travel: timedelta) -> Table:
    """Create the table; the database too, only when it is missing (``GetDatabase`` first: the deployed stack
    declares it, and the curator's role may not create databases)."""
    if not catalog.namespace_exists(database):
        with contextlib.suppress(NamespaceAlreadyExistsError):
            catalog.create_namespace(database)
    return catalog.create_table(
        (database, spec.name),
        schema=spec.schema,
        location=location,
        partition_spec=spec.partition_spec,
        sort_order=spec.sort_order,
        properties=table_properties(time_travel),
    )


def ensure_table(catalog: Catalog, database: str, location: str, spec: TableSpec, time_travel: timedelta) -> Table:
    """The table, created if missing (a concurrent creation is fine), its missing columns added as optional."""
    identifier = (database, spec.name)
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        try:
            return _create_table(catalog, database, location, spec, time_travel)
        except TableAlreadyExistsError:
            table = catalog.load_table(identifier)
    present = set(table.schema().column_names)
    missing = [item for item in spec.schema.fields if item.name not in present]
    if missing:
        with table.update_schema() as update:
            for item in missing:
                update.add_column(item.name, item.field_type, doc=item.doc)
        table = catalog.load_table(identifier)
    return table
