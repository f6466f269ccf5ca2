"""Read-only checks of the target account before a deploy: does the first `pulumi up` of STACK stand a chance?

    python -m ops.preflight qa1                 # the stack's aws:profile (CI defines it: ops.ci_aws_profile)
    python -m ops.preflight dev1 --local        # the embedded local AWS ($AWS_ENDPOINT_URL), its bridge

Checks (each independent, each printed with the fix when it does not pass):
  stream                 the stream the stack reads exists and is ACTIVE (its encryption is reported); a stack that
                         creates its stream: the name is free or already this stack's
  table                  the demand table exists
  streaming destination  the table streams to that stream, ACTIVE, at MICROSECOND precision, and the stack's
                         changeTimePrecision says so (--local: the sandbox bridge, which forwards the table's
                         DynamoDB stream)
  bucket                 the data bucket exists in the stack's region; if versioned, noncurrent versions expire
  bucket encryption      the bucket's default encryption is one the roles can write with: SSE-S3, the AWS managed
                         key, or the customer managed key the stack grants (dmd-pipeline:bucketKmsKeyArn)
  secrets key            the stack file names its secrets provider and carries its encryptedkey (without it Pulumi
                         mints a data key with kms:Encrypt on every run, which the read-only preview role may not)
  oidc provider          the account's GitLab OIDC provider exists (created by the bootstrap project)
  point-in-time recovery enabled on the table (the backfill needs it): a warning, not a failure
  names                  every name the stack will create is free, or tagged as this stack's
    python -m ops.preflight qa1 --stack-file    # the stack file's checks only (secrets key), no AWS: CI's first job

Exit status: 0 all pass (warnings allowed), 1 a check failed, 2 a usage mistake (unknown stack, no credentials).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import boto3
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from components.settings import PROJECT_ROOT, Settings, SettingsError, settings_from_stack_file

__all__ = [
    "REQUIRED_PRECISION",
    "AwsDestinations",
    "BridgeDestinations",
    "CheckResult",
    "Destination",
    "DestinationSource",
    "Preflight",
    "check_secrets_key",
    "main",
    "render",
    "secrets_key_fix",
    "secrets_key_problem",
]

Outcome = Literal["PASS", "FAIL", "WARN"]
AWS_MANAGED_STREAM_KEY = "alias/aws/kinesis"
#: ApproximateCreationDateTime precision every stack needs: changes are ordered by it (pipeline.change_order).
REQUIRED_PRECISION = "MICROSECOND"
_MISSING = (
    "ResourceNotFoundException",
    "NoSuchEntity",
    "NoSuchBucket",
    "404",
    "NotFound",
    "EntityNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "StateMachineDoesNotExist",
)


@dataclass(frozen=True)
class CheckResult:
    """One line of the preflight: what was checked, the outcome, what was found, and how to fix it."""

    name: str
    outcome: Outcome
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "FAIL"


@dataclass(frozen=True)
class Destination:
    """A Kinesis streaming destination of a table, as DescribeKinesisStreamingDestination reports it."""

    stream_arn: str
    status: str
    precision: str
    via: str = "Kinesis Data Streams for DynamoDB"


class DestinationSource(Protocol):
    """Where a table's changes go: AWS's streaming destinations, or the local sandbox's bridge."""

    def destinations(self, table_name: str) -> list[Destination]:
        """The table's destinations; raises ClientError when the table cannot be described."""
        ...

    def fix(self, table_name: str, stream_arn: str, precision: str) -> str:
        """How to make the table stream to ``stream_arn`` with ``precision``."""
        ...


class AwsDestinations:
    """The table's Kinesis streaming destinations in AWS (DescribeKinesisStreamingDestination)."""

    def __init__(self, dynamodb: Any) -> None:
        self._dynamodb = dynamodb

    def destinations(self, table_name: str) -> list[Destination]:
        response = self._dynamodb.describe_kinesis_streaming_destination(TableName=table_name)
        return [
            Destination(
                stream_arn=item["StreamArn"],
                status=item["DestinationStatus"],
                # AWS omits the field on destinations enabled before precision was configurable: MILLISECOND.
                precision=item.get("ApproximateCreationDateTimePrecision", "MILLISECOND"),
            )
            for item in response.get("KinesisDataStreamDestinations", [])
        ]

    def fix(self, table_name: str, stream_arn: str, precision: str) -> str:
        return (
            f"aws dynamodb enable-kinesis-streaming-destination --table-name {table_name} --stream-arn {stream_arn} "
            f"--enable-kinesis-streaming-configuration ApproximateCreationDateTimePrecision={precision} "
            "(the table's owner)"
        )


