"""The ops commands against the embedded local AWS (a moto server reached through AWS_ENDPOINT_URL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from components.policies import lambda_trust_policy
from ops import compact, rollback, smoke
from sandbox.authorization import trusts_services_only
from sandbox.command_roles import local_endpoint
from sandbox.local_aws import local_aws
from tests.curator.conftest import RawLake, generated_rows
from tests.ops.conftest import lambda_zip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    with local_aws("dev1") as aws:
        yield aws


def test_rollback_moves_the_local_alias(local, capsys):
    # Inside local_aws, AWS_ENDPOINT_URL points every boto3 client (ours and the commands') at the moto server.
    outputs = local.outputs
    role = boto3.client("iam", region_name=local.outputs.region).create_role(
        RoleName="local-processor", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    functions = boto3.client("lambda", region_name=local.outputs.region)
    functions.create_function(
        FunctionName=outputs.function_name,
        Runtime="python3.12",
        Role=role,
        Handler="pipeline.handler.handler",
        Code={"ZipFile": lambda_zip()},
    )
    first = functions.publish_version(FunctionName=outputs.function_name)["Version"]
    functions.update_function_configuration(FunctionName=outputs.function_name, Description="second")
    second = functions.publish_version(FunctionName=outputs.function_name)["Version"]
    functions.create_alias(FunctionName=outputs.function_name, Name=outputs.function_alias_name, FunctionVersion=second)

    assert rollback.main(["dev1", "--to", first]) == 0  # outputs from $STACK_OUTPUTS_FILE, AWS from the endpoint

    alias = functions.get_alias(FunctionName=outputs.function_name, Name=outputs.function_alias_name)
    assert alias["FunctionVersion"] == first
    assert (
        f"after:  {outputs.function_name}:{outputs.function_alias_name} -> version {first}" in capsys.readouterr().out
    )


@pytest.fixture(scope="module")
def healthy(local) -> datetime:
    """The local stack as a healthy one looks to the smoke check (metrics, alarms, a new object); returns "now"."""
    outputs = local.outputs
    now = datetime.now(UTC)
    cloudwatch = local.client("cloudwatch")
    dimensions: list[Any] = [
        {"Name": "FunctionName", "Value": outputs.function_name},
        {"Name": "Resource", "Value": f"{outputs.function_name}:{outputs.function_alias_name}"},
    ]
    cloudwatch.put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dimensions, "Timestamp": now - timedelta(minutes=1), "Value": 3}
        ],
    )
    for name in smoke.stack_alarm_names(outputs):
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/Lambda",
            MetricName="Errors",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=300_000 if name == outputs.iterator_age_alarm_name else 1,
            ComparisonOperator="GreaterThanThreshold",
        )
    key = f"{outputs.events_prefix}dt={now:%Y-%m-%d}/hour={now:%H}/local.parquet"
    local.client("s3").put_object(Bucket=outputs.bucket_name, Key=key, Body=b"PAR1")
    return now


def test_smoke_reads_the_local_stack(local, healthy):
    outputs = local.outputs

    results = smoke.run_checks(outputs, smoke.SmokeClients.acting_as(local.session("ci")), now=healthy)

    assert {result.name: result.passed for result in results} == dict.fromkeys(
        ["invocations", "errors", "iterator age", "alarms", "new objects", "athena"], True
    ), smoke.render_table(results)


def test_the_local_ci_role_may_describe_every_alarm_smoke_reads(local):
    # moto checks DescribeAlarms against the first alarm named only: the document is checked for the others
    assert local.roles is not None
    [read_alarms] = [
        statement
        for statement in local.roles.documents["ci"].policies["gitlab-ci"]["Statement"]
        if statement["Sid"] == "ReadAlarms"
    ]
    expected = [
        f"arn:aws:cloudwatch:{local.region}:123456789012:alarm:{name}"
        for name in smoke.stack_alarm_names(local.outputs)
    ]
    assert sorted(read_alarms["Resource"]) == sorted(expected)
    assert len(expected) == 6


def test_smoke_acts_as_the_local_ci_role_and_passes(local, healthy, capsys):
    # The environment holds the administrator's key; the command assumes the CI role with it, as CI's OIDC would.
    assert smoke.main(["dev1"], now=healthy) == 0

    out = capsys.readouterr().out
    assert "acting as the local CI role prd3292-dev1-gitlab-ci" in out
    assert "all 6 checks passed" in out


def test_smoke_without_the_ci_roles_alarm_reads_fails_naming_role_action_and_resource(local, healthy, capsys):
    assert local.roles is not None
    with local.roles.without_statement("ci", "ReadAlarms"):
        status = smoke.main(["dev1"], now=healthy)

    out = capsys.readouterr().out
    assert status == 1
    alarm = f"arn:aws:cloudwatch:{local.region}:123456789012:alarm:{local.outputs.iterator_age_alarm_name}"
    denied = [line for line in out.splitlines() if line.split()[:1] == ["FAIL"]]
    assert [line.split()[1] for line in denied] == ["iterator", "alarms"], out  # the two checks reading alarms
    assert all(
        f"AccessDenied: role prd3292-dev1-gitlab-ci may not cloudwatch:DescribeAlarms on {alarm}" in line
        for line in denied
    ), out
    assert "FAILED: iterator age, alarms" in out


# -- the curator acts as its function's role ------------------------------------------------------------------
def test_compact_runs_the_curator_as_the_local_curator_role(local, capsys):
    lake = RawLake(local.client("s3"), local.outputs.bucket_name)  # the stream handler's objects, as set-up
    rows = generated_rows(60)
    for start in range(0, 60, 20):
        lake.write(rows.slice(start, 20))
    lake.write(rows.slice(10, 20))  # a batch delivered again, overlapping two others

    assert compact.main(["dev1"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[1] == "acting as the local curator role prd3292-dev1-demand-curator"
    # listed, read and committed with that role's rights; kept for the stack's grace period
    assert out[3] == "  raw objects read 4 (80 rows); changes added 60; hours written 1: 2026-03-31T23"
    assert out[5] == "  raw deleted 0, waiting for the grace period 4"
    assert len(lake.names()) == 4


def test_compact_without_the_curator_roles_table_commits_fails_in_one_line_naming_it(local, capsys):
    assert local.roles is not None
    with local.roles.without_statement("curator", "CommitCuratedTables"):
        status = compact.main(["dev1"])

    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1, err
    assert err.startswith("compact: the curator failed: "), err
    assert "assumed-role/prd3292-dev1-demand-curator/local is not authorized to perform: glue:" in err


# -- which roles the administrator may assume for a command ------------------------------------------------------
def test_the_administrator_stands_in_only_for_a_trust_naming_services_alone():
    assert trusts_services_only(lambda_trust_policy())
    assert trusts_services_only(json.dumps(lambda_trust_policy()))  # moto keeps the document as text
    mixed = lambda_trust_policy()
    mixed["Statement"].append({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "sts:X"})
    assert not trusts_services_only(mixed)
    assert not trusts_services_only({"Version": "2012-10-17", "Statement": []})


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [("http://127.0.0.1:4566", True), ("http://localhost:4566", True), ("https://s3.example.com", False), ("", False)],
)
def test_only_a_loopback_endpoint_is_the_local_aws(endpoint, local):
    assert (local_endpoint({"AWS_ENDPOINT_URL": endpoint}) is not None) is local
