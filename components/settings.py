"""Stack settings: the only module that reads Pulumi config, validated into one frozen ``Settings``.

Two constructors share one parser, so a stack file that ``pulumi up`` would reject is rejected the same way
by the local sandbox and the ops commands:

- ``load_settings()`` inside a Pulumi program (reads ``pulumi.Config``);
- ``settings_from_stack_file(stack)`` anywhere else (reads ``Pulumi.<stack>.yaml`` plus the defaults
  documented in ``Pulumi.yaml``, without Pulumi).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from components.naming import Naming

__all__ = [
    "ACCOUNT_TAGS",
    "ATHENA_MIN_BYTES_SCANNED_CUTOFF",
    "CONFIG_KEYS",
    "ERASURE_SALT_KEY",
    "LOG_RETENTION_DAYS",
    "PROJECT",
    "PROJECT_ROOT",
    "SECRET_CONFIG_KEYS",
    "ConfigKey",
    "Precision",
    "Settings",
    "SettingsError",
    "backfill_concurrency_ceiling",
    "erasure_salt",
    "load_settings",
    "settings_from_stack_file",
]

PROJECT = "dmd-pipeline"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_TAGS = ("tm-nonprod", "tm-prod")
PROD_ACCOUNT = "tm-prod"
# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
PRECISIONS = ("MILLISECOND", "MICROSECOND")
# Lambda's default concurrent executions per account and region. The stream function needs one per shard and
# parallelization slot: STREAM_SHARD_ALLOWANCE shards (an on-demand stream's 4 at creation, grown 16 times) keep
# theirs while a backfill runs, and the compactor one; the backfill gets at most the rest.
ACCOUNT_CONCURRENCY = 1000
STREAM_SHARD_ALLOWANCE = 64
# The curator's reserved concurrency: one run at a time, the single writer of the curated tables by construction.
CURATOR_CONCURRENCY = 1
# 10 MB: the Athena API accepts 10,000,000, but the AWS provider rejects anything below 10 MiB at preview.
ATHENA_MIN_BYTES_SCANNED_CUTOFF = 10 * 1024**2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Values of streamName meaning "no existing stream: the stack creates and owns one" ("TBD" is the seed's prod1 value).
CREATE_STREAM_MARKERS = ("", "TBD")

# Where a Kinesis event source mapping starts reading (Lambda's StartingPosition).
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
# SNS protocols an alarm topic may deliver to (plain http is refused: alarms leave the account over TLS only).
SUBSCRIPTION_PROTOCOLS = ("email", "email-json", "https", "sqs", "lambda", "sms")

Precision = Literal["MILLISECOND", "MICROSECOND"]
_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12})?:.+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_STREAM = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PROJECT_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
_URL = re.compile(r"^https://[a-z0-9.-]+(:\d+)?$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_EXPORT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# An export time as make backfill prints it (milliseconds optional).
_EXPORT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_EMAIL = re.compile(r"^[^@\s:]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)


class SettingsError(ValueError):
    """A stack's configuration is missing a required key or holds a malformed value."""


@dataclass(frozen=True)
class ConfigKey:
    """One config key: where it lives, its kind, its default (None = required) and what it means."""

    key: str  # "namespace:name"
    field: str
    kind: str  # "string", "integer", "boolean"
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None  # returns what was expected when the value is wrong

    @property
    def required(self) -> bool:
        return self.default is None


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    return lambda value: None if regex.match(value) else what


