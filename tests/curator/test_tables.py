"""The curated tables' definitions: derived from the contract, partitioned and sorted as documented, created
once, with metadata bounded."""

from __future__ import annotations

from datetime import timedelta

from pyiceberg.transforms import HourTransform, IdentityTransform
from pyiceberg.types import ListType, MapType, StringType, TimestamptzType

from curator.tables import (
    CHANGES_TABLE,
    REGISTRATIONS_TABLE,
    changes_spec,
    ensure_table,
    iceberg_schema,
    registrations_spec,
    table_properties,
)
from pipeline.schema import field_specs
from tests.curator.conftest import CuratedLake


def test_changes_schema_is_the_contract_field_for_field():
    schema = iceberg_schema()
    specs = field_specs()
    assert [item.name for item in schema.fields] == [spec.name for spec in specs]
    assert [item.required for item in schema.fields] == [not spec.nullable for spec in specs]
    assert schema.find_field("change_time").field_type == TimestamptzType()
    assert schema.find_field("created_at").field_type == TimestamptzType()  # milliseconds widen to microseconds
    assert schema.find_field("status").field_type == StringType()
    assert isinstance(schema.find_field("price_levels").field_type, ListType)
    assert isinstance(schema.find_field("attributes").field_type, MapType)
    ids = [item.field_id for item in schema.fields]
    assert ids == list(range(1, len(specs) + 1))


def test_registrations_schema_leaves_out_what_describes_a_change():
    names = registrations_spec().schema.column_names
    assert "op" not in names
    assert "deleted_by_ttl" not in names
    assert {"event_id", "fan_id", "status", "change_time", "change_id", "sequence_number"} <= set(names)


def test_partitioning_and_sort_orders():
    changes, state = changes_spec(), registrations_spec()
    (hour_field,) = changes.partition_spec.fields
    assert isinstance(hour_field.transform, HourTransform)
    assert hour_field.source_id == changes.field_id("change_time")
    assert [field.source_id for field in changes.sort_order.fields] == [
        changes.field_id(name) for name in ("event_id", "fan_id", "change_time")
    ]
    (event_field,) = state.partition_spec.fields
    assert isinstance(event_field.transform, IdentityTransform)
    assert event_field.source_id == state.field_id("event_id")
    assert [field.source_id for field in state.sort_order.fields] == [
        state.field_id(name) for name in ("event_id", "fan_id")
    ]


def test_properties_bound_metadata_and_forbid_commit_retries():
    properties = table_properties(timedelta(days=7))
    assert properties["format-version"] == "2"
    assert properties["write.metadata.delete-after-commit.enabled"] == "true"
    assert int(properties["write.metadata.previous-versions-max"]) > 0
    assert properties["commit.manifest-merge.enabled"] == "true"
    assert properties["commit.retry.num-retries"] == "0"
    assert properties["history.expire.max-snapshot-age-ms"] == str(7 * 24 * 3600 * 1000)


def test_tables_are_created_once_in_glue_with_their_layout(lake: CuratedLake):
    curator = lake.curator()
    first = curator.tables()
    second = curator.tables()  # idempotent: loads what exists
    assert [table.metadata.table_uuid for table in first] == [table.metadata.table_uuid for table in second]
    names = sorted(table["Name"] for table in lake.glue.get_tables(DatabaseName=lake.database)["TableList"])
    assert names == sorted([CHANGES_TABLE, REGISTRATIONS_TABLE])
    changes, state = first
    assert changes.location() == f"s3://{lake.bucket}/curated/{CHANGES_TABLE}"
    assert state.location() == f"s3://{lake.bucket}/curated/{REGISTRATIONS_TABLE}"
    assert changes.metadata.format_version == 2
    assert isinstance(changes.spec().fields[0].transform, HourTransform)
    assert [field.source_id for field in changes.sort_order().fields] == [
        changes.schema().find_field(name).field_id for name in ("event_id", "fan_id", "change_time")
    ]
    assert changes.properties["write.metadata.delete-after-commit.enabled"] == "true"
    glue_table = lake.glue.get_table(DatabaseName=lake.database, Name=CHANGES_TABLE)["Table"]
    assert glue_table["Parameters"]["table_type"].upper() == "ICEBERG"


def test_a_table_missing_a_contract_column_gains_it_as_optional(lake: CuratedLake):
    spec = changes_spec()
    newest = spec.schema.fields[-1].name  # the contract's latest column
    kept = [item.name for item in spec.schema.fields[:-1]]
    narrower = type(spec)(spec.name, spec.schema.select(*kept), spec.partition_spec, spec.sort_order)
    catalog = lake.catalog()
    location = lake.settings.location(spec.name)
    table = ensure_table(catalog, lake.database, location, narrower, timedelta(days=7))
    assert newest not in table.schema().column_names
    table = ensure_table(catalog, lake.database, location, spec, timedelta(days=7))
    added = table.schema().find_field(newest)
    assert not added.required
