"""The local AWS server's dispatch: moto's list of its backends is read once, not on every request; stream records
and items are answered as JSON without moto's serializer; a version listing copies no object's bytes."""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import backends

from sandbox.server import MotoProcess, list_moto_modules_once, moto_server

REGION = "us-east-1"


@pytest.fixture
def server() -> Iterator[MotoProcess]:
    with moto_server() as started:
        yield started


def _options(server: MotoProcess) -> dict[str, Any]:
    return {
        "endpoint_url": server.endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def test_moto_lists_its_backends_once_and_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "list_of_moto_modules", backends.list_of_moto_modules)  # restored afterwards
    listed = list(backends.list_of_moto_modules())

    list_moto_modules_once()

    def no_listing(path: str) -> list[str]:
        raise AssertionError(f"moto listed {path} again")

    monkeypatch.setattr(os, "listdir", no_listing)
    assert list(backends.list_of_moto_modules()) == listed
    assert {"s3", "glue", "kinesis", "dynamodbstreams"} <= set(listed)
    list_moto_modules_once()  # a second call keeps the first list
    assert list(backends.list_of_moto_modules()) == listed


# Every kind of DynamoDB value, nested ones too, and binary values moto keeps as bytes.
ITEM: dict[str, Any] = {
    "pk": {"S": "EVENT#1"},
    "n": {"N": "12.50"},
    "b": {"B": b"\x00\xffbytes"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02"]},
    "m": {"M": {"inner": {"S": "x"}, "blob": {"B": b"\x03"}, "list": {"L": [{"N": "7"}, {"NULL": True}]}}},
    "l": {"L": [{"S": "y"}, {"BOOL": False}, {"M": {"k": {"S": "v"}}}]},
    "null": {"NULL": True},
    "yes": {"BOOL": True},
}


def test_stream_records_and_items_come_back_as_dynamodb_wrote_them(server: MotoProcess):
    dynamodb = boto3.client("dynamodb", **_options(server))
    streams = boto3.client("dynamodbstreams", **_options(server))
    table = dynamodb.create_table(
        TableName="demand",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    dynamodb.put_item(TableName="demand", Item=ITEM)
    dynamodb.put_item(TableName="demand", Item={**ITEM, "pk": {"S": "EVENT#2"}})
    scanned = dynamodb.scan(TableName="demand", Limit=1)
    queried = dynamodb.query(
        TableName="demand", KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": ITEM["pk"]}
    )
    dynamodb.delete_item(TableName="demand", Key={"pk": {"S": "EVENT#2"}})
    dynamodb.put_item(TableName="demand", Item={**ITEM, "n": {"N": "13"}})
    dynamodb.delete_item(TableName="demand", Key={"pk": ITEM["pk"]})
    [shard] = streams.describe_stream(StreamArn=table["LatestStreamArn"])["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=table["LatestStreamArn"], ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]

    answer = streams.get_records(ShardIterator=iterator, Limit=10)

    assert (scanned["Count"], scanned["ScannedCount"], len(scanned["Items"])) == (1, 1, 1)
    assert scanned["Items"][0] in (ITEM, {**ITEM, "pk": {"S": "EVENT#2"}})
    assert scanned["LastEvaluatedKey"] == {"pk": scanned["Items"][0]["pk"]}
    assert (queried["Count"], queried["Items"]) == (1, [ITEM])
    records = answer["Records"]
    assert [record["eventName"] for record in records] == ["INSERT", "INSERT", "REMOVE", "MODIFY", "REMOVE"]
    assert len({record["eventID"] for record in records}) == 5
    records = [records[0], records[3], records[4]]  # the first item's
    insert, modify, remove = (record["dynamodb"] for record in records)
    assert insert["NewImage"] == ITEM  # boto3 decodes the base64 back to the same bytes
    assert "OldImage" not in insert
    assert modify["OldImage"] == ITEM
    assert modify["NewImage"] == {**ITEM, "n": {"N": "13"}}
    assert remove["OldImage"] == {**ITEM, "n": {"N": "13"}}
    assert [record["Keys"] for record in (insert, modify, remove)] == [{"pk": ITEM["pk"]}] * 3
    sequence = [int(record["SequenceNumber"]) for record in (insert, modify, remove)]
    assert sequence == sorted(sequence)
    for record in (insert, modify, remove):
        moment = record["ApproximateCreationDateTime"]
        assert moment.tzinfo is not None
        assert moment.microsecond % 1000 == 0  # epoch seconds to the millisecond, as moto's serializer writes
        assert record["SizeBytes"] > 0
    # the iterator it hands back goes on after the last record
    assert streams.get_records(ShardIterator=answer["NextShardIterator"])["Records"] == []


def test_a_version_listing_leaves_every_version_readable(server: MotoProcess):
    s3 = boto3.client("s3", **_options(server))
    s3.create_bucket(Bucket="lake-bucket")
    s3.put_bucket_versioning(Bucket="lake-bucket", VersioningConfiguration={"Status": "Enabled"})
    bodies = {("a/x", index): os.urandom(3000 + index) for index in range(3)}
    for (key, _), body in bodies.items():
        s3.put_object(Bucket="lake-bucket", Key=key, Body=body)
    s3.put_object(Bucket="lake-bucket", Key="a/y", Body=b"gone")
    s3.delete_object(Bucket="lake-bucket", Key="a/y")
    s3.put_object(Bucket="lake-bucket", Key="b/z", Body=b"other")

    for _ in range(3):  # the listing's copies are dropped and collected each time
        listed = s3.list_object_versions(Bucket="lake-bucket", Prefix="a/")
        gc.collect()

    versions = [(item["Key"], item["Size"], item["ETag"], item["IsLatest"]) for item in listed["Versions"]]
    expected_x = [
        ("a/x", len(body), f'"{hashlib.md5(body).hexdigest()}"', index == 2)  # noqa: S324 - S3's ETag
        for (_, index), body in sorted(bodies.items(), key=lambda pair: -pair[0][1])
    ]
    assert versions == [*expected_x, ("a/y", 4, f'"{hashlib.md5(b"gone").hexdigest()}"', False)]  # noqa: S324
    assert [(item["Key"], item["IsLatest"]) for item in listed["DeleteMarkers"]] == [("a/y", True)]
    # every version's bytes are still there, the latest and the older ones
    read = {
        item["Key"]: s3.get_object(Bucket="lake-bucket", Key=item["Key"], VersionId=item["VersionId"])["Body"].read()
        for item in listed["Versions"]
        if item["Key"] == "a/x" and item["IsLatest"]
    }
    assert read == {"a/x": bodies[("a/x", 2)]}
    older = [
        s3.get_object(Bucket="lake-bucket", Key="a/x", VersionId=item["VersionId"])["Body"].read()
        for item in listed["Versions"]
        if item["Key"] == "a/x"
    ]
    assert older == [bodies[("a/x", index)] for index in (2, 1, 0)]
    assert s3.get_object(Bucket="lake-bucket", Key="b/z")["Body"].read() == b"other"