class BridgeDestinations:
    """The local AWS: moto has no streaming destination, the sandbox bridge forwards the table's DynamoDB stream.

    The bridge (``sandbox.bridge.StreamBridge``) reads the table's stream (NEW_AND_OLD_IMAGES) and writes to the
    stack's Kinesis stream with the stack's precision; so the table streams there exactly when its stream is on.
    """

    def __init__(self, dynamodb: Any, kinesis: Any, *, stream_name: str, precision: str) -> None:
        self._dynamodb = dynamodb
        self._kinesis = kinesis
        self._stream_name = stream_name
        self._precision = precision

    def destinations(self, table_name: str) -> list[Destination]:
        table = self._dynamodb.describe_table(TableName=table_name)["Table"]
        specification = table.get("StreamSpecification") or {}
        if not (specification.get("StreamEnabled") and specification.get("StreamViewType") == "NEW_AND_OLD_IMAGES"):
            return []
        try:
            summary = self._kinesis.describe_stream_summary(StreamName=self._stream_name)["StreamDescriptionSummary"]
        except ClientError as error:
            if _absent(error):
                return []  # nothing for the bridge to write to
            raise
        return [Destination(summary["StreamARN"], "ACTIVE", self._precision, via="the sandbox bridge")]

    def fix(self, table_name: str, stream_arn: str, precision: str) -> str:
        return (
            f"aws dynamodb update-table --table-name {table_name} --stream-specification "
            "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES (the local bridge forwards that stream to "
            f"{stream_arn})"
        )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _absent(error: ClientError) -> bool:
    """The error says the thing does not exist (each service says it its own way)."""
    code = _code(error)
    if code == "InvalidRequestException":  # Athena's answer for an unknown workgroup, among other mistakes
        return "not found" in str(error.response.get("Error", {}).get("Message", "")).lower()
    return code in _MISSING or code.endswith(("NotFound", "NotFoundException", "NonExistentQueue"))


def _tags(pairs: Sequence[dict[str, str]] | None) -> dict[str, str]:
    return {pair["Key"]: pair["Value"] for pair in pairs or []}


