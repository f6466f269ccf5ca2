"""The record contract and its views: Arrow and Glue columns come from the one Avro schema."""

import pyarrow as pa
import pytest

from pipeline import schema as schema_module
from pipeline.schema import arrow_schema, field_specs, glue_columns, load_schema

ANALYST_COLUMNS = [
    "event_id", "fan_id", "market_id", "status", "quantity", "price_levels", "channel", "presale_code",
    "created_at", "updated_at", "attributes", "op", "change_id", "change_time", "shard_id", "sequence_number",
    "table_name", "extra_attributes", "deleted_by_ttl", "change_time_us",
]  # fmt: skip


def test_columns_are_the_analyst_contract_in_order():
    assert [spec.name for spec in field_specs()] == ANALYST_COLUMNS
    assert arrow_schema().names == ANALYST_COLUMNS
    assert [column.name for column in glue_columns()] == ANALYST_COLUMNS


def test_arrow_types_are_ones_athena_reads():
    schema = arrow_schema()
    assert schema.field("market_id").type == pa.int64()
    assert schema.field("quantity").type == pa.int32()
    assert schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("change_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("attributes").type == pa.map_(pa.string(), pa.string())
    assert schema.field("price_levels").type == pa.list_(pa.string())
    assert not any(pa.types.is_unsigned_integer(field.type) for field in schema)


def test_nullability_follows_avro_unions():
    nullable = {field.name for field in arrow_schema() if field.nullable}
    assert nullable == {"price_levels", "channel", "presale_code", "updated_at", "attributes", "extra_attributes"}


def test_columns_added_later_come_last_in_the_order_they_were_added():
    assert arrow_schema().names[-2:] == ["deleted_by_ttl", "change_time_us"]
    field = arrow_schema().field("deleted_by_ttl")
    assert (field.type, field.nullable) == (pa.bool_(), False)
    assert [column.type for column in glue_columns()[-2:]] == ["boolean", "bigint"]


def test_change_time_us_is_a_required_integer_in_every_view():
    """The order column: an integer, so Athena (which reads Parquet timestamps at millisecond precision) still
    tells apart two changes of one item in the same millisecond."""
    field = arrow_schema().field("change_time_us")
    assert (field.type, field.nullable) == (pa.int64(), False)
    assert {column.name: column.type for column in glue_columns()}["change_time_us"] == "bigint"
    assert "microseconds" in {spec.name: spec.doc for spec in field_specs()}["change_time_us"]


def test_enums_keep_their_symbols():
    specs = {spec.name: spec for spec in field_specs()}
    assert specs["status"].symbols == ("REGISTERED", "SELECTED", "WAITLISTED", "CANCELLED")
    # SNAPSHOT is appended last, so the symbols of older data keep their positions
    assert specs["op"].symbols == ("INSERT", "MODIFY", "REMOVE", "SNAPSHOT")


def test_glue_types():
    types = {column.name: column.type for column in glue_columns()}
    assert types["market_id"] == "bigint"
    assert types["quantity"] == "int"
    assert types["price_levels"] == "array<string>"
    assert types["attributes"] == "map<string,string>"
    assert types["created_at"] == "timestamp"
    assert types["change_time"] == "timestamp"
    assert types["status"] == "string"


def test_schema_is_a_record():
    assert load_schema()["name"] == "DemandChange"


def test_unsupported_avro_type_is_named(monkeypatch):
    bad = {"type": "record", "name": "X", "fields": [{"name": "blob", "type": "bytes"}]}
    monkeypatch.setattr(schema_module, "load_schema", lambda name="x": bad)
    schema_module.field_specs.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"field 'blob': Avro type 'bytes'"):
            schema_module.field_specs("other.avsc")
    finally:
        schema_module.field_specs.cache_clear()
