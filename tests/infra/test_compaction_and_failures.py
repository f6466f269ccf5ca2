"""Compaction (function, role, schedule, alarm) and the failure bucket, for each stack's real config, under mocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.artifacts import artifact
from components.function_environment import compaction_environment
from components.naming import prefixes
from components.policies import compaction_policy, schedule_arn, schedule_group_arn, scheduler_trust_policy
from components.settings import SettingsError, settings_from_stack_file
from ops.mocks import ACCOUNT_ID
from ops.program import ProgramRun, run_program, stack_config
from tests.infra.conftest import STACKS, program_run
from tests.infra.iam_lint import lint_identity_policy, wildcards
from tests.infra.sdk_schema import unknown_inputs

FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SCHEDULE = "aws:scheduler/schedule:Schedule"
SCHEDULE_GROUP = "aws:scheduler/scheduleGroup:ScheduleGroup"
QUEUE = "aws:sqs/queue:Queue"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
BUCKET = "aws:s3/bucket:Bucket"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
# Contract C3: the compaction function's environment.
COMPACTION_VARIABLES = {
    "OUTPUT_BUCKET",
    "OUTPUT_PREFIX",
    "COMPACTION_DELAY_MINUTES",
    "COMPACTION_LOOKBACK_HOURS",
    "COMPACTION_DELETE_GRACE_MINUTES",
    "LOG_LEVEL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(str(request.param))


def _logical(run: ProgramRun, typ: str, logical_name: str) -> Any:
    found = [resource for resource in run.of_type(typ) if resource.name == logical_name]
    assert len(found) == 1, f"{run.stack}: expected one {typ} {logical_name}, found {len(found)}"
    return found[0]


def _policy(run: ProgramRun, logical_name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_logical(run, ROLE_POLICY, logical_name).inputs["policy"])
    return document


def _lambda_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{name}"


# -- compaction ---------------------------------------------------------------------------------------------------
def test_curator_function_shares_the_artifact_and_layer(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    compaction = _logical(run, FUNCTION, "compaction-function").inputs
    processor = _logical(run, FUNCTION, "processor-function").inputs
    assert compaction["name"] == run.outputs["curator_function_name"] == f"prd3292-{run.stack}-demand-compactor"
    assert compaction["handler"] == "pipeline.compaction.handler"
    assert compaction["code"].path == processor["code"].path == "dist/function.zip"
    assert compaction.get("sourceCodeHash") == artifact(settings.artifact_dir).function_digest
    assert compaction["layers"] == processor["layers"]
    assert len(compaction["layers"]) == 1
    assert (compaction["runtime"], compaction["architectures"]) == ("python3.12", ["arm64"])
    assert compaction["memorySize"] == settings.compaction_memory_mb == 2048
    assert compaction["timeout"] == settings.compaction_timeout_seconds == 900
    assert compaction["role"] == f"arn:aws:iam::{ACCOUNT_ID}:role/prd3292-{run.stack}-demand-compactor"
    assert compaction["loggingConfig"]["logGroup"] == run.outputs["curator_log_group_name"]
    assert compaction["loggingConfig"]["logFormat"] == "JSON"
    assert "publish" not in compaction  # the schedule invokes $LATEST; no alias to roll back


def test_compaction_environment_is_contract_c3(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    variables = _logical(run, FUNCTION, "compaction-function").inputs["environment"]["variables"]
    assert variables == compaction_environment(settings, settings.bucket_id, prefixes())
    assert set(variables) == COMPACTION_VARIABLES
    assert variables["OUTPUT_BUCKET"] == run.outputs["bucket_name"]
    assert variables["OUTPUT_PREFIX"] == run.outputs["events_prefix"]
    assert (
        variables["COMPACTION_DELAY_MINUTES"],
        variables["COMPACTION_LOOKBACK_HOURS"],
        variables["COMPACTION_DELETE_GRACE_MINUTES"],
    ) == ("120", "192", "15")
    assert variables["POWERTOOLS_SERVICE_NAME"] == f"prd3292-{run.stack}-demand-compactor"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "DmdPipeline"


def test_compaction_role_lists_reads_writes_and_deletes_under_the_events_prefix_only(run: ProgramRun) -> None:
    bucket_arn = f"arn:aws:s3:::{run.outputs['bucket_name']}"
    log_group_arn = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:{run.outputs['curator_log_group_name']}"
    role = _logical(run, ROLE, "compaction-role").inputs
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    document = _policy(run, "compaction-policy")
    assert _logical(run, ROLE_POLICY, "compaction-policy").inputs["role"] == role["name"]
    assert lint_identity_policy(document) == []
    by_sid = {statement["Sid"]: statement for statement in document["Statement"]}
    assert set(by_sid) == {"ListEvents", "CompactEvents", "WriteOwnLogs"}
    assert by_sid["ListEvents"]["Action"] == ["s3:ListBucket"]
    assert by_sid["ListEvents"]["Resource"] == [bucket_arn]
    assert by_sid["ListEvents"]["Condition"] == {"StringLike": {"s3:prefix": ["demand/events/*"]}}
    assert by_sid["CompactEvents"]["Action"] == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert by_sid["CompactEvents"]["Resource"] == [f"{bucket_arn}/demand/events/*"]
    assert by_sid["WriteOwnLogs"]["Resource"] == [f"{log_group_arn}:log-stream:*"]
    everything = [resource for statement in document["Statement"] for resource in statement["Resource"]]
    assert not any("quarantine" in resource or "failures" in resource for resource in everything)


def test_compaction_policy_without_a_listing_condition_would_fail_the_test() -> None:
    """The prefix condition is what scopes ListBucket: a document without it differs from what the test asserts."""
    document = compaction_policy(
        bucket_arn="arn:aws:s3:::b", events_prefix="demand/events/", log_group_arn="arn:aws:logs:r:1:log-group:g"
    )
    listing = document["Statement"][0]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["demand/events/*"]
    listing.pop("Condition")
    assert listing == {
        "Sid": "ListEvents",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::b"],
    }


def test_hourly_schedule_invokes_only_the_curator_function(run: ProgramRun) -> None:
    function_arn = _lambda_arn(run.outputs["curator_function_name"])
    schedule = _logical(run, SCHEDULE, "compaction-schedule").inputs
    assert schedule["name"] == f"prd3292-{run.stack}-demand-compaction-hourly"
    assert schedule["scheduleExpression"] == "cron(15 * * * ? *)"
    assert schedule["scheduleExpressionTimezone"] == "UTC"
    assert schedule["flexibleTimeWindow"] == {"mode": "OFF"}
    target = schedule["target"]
    assert target["arn"] == function_arn
    assert json.loads(target["input"]) == {}  # no "hours": every eligible hour
    assert target["retryPolicy"] == {"maximumEventAgeInSeconds": 3600, "maximumRetryAttempts": 3}
    scheduler_role = _logical(run, ROLE, "compaction-scheduler-role").inputs
    assert target["roleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/{scheduler_role['name']}"
    trust = json.loads(scheduler_role["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
    # Scheduler presents the schedule GROUP's ARN as aws:SourceArn (a schedule's ARN never matches): the stack's
    # own group, so the trust still covers this stack's schedules only.
    group = _logical(run, SCHEDULE_GROUP, "compaction-schedule-group").inputs
    assert group["name"] == f"prd3292-{run.stack}-demand-compaction"
    assert schedule["groupName"] == group["name"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": ACCOUNT_ID,
            "aws:SourceArn": f"arn:aws:scheduler:us-east-1:{ACCOUNT_ID}:schedule-group/{group['name']}",
        }
    }
    assert wildcards(trust) == []
    queue = _logical(run, QUEUE, "compaction-undelivered").inputs
    queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:{queue['name']}"
    assert queue["name"] == f"prd3292-{run.stack}-demand-compaction-undelivered"
    assert (queue["messageRetentionSeconds"], queue["sqsManagedSseEnabled"]) == (14 * 24 * 3600, True)
    assert target["deadLetterConfig"] == {"arn": queue_arn}
    invoke = _policy(run, "compaction-scheduler-policy")
    assert invoke["Statement"] == [
        {"Sid": "InvokeCompaction", "Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [function_arn]},
        {
            "Sid": "SendUndeliveredInvocations",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [queue_arn],
        },
    ]
    assert lint_identity_policy(invoke) == []
    assert unknown_inputs(SCHEDULE, schedule) == []
    # No resource-based policy on the function: the schedule's role is the only way in.
    assert run.of_type("aws:lambda/permission:Permission") == []


def test_schedule_alarm_watches_undelivered_invocations(run: ProgramRun) -> None:
    alarm = _logical(run, ALARM, "compaction-schedule-failures").inputs
    group = f"prd3292-{run.stack}-demand-compaction"
    assert alarm["name"] == f"prd3292-{run.stack}-demand-compaction-hourly-failed-invocations"
    queries = {query["id"]: query for query in alarm["metricQueries"]}
    assert queries["failed"]["expression"] == "FILL(dropped,0) + FILL(undeliverable,0) + FILL(deadletters,0)"
    assert [query["id"] for query in alarm["metricQueries"] if query["returnData"]] == ["failed"]
    metrics = {query_id: queries[query_id]["metric"] for query_id in ("dropped", "undeliverable", "deadletters")}
    assert {query_id: (m["namespace"], m["metricName"], m["stat"]) for query_id, m in metrics.items()} == {
        "dropped": ("AWS/Scheduler", "InvocationDroppedCount", "Sum"),
        "undeliverable": ("AWS/Scheduler", "InvocationsFailedToBeSentToDeadLetterCount", "Sum"),
        "deadletters": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum"),
    }
    assert metrics["dropped"]["dimensions"] == metrics["undeliverable"]["dimensions"] == {"ScheduleGroup": group}
    assert metrics["deadletters"]["dimensions"] == {"QueueName": f"prd3292-{run.stack}-demand-compaction-undelivered"}
    assert (alarm["threshold"], alarm["comparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:prd3292-{run.stack}-demand-alarms"
    assert alarm["alarmActions"] == alarm["okActions"] == [topic]
    assert unknown_inputs(ALARM, alarm) == []


def test_scheduler_trust_refuses_a_schedule_arn() -> None:
    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    with pytest.raises(ValueError, match="schedule group ARN"):
        scheduler_trust_policy(source_arn=schedule_arn(function_arn, "hourly"))
    document = scheduler_trust_policy(source_arn=schedule_group_arn(function_arn, "g"))
    condition = document["Statement"][0]["Condition"]["StringEquals"]
    assert condition["aws:SourceArn"] == "arn:aws:scheduler:us-east-1:123456789012:schedule-group/g"


def test_compaction_errors_alarm(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    alarm = _logical(run, ALARM, "compaction-errors").inputs
    assert alarm["name"] == f"prd3292-{run.stack}-demand-compactor-errors"
    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert alarm["dimensions"] == {"FunctionName": run.outputs["curator_function_name"]}
    assert alarm["threshold"] == settings.errors_alarm_threshold
    assert alarm["treatMissingData"] == "notBreaching"
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:prd3292-{run.stack}-demand-alarms"
    assert alarm["alarmActions"] == [topic]
    assert alarm["okActions"] == [topic]


def test_an_alarm_topic_reaches_the_compaction_and_failed_batch_alarms() -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:demand-alarms"
    run = run_program("qa1", config={**stack_config("qa1"), "dmd-pipeline:alarmTopicArn": topic})
    for logical_name in ("compaction-errors", "alarms-failed-batches"):
        alarm = _logical(run, ALARM, logical_name).inputs
        assert alarm["alarmActions"] == [topic], logical_name
        assert alarm["okActions"] == [topic], logical_name


# -- the failure bucket ---------------------------------------------------------------------------------------------
def test_failure_bucket_is_private_encrypted_tls_only_and_expires(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    name = run.outputs["failure_bucket_name"]
    assert name == f"prd3292-{run.stack}-us-east-1-demand-processor-failures"
    bucket = _logical(run, BUCKET, "failures-bucket").inputs
    assert bucket["bucket"] == name
    # Never emptied by a destroy: discarded records are data; a stack is removed only after they were replayed.
    assert not bucket.get("forceDestroy")
    encryption = _logical(
        run,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "failures-encryption",
    ).inputs
    assert encryption["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    public_access = _logical(run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "failures-public-access")
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert public_access.inputs[flag] is True, flag
    policy = json.loads(_logical(run, "aws:s3/bucketPolicy:BucketPolicy", "failures-tls-only").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Resource"] == [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert _logical(run, VERSIONING, "failures-versioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    (rule,) = _logical(run, LIFECYCLE, "failures-lifecycle").inputs["rules"]
    assert rule["expiration"] == {"days": settings.failure_retention_days} == {"days": 30}
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 7}
    assert rule["filter"] == {"prefix": ""}
    assert rule["status"] == "Enabled"


def test_failure_bucket_retention_and_versioning_come_from_config() -> None:
    config = {
        **stack_config("prod1"),
        "dmd-pipeline:failureRetentionDays": "90",
        "dmd-pipeline:failureBucketVersioning": "false",
    }
    run = run_program("prod1", config=config)
    (rule,) = _logical(run, LIFECYCLE, "failures-lifecycle").inputs["rules"]
    assert rule["expiration"] == {"days": 90}
    assert "noncurrentVersionExpiration" not in rule
    assert [resource.name for resource in run.of_type(VERSIONING)] == []


# -- settings -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("compactionMemoryMb", "64", r"dmd-pipeline:compactionMemoryMb must be an integer between 128 and 10240"),
        ("compactionTimeoutSeconds", "901", r"dmd-pipeline:compactionTimeoutSeconds must be an integer between 60"),
        ("failureRetentionDays", "0", r"dmd-pipeline:failureRetentionDays must be an integer between 1 and 3650"),
        ("failureBucketVersioning", "maybe", r"dmd-pipeline:failureBucketVersioning must be true or false"),
        ("compactionDelayMinutes", "30", r"dmd-pipeline:compactionDelayMinutes must be an integer between 60"),
        ("compactionLookbackHours", "2", r"dmd-pipeline:compactionLookbackHours must reach further back than"),
    ],
)
def test_bad_compaction_or_failure_config_names_the_key(key: str, value: str, message: str) -> None:
    config = {**stack_config("qa1"), f"dmd-pipeline:{key}": value}
    if key == "compactionLookbackHours":
        config["dmd-pipeline:compactionDelayMinutes"] = "180"  # 2 h back is not beyond a 3 h delay
    with pytest.raises(SettingsError, match=rf"^Pulumi\.qa1\.yaml: {message}"):
        run_program("qa1", config=config)
