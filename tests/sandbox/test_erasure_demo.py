"""The demo's search for an erased fan's bytes: every decoded form of every object, and nothing else."""

from __future__ import annotations

import base64
import gzip
import io
import json

import boto3
import fastavro
import pytest
from moto import mock_aws

from pipeline.writer import encode_parquet
from sandbox.erasure_demo import decoded_forms, describe, erase_one_fan, objects_naming
from tests.curator.conftest import generated_rows

BUCKET = "data"
FAILURES = "failures"


def _avro(fan: str) -> bytes:
    schema = {"type": "record", "name": "entry", "fields": [{"name": "lower", "type": "bytes"}]}
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [{"lower": fan.encode()}], codec="deflate")
    return buffer.getvalue()


def _record(fan: str) -> bytes:
    data = base64.b64encode(json.dumps({"sk": {"S": f"FAN#{fan}"}}).encode()).decode()
    return json.dumps({"payload": json.dumps({"Records": [{"kinesis": {"data": data}}]})}).encode()


def test_each_encoding_hides_the_id_from_a_byte_search_but_not_from_its_decoded_forms() -> None:
    rows = generated_rows(40)
    fan = rows.column("fan_id")[7].as_py()
    hidden = {
        "parquet (zstd pages)": encode_parquet(rows),
        "gzip JSON lines, base64 data": gzip.compress(_record(fan) + b"\n"),
        "avro (deflate)": _avro(fan),
    }
    for what, body in hidden.items():
        assert fan.encode() not in body, what
        assert any(fan.encode() in form for form in decoded_forms(body)), what
    assert not any(b"not-a-fan" in form for body in hidden.values() for form in decoded_forms(body))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.create_bucket(Bucket=FAILURES)
        yield client


def test_the_search_names_every_object_holding_the_id_and_the_request_until_carried_out(s3) -> None:
    rows = generated_rows(40)
    fan = rows.column("fan_id")[7].as_py()
    s3.put_object(Bucket=BUCKET, Key="demand/events/a.parquet", Body=encode_parquet(rows))
    s3.put_object(Bucket=BUCKET, Key="demand/events/b.parquet", Body=encode_parquet(rows.slice(8, 4)))
    s3.put_object(Bucket=BUCKET, Key="curated/registrations/metadata/m.avro", Body=_avro(fan))
    s3.put_object(Bucket=FAILURES, Key="aws/lambda/x", Body=_record(fan))
    s3.put_object(Bucket=FAILURES, Key="aws/lambda/y", Body=_record("somebody-else"))
    runs: list[int] = []

    figures = erase_one_fan(s3, s3, bucket=BUCKET, failure_bucket=FAILURES, fan_id=fan, curate=lambda: runs.append(1))

    assert runs == [1]
    assert figures.state is not None
    assert figures.state.pending  # nothing carried it out
    assert figures.searched == 6
    assert figures.found == [
        f"s3://{BUCKET}/curated/registrations/metadata/m.avro",
        f"s3://{BUCKET}/demand/events/a.parquet",
        f"s3://{BUCKET}/erasure/requests/{figures.request_id}.json",
        f"s3://{FAILURES}/aws/lambda/x",
    ]
    assert describe(figures, FAILURES) == [
        f"erasure of fan {fan}",
        f"  request {figures.request_id} filed as the CI role (make erase)",
        "  after curator run 3: still pending (this curator does not erase yet)",
        "  searched 6 objects for its id (Parquet by column, gzip, JSON, Avro):",
        "  found in 4 objects:",
        f"    {'curated/registrations/':<40}     1",
        f"    {'demand/events/':<40}     1",
        f"    {'erasure/requests/':<40}     1",
        f"    {'the failure bucket':<40}     1",
    ]
    assert objects_naming(s3, [BUCKET, FAILURES], "nobody-at-all") == ([], 6)


def test_the_search_reads_old_versions_too_and_names_them(s3) -> None:
    s3.put_bucket_versioning(Bucket=FAILURES, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=FAILURES, Key="aws/lambda/replayed", Body=_record("fan-in-an-old-version"))
    s3.delete_object(Bucket=FAILURES, Key="aws/lambda/replayed")  # only a noncurrent version holds it now
    (version,) = s3.list_object_versions(Bucket=FAILURES)["Versions"]

    found, searched = objects_naming(s3, [BUCKET, FAILURES], "fan-in-an-old-version")

    assert found == [f"s3://{FAILURES}/aws/lambda/replayed?versionId={version['VersionId']}"]
    assert searched == 1
