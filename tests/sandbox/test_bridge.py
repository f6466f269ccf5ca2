"""The bridge writes exactly what "Kinesis Data Streams for DynamoDB" writes, built by the one format function."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from sandbox.bridge import kinesis_entry_for, stream_record_to_change
from sandbox.changes import Change, change_record, partition_key, to_dynamodb_json

TABLE = "prd3292-dev1-us-east-1-demand-table"
MOMENT = datetime(2026, 11, 29, 10, 15, 30, 123000, tzinfo=UTC)


def stream_record(change: Change) -> dict:
    """A record as ``dynamodbstreams.get_records`` returns it through boto3 (datetime, typed images)."""
    body = {
        "ApproximateCreationDateTime": change.time,
        "Keys": to_dynamodb_json(change.keys),
        "SequenceNumber": "1100000000017454423009",
        "SizeBytes": 263,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if change.new_image is not None:
        body["NewImage"] = to_dynamodb_json(change.new_image)
    if change.old_image is not None:
        body["OldImage"] = to_dynamodb_json(change.old_image)
    return {
        "eventID": "8836aae3c66144abada0daa4de99ce36",
        "eventName": change.event_name,
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": body,
    }


ITEM = {
    "pk": "EVENT#vvG1zZ9kT3",
    "sk": "FAN#3f7c",
    "market_id": Decimal("27"),
    "status": "SELECTED",
    "quantity": Decimal("2"),
    "price": Decimal("123456789012345678901234567890.5"),
    "price_levels": ["PL1", "VIP"],
    "tags": {"a", "b"},
    "attributes": {"locale": "fr-FR", "nested": {"wave": Decimal(2), "ok": True, "none": None}},
    "created_at": "2026-11-29T10:15:30.123Z",
}
CHANGES = [
    Change("INSERT", {"pk": ITEM["pk"], "sk": ITEM["sk"]}, ITEM, None, MOMENT),
    Change("MODIFY", {"pk": ITEM["pk"], "sk": ITEM["sk"]}, dict(ITEM, status="CANCELLED"), ITEM, MOMENT),
    Change("REMOVE", {"pk": ITEM["pk"], "sk": ITEM["sk"]}, None, ITEM, MOMENT),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.event_name)
def test_stream_record_round_trips_to_the_change(change: Change):
    assert stream_record_to_change(stream_record(change)) == change


def _sets_sorted(value: Any) -> Any:
    """DynamoDB sets have no order: a set's members, sorted, so two documents compare by what they hold."""
    if isinstance(value, dict):
        return {
            key: sorted(member) if key in ("SS", "NS", "BS") else _sets_sorted(member) for key, member in value.items()
        }
    if isinstance(value, list):
        return [_sets_sorted(item) for item in value]
    return value


@pytest.mark.parametrize("precision", ["MILLISECOND", "MICROSECOND"])
@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.event_name)
def test_kinesis_entry_is_the_streaming_destination_document(change: Change, precision):
    record = stream_record(change)
    entry = kinesis_entry_for(record, table_name=TABLE, region="us-east-1", precision=precision)
    document = json.loads(entry["Data"])
    expected = change_record(change, table_name=TABLE, precision=precision, event_id=record["eventID"])
    assert _sets_sorted(document) == _sets_sorted(json.loads(json.dumps(expected)))
    assert entry["PartitionKey"] == partition_key(change.keys)
    assert document["eventName"] == change.event_name
    assert document["tableName"] == TABLE
    assert document["eventSource"] == "aws:dynamodb"
    stamp = document["dynamodb"]["ApproximateCreationDateTime"]
    assert stamp == (1795947330123000 if precision == "MICROSECOND" else 1795947330123)
    assert ("NewImage" in document["dynamodb"]) == (change.event_name != "REMOVE")
    assert ("OldImage" in document["dynamodb"]) == (change.event_name != "INSERT")
