"""The object store's S3 client: timestamps parsed as botocore parses them, only faster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import boto3
import pytest
from botocore.utils import parse_timestamp

from curator.store import S3Store, iso_timestamp, s3_client
from tests.curator.conftest import REGION, CuratedLake


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-07T19:26:45.000Z",  # S3's listings
        "2026-12-07T19:26:45Z",
        "2026-12-07T19:26:45.123456+00:00",
        "2026-12-07T21:26:45.5+02:00",
        "2026-12-07T19:26:45",  # no zone: none, as botocore reads it
        "Mon, 07 Dec 2026 19:26:45 GMT",  # an HTTP date header: botocore's own parser
        "20261207",  # digits: epoch seconds to botocore, a date to fromisoformat
        "2026-12-07",
    ],
)
def test_iso_timestamp_gives_what_botocore_gives(text: str):
    parsed = iso_timestamp(text)
    assert parsed == parse_timestamp(text)
    assert parsed.utcoffset() == parse_timestamp(text).utcoffset()


def test_iso_timestamp_keeps_the_offset_it_is_given():
    assert iso_timestamp("2026-12-07T21:26:45+02:00").tzinfo == timezone(timedelta(hours=2))
    assert iso_timestamp("2026-12-07T19:26:45Z") == datetime(2026, 12, 7, 19, 26, 45, tzinfo=UTC)


def test_a_listing_through_s3_client_has_the_times_a_plain_client_lists(lake: CuratedLake):
    options: dict[str, Any] = {
        "endpoint_url": lake.endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    lake.s3.put_bucket_versioning(Bucket=lake.bucket, VersioningConfiguration={"Status": "Enabled"})
    for index in range(3):
        lake.s3.put_object(Bucket=lake.bucket, Key=f"listed/{index}", Body=b"x")
    lake.s3.delete_object(Bucket=lake.bucket, Key="listed/0")

    fast, plain = (
        S3Store(lake.bucket, client=s3_client(**options)),
        S3Store(lake.bucket, client=boto3.client("s3", **options)),
    )

    listed = fast.list("listed/")
    assert [item.key for item in listed] == ["listed/1", "listed/2"]
    assert listed == plain.list("listed/")
    # the same instants, parsed by iso_timestamp (its UTC), not by dateutil (botocore's own zone objects)
    assert [item.last_modified.tzinfo if item.last_modified else None for item in listed] == [UTC, UTC]
    assert all(item.last_modified and item.last_modified.tzinfo is not UTC for item in plain.list("listed/"))
    versions = fast.versions("listed/")
    assert len(versions) == 4  # three objects and the delete marker of one
    assert versions == plain.versions("listed/")
    _, read = fast.get("listed/1")
    assert read.last_modified == plain.get("listed/1")[1].last_modified


def test_each_client_signs_with_the_credentials_of_the_environment_it_is_made_in(monkeypatch: pytest.MonkeyPatch):
    # The in-process curator runs under a role's credentials set in the environment, other tests under others: a
    # client must not sign with the ones an earlier client found.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    keys = []
    for key in ("FIRSTKEY", "SECONDKEY"):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        client = s3_client(region_name=REGION)
        keys.append(cast(Any, client)._request_signer._credentials.access_key)  # what the client signs with
    assert keys == ["FIRSTKEY", "SECONDKEY"]