def _between(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"an integer between {low} and {high}"


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else "one of " + ", ".join(str(choice) for choice in choices)


@functools.cache
def _aws_regions() -> frozenset[str]:
    """Every region botocore's endpoint data knows, in every partition (the regex alone let us-east-9 through)."""
    import botocore.loaders  # noqa: PLC0415 - read once, when a region is checked

    partitions = botocore.loaders.create_loader().load_data("endpoints")["partitions"]
    return frozenset(region for partition in partitions for region in partition["regions"])


def _region(value: Any) -> str | None:
    if _REGION.match(value) and value in _aws_regions():
        return None
    return "an AWS region such as us-east-1, us-east-2, us-west-2, eu-west-1"


def _optional_arn(value: Any) -> str | None:
    return None if value == "" or _ARN.match(value) else "an ARN (arn:aws:...) or empty"


def _subscription_problem(entry: Any) -> str | None:
    """What is wrong with one ``<protocol>:<endpoint>`` alarm subscription, or None."""
    protocol, _, endpoint = str(entry).partition(":")
    if protocol not in SUBSCRIPTION_PROTOCOLS or not endpoint:
        return f"<protocol>:<endpoint> with protocol one of {', '.join(SUBSCRIPTION_PROTOCOLS)}"
    if protocol.startswith("email") and not _EMAIL.match(endpoint):
        return "an email address after email:"
    if protocol == "https" and not endpoint.startswith("https://"):
        return "an https:// URL after https:"
    if protocol in ("sqs", "lambda") and not _ARN.match(endpoint):
        return f"an ARN after {protocol}:"
    return None


def _subscriptions(value: Any) -> str | None:
    if not isinstance(value, list):
        return "a list of <protocol>:<endpoint> strings"
    for entry in value:
        problem = _subscription_problem(entry)
        if problem is not None:
            return f"a list of {problem} ({entry!r} is not)"
    if len(set(value)) != len(value):
        return "a list without duplicates"
    return None


def _key(name: str, field: str, kind: str, default: Any, description: str, check: Any = None) -> ConfigKey:  # noqa: PLR0917
    return ConfigKey(f"{PROJECT}:{name}", field, kind, default, description, check)


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("aws:region", "region", "string", None, "AWS region of the stack.", _region),
    ConfigKey("aws:profile", "profile", "string", None, "AWS CLI profile used to deploy the stack."),
    _key(
        "accountTag", "account_tag", "string", None, "Account tag (Account) on every resource.", _one_of(*ACCOUNT_TAGS)
    ),
    _key("environmentTag", "environment_tag", "string", None, "Environment tag (Environment); equals the stack name."),
    _key("productCode", "product_code", "string", "PRD3292", "Product code tag (ProductCode); starts every name."),
    _key("inventoryCode", "inventory_code", "string", "dmnd-pipeline", "Inventory code tag (InventoryCode)."),
    _key(
        "streamName",
        "stream_name",
        "string",
        "",
        "Existing Kinesis stream of the table's changes; empty or TBD: the stack creates and owns the stream.",
        lambda value: None if value in CREATE_STREAM_MARKERS or _STREAM.match(value) else "a Kinesis stream name",
    ),
    _key(
        "streamStartingPosition",
        "stream_starting_position",
        "string",
        "",
        "Where the mapping starts reading: TRIM_HORIZON, LATEST or AT_TIMESTAMP; required for an existing stream"
        " (a created stream defaults to TRIM_HORIZON).",
        _one_of("", *STARTING_POSITIONS),
    ),
    _key(
        "streamStartTimestamp",
        "stream_start_timestamp",
        "string",
        "",
        "Cutover time T, ISO-8601 UTC (2026-12-01T09:00:00Z): required with AT_TIMESTAMP, refused otherwise.",
        lambda value: None if value == "" or _TIMESTAMP.match(value) else "an ISO-8601 UTC time YYYY-MM-DDTHH:MM:SSZ",
    ),
    _key("tableName", "table_name", "string", None, "DynamoDB demand table (owned elsewhere, looked up).", None),
    _key("bucketId", "bucket_id", "string", None, "S3 data bucket id.", _pattern(_BUCKET, "an S3 bucket name")),
    _key("createBucket", "create_bucket", "boolean", False, "Create a hardened data bucket instead of looking it up."),
    _key("lambdaMemoryMb", "lambda_memory_mb", "integer", 1024, "Lambda memory in MB.", _between(128, 10240)),
    _key("lambdaTimeoutSeconds", "lambda_timeout_seconds", "integer", 120, "Lambda timeout.", _between(1, 900)),
    # 10,000 (Lambda's maximum): at 1 KiB records the 6 MB event limit ends a batch at ~3,200 (docs/architecture.md).
    _key("batchSize", "batch_size", "integer", 10000, "Records per Lambda invocation.", _between(1, 10000)),
    _key(
        "batchingWindowSeconds",
        "batching_window_seconds",
        "integer",
        5,
        "Maximum time to gather a batch.",
        _between(0, 300),
    ),
    _key(
        "parallelizationFactor",
        "parallelization_factor",
        "integer",
        1,
        "Concurrent batches per shard (1 keeps per-key order trivially).",
        _between(1, 10),
    ),
    _key(
        "maxRetryAttempts",
        "max_retry_attempts",
        "integer",
        5,
        "Retries of a failing batch before it goes to the failure bucket (finite).",
        _between(0, 10000),
    ),
    _key(
        "maxRecordAgeSeconds",
        "max_record_age_seconds",
        "integer",
        21600,
        "Records older than this go to the failure bucket (finite).",
        _between(60, 604800),
    ),
    _key(
        "changeTimePrecision",
        "change_time_precision",
        "string",
        "MICROSECOND",
        "ApproximateCreationDateTime precision of the table's streaming destination; the handler is told the same.",
        _one_of(*PRECISIONS),
    ),
    _key(
        "logRetentionDays", "log_retention_days", "integer", 30, "Function log retention.", _one_of(*LOG_RETENTION_DAYS)
    ),
    _key("logLevel", "log_level", "string", "INFO", "Handler log level.", _one_of(*LOG_LEVELS)),
    _key(
        "athenaBytesScannedCutoff",
        "athena_bytes_scanned_cutoff",
        "integer",
        10 * 1024**3,
        "Per-query bytes-scanned limit of the Athena workgroup (minimum 10485760, 10 MiB).",
        _between(ATHENA_MIN_BYTES_SCANNED_CUTOFF, 2**62),
    ),
    _key(
        "athenaResultsExpiryDays",
        "athena_results_expiry_days",
        "integer",
        7,
        "Days before Athena query results expire.",
        _between(1, 3650),
    ),
    _key(
        "athenaQueryWindowDays",
        "athena_query_window_days",
        "integer",
        7,
        "Days of dt partitions the named queries read (keeps them under athenaBytesScannedCutoff).",
        _between(1, 3650),
    ),
    _key(
        "iteratorAgeAlarmSeconds",
        "iterator_age_alarm_seconds",
        "integer",
        300,
        "Alarm when the oldest unprocessed record is older than this (IteratorAge is in milliseconds).",
        _between(1, 604800),
    ),
    _key(
        "errorsAlarmThreshold",
        "errors_alarm_threshold",
        "integer",
        1,
        "Errors per 5 minutes that alarm.",
        _between(1, 10**6),
    ),
    _key(
        "throttlesAlarmThreshold",
        "throttles_alarm_threshold",
        "integer",
        1,
        "Throttles per 5 minutes that alarm.",
        _between(1, 10**6),
    ),
    _key(
        "failedBatchesAlarmThreshold",
        "failed_batches_alarm_threshold",
        "integer",
        1,
        "Discarded batches written to the failure bucket per 5 minutes that alarm.",
        _between(1, 10**6),
    ),
    _key(
        "failureRetentionDays",
        "failure_retention_days",
        "integer",
        30,
        "Days a discarded batch (the whole invocation record) stays in the failure bucket to investigate and replay.",
        _between(1, 3650),
    ),
    _key(
        "failureBucketVersioning",
        "failure_bucket_versioning",
        "boolean",
        True,
        "Keep earlier versions in the failure bucket (a replayed and deleted record stays 7 more days).",
    ),
    _key(
        "curationIntervalMinutes",
        "curation_interval_minutes",
        "integer",
        15,
        "The curator runs every this many minutes (the curated tables' freshness); its timeout must be shorter.",
        _between(2, 1440),
    ),
    _key(
        "timeTravelDays",
        "time_travel_days",
        "integer",
        7,
        "Days the curated tables keep their snapshots (FOR TIMESTAMP AS OF reaches this far back), then expire them.",
        _between(1, 3650),
    ),
    _key(
        "exportRetentionDays",
        "export_retention_days",
        "integer",
        14,
        "Days a backfill's DynamoDB export stays after its request once its snapshot holds all of it (a re-run of the "
        "same export needs it), then the curator purges it.",
        _between(1, 3650),
    ),
    _key(
        "erasureDeadlineDays",
        "erasure_deadline_days",
        "integer",
        25,
        "Days an erasure request may stay pending before its alarm fires (the law allows a month: at most 30).",
        _between(1, 30),
    ),
    _key(
        "erasureRowsPerRun",
        "erasure_rows_per_run",
        "integer",
        40_000_000,
        "Rows of curated data files one curator run rewrites for erasure requests (about 200 s of one core); a "
        "request holding more goes on in the next runs, and each run still curates.",
        _between(1_000_000, 1_000_000_000),
    ),
    _key(
        "curationMemoryMb",
        "curation_memory_mb",
        "integer",
        4096,
        "Curator function memory in MB (a run's peak RSS stays within 75 % of it).",
        _between(128, 10240),
    ),
    _key(
        "curationTimeoutSeconds",
        "curation_timeout_seconds",
        "integer",
        600,
        "Curator function timeout; below curationIntervalMinutes, so a run ends before the next is due.",
        _between(60, 900),
    ),
    _key(
        "curationDeleteGraceMinutes",
        "curation_delete_grace_minutes",
        "integer",
        15,
        "Raw objects a committed snapshot covers are deleted this long after it (queries that listed them finish).",
        _between(0, 1440),
    ),
    _key(
        "backfillMaxConcurrency",
        "backfill_max_concurrency",
        "integer",
        100,
        "Backfill function invocations at once (the Distributed Map's MaxConcurrency); at most the account's 1,000"
        " concurrent executions minus the stream function's 64 shards x parallelizationFactor and the curator's 1.",
        _between(1, ACCOUNT_CONCURRENCY),
    ),
    _key(
        "snapshotExportId",
        "snapshot_export_id",
        "string",
        "",
        "Published snapshot: the export id whose backfill current_registrations starts from (with"
        " snapshotExportTime; empty: the change-only query).",
        lambda value: None if value == "" or _EXPORT_ID.match(value) else "a DynamoDB export id (letters, digits, '-')",
    ),
    _key(
        "snapshotExportTime",
        "snapshot_export_time",
        "string",
        "",
        "Published snapshot: its export time T, ISO-8601 UTC (2026-12-01T09:05:00Z); with snapshotExportId.",
        lambda value: (
            None if value == "" or _EXPORT_TIME.match(value) else "an ISO-8601 UTC time YYYY-MM-DDTHH:MM:SS[.fff]Z"
        ),
    ),
    _key(
        "alarmTopicArn",
        "alarm_topic_arn",
        "string",
        "",
        "Existing SNS topic the alarms notify (empty: the stack creates its own encrypted topic).",
        _optional_arn,
    ),
    _key(
        "alarmSubscriptions",
        "alarm_subscriptions",
        "array",
        [],
        "Subscribers of the stack's own alarm topic, each <protocol>:<endpoint> (email, email-json, https, sqs,"
        " lambda, sms); tm-prod stacks need these or alarmTopicArn.",
        _subscriptions,
    ),
    _key(
        "quarantineRateAlarmPercent",
        "quarantine_rate_alarm_percent",
        "integer",
        5,
        "Alarm when more than this percentage of received records is quarantined for 15 minutes.",
        _between(1, 100),
    ),
    _key(
        "logDestinationArn",
        "log_destination_arn",
        "string",
        "",
        "Central log destination the function's logs are subscribed to (empty: no subscription).",
        _optional_arn,
    ),
    _key(
        "streamKmsKeyArn",
        "stream_kms_key_arn",
        "string",
        "",
        "Customer managed KMS key of an existing stream, if any (the function may decrypt with it).",
        _optional_arn,
    ),
    _key(
        "bucketKmsKeyArn",
        "bucket_kms_key_arn",
        "string",
        "",
        "Customer managed KMS key of the data bucket, if any (the function and CI may encrypt with it).",
        _optional_arn,
    ),
    _key(
        "gitlabUrl",
        "gitlab_url",
        "string",
        "https://git.tmaws.io",
        "GitLab issuing CI ID tokens.",
        _pattern(_URL, "an https URL"),
    ),
    _key(
        "gitlabIssuerUrl",
        "gitlab_issuer_url",
        "string",
        "",
        "Issuer of GitLab's CI ID tokens (gitlab.rb ci_id_tokens issuer_url) when it is not gitlabUrl: the URL of"
        " the account's OIDC provider (empty: gitlabUrl).",
        lambda value: None if value == "" or _URL.match(value) else "an https URL or empty",
    ),
    _key(
        "gitlabProjectPath",
        "gitlab_project_path",
        "string",
        "demand-capture/data-pipeline",
        "GitLab project whose CI may assume the CI role.",
        _pattern(_PROJECT_PATH, "a GitLab project path group/project"),
    ),
    _key(
        "ciMainBranchOnly",
        "ci_main_branch_only",
        "boolean",
        True,
        "Trust only the main branch's pipelines (required in the prod account).",
    ),
    _key(
        "artifactDir", "artifact_dir", "string", "dist", "Directory holding function.zip and layer.zip (make package)."
    ),
)


