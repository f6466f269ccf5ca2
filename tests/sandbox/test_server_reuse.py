"""A moto server a test is done with comes back empty for the next one (the suite boots moto once per worker)."""

from __future__ import annotations

import boto3

from sandbox.local_aws import FAKE_CREDENTIALS
from sandbox.server import FaultRule, moto_server


def _s3(endpoint_url: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def test_a_kept_server_is_reused_without_the_last_users_resources_or_faults() -> None:
    with moto_server() as first:
        s3 = _s3(first.endpoint_url)
        s3.create_bucket(Bucket="left-behind")  # type: ignore[attr-defined]
        first.set_faults(FaultRule(service="s3", method="GET"))
        port = first.port
    with moto_server() as second:
        assert second.port == port  # the same process, kept by the suite's conftest
        assert second.fault_hits() == []
        assert _s3(second.endpoint_url).list_buckets()["Buckets"] == []  # type: ignore[attr-defined]


def test_a_stopped_server_is_not_reused() -> None:
    with moto_server() as first:
        first.stop()
        assert not first.alive()
    with moto_server() as second:
        assert second.alive()
        assert second is not first
