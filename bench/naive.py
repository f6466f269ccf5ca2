"""The naive reference: what a straightforward handler does, one record at a time.

Per record: base64, ``json.loads``, boto3's ``TypeDeserializer``, a row dict, ``fastavro`` validation; then one
``Table.from_pylist`` and the same Parquet encoding as the handler, so the two do the same work end to end.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro
import pyarrow as pa
from boto3.dynamodb.types import TypeDeserializer

from pipeline.schema import arrow_schema, load_schema
from pipeline.writer import encode_parquet

__all__ = ["KNOWN_ATTRIBUTES", "naive_process", "plain_value"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
# Item attributes the contract knows (pk/sk carry event_id/fan_id); the rest goes to extra_attributes.
KNOWN_ATTRIBUTES = {
    "pk", "sk", "event_id", "fan_id", "market_id", "status", "quantity", "price_levels", "channel", "presale_code",
    "created_at", "updated_at", "attributes",
}  # fmt: skip


def plain_value(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON-able Python: integral numbers as int, sets as lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: plain_value(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [plain_value(item) for item in value]
    return value


def _row(envelope: dict[str, Any], deserializer: TypeDeserializer) -> dict[str, Any]:
    record = json.loads(base64.b64decode(envelope["kinesis"]["data"]))
    body = record["dynamodb"]
    image = body["OldImage"] if record["eventName"] == "REMOVE" else body["NewImage"]
    item = {name: deserializer.deserialize(value) for name, value in image.items()}
    extra = {name: plain_value(value) for name, value in item.items() if name not in KNOWN_ATTRIBUTES}
    unit = 1 if body.get("ApproximateCreationDateTimePrecision") == "MICROSECOND" else 1000
    updated = item.get("updated_at")
    return {
        "event_id": item["pk"][len("EVENT#") :],
        "fan_id": item["sk"][len("FAN#") :],
        "market_id": int(item["market_id"]),
        "status": item["status"],
        "quantity": int(item["quantity"]),
        "price_levels": list(item["price_levels"]) if "price_levels" in item else None,
        "channel": item.get("channel"),
        "presale_code": item.get("presale_code"),
        "created_at": datetime.fromisoformat(item["created_at"]),
        "updated_at": datetime.fromisoformat(updated) if updated else None,
        "attributes": item.get("attributes"),
        "op": record["eventName"],
        "change_id": record["eventID"],
        "change_time": _EPOCH + timedelta(microseconds=body["ApproximateCreationDateTime"] * unit),
        "shard_id": envelope["eventID"].rsplit(":", 1)[0],
        "sequence_number": envelope["kinesis"]["sequenceNumber"],
        "table_name": record["tableName"],
        "extra_attributes": json.dumps(extra, sort_keys=True) if extra else None,
        "deleted_by_ttl": record["eventName"] == "REMOVE" and record.get("userIdentity") == _TTL_IDENTITY,
        "change_time_us": body["ApproximateCreationDateTime"] * unit,
    }


def naive_process(event: dict[str, Any]) -> list[bytes]:
    """The whole path, naively: rows validated one by one, grouped by change-time hour (the handler's layout),
    then one table and its Parquet bytes per hour."""
    deserializer = TypeDeserializer()
    parsed = fastavro.parse_schema(load_schema())
    hours: dict[tuple[int, int, int, int], list[dict[str, Any]]] = {}
    for envelope in event["Records"]:
        row = _row(envelope, deserializer)
        fastavro.validation.validate(row, parsed, raise_errors=True)
        moment = row["change_time"]
        hours.setdefault((moment.year, moment.month, moment.day, moment.hour), []).append(row)
    return [encode_parquet(pa.Table.from_pylist(rows, schema=arrow_schema())) for rows in hours.values()]