# Secrets (``pulumi config set --secret``): never in ``Settings`` (a frozen dataclass of plain values), read only by
# the program as secret Outputs; the stack-file reader skips them (it cannot decrypt them and needs none).
ERASURE_SALT_KEY = f"{PROJECT}:erasureSalt"
SECRET_CONFIG_KEYS = frozenset({ERASURE_SALT_KEY})
_ARRAY_KEYS = frozenset(spec.key for spec in CONFIG_KEYS if spec.kind == "array")


@dataclass(frozen=True)
class Settings:
    """Validated settings of one stack."""

    stack: str
    region: str
    profile: str
    account_tag: str
    environment_tag: str
    product_code: str
    inventory_code: str
    stream_name: str | None  # None: the stack creates and owns the stream
    stream_starting_position: str
    stream_start_timestamp: str | None  # with AT_TIMESTAMP only
    table_name: str
    bucket_id: str
    create_bucket: bool
    lambda_memory_mb: int
    lambda_timeout_seconds: int
    batch_size: int
    batching_window_seconds: int
    parallelization_factor: int
    max_retry_attempts: int
    max_record_age_seconds: int
    change_time_precision: Precision
    log_retention_days: int
    log_level: str
    athena_bytes_scanned_cutoff: int
    athena_results_expiry_days: int
    athena_query_window_days: int
    iterator_age_alarm_seconds: int
    errors_alarm_threshold: int
    throttles_alarm_threshold: int
    failed_batches_alarm_threshold: int
    failure_retention_days: int
    failure_bucket_versioning: bool
    curation_interval_minutes: int
    time_travel_days: int
    export_retention_days: int
    erasure_deadline_days: int
    erasure_rows_per_run: int
    curation_memory_mb: int
    curation_timeout_seconds: int
    curation_delete_grace_minutes: int
    backfill_max_concurrency: int
    snapshot_export_id: str | None  # with snapshot_export_time: the published snapshot
    snapshot_export_time: str | None
    alarm_topic_arn: str | None
    alarm_subscriptions: tuple[str, ...]
    quarantine_rate_alarm_percent: int
    log_destination_arn: str | None
    stream_kms_key_arn: str | None
    bucket_kms_key_arn: str | None
    gitlab_url: str
    gitlab_issuer_url: str
    gitlab_project_path: str
    ci_main_branch_only: bool
    artifact_dir: str

    @property
    def oidc_issuer_url(self) -> str:
        """The ID tokens' issuer: the URL of the account's OIDC provider and the prefix of its condition keys."""
        return self.gitlab_issuer_url or self.gitlab_url

    @property
    def creates_stream(self) -> bool:
        """True when the stack creates the Kinesis stream (no existing stream named)."""
        return self.stream_name is None

    @property
    def is_prod_account(self) -> bool:
        return self.account_tag == PROD_ACCOUNT

    @property
    def central_logs_warning(self) -> str | None:
        """The warning every preview of a tm-prod stack prints while its logs reach no central destination."""
        if self.is_prod_account and self.log_destination_arn is None:
            return (
                f"{self.stack}: {PROJECT}:logDestinationArn is unset: the function's logs are not shipped to the"
                " central log destination the replaced system used"
            )
        return None

    @property
    def naming(self) -> Naming:
        """The stack's naming helper."""
        return Naming(self.product_code, self.environment_tag, self.region)

    @property
    def tags(self) -> dict[str, str]:
        """The four tags every taggable resource carries (applied as provider default tags)."""
        return {
            "Account": self.account_tag,
            "Environment": self.environment_tag,
            "ProductCode": self.product_code,
            "InventoryCode": self.inventory_code,
        }


