"""The local AWS as a library: outputs usable as STACK_OUTPUTS_FILE, environment restored, faults switchable."""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from components.settings import settings_from_stack_file
from ops.outputs import OUTPUTS_FILE_VARIABLE, load_outputs
from sandbox.local_aws import local_aws
from sandbox.provision import local_names
from sandbox.server import FaultRule


def test_local_aws_provisions_the_stack_and_restores_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("AWS_PROFILE", "someone-real")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    before = dict(os.environ)
    outputs_file = tmp_path / "outputs.json"
    with local_aws("qa1", outputs_file=outputs_file, shards=2) as aws:
        assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint_url
        assert aws.endpoint_url.startswith("http://127.0.0.1:")
        assert "AWS_PROFILE" not in os.environ, "a real profile must not leak into the local AWS"
        assert os.environ[OUTPUTS_FILE_VARIABLE] == str(outputs_file)
        assert os.environ["OUTPUT_BUCKET"] == aws.outputs.bucket_name
        assert load_outputs("qa1") == aws.outputs, "the outputs file reads back through ops.outputs"
        names = local_names(settings_from_stack_file("qa1"))
        assert aws.outputs.table_name == names.table == "prd3292-qa1-us-east-1-demand-table"
        assert aws.outputs.glue_table_name == "prd3292_qa1_demand_changes"
        shards = aws.client("kinesis").list_shards(StreamName=aws.outputs.stream_name)["Shards"]
        assert len(shards) == 2
        s3 = aws.session().client(
            "s3", endpoint_url=aws.endpoint_url, config=Config(retries={"mode": "standard", "max_attempts": 1})
        )
        with aws.faults(FaultRule("s3", path_contains="/blocked/", count=1, status=403, code="AccessDenied")) as server:
            with pytest.raises(ClientError, match="AccessDenied"):
                s3.put_object(Bucket=aws.outputs.bucket_name, Key="blocked/x", Body=b"1")
            s3.put_object(Bucket=aws.outputs.bucket_name, Key="blocked/x", Body=b"1")
            s3.put_object(Bucket=aws.outputs.bucket_name, Key="open/y", Body=b"2")
            assert server.fault_hits() == [1]
        endpoint = aws.endpoint_url
    assert dict(os.environ) == before
    with pytest.raises(Exception):  # noqa: B017, PT011 - any connection error: the server is gone
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=Config(retries={"max_attempts": 0}, connect_timeout=1),
        ).list_buckets()
