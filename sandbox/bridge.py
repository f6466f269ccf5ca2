"""The DynamoDB -> Kinesis bridge: what "Kinesis Data Streams for DynamoDB" does in AWS, which moto lacks.

It reads the table's DynamoDB stream (NEW_AND_OLD_IMAGES) and puts each change on the Kinesis stream as the
same JSON document AWS puts there, built by ``sandbox.changes.change_record`` (one definition of the format),
with the same partition key function and the stack's ``ApproximateCreationDateTime`` precision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from sandbox.changes import Change, Precision, change_record, partition_key

__all__ = ["StreamBridge", "kinesis_entry_for", "stream_record_to_change"]

_deserializer = TypeDeserializer()
_PUT_RECORDS_LIMIT = 500
_PUT_ATTEMPTS = 8


def _plain(image: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {name: _deserializer.deserialize(value) for name, value in image.items()}


def _moment(value: Any) -> datetime:
    """ApproximateCreationDateTime as boto3 parses it (datetime) or as raw JSON (epoch seconds)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def stream_record_to_change(record: Mapping[str, Any]) -> Change:
    """A DynamoDB Streams record (as ``dynamodbstreams.get_records`` returns it) -> the ``Change`` it describes."""
    body = record["dynamodb"]
    keys = _plain(body["Keys"]) or {}
    return Change(
        event_name=record["eventName"],
        keys=keys,
        new_image=_plain(body.get("NewImage")),
        old_image=_plain(body.get("OldImage")),
        time=_moment(body["ApproximateCreationDateTime"]),
    )


def kinesis_entry_for(
    record: Mapping[str, Any], *, table_name: str, region: str, precision: Precision
) -> dict[str, Any]:
    """The PutRecords entry (Data, PartitionKey) the streaming destination writes for one stream record."""
    change = stream_record_to_change(record)
    document = change_record(
        change, table_name=table_name, region=region, precision=precision, event_id=record["eventID"]
    )
    return {"Data": json.dumps(document, separators=(",", ":")).encode(), "PartitionKey": partition_key(change.keys)}


class StreamBridge:
    """Forwards every new DynamoDB stream record of a table to a Kinesis stream; call ``pump`` repeatedly."""

    def __init__(
        self,
        *,
        table_name: str,
        stream_name: str,
        region: str,
        precision: Precision,
        dynamodb: Any,
        dynamodbstreams: Any,
        kinesis: Any,
    ) -> None:
        self.table_name = table_name
        self.stream_name = stream_name
        self.region = region
        self.precision = precision
        self._streams = dynamodbstreams
        self._kinesis = kinesis
        stream_arn = dynamodb.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
        if not stream_arn:
            raise RuntimeError(f"table {table_name!r} has no DynamoDB stream to bridge")
        self.stream_arn: str = stream_arn
        self._iterators: dict[str, str | None] = {}
        self.forwarded = 0
        self.last_batch = 0

    def _refresh_shards(self) -> None:
        shards = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        for shard in shards:
            if shard["ShardId"] not in self._iterators:
                self._iterators[shard["ShardId"]] = self._streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]

    def pump(self) -> int:
        """Forward what the table's stream holds now; return how many change records went to Kinesis."""
        if not self._iterators:
            self._refresh_shards()
        moved = 0
        for shard_id, start in list(self._iterators.items()):
            iterator = start
            while iterator:
                response = self._streams.get_records(ShardIterator=iterator, Limit=1000)
                iterator = response.get("NextShardIterator")
                records = response.get("Records", [])
                if not records:
                    break
                entries = [
                    kinesis_entry_for(record, table_name=self.table_name, region=self.region, precision=self.precision)
                    for record in records
                ]
                self._put(entries)
                moved += len(entries)
            self._iterators[shard_id] = iterator
        self.forwarded += moved
        self.last_batch = moved
        return moved

    def _put(self, entries: Sequence[dict[str, Any]]) -> None:
        """PutRecords in chunks, re-putting the entries Kinesis rejects (throttling) in order."""
        for start in range(0, len(entries), _PUT_RECORDS_LIMIT):
            chunk = list(entries[start : start + _PUT_RECORDS_LIMIT])
            for attempt in range(_PUT_ATTEMPTS):
                response = self._kinesis.put_records(StreamName=self.stream_name, Records=chunk)
                if not response.get("FailedRecordCount"):
                    break
                results = response["Records"]
                chunk = [entry for entry, result in zip(chunk, results, strict=True) if "ErrorCode" in result]
                time.sleep(0.05 * 2**attempt)
            else:
                raise RuntimeError(f"Kinesis rejected {len(chunk)} change records {_PUT_ATTEMPTS} times")