def _as_text(value: Any) -> str:
    """YAML scalars -> the strings Pulumi config would hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse(spec: ConfigKey, text: str, where: str) -> Any:
    value: Any = text.strip()
    if spec.kind == "integer":
        try:
            value = int(value)
        except ValueError:
            raise SettingsError(f"{where}: {spec.key} must be an integer, got {text!r}") from None
    elif spec.kind == "array":
        try:
            value = json.loads(value or "[]")
        except ValueError:
            raise SettingsError(f"{where}: {spec.key} must be a list, got {text!r}") from None
    elif spec.kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise SettingsError(f"{where}: {spec.key} must be true or false, got {text!r}")
        value = value.lower() == "true"
    if spec.check is not None:
        expected = spec.check(value)
        if expected is not None:
            raise SettingsError(f"{where}: {spec.key} must be {expected}, got {text!r}")
    return value


def _looks_like_ours(namespace: str) -> bool:
    """A namespace that is probably a misspelling of the project's (``dmd-pipline``, ``dmd_pipeline``)."""
    if namespace == PROJECT:
        return False
    return difflib.SequenceMatcher(None, namespace.lower(), PROJECT).ratio() >= 0.8


def _build(stack: str, raw: Mapping[str, str], where: str) -> Settings:
    """Validate raw config text (namespaced keys, project defaults not yet applied) into Settings."""
    known = {spec.key for spec in CONFIG_KEYS} | SECRET_CONFIG_KEYS
    lookalikes = sorted(key for key in raw if _looks_like_ours(key.split(":", 1)[0]))
    if lookalikes:
        raise SettingsError(f"{where}: unknown config namespace in {lookalikes[0]} (did you mean {PROJECT}:?)")
    unknown = sorted(key for key in raw if key.startswith(f"{PROJECT}:") and key not in known)
    if unknown:
        raise SettingsError(f"{where}: unknown config key {unknown[0]} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {"stack": stack}
    for spec in CONFIG_KEYS:
        text = raw.get(spec.key)
        if text is None or (spec.required and text.strip() == ""):
            if spec.required:
                raise SettingsError(f"{where}: {spec.key} is required ({spec.description})")
            text = _as_text(spec.default)
        values[spec.field] = _parse(spec, text, where)
    for optional in ("alarm_topic_arn", "log_destination_arn", "stream_kms_key_arn", "bucket_kms_key_arn"):
        values[optional] = values[optional] or None
    values["stream_name"] = None if values["stream_name"] in CREATE_STREAM_MARKERS else values["stream_name"]
    values["stream_start_timestamp"] = values["stream_start_timestamp"] or None
    values["snapshot_export_id"] = values["snapshot_export_id"] or None
    values["snapshot_export_time"] = values["snapshot_export_time"] or None
    values["stream_starting_position"] = _starting_position(values, where)
    values["alarm_subscriptions"] = tuple(values["alarm_subscriptions"])
    settings = Settings(**values)
    if settings.environment_tag != stack:
        raise SettingsError(
            f"{where}: {PROJECT}:environmentTag must be the stack name {stack!r}, got {settings.environment_tag!r}"
        )
    if settings.is_prod_account and not settings.ci_main_branch_only:
        raise SettingsError(f"{where}: {PROJECT}:ciMainBranchOnly must be true in the {PROD_ACCOUNT} account")
    _check_alarm_destination(settings, where)
    try:
        settings.naming.resources()
    except ValueError as error:
        raise SettingsError(f"{where}: {PROJECT}:environmentTag {settings.environment_tag!r}: {error}") from None
    if settings.curation_timeout_seconds >= settings.curation_interval_minutes * 60:
        raise SettingsError(
            f"{where}: {PROJECT}:curationTimeoutSeconds must be below curationIntervalMinutes"
            f" ({settings.curation_interval_minutes} min = {settings.curation_interval_minutes * 60} s),"
            f" got {settings.curation_timeout_seconds}"
        )
    _check_backfill(settings, where)
    if not _TABLE.match(settings.table_name):
        raise SettingsError(f"{where}: {PROJECT}:tableName must be a DynamoDB table name, got {settings.table_name!r}")
    return settings


def _starting_position(values: Mapping[str, Any], where: str) -> str:
    """The mapping's starting position: required for an existing stream, TRIM_HORIZON for a created one."""
    position = values["stream_starting_position"]
    timestamp = values["stream_start_timestamp"]
    key, time_key = f"{PROJECT}:streamStartingPosition", f"{PROJECT}:streamStartTimestamp"
    if not position:
        if values["stream_name"] is not None:
            raise SettingsError(
                f"{where}: {key} is required for the existing stream {values['stream_name']!r}"
                f" (one of {', '.join(STARTING_POSITIONS)}; AT_TIMESTAMP with {time_key}): TRIM_HORIZON would replay"
                " the records the replaced consumer already handled"
            )
        position = "TRIM_HORIZON"
    if position == "AT_TIMESTAMP" and timestamp is None:
        raise SettingsError(f"{where}: {time_key} is required when {key} is AT_TIMESTAMP")
    if position != "AT_TIMESTAMP" and timestamp is not None:
        raise SettingsError(
            f"{where}: {time_key} is set ({timestamp!r}) but {key} is {position}: it is only used with AT_TIMESTAMP"
        )
    return str(position)


def backfill_concurrency_ceiling(parallelization_factor: int) -> int:
    """The most backfill invocations at once that leave the stream function and the compactor their capacity."""
    return ACCOUNT_CONCURRENCY - STREAM_SHARD_ALLOWANCE * parallelization_factor - CURATOR_CONCURRENCY


def _check_backfill(settings: Settings, where: str) -> None:
    """The backfill's concurrency leaves the stream its share; a published snapshot names both id and time."""
    ceiling = backfill_concurrency_ceiling(settings.parallelization_factor)
    if settings.backfill_max_concurrency > ceiling:
        raise SettingsError(
            f"{where}: {PROJECT}:backfillMaxConcurrency {settings.backfill_max_concurrency} leaves the stream function"
            f" too little of the account's {ACCOUNT_CONCURRENCY} concurrent executions: at most {ceiling}"
            f" ({ACCOUNT_CONCURRENCY} - {STREAM_SHARD_ALLOWANCE} shards x parallelizationFactor"
            f" {settings.parallelization_factor} - {CURATOR_CONCURRENCY} for the curator)"
        )
    id_key, time_key = f"{PROJECT}:snapshotExportId", f"{PROJECT}:snapshotExportTime"
    if settings.snapshot_export_id and not settings.snapshot_export_time:
        raise SettingsError(f"{where}: {time_key} is required with {id_key} ({settings.snapshot_export_id!r})")
    if settings.snapshot_export_time and not settings.snapshot_export_id:
        raise SettingsError(f"{where}: {id_key} is required with {time_key} ({settings.snapshot_export_time!r})")
    if settings.snapshot_export_time:
        try:
            datetime.fromisoformat(settings.snapshot_export_time.replace("Z", "+00:00"))
        except ValueError:
            raise SettingsError(
                f"{where}: {time_key} {settings.snapshot_export_time!r} is not a real time (YYYY-MM-DDTHH:MM:SS[.fff]Z)"
            ) from None


def _check_alarm_destination(settings: Settings, where: str) -> None:
    """Alarms must reach someone: one destination only, and in the prod account at least one."""
    topic_key, subscriptions_key = f"{PROJECT}:alarmTopicArn", f"{PROJECT}:alarmSubscriptions"
    if settings.alarm_topic_arn and settings.alarm_subscriptions:
        raise SettingsError(
            f"{where}: set {topic_key} or {subscriptions_key}, not both (the stack does not change a topic it does"
            " not own)"
        )
    if settings.is_prod_account and not settings.alarm_topic_arn and not settings.alarm_subscriptions:
        raise SettingsError(
            f"{where}: alarms in the {PROD_ACCOUNT} account must reach someone: set {subscriptions_key}"
            f' (e.g. ["email:team@example.com"]) or {topic_key}'
        )


def load_settings() -> Settings:
    """Settings of the running Pulumi program's stack, from ``pulumi.Config``."""
    import pulumi  # noqa: PLC0415 - only programs need Pulumi; the sandbox and ops use the stack-file reader
    from pulumi.runtime import config as runtime_config  # noqa: PLC0415

    stack = pulumi.get_stack()
    raw: dict[str, str] = {}
    for key, value in {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}.items():
        if key in SECRET_CONFIG_KEYS:
            continue  # read as a secret Output by its own function (erasure_salt), never as plain text
        if key.startswith(f"{PROJECT}:") or _looks_like_ours(key.split(":", 1)[0]):
            raw[key] = _as_text(value)
    for spec in CONFIG_KEYS:
        namespace, name = spec.key.split(":", 1)
        value = pulumi.Config(namespace).get(name)
        if value is not None:
            raw[spec.key] = value
    return _build(stack, raw, f"Pulumi.{stack}.yaml")


def erasure_salt(stack: str) -> Any:
    """The stack's erasure salt (``dmd-pipeline:erasureSalt``) as a secret ``pulumi.Output[str]``.

    The curator keys the audit's HMAC of each fan id with it, so it must be the same for every run of the stack and
    known to nobody reading the audit. Absent, the program refuses to run (preview and up alike) rather than derive
    one: a salt derived from anything in the repository would let anyone holding an audit record test fan ids.
    """
    import pulumi  # noqa: PLC0415 - only programs read secrets

    namespace, name = ERASURE_SALT_KEY.split(":", 1)
    salt = pulumi.Config(namespace).get_secret(name)
    if salt is None:
        raise SettingsError(
            f"Pulumi.{stack}.yaml: {ERASURE_SALT_KEY} is not set (a secret per stack): run "
            f'pulumi config set --secret {ERASURE_SALT_KEY} "$(openssl rand -hex 32)" --stack {stack}'
        )
    return salt


def _qualified(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SettingsError(f"{path.name}: no such stack file in {path.parent}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SettingsError(f"{path.name}:{place}: not valid YAML ({problem})") from None
    if not isinstance(document, dict):
        raise SettingsError(f"{path.name}: expected a YAML mapping")
    return document


def project_defaults(project_file: Path) -> dict[str, str]:
    """Defaults declared in ``Pulumi.yaml`` (``config: {key: {default: ...}}``), as config text."""
    config = _read_yaml(project_file).get("config") or {}
    defaults: dict[str, str] = {}
    for key, declaration in config.items():
        if isinstance(declaration, dict) and "default" in declaration:
            defaults[_qualified(key)] = _as_text(declaration["default"])
        elif isinstance(declaration, dict) and "value" in declaration:
            defaults[_qualified(key)] = _as_text(declaration["value"])
    return defaults


def settings_from_stack_file(stack: str, path: Path | None = None) -> Settings:
    """Settings of ``stack`` from ``Pulumi.<stack>.yaml`` and the defaults in ``Pulumi.yaml``, without Pulumi.

    ``path`` is the stack file, or the directory holding it and ``Pulumi.yaml`` (default: the project root).
    """
    if path is None:
        path = PROJECT_ROOT
    stack_file = path / f"Pulumi.{stack}.yaml" if path.is_dir() else path
    where = stack_file.name
    raw = project_defaults(stack_file.parent / "Pulumi.yaml") if (stack_file.parent / "Pulumi.yaml").exists() else {}
    config = _read_yaml(stack_file).get("config") or {}
    if not isinstance(config, dict):
        raise SettingsError(f"{where}: 'config' must be a mapping")
    for key, value in config.items():
        if str(key).startswith("pulumi:"):
            continue  # engine settings such as pulumi:disable-default-providers, not program config
        if _qualified(key) in SECRET_CONFIG_KEYS:
            continue  # ciphertext ({secure: ...}): only the program, through Pulumi, reads it
        if isinstance(value, list) and _qualified(key) in _ARRAY_KEYS:
            raw[_qualified(key)] = json.dumps(value)  # how Pulumi hands structured config to a program
            continue
        if isinstance(value, dict | list):
            raise SettingsError(f"{where}: {_qualified(key)} must be a scalar value")
        raw[_qualified(key)] = _as_text(value)
    return _build(stack, raw, where)
