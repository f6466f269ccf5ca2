"""The preflight against the embedded local AWS (passing and failing setups) and AWS's destination API (stubbed)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from components.settings import PROJECT_ROOT, settings_from_stack_file
from ops import preflight
from ops.preflight import AwsDestinations, CheckResult, Destination, Preflight
from sandbox.local_aws import local_aws
from tests.ops.conftest import outside_project_venv

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-dev1-dmnd-table-stream"
TABLE = "prd3292-dev1-us-east-1-demand-table"


def _lines(output: str) -> dict[str, str]:
    """Check name -> its report line (and the fix line under it, when there is one)."""
    lines = output.splitlines()
    found: dict[str, str] = {}
    for index, line in enumerate(lines):
        for outcome in ("PASS", "FAIL", "WARN"):
            if line.startswith(f"{outcome}  "):
                name = line[6:30].strip()
                fix = lines[index + 1].strip() if index + 1 < len(lines) and "fix: " in lines[index + 1] else ""
                found[name] = f"{line}\n{fix}".strip()
    return found


# ---------------------------------------------------------------- the local AWS the demo builds


@pytest.mark.slow
def test_make_preflight_passes_against_the_local_aws_the_demo_builds():
    with local_aws("dev1"):  # the environment now points at the local AWS, as `make demo ARGS=--keep` prints
        run = subprocess.run(
            ["make", "--no-print-directory", "preflight", "STACK=dev1", "ARGS=--local"],
            cwd=PROJECT_ROOT,
            env=outside_project_venv(dict(os.environ)),
            capture_output=True,
            text=True,
            check=False,
            timeout=240,
        )
    report = _lines(run.stdout)

    assert run.returncode == 0, run.stdout + run.stderr
    assert set(report) == {
        "stream",
        "table",
        "streaming destination",
        "bucket",
        "bucket encryption",
        "oidc provider",
        "point-in-time recovery",
        "names",
        "secrets key",
    }
    assert report["bucket encryption"].startswith("PASS")
    # the committed stack files lack their encryptedkey (no KMS here): a warning against the local AWS only
    assert report["secrets key"].startswith("WARN  secrets key")
    assert "Pulumi.dev1.yaml has secretsprovider" in report["secrets key"]
    assert report["streaming destination"].startswith("PASS")
    assert "ACTIVE, MICROSECOND, via the sandbox bridge" in report["streaming destination"]
    assert report["stream"].startswith("PASS  stream")
    assert "encryption NONE" in report["stream"]
    assert report["bucket"].startswith("PASS")
    assert report["oidc provider"].startswith("PASS")
    assert "oidc-provider/git.tmaws.io" in report["oidc provider"]
    assert report["point-in-time recovery"].startswith("PASS"), "the local table has it (the backfill exports need it)"
    # The sandbox creates the two buckets, Glue database and workgroup tagged like the stack: found and recognised.
    assert report["names"].startswith("PASS")
    # ... and so are the stack's roles (the local AWS enforces IAM with them): the backfill's function and state
    # machine are free.
    assert "5 free, 7 already this stack's (12 checked)" in report["names"]


@pytest.mark.slow
def test_fails_naming_the_fix_without_a_destination_a_bucket_a_provider_or_a_free_name(capsys):
    with local_aws("dev1") as aws:
        dynamodb = aws.client("dynamodb")
        dynamodb.update_table(TableName=TABLE, StreamSpecification={"StreamEnabled": False})
        dynamodb.update_continuous_backups(
            TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
        )
        aws.client("s3").delete_bucket(Bucket=aws.outputs.bucket_name)
        aws.client("s3").put_bucket_tagging(
            Bucket=aws.outputs.failure_bucket_name,
            Tagging={"TagSet": [{"Key": "Environment", "Value": "qa1"}, {"Key": "ProductCode", "Value": "PRD3292"}]},
        )
        iam = aws.client("iam")
        for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
            iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider["Arn"])
        status = preflight.main(["dev1", "--local"])
    output = capsys.readouterr().out
    report = _lines(output)

    assert status == 1
    assert report["streaming destination"].startswith("FAIL")
    assert (
        f"table {TABLE} has no ACTIVE Kinesis streaming destination to {STREAM_ARN}" in report["streaming destination"]
    )
    assert (
        f"fix: aws dynamodb update-table --table-name {TABLE} --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    ) in report["streaming destination"]
    assert report["bucket"].startswith("FAIL  bucket")
    assert "no S3 bucket prd3292.dev1.us-east-1.demand-capture.tmaws" in report["bucket"]
    assert (
        "fix: create it in us-east-1 (its owner), or set dmd-pipeline:bucketId in Pulumi.dev1.yaml" in report["bucket"]
    )
    assert report["names"].startswith("FAIL")
    assert (
        "bucket prd3292-dev1-us-east-1-demand-processor-failures exists and is not this stack's "
        "(Environment=qa1, ProductCode=PRD3292)"
    ) in report["names"]
    assert report["oidc provider"].startswith("FAIL")
    assert "fix: run the account bootstrap: cd bootstrap && pulumi up -s tm-nonprod" in report["oidc provider"]
    assert report["stream"].startswith("PASS"), "one failing check does not hide the others"
    assert report["table"].startswith("PASS")
    assert report["point-in-time recovery"].startswith("WARN"), "a warning, not a failure"
    assert "update-continuous-backups" in report["point-in-time recovery"]
    assert report["bucket encryption"].startswith("FAIL"), "no bucket, no encryption to check"
    assert output.splitlines()[-1] == "result: 5 failed, 2 warning(s), 2 passed"


@pytest.mark.slow
def test_a_stack_that_creates_its_stream_needs_the_name_free_and_versioned_buckets_expire_versions():
    settings = settings_from_stack_file("prod1")
    with local_aws("prod1") as aws:
        # The local AWS made prod1's stream without tags, as if another system owned the name.
        # The local AWS versions the bucket and expires noncurrent versions as the program does: the owner's bucket
        # here is versioned without that rule.
        aws.client("s3").put_bucket_versioning(
            Bucket=aws.outputs.bucket_name, VersioningConfiguration={"Status": "Enabled"}
        )
        aws.client("s3").delete_bucket_lifecycle(Bucket=aws.outputs.bucket_name)
        results = {result.name: result for result in Preflight(settings, aws.session()).run()}

    assert results["stream"].outcome == "FAIL"
    assert "prd3292-prod1-dmnd-table-stream exists and is not this stack's" in results["stream"].detail
    assert results["bucket"].outcome == "WARN", "versioned without noncurrent expiry: the owner's to fix"
    assert "NoncurrentVersionExpiration" in results["bucket"].fix
    # No bridge given: the real DescribeKinesisStreamingDestination, which moto does not implement.
    assert results["streaming destination"].outcome == "FAIL"
    assert "AWS error" in results["streaming destination"].detail


def test_make_preflight_requires_a_stack():
    run = subprocess.run(
        ["make", "--no-print-directory", "preflight"],
        cwd=PROJECT_ROOT,
        env=outside_project_venv(dict(os.environ)),
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 2
    assert "STACK is required: make preflight STACK=<dev1|qa1|preprod1|prod1>" in run.stderr
    assert "ops.preflight" not in run.stdout


def test_usage_mistakes_exit_2_with_one_line(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    assert preflight.main(["nosuchstack"]) == 2
    assert preflight.main(["dev1", "--local"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith("preflight: Pulumi.nosuchstack.yaml: no such stack file")
    assert error[1] == "preflight: --local needs AWS_ENDPOINT_URL (the local AWS of `make demo ARGS=--keep`)"
    with pytest.raises(SystemExit) as raised:
        preflight.main([])
    assert raised.value.code == 2


def test_an_unknown_profile_exits_2(capsys, monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")

    assert preflight.main(["dev1", "--profile", "no-such-profile"]) == 2
    assert "preflight: cannot reach AWS as 'no-such-profile'" in capsys.readouterr().err


# ---------------------------------------------------------------- AWS's DescribeKinesisStreamingDestination (stubbed)


def _stubbed_destinations(*destinations: dict) -> tuple[AwsDestinations, Stubber]:
    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response(
        "describe_kinesis_streaming_destination",
        {"TableName": TABLE, "KinesisDataStreamDestinations": list(destinations)},
        {"TableName": TABLE},
    )
    stubber.activate()
    return AwsDestinations(client), stubber


def test_aws_destinations_read_status_and_precision():
    source, stubber = _stubbed_destinations(
        {"StreamArn": STREAM_ARN, "DestinationStatus": "ACTIVE", "ApproximateCreationDateTimePrecision": "MICROSECOND"},
        {"StreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/old", "DestinationStatus": "DISABLED"},
    )

    assert source.destinations(TABLE) == [
        Destination(STREAM_ARN, "ACTIVE", "MICROSECOND"),
        Destination("arn:aws:kinesis:us-east-1:123456789012:stream/old", "DISABLED", "MILLISECOND"),
    ]
    stubber.assert_no_pending_responses()


class _FixedDestinations:
    def __init__(self, *found: Destination) -> None:
        self.found = list(found)

    def destinations(self, table_name: str) -> list[Destination]:
        return self.found

    def fix(self, table_name: str, stream_arn: str, precision: str) -> str:
        return AwsDestinations(None).fix(table_name, stream_arn, precision)


@pytest.mark.parametrize(
    ("found", "outcome", "expected"),
    [
        ([Destination(STREAM_ARN, "ACTIVE", "MICROSECOND")], "PASS", "ACTIVE, MICROSECOND"),
        ([Destination(STREAM_ARN, "ACTIVE", "MILLISECOND")], "FAIL", "DynamoDB; the stack needs MICROSECOND"),
        ([Destination(STREAM_ARN, "DISABLED", "MICROSECOND")], "FAIL", f"{STREAM_ARN} DISABLED"),
        ([], "FAIL", "(destinations: none)"),
    ],
)
def test_destination_check_status_and_precision(found, outcome, expected):
    check = Preflight(settings_from_stack_file("dev1"), _Summary(), _FixedDestinations(*found))

    result = check.check_destination()

    assert result.outcome == outcome
    assert expected in result.detail
    if outcome == "FAIL" and "needs MICROSECOND" in result.detail:
        assert result.fix.startswith(
            f"aws dynamodb update-kinesis-streaming-destination --table-name {TABLE} --stream-arn {STREAM_ARN} "
            "--update-kinesis-streaming-configuration ApproximateCreationDateTimePrecision=MICROSECOND"
        )
    elif outcome == "FAIL":
        assert result.fix.startswith(f"aws dynamodb enable-kinesis-streaming-destination --table-name {TABLE}")
        assert "ApproximateCreationDateTimePrecision=MICROSECOND" in result.fix


def test_a_stack_configured_at_millisecond_precision_fails_even_with_a_matching_destination():
    settings = dataclasses.replace(settings_from_stack_file("dev1"), change_time_precision="MILLISECOND")
    check = Preflight(settings, _Summary(), _FixedDestinations(Destination(STREAM_ARN, "ACTIVE", "MILLISECOND")))

    result = check.check_destination()

    assert (result.outcome, result.name) == ("FAIL", "streaming destination")
    assert "changeTimePrecision is MILLISECOND" in result.detail
    assert result.fix.startswith("set dmd-pipeline:changeTimePrecision: MICROSECOND in Pulumi.dev1.yaml")


@pytest.mark.parametrize("stack", ["dev1", "qa1", "preprod1", "prod1"])
def test_every_stack_file_orders_changes_at_microsecond_precision(stack):
    assert settings_from_stack_file(stack).change_time_precision == preflight.REQUIRED_PRECISION == "MICROSECOND"


def test_render_shows_each_fix_under_its_check_and_the_tally():
    settings = settings_from_stack_file("qa1")
    text = preflight.render(
        "qa1",
        settings,
        "123456789012",
        [CheckResult("table", "PASS", "t ACTIVE"), CheckResult("bucket", "FAIL", "no S3 bucket b", "create it")],
    )

    assert text.splitlines() == [
        "preflight of stack qa1 (tm-nonprod, us-east-1, account 123456789012)",
        "PASS  table   t ACTIVE",
        "FAIL  bucket  no S3 bucket b",
        "              fix: create it",
        "result: 1 failed, 0 warning(s), 1 passed",
    ]


class _Summary:
    """A session whose Kinesis reports one stream summary."""

    def __init__(self, **summary: str) -> None:
        self.summary = summary

    def client(self, service, region_name=None):
        client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        stubber = Stubber(client)
        summary = {
            "StreamName": "prd3292-dev1-dmnd-table-stream",
            "StreamARN": STREAM_ARN,
            "StreamStatus": "ACTIVE",
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": "2026-01-01T00:00:00Z",
            "EnhancedMonitoring": [],
            "OpenShardCount": 1,
            **self.summary,
        }
        stubber.add_response("describe_stream_summary", {"StreamDescriptionSummary": summary})
        stubber.activate()
        return client


@pytest.mark.parametrize(
    ("summary", "outcome", "detail"),
    [
        ({"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}, "PASS", "ACTIVE, encryption KMS (alias/aws/kinesis)"),
        ({"EncryptionType": "KMS", "KeyId": "arn:aws:kms:us-east-1:1:key/k"}, "PASS", "a customer managed key"),
        ({"StreamStatus": "DELETING"}, "FAIL", "prd3292-dev1-dmnd-table-stream DELETING"),
    ],
)
def test_stream_check_reports_encryption_and_status(summary, outcome, detail):
    result = Preflight(settings_from_stack_file("dev1"), _Summary(**summary)).check_stream()

    assert result.outcome == outcome
    assert detail in result.detail


@pytest.mark.slow
def test_a_backfill_state_machine_of_another_stack_under_this_stacks_name_fails_the_names_check():
    settings = settings_from_stack_file("dev1")
    with local_aws("dev1") as aws:
        role = aws.client("iam").create_role(
            RoleName="someone-elses-states-role",
            AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
        )["Role"]["Arn"]
        aws.client("stepfunctions").create_state_machine(
            name="prd3292-dev1-demand-backfill",
            definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
            roleArn=role,
            tags=[{"key": "Environment", "value": "qa1"}, {"key": "ProductCode", "value": "PRD3292"}],
        )
        results = {result.name: result for result in Preflight(settings, aws.session()).run()}

    assert results["names"].outcome == "FAIL"
    assert (
        "state machine prd3292-dev1-demand-backfill exists and is not this stack's "
        "(Environment=qa1, ProductCode=PRD3292)"
    ) in results["names"].detail


# ---------------------------------------------------------------- bucket encryption against the roles' KMS rights

CUSTOMER_KEY = "arn:aws:kms:us-east-1:123456789012:key/1111aaaa-2222-3333-4444-555566667777"
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/9999aaaa-2222-3333-4444-555566667777"


class _Encryption:
    """A session whose S3 reports one default encryption and whose KMS describes the keys it knows."""

    def __init__(self, default: dict | None, keys: dict[str, dict]) -> None:
        self.default, self.keys = default, keys

    def client(self, service, region_name=None):
        return self

    def get_bucket_encryption(self, Bucket):  # noqa: N803 - boto3's parameter name
        if self.default is None:
            error: Any = {"Error": {"Code": "ServerSideEncryptionConfigurationNotFoundError"}}
            raise ClientError(error, "GetBucketEncryption")
        return {"ServerSideEncryptionConfiguration": {"Rules": [{"ApplyServerSideEncryptionByDefault": self.default}]}}

    def describe_key(self, KeyId):  # noqa: N803
        if KeyId not in self.keys:
            missing: Any = {"Error": {"Code": "NotFoundException"}}
            raise ClientError(missing, "DescribeKey")
        return {"KeyMetadata": self.keys[KeyId]}


def _encryption_check(default: dict | None, keys: dict[str, dict], granted: str | None) -> CheckResult:
    settings = dataclasses.replace(settings_from_stack_file("dev1"), bucket_kms_key_arn=granted)
    return Preflight(settings, _Encryption(default, keys)).check_bucket_encryption()


def test_a_customer_key_the_roles_are_not_granted_fails_naming_the_setting():
    keys = {CUSTOMER_KEY: {"Arn": CUSTOMER_KEY, "KeyManager": "CUSTOMER"}}
    result = _encryption_check({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": CUSTOMER_KEY}, keys, None)

    assert result.outcome == "FAIL"
    assert f"customer key {CUSTOMER_KEY}; the stack grants its roles no KMS key" in result.detail
    assert result.fix.startswith(f"set dmd-pipeline:bucketKmsKeyArn: {CUSTOMER_KEY} in Pulumi.dev1.yaml")


def test_another_customer_key_than_the_granted_one_fails():
    keys = {key: {"Arn": key, "KeyManager": "CUSTOMER"} for key in (CUSTOMER_KEY, OTHER_KEY)}
    result = _encryption_check({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": CUSTOMER_KEY}, keys, OTHER_KEY)

    assert result.outcome == "FAIL"
    assert f"the stack grants its roles {OTHER_KEY}" in result.detail


@pytest.mark.parametrize(
    ("default", "keys", "granted", "detail"),
    [
        (None, {}, None, "AES256, no customer key to grant"),
        ({"SSEAlgorithm": "AES256"}, {}, None, "AES256, no customer key to grant"),
        ({"SSEAlgorithm": "aws:kms"}, {}, None, "aws:kms, no customer key to grant"),
        (
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/aws/s3"},
            {"alias/aws/s3": {"Arn": OTHER_KEY, "KeyManager": "AWS"}},
            None,
            "the AWS managed key",
        ),
        (
            # the bucket names the key by alias, the stack by ARN: the same key
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/lake"},
            {
                "alias/lake": {"Arn": CUSTOMER_KEY, "KeyManager": "CUSTOMER"},
                CUSTOMER_KEY: {"Arn": CUSTOMER_KEY, "KeyManager": "CUSTOMER"},
            },
            CUSTOMER_KEY,
            "granted",
        ),
    ],
)
def test_encryption_the_roles_can_write_with_passes(default, keys, granted, detail):
    result = _encryption_check(default, keys, granted)

    assert result.outcome == "PASS"
    assert detail in result.detail


def test_a_key_this_identity_cannot_describe_fails():
    result = _encryption_check({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": CUSTOMER_KEY}, {}, None)

    assert result.outcome == "FAIL"
    assert "cannot describe" in result.detail


# ---------------------------------------------------------------- the stack file's encryptedkey


def _stack_file(tmp_path, text: str):
    (tmp_path / "Pulumi.qa1.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_a_stack_file_without_encryptedkey_fails_naming_the_one_time_step(tmp_path):
    root = _stack_file(tmp_path, "secretsprovider: awskms://alias/k?region=us-east-1\nconfig: {}\n")
    result = preflight.check_secrets_key("qa1", root=root)

    assert result.outcome == "FAIL"
    assert result.detail == "Pulumi.qa1.yaml has secretsprovider awskms://alias/k?region=us-east-1 but no encryptedkey"
    assert 'pulumi stack change-secrets-provider "awskms://alias/k?region=us-east-1" -s qa1' in result.fix
    assert preflight.check_secrets_key("qa1", local=True, root=root).outcome == "WARN", "the local AWS deploys nothing"


def test_a_stack_file_with_its_encryptedkey_passes(tmp_path):
    text = "secretsprovider: awskms://alias/k?region=us-east-1\nencryptedkey: AQICAHh...\nconfig: {}\n"
    assert preflight.check_secrets_key("qa1", root=_stack_file(tmp_path, text)).outcome == "PASS"
    assert preflight.secrets_key_problem("qa1", _stack_file(tmp_path, "config: {}\n")) == (
        "Pulumi.qa1.yaml names no secretsprovider"
    )


@pytest.mark.parametrize("stack", ["dev1", "qa1", "preprod1", "prod1"])
def test_the_committed_stack_files_fail_until_an_operator_writes_their_key(stack, capsys):
    """No KMS here to mint a key: the committed files lack it, and the CI step says what to run (docs/runbook.md)."""
    status = preflight.main([stack, "--stack-file"])
    output = capsys.readouterr().out

    assert status == 1
    assert f"FAIL  secrets key  Pulumi.{stack}.yaml has secretsprovider" in output, "alone: no column padding"
    assert "pulumi stack change-secrets-provider" in output