class Preflight:
    """The checks of one stack against one account, through one boto3 session."""

    def __init__(self, settings: Settings, session: Any, destinations: DestinationSource | None = None) -> None:
        self.settings = settings
        self.names = settings.naming.resources()
        self._session = session
        self._clients: dict[str, Any] = {}
        self._destinations = destinations
        self.account = ""
        #: against the embedded local AWS, which no Pulumi deploy uses: the secrets key is only a warning there
        self.local = isinstance(destinations, BridgeDestinations)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service, region_name=self.settings.region)
        return self._clients[service]

    @property
    def stream_name(self) -> str:
        return self.settings.stream_name or self.settings.naming.seed_stream_name()

    def destinations(self) -> DestinationSource:
        return self._destinations or AwsDestinations(self.client("dynamodb"))

    def run(self) -> list[CheckResult]:
        """Every check, in order; an AWS error in one check fails that check only."""
        self.account = self.client("sts").get_caller_identity()["Account"]
        checks: dict[str, Callable[[], CheckResult]] = {
            "stream": self.check_stream,
            "table": self.check_table,
            "streaming destination": self.check_destination,
            "bucket": self.check_bucket,
            "bucket encryption": self.check_bucket_encryption,
            "oidc provider": self.check_oidc_provider,
            "point-in-time recovery": self.check_point_in_time_recovery,
            "names": self.check_names,
            "secrets key": lambda: check_secrets_key(self.settings.stack, local=self.local),
        }
        results = []
        for name, check in checks.items():
            try:
                results.append(check())
            except (ClientError, BotoCoreError) as error:
                results.append(CheckResult(name, "FAIL", f"AWS error: {error}", "check the role's read permissions"))
        return results

    # ---------------------------------------------------------------- the stream and the table

    def _stream_summary(self) -> dict[str, Any] | None:
        try:
            return dict(
                self.client("kinesis").describe_stream_summary(StreamName=self.stream_name)["StreamDescriptionSummary"]
            )
        except ClientError as error:
            if _absent(error):
                return None
            raise

    def check_stream(self) -> CheckResult:
        summary = self._stream_summary()
        if self.settings.creates_stream:
            if summary is None:
                return CheckResult("stream", "PASS", f"{self.stream_name} is free: the stack creates it")
            tags = _tags(self.client("kinesis").list_tags_for_stream(StreamName=self.stream_name).get("Tags"))
            return self._owned("stream", self.stream_name, tags)
        if summary is None:
            return CheckResult(
                "stream",
                "FAIL",
                f"no Kinesis stream {self.stream_name} in {self.settings.region}",
                f"create it, or set dmd-pipeline:streamName in Pulumi.{self.settings.stack}.yaml to the table's stream",
            )
        encryption = summary.get("EncryptionType", "NONE")
        key_id = str(summary.get("KeyId") or "")
        key = f" ({key_id})" if key_id else ""
        status = summary.get("StreamStatus", "?")
        detail = f"{self.stream_name} {status}, encryption {encryption}{key}"
        if encryption == "KMS" and key_id not in ("", AWS_MANAGED_STREAM_KEY):
            detail += ": a customer managed key, the function needs kms:Decrypt on it (granted from the lookup)"
        if status not in ("ACTIVE", "UPDATING"):
            return CheckResult("stream", "FAIL", detail, "wait until the stream is ACTIVE")
        return CheckResult("stream", "PASS", detail)

    def check_table(self) -> CheckResult:
        try:
            table = self.client("dynamodb").describe_table(TableName=self.settings.table_name)["Table"]
        except ClientError as error:
            if not _absent(error):
                raise
            return CheckResult(
                "table",
                "FAIL",
                f"no DynamoDB table {self.settings.table_name} in {self.settings.region}",
                f"set dmd-pipeline:tableName in Pulumi.{self.settings.stack}.yaml to the demand table",
            )
        return CheckResult("table", "PASS", f"{self.settings.table_name} {table.get('TableStatus', '?')}")

    def check_destination(self) -> CheckResult:
        settings = self.settings
        summary = self._stream_summary()
        stream_arn = summary["StreamARN"] if summary else f"<the stream {self.stream_name}>"
        source = self.destinations()
        fix = source.fix(settings.table_name, stream_arn, REQUIRED_PRECISION)
        if settings.change_time_precision != REQUIRED_PRECISION:
            return CheckResult(
                "streaming destination",
                "FAIL",
                f"the stack's changeTimePrecision is {settings.change_time_precision}: two changes of one item in the "
                f"same millisecond cannot be ordered; every stack uses {REQUIRED_PRECISION}",
                f"set dmd-pipeline:changeTimePrecision: {REQUIRED_PRECISION} in Pulumi.{settings.stack}.yaml, once the "
                "table's destination is switched (docs/runbook.md, streaming destination precision)",
            )
        try:
            found = source.destinations(settings.table_name)
        except ClientError as error:
            if _absent(error):
                return CheckResult("streaming destination", "FAIL", f"no table {settings.table_name}", "see table")
            raise
        mine = [destination for destination in found if destination.stream_arn == stream_arn]
        if settings.creates_stream and not mine:
            return CheckResult("streaming destination", "PASS", "none to the stack's stream yet: the stack creates it")
        active = [destination for destination in mine if destination.status == "ACTIVE"]
        if not active:
            states = ", ".join(f"{d.stream_arn} {d.status}" for d in found) or "none"
            return CheckResult(
                "streaming destination",
                "FAIL",
                f"table {settings.table_name} has no ACTIVE Kinesis streaming destination to {stream_arn} "
                f"(destinations: {states})",
                fix,
            )
        destination = active[0]
        detail = f"{settings.table_name} -> {self.stream_name} ACTIVE, {destination.precision}, via {destination.via}"
        if destination.precision != REQUIRED_PRECISION:
            return CheckResult(
                "streaming destination",
                "FAIL",
                f"{detail}; the stack needs {REQUIRED_PRECISION} (the order of two changes of one item in the same "
                "millisecond is lost otherwise)",
                f"aws dynamodb update-kinesis-streaming-destination --table-name {settings.table_name} "
                f"--stream-arn {stream_arn} --update-kinesis-streaming-configuration "
                f"ApproximateCreationDateTimePrecision={REQUIRED_PRECISION} (the table's owner; docs/runbook.md, "
                "streaming destination precision)",
            )
        return CheckResult("streaming destination", "PASS", detail)

    # ---------------------------------------------------------------- the bucket, the provider, backups

    def check_bucket(self) -> CheckResult:
        s3, bucket, region = self.client("s3"), self.settings.bucket_id, self.settings.region
        try:
            location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        except ClientError as error:
            if not _absent(error):
                raise
            if self.settings.create_bucket:
                return CheckResult("bucket", "PASS", f"{bucket} is free: the stack creates it")
            return CheckResult(
                "bucket",
                "FAIL",
                f"no S3 bucket {bucket}",
                f"create it in {region} (its owner), or set dmd-pipeline:bucketId in Pulumi.{self.settings.stack}.yaml",
            )
        if location != region:
            return CheckResult(
                "bucket", "FAIL", f"{bucket} is in {location}, the stack in {region}", "use a bucket in the region"
            )
        versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled")
        if versioning not in ("Enabled", "Suspended"):
            return CheckResult("bucket", "PASS", f"{bucket} in {region}, not versioned")
        try:
            rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except ClientError as error:
            if _code(error) != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        expiring = [
            rule for rule in rules if rule.get("Status") == "Enabled" and rule.get("NoncurrentVersionExpiration")
        ]
        detail = f"{bucket} in {region}, versioning {versioning}"
        if not expiring:
            return CheckResult(
                "bucket",
                "WARN",
                f"{detail}, no lifecycle rule expires noncurrent versions (compaction's deletes keep them forever)",
                "the bucket's owner adds a lifecycle rule with NoncurrentVersionExpiration (docs/runbook.md)",
            )
        return CheckResult("bucket", "PASS", f"{detail}, noncurrent versions expire")

    def check_bucket_encryption(self) -> CheckResult:  # noqa: PLR0911 - one outcome per encryption kind
        """SSE-KMS with a customer managed key the roles are not granted fails every PUT of the pipeline."""
        s3, bucket, stack = self.client("s3"), self.settings.bucket_id, self.settings.stack
        try:
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"].get("Rules", [])
        except ClientError as error:
            if _code(error) == "ServerSideEncryptionConfigurationNotFoundError":
                rules = []
            elif _absent(error):
                if self.settings.create_bucket:
                    return CheckResult("bucket encryption", "PASS", f"{bucket} is free: the stack creates it")
                return CheckResult("bucket encryption", "FAIL", f"no S3 bucket {bucket}", "see bucket")
            else:
                raise
        default = (rules[0].get("ApplyServerSideEncryptionByDefault") or {}) if rules else {}
        algorithm = default.get("SSEAlgorithm", "AES256")
        key_id = default.get("KMSMasterKeyID")
        if not algorithm.startswith("aws:kms") or not key_id:
            return CheckResult("bucket encryption", "PASS", f"{bucket}: {algorithm}, no customer key to grant")
        key = self._key_metadata(key_id)
        if key is None:
            return CheckResult(
                "bucket encryption",
                "FAIL",
                f"{bucket}: {algorithm} with key {key_id}, which this identity cannot describe",
                "the key's owner lets the account use it (key policy), then set dmd-pipeline:bucketKmsKeyArn",
            )
        if key.get("KeyManager") == "AWS":
            return CheckResult("bucket encryption", "PASS", f"{bucket}: {algorithm} with the AWS managed key")
        granted = self.settings.bucket_kms_key_arn
        granted_arn = (self._key_metadata(granted) or {}).get("Arn") if granted else None
        if granted_arn == key["Arn"]:
            return CheckResult("bucket encryption", "PASS", f"{bucket}: {algorithm} with {key['Arn']}, granted")
        return CheckResult(
            "bucket encryption",
            "FAIL",
            f"{bucket}: default encryption {algorithm} with customer key {key['Arn']}; the stack grants its roles "
            f"{granted or 'no KMS key'}: every PUT of the stream, compaction and backfill functions would fail",
            f"set dmd-pipeline:bucketKmsKeyArn: {key['Arn']} in Pulumi.{stack}.yaml (the key policy must let the "
            "account's IAM policies grant it)",
        )

    def _key_metadata(self, key_id: str) -> dict[str, Any] | None:
        try:
            metadata: dict[str, Any] = self.client("kms").describe_key(KeyId=key_id)["KeyMetadata"]
        except ClientError as error:
            if _absent(error) or _code(error) in ("AccessDeniedException", "NotFoundException"):
                return None
            raise
        return metadata

    def check_oidc_provider(self) -> CheckResult:
        host = self.settings.oidc_issuer_url.split("://", 1)[1]
        iam = self.client("iam")
        arns = [item["Arn"] for item in iam.list_open_id_connect_providers().get("OpenIDConnectProviderList", [])]
        found = [arn for arn in arns if arn.endswith(f":oidc-provider/{host}")]
        if not found:
            account = self.settings.account_tag
            return CheckResult(
                "oidc provider",
                "FAIL",
                f"no IAM OIDC provider for {self.settings.gitlab_url} in account {self.account}",
                f"run the account bootstrap: cd bootstrap && pulumi up -s {account} (docs/runbook.md, Bootstrap)",
            )
        return CheckResult("oidc provider", "PASS", found[0])

    def check_point_in_time_recovery(self) -> CheckResult:
        table = self.settings.table_name
        try:
            description = self.client("dynamodb").describe_continuous_backups(TableName=table)
        except ClientError as error:
            if _absent(error):
                return CheckResult("point-in-time recovery", "WARN", f"no table {table}", "see table")
            raise
        status = description["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
        if status.get("PointInTimeRecoveryStatus") != "ENABLED":
            return CheckResult(
                "point-in-time recovery",
                "WARN",
                f"{table}: point-in-time recovery is off (the backfill exports need it)",
                f"aws dynamodb update-continuous-backups --table-name {table} "
                "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true (the table's owner)",
            )
        return CheckResult("point-in-time recovery", "PASS", f"{table}: enabled")

    # ---------------------------------------------------------------- names the stack will create

    def _owned(self, check: str, name: str, tags: dict[str, str]) -> CheckResult:
        expected = {"Environment": self.settings.environment_tag, "ProductCode": self.settings.product_code}
        if all(tags.get(key) == value for key, value in expected.items()):
            return CheckResult(check, "PASS", f"{name} exists, tagged as this stack's")
        shown = ", ".join(f"{key}={tags.get(key, '<none>')}" for key in expected)
        return CheckResult(
            check,
            "FAIL",
            f"{name} exists and is not this stack's ({shown})",
            f"remove or rename what holds {name}, or import it into stack {self.settings.stack} (pulumi import)",
        )

    def _name_tags(self) -> list[tuple[str, dict[str, str] | None]]:
        """(name, its tags, or None when free) of every named resource the stack creates."""
        names, region, account = self.names, self.settings.region, self.account

        def lookup(fetch: Callable[[], dict[str, str]]) -> dict[str, str] | None:
            try:
                return fetch()
            except ClientError as error:
                if _absent(error):
                    return None
                raise

        s3, logs, cloudwatch = self.client("s3"), self.client("logs"), self.client("cloudwatch")
        glue, athena = self.client("glue"), self.client("athena")

        def bucket_tags(bucket: str) -> Callable[[], dict[str, str]]:
            def fetch() -> dict[str, str]:
                s3.head_bucket(Bucket=bucket)  # 404 when free; 403 when another account holds the name
                try:
                    return _tags(s3.get_bucket_tagging(Bucket=bucket).get("TagSet"))
                except ClientError as error:
                    if _code(error) == "NoSuchTagSet":
                        return {}
                    raise

            return fetch

        def log_group_tags() -> dict[str, str]:
            groups = logs.describe_log_groups(logGroupNamePrefix=names.log_group).get("logGroups", [])
            if not any(group["logGroupName"] == names.log_group for group in groups):
                raise ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "DescribeLogGroups")
            return dict(logs.list_tags_log_group(logGroupName=names.log_group).get("tags", {}))

        def glue_database_tags() -> dict[str, str]:
            glue.get_database(Name=names.glue_database)
            arn = f"arn:aws:glue:{region}:{account}:database/{names.glue_database}"
            return dict(glue.get_tags(ResourceArn=arn).get("Tags", {}))

        def workgroup_tags() -> dict[str, str]:
            athena.get_work_group(WorkGroup=names.workgroup)
            arn = f"arn:aws:athena:{region}:{account}:workgroup/{names.workgroup}"
            return _tags(athena.list_tags_for_resource(ResourceARN=arn).get("Tags"))

        def function_tags(function: str) -> Callable[[], dict[str, str]]:
            return lambda: dict(self.client("lambda").get_function(FunctionName=function).get("Tags", {}))

        def role_tags(role: str) -> Callable[[], dict[str, str]]:
            return lambda: _tags(self.client("iam").get_role(RoleName=role)["Role"].get("Tags"))

        def state_machine_tags() -> dict[str, str]:
            states = self.client("stepfunctions")
            arn = f"arn:aws:states:{region}:{account}:stateMachine:{names.backfill_state_machine}"
            states.describe_state_machine(stateMachineArn=arn)
            pairs = states.list_tags_for_resource(resourceArn=arn).get("tags", [])
            return {pair["key"]: pair["value"] for pair in pairs}

        found: list[tuple[str, dict[str, str] | None]] = [
            (f"function {names.function}", lookup(function_tags(names.function))),
            (f"function {names.curator_function}", lookup(function_tags(names.curator_function))),
            (f"bucket {names.failure_bucket}", lookup(bucket_tags(names.failure_bucket))),
            (f"bucket {names.results_bucket}", lookup(bucket_tags(names.results_bucket))),
            (f"log group {names.log_group}", lookup(log_group_tags)),
            (f"role {names.ci_role}", lookup(role_tags(names.ci_role))),
            (f"function {names.backfill_function}", lookup(function_tags(names.backfill_function))),
            (f"role {names.backfill_function}", lookup(role_tags(names.backfill_function))),
            (f"role {names.backfill_state_machine_role}", lookup(role_tags(names.backfill_state_machine_role))),
            (f"state machine {names.backfill_state_machine}", lookup(state_machine_tags)),
            (f"glue database {names.glue_database}", lookup(glue_database_tags)),
            (f"workgroup {names.workgroup}", lookup(workgroup_tags)),
        ]
        for alarm in cloudwatch.describe_alarms(AlarmNamePrefix=f"{names.alarm_prefix}-").get("MetricAlarms", []):
            tags = _tags(cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags"))
            found.append((f"alarm {alarm['AlarmName']}", tags))
        return found

    def check_names(self) -> CheckResult:
        found = self._name_tags()
        problems = [
            result for name, tags in found if tags is not None and (result := self._owned("names", name, tags)).failed
        ]
        taken = [name for name, tags in found if tags is not None]
        if problems:
            return CheckResult(
                "names",
                "FAIL",
                "; ".join(problem.detail for problem in problems),
                problems[0].fix + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            )
        free = len(found) - len(taken)
        return CheckResult("names", "PASS", f"{free} free, {len(taken)} already this stack's ({len(found)} checked)")


def secrets_key_problem(stack: str, root: Path = PROJECT_ROOT) -> str | None:
    """What is wrong with ``Pulumi.<stack>.yaml``'s secrets configuration, or None.

    A stack file naming a KMS ``secretsprovider`` must also carry the ``encryptedkey`` Pulumi wrote when the stack
    was initialised: without it Pulumi mints a new data key (``kms:Encrypt``) on every run and rewrites the file,
    and the read-only preview role, which may only ``kms:Decrypt``, fails every merge request preview.
    """
    path = root / f"Pulumi.{stack}.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return f"no stack file {path.name}"
    if not isinstance(document, dict):
        return f"{path.name} is not a YAML mapping"
    provider = document.get("secretsprovider")
    if not provider:
        return f"{path.name} names no secretsprovider"
    if not str(document.get("encryptedkey") or "").strip():
        return f"{path.name} has secretsprovider {provider} but no encryptedkey"
    return None


def secrets_key_fix(stack: str, provider: str = "<its secretsprovider>") -> str:
    """The one-time step that writes the missing ``encryptedkey`` (docs/runbook.md, Bootstrap)."""
    return (
        f'an account administrator runs: pulumi stack change-secrets-provider "{provider}" -s {stack}, '
        f"then commits the encryptedkey line it writes into Pulumi.{stack}.yaml (docs/runbook.md, Bootstrap)"
    )


def check_secrets_key(stack: str, *, local: bool = False, root: Path = PROJECT_ROOT) -> CheckResult:
    """The stack file's ``encryptedkey`` (no AWS call): a failure, or a warning against the local AWS."""
    problem = secrets_key_problem(stack, root)
    if problem is None:
        return CheckResult("secrets key", "PASS", f"Pulumi.{stack}.yaml has its encryptedkey")
    document = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8")) or {}
    fix = secrets_key_fix(stack, str(document.get("secretsprovider") or "<the account's secrets provider>"))
    return CheckResult("secrets key", "WARN" if local else "FAIL", problem, fix)


def render(stack: str, settings: Settings, account: str, results: Sequence[CheckResult]) -> str:
    """The report: one line per check, its fix under it, then the tally."""
    width = max(len(result.name) for result in results)
    lines = [f"preflight of stack {stack} ({settings.account_tag}, {settings.region}, account {account})"]
    for result in results:
        lines.append(f"{result.outcome}  {result.name:<{width}}  {result.detail}")
        if result.outcome != "PASS" and result.fix:
            lines.append(f"{'':6}{'':<{width}}  fix: {result.fix}")
    failed = sum(result.outcome == "FAIL" for result in results)
    warned = sum(result.outcome == "WARN" for result in results)
    passed = len(results) - failed - warned
    lines.append(f"result: {failed} failed, {warned} warning(s), {passed} passed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack to check before its deploy (dev1, qa1, preprod1, prod1)")
    parser.add_argument(
        "--local",
        action="store_true",
        help="the embedded local AWS ($AWS_ENDPOINT_URL, environment credentials); the bridge is the destination",
    )
    parser.add_argument("--profile", help="AWS profile to use (default: the stack's aws:profile; not with --local)")
    parser.add_argument(
        "--stack-file",
        action="store_true",
        help="only the checks of the stack file itself (its encryptedkey), without AWS: CI runs it before any preview",
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_from_stack_file(args.stack)
    except SettingsError as error:
        print(f"preflight: {error}", file=sys.stderr)
        return 2
    if args.stack_file:
        result = check_secrets_key(args.stack)
        print(render(args.stack, settings, "(not contacted)", [result]))
        return 1 if result.failed else 0
    if args.local and not os.environ.get("AWS_ENDPOINT_URL"):
        print("preflight: --local needs AWS_ENDPOINT_URL (the local AWS of `make demo ARGS=--keep`)", file=sys.stderr)
        return 2
    try:
        if args.local:
            session = boto3.Session(region_name=settings.region)
            bridge = BridgeDestinations(
                session.client("dynamodb", region_name=settings.region),
                session.client("kinesis", region_name=settings.region),
                stream_name=settings.stream_name or settings.naming.seed_stream_name(),
                precision=settings.change_time_precision,
            )
            preflight = Preflight(settings, session, bridge)
        else:
            session = boto3.Session(profile_name=args.profile or settings.profile, region_name=settings.region)
            preflight = Preflight(settings, session)
        results = preflight.run()
    except (BotoCoreError, ClientError) as error:
        # No credentials, an unknown profile, an expired token: the caller's setup, not a check of the account.
        print(f"preflight: cannot reach AWS as {args.profile or settings.profile!r}: {error}", file=sys.stderr)
        return 2
    print(render(args.stack, settings, preflight.account, results))
    return 1 if any(result.failed for result in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
