"""Fixtures for the ops commands: an in-process moto AWS and a stack outputs file pointing into it."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from ops.outputs import StackOutputs

REGION = "us-east-1"
FUNCTION = "prd3292-qa1-demand-processor"


def outputs_values(**overrides: str) -> dict[str, str]:
    """A complete set of stack outputs for qa1 (names as the stack would export them)."""
    values = {
        "athena_database_name": "prd3292_qa1_demand",
        "athena_workgroup_name": "prd3292-qa1-demand",
        "ci_iam_role_arn": "arn:aws:iam::123456789012:role/prd3292-qa1-ci",
        "stream_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-qa1-dmnd-table-stream",
        "stream_name": "prd3292-qa1-dmnd-table-stream",
        "table_name": "prd3292-qa1-us-east-1-demand-table",
        "function_name": FUNCTION,
        "function_alias_name": "live",
        "function_alias_arn": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}:live",
        "bucket_name": "prd3292.qa1.us-east-1.demand-capture.tmaws",
        "events_prefix": "demand/events/",
        "quarantine_prefix": "demand/quarantine/",
        "athena_results_prefix": "demand/athena-results/",
        "failure_bucket_name": "prd3292-qa1-us-east-1-demand-processor-failures",
        "glue_table_name": "demand_events",
        "log_group_name": f"/aws/lambda/{FUNCTION}",
        "iterator_age_alarm_name": "prd3292-qa1-iterator-age",
        "region": REGION,
        "function_alias_version": "2",
        "function_code_sha256": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
        "athena_results_bucket_name": "prd3292-qa1-us-east-1-demand-athena-results",
        "curator_function_name": "prd3292-qa1-demand-compactor",
        "curator_log_group_name": "/aws/lambda/prd3292-qa1-demand-compactor",
        "backfill_state_machine_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:prd3292-qa1-demand-backfill",
        "stack_name": "qa1",
    }
    assert set(values) == set(StackOutputs.output_keys())
    return values | overrides


@pytest.fixture
def outputs_file(tmp_path: Path) -> Path:
    path = tmp_path / "outputs-qa1.json"
    path.write_text(json.dumps(outputs_values()))
    return path


@pytest.fixture
def outputs() -> StackOutputs:
    return StackOutputs.from_mapping(outputs_values(), source="test")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto: no network, fake credentials, the stack's region."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def lambda_zip() -> bytes:
    """A tiny deployment package (moto stores it, never runs it), the same bytes on every call: a fixed entry time,
    not the clock (the artifact check compares digests of packages built seconds apart)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        entry = zipfile.ZipInfo("pipeline/handler.py", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(entry, "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


@pytest.fixture
def published_function(aws: None) -> list[str]:
    """The function with three published versions and the ``live`` alias on the newest; returns the versions."""
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(
        RoleName="processor",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    client = boto3.client("lambda", region_name=REGION)
    client.create_function(
        FunctionName=FUNCTION,
        Runtime="python3.12",
        Role=role,
        Handler="pipeline.handler.handler",
        Code={"ZipFile": lambda_zip()},
        Architectures=["arm64"],
    )
    versions = []
    for number in range(3):
        client.update_function_configuration(FunctionName=FUNCTION, Description=f"build {number + 1}")
        versions.append(client.publish_version(FunctionName=FUNCTION, Description=f"build {number + 1}")["Version"])
    client.create_alias(FunctionName=FUNCTION, Name="live", FunctionVersion=versions[-1])
    return versions


def outside_project_venv(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` as a shell outside ``uv run`` sees it: `make` then finds the python3 that has uv, as people do."""
    venv = Path(__file__).resolve().parents[2] / ".venv"
    path = [entry for entry in environ.get("PATH", "").split(os.pathsep) if not entry.startswith(str(venv))]
    cleaned = {name: value for name, value in environ.items() if name not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    return cleaned | {"PATH": os.pathsep.join(path)}
