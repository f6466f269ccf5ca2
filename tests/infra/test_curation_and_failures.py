"""The curator (function, role, schedule, alarms) and the failure bucket, for each stack's real config, under mocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.artifacts import artifact
from components.function_environment import curator_environment
from components.naming import prefixes
from components.policies import schedule_arn, schedule_group_arn, scheduler_trust_policy
from components.settings import PROJECT_ROOT, SettingsError, settings_from_stack_file
from ops.mocks import ACCOUNT_ID
from ops.program import PLAN_ERASURE_SALT, ProgramRun, run_program, stack_config
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
ASYNC_CONFIG = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"


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


# -- the curator ----------------------------------------------------------------------------------------------------
def test_curator_function_has_its_own_code_and_layer_and_one_execution_at_a_time(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    built = artifact(settings.artifact_dir)
    curator = _logical(run, FUNCTION, "curation-function").inputs
    processor = _logical(run, FUNCTION, "processor-function").inputs
    assert curator["name"] == run.outputs["curator_function_name"] == f"prd3292-{run.stack}-demand-curator"
    assert curator["handler"] == "curator.handler.handler"
    assert curator["reservedConcurrentExecutions"] == 1  # the single writer of the curated tables
    assert "reservedConcurrentExecutions" not in processor
    assert curator["ephemeralStorage"] == {"size": 10_240}  # the run's spill of hour slices
    assert "ephemeralStorage" not in processor
    assert curator["code"].path == "dist/curator.zip"
    assert processor["code"].path == "dist/function.zip"  # the stream handler's artifact is unchanged
    assert curator.get("sourceCodeHash") == built.curator_digest
    layer = _logical(run, "aws:lambda/layerVersion:LayerVersion", "curator-layer-version").inputs
    assert layer["layerName"] == f"prd3292-{run.stack}-demand-curator-dependencies"
    assert layer["s3Key"] == f"demand/artifacts/prd3292-{run.stack}-demand-curator-dependencies.zip"
    assert curator["layers"] == [f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:layer:{layer['layerName']}:1"]
    assert curator["layers"] != processor["layers"]
    assert (curator["runtime"], curator["architectures"]) == ("python3.12", ["arm64"])
    assert curator["memorySize"] == settings.curation_memory_mb == 4096
    assert curator["timeout"] == settings.curation_timeout_seconds == 600
    assert curator["timeout"] < settings.curation_interval_minutes * 60
    assert curator["role"] == f"arn:aws:iam::{ACCOUNT_ID}:role/prd3292-{run.stack}-demand-curator"
    assert curator["loggingConfig"]["logGroup"] == run.outputs["curator_log_group_name"]
    assert curator["loggingConfig"]["logFormat"] == "JSON"
    assert "publish" not in curator  # the schedule invokes $LATEST; no alias to roll back
    assert unknown_inputs(FUNCTION, curator) == []


def test_no_compaction_function_schedule_or_role_is_left(run: ProgramRun) -> None:
    names = [resource.name for resource in run.declared] + [
        str(resource.inputs.get("name")) for resource in run.declared
    ]
    assert [name for name in names if "compaction" in name or "compactor" in name] == []
    assert [urn for urn in run.urns if "Compaction" in urn] == []
    assert {resource.inputs["name"] for resource in run.of_type(FUNCTION)} == {
        f"prd3292-{run.stack}-demand-processor",
        f"prd3292-{run.stack}-demand-curator",
        f"prd3292-{run.stack}-demand-backfill",
    }


def test_curator_environment_is_what_the_handler_reads(run: ProgramRun) -> None:
    from curator.erasure import ROWS_PER_RUN  # noqa: PLC0415
    from curator.handler import ENVIRONMENT_VARIABLES, load_curator_settings  # noqa: PLC0415 - pyiceberg: this test

    settings = settings_from_stack_file(run.stack)
    function = _logical(run, FUNCTION, "curation-function")
    variables = function.inputs["environment"]["variables"]
    database = f"prd3292_{run.stack}_demand"
    failure_bucket = f"prd3292-{run.stack}-us-east-1-demand-processor-failures"
    assert variables == {
        **curator_environment(settings, settings.bucket_id, prefixes(), database),
        "FAILURE_BUCKET": failure_bucket,
        "QUARANTINE_PREFIX": "demand/quarantine/",
        "ERASURE_ROWS_PER_RUN": "40000000",  # erasureRowsPerRun's default: the curator's ROWS_PER_RUN
        "ERASURE_SALT": PLAN_ERASURE_SALT,  # the stack's secret, as the CLI decrypts it
    }
    assert load_curator_settings(variables).erasure_rows_per_run == ROWS_PER_RUN == settings.erasure_rows_per_run
    assert function.secret_inputs == ("environment",)  # the salt makes the engine encrypt the environment
    assert variables["FAILURE_BUCKET"] == run.outputs["failure_bucket_name"]
    program = curator_environment(settings, settings.bucket_id, prefixes(), database)
    assert list(program) == [*ENVIRONMENT_VARIABLES, "LOG_LEVEL"]  # the handler's names, in its order
    assert variables["OUTPUT_BUCKET"] == run.outputs["bucket_name"]
    assert variables["OUTPUT_PREFIX"] == run.outputs["events_prefix"]
    assert variables["GLUE_DATABASE"] == run.outputs["athena_database_name"] == database
    assert (variables["CURATED_PREFIX"], variables["TIME_TRAVEL_DAYS"], variables["CURATION_DELETE_GRACE_MINUTES"]) == (
        "curated/",
        "7",
        "15",
    )
    assert variables["SNAPSHOT_PREFIX"] == "demand/snapshots/"  # where the backfill publishes
    # the backfill's exports: an erasure rewrites their data files, the curator purges each past its retention
    assert (variables["EXPORTS_PREFIX"], variables["EXPORT_RETENTION_DAYS"]) == ("demand/exports/", "14")
    published = (settings.snapshot_export_id or "", settings.snapshot_export_time or "")
    assert (variables["SNAPSHOT_EXPORT_ID"], variables["SNAPSHOT_EXPORT_TIME"]) == published
    assert variables["POWERTOOLS_SERVICE_NAME"] == f"prd3292-{run.stack}-demand-curator"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "DmdPipeline"
    loaded = load_curator_settings(variables)  # the values the program sets are ones the function accepts
    assert (loaded.database, loaded.tables_prefix, loaded.time_travel.days) == (database, "curated/", 7)
    assert (loaded.exports_prefix, loaded.export_retention.days) == ("demand/exports/", 14)
    assert (loaded.snapshot.export_id if loaded.snapshot else "") == published[0]


def test_curator_role_is_the_curator_policy_of_the_stacks_arns(run: ProgramRun) -> None:
    bucket_arn = f"arn:aws:s3:::{run.outputs['bucket_name']}"
    database = run.outputs["athena_database_name"]
    role = _logical(run, ROLE, "curation-role").inputs
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert _logical(run, ROLE_POLICY, "curation-policy").inputs["role"] == role["name"]
    document = _policy(run, "curation-policy")
    assert lint_identity_policy(document) == []
    by_sid = {statement["Sid"]: statement for statement in document["Statement"]}
    assert by_sid["ReadAndDeleteRawEvents"]["Resource"] == [f"{bucket_arn}/demand/events/*"]
    assert by_sid["WriteCuratedTables"]["Resource"] == [f"{bucket_arn}/curated/*"]
    assert by_sid["ReadPublishedSnapshots"]["Resource"] == [f"{bucket_arn}/demand/snapshots/*"]
    glue = f"arn:aws:glue:us-east-1:{ACCOUNT_ID}"
    assert by_sid["CommitCuratedTables"]["Resource"] == [
        f"{glue}:catalog",
        f"{glue}:database/{database}",
        f"{glue}:table/{database}/registration_changes",
        f"{glue}:table/{database}/registrations",
    ]
    log_group_arn = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:{run.outputs['curator_log_group_name']}"
    assert by_sid["WriteOwnLogs"]["Resource"] == [f"{log_group_arn}:log-stream:*"]
    erasing = {
        "EraseFromQuarantine",
        "ListFailedBatches",
        "EraseFromFailedBatches",
        # an erasure's write-once copies: raw, snapshot and quarantine objects, its audit, the failure bucket's records
        "CreateWriteOnceObjects",
        # an erasure's old versions: listed, read and purged in the places it searches, the failure bucket among them
        "ListFailedBatchVersions",
        "ReadOldVersionsToErase",
        "PurgeErasedVersions",
    }
    everything = [
        resource for sid, statement in by_sid.items() if sid not in erasing for resource in statement["Resource"]
    ]
    assert not any("quarantine" in resource or "failures" in resource for resource in everything)
    failures_arn = f"arn:aws:s3:::{run.outputs['failure_bucket_name']}"
    assert by_sid["EraseFromFailedBatches"]["Resource"] == [f"{failures_arn}/*"]  # only for an erasure
    assert by_sid["EraseFromQuarantine"]["Resource"] == [f"{bucket_arn}/demand/quarantine/*"]
    assert by_sid["ListFailedBatchVersions"]["Resource"] == [failures_arn]
    assert f"{failures_arn}/*" in by_sid["PurgeErasedVersions"]["Resource"]


def test_a_queued_invocation_is_dropped_once_the_next_run_is_due(run: ProgramRun) -> None:
    config = _logical(run, ASYNC_CONFIG, "curation-async").inputs
    assert config["functionName"] == run.outputs["curator_function_name"]
    assert (config["maximumEventAgeInSeconds"], config["maximumRetryAttempts"]) == (15 * 60, 0)
    assert unknown_inputs(ASYNC_CONFIG, config) == []


def test_schedule_runs_the_curator_every_interval_in_the_stacks_group(run: ProgramRun) -> None:
    function_arn = _lambda_arn(run.outputs["curator_function_name"])
    schedule = _logical(run, SCHEDULE, "curation-schedule").inputs
    assert schedule["name"] == f"prd3292-{run.stack}-demand-curation"
    assert schedule["scheduleExpression"] == "rate(15 minutes)"
    assert schedule["scheduleExpressionTimezone"] == "UTC"
    assert schedule["flexibleTimeWindow"] == {"mode": "OFF"}
    target = schedule["target"]
    assert target["arn"] == function_arn
    assert json.loads(target["input"]) == {}
    assert target["retryPolicy"] == {"maximumEventAgeInSeconds": 15 * 60, "maximumRetryAttempts": 3}
    scheduler_role = _logical(run, ROLE, "curation-scheduler-role").inputs
    assert target["roleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/{scheduler_role['name']}"
    trust = json.loads(scheduler_role["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
    # Scheduler presents the schedule GROUP's ARN as aws:SourceArn (a schedule's ARN never matches): the stack's
    # own group, so the trust still covers this stack's schedules only.
    group = _logical(run, SCHEDULE_GROUP, "curation-schedule-group").inputs
    assert group["name"] == f"prd3292-{run.stack}-demand-curation"
    assert schedule["groupName"] == group["name"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": ACCOUNT_ID,
            "aws:SourceArn": f"arn:aws:scheduler:us-east-1:{ACCOUNT_ID}:schedule-group/{group['name']}",
        }
    }
    assert wildcards(trust) == []
    queue = _logical(run, QUEUE, "curation-undelivered").inputs
    queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:{queue['name']}"
    assert queue["name"] == f"prd3292-{run.stack}-demand-curation-undelivered"
    assert (queue["messageRetentionSeconds"], queue["sqsManagedSseEnabled"]) == (14 * 24 * 3600, True)
    assert target["deadLetterConfig"] == {"arn": queue_arn}
    invoke = _policy(run, "curation-scheduler-policy")
    assert invoke["Statement"] == [
        {"Sid": "InvokeCurator", "Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [function_arn]},
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


def test_the_interval_sets_the_schedule_and_the_timeout_must_stay_below_it() -> None:
    config = {**stack_config("qa1"), "dmd-pipeline:curationIntervalMinutes": "30"}
    run = run_program("qa1", config=config)
    assert _logical(run, SCHEDULE, "curation-schedule").inputs["scheduleExpression"] == "rate(30 minutes)"
    assert _logical(run, ASYNC_CONFIG, "curation-async").inputs["maximumEventAgeInSeconds"] == 1800


def test_schedule_alarm_watches_undelivered_invocations(run: ProgramRun) -> None:
    alarm = _logical(run, ALARM, "curation-schedule-failures").inputs
    group = f"prd3292-{run.stack}-demand-curation"
    assert alarm["name"] == f"prd3292-{run.stack}-demand-curation-failed-invocations"
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
    assert metrics["deadletters"]["dimensions"] == {"QueueName": f"prd3292-{run.stack}-demand-curation-undelivered"}
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


def test_curator_errors_alarm(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    alarm = _logical(run, ALARM, "curation-errors").inputs
    assert alarm["name"] == f"prd3292-{run.stack}-demand-curator-errors"
    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert alarm["dimensions"] == {"FunctionName": run.outputs["curator_function_name"]}
    assert alarm["threshold"] == settings.errors_alarm_threshold
    assert alarm["treatMissingData"] == "notBreaching"
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:prd3292-{run.stack}-demand-alarms"
    assert alarm["alarmActions"] == [topic]
    assert alarm["okActions"] == [topic]


def test_an_alarm_topic_reaches_the_curator_and_failed_batch_alarms() -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:demand-alarms"
    run = run_program("qa1", config={**stack_config("qa1"), "dmd-pipeline:alarmTopicArn": topic})
    for logical_name in ("curation-errors", "curation-schedule-failures", "alarms-failed-batches"):
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
        ("curationMemoryMb", "64", r"dmd-pipeline:curationMemoryMb must be an integer between 128 and 10240"),
        ("curationTimeoutSeconds", "901", r"dmd-pipeline:curationTimeoutSeconds must be an integer between 60"),
        ("curationIntervalMinutes", "1", r"dmd-pipeline:curationIntervalMinutes must be an integer between 2"),
        ("timeTravelDays", "0", r"dmd-pipeline:timeTravelDays must be an integer between 1 and 3650"),
        ("exportRetentionDays", "0", r"dmd-pipeline:exportRetentionDays must be an integer between 1 and 3650"),
        ("erasureRowsPerRun", "999999", r"dmd-pipeline:erasureRowsPerRun must be an integer between 1000000 and"),
        ("curationDeleteGraceMinutes", "-1", r"dmd-pipeline:curationDeleteGraceMinutes must be an integer between 0"),
        (
            "curationIntervalMinutes",
            "10",
            r"dmd-pipeline:curationTimeoutSeconds must be below curationIntervalMinutes \(10 min = 600 s\), got 600$",
        ),
        ("failureRetentionDays", "0", r"dmd-pipeline:failureRetentionDays must be an integer between 1 and 3650"),
        ("failureBucketVersioning", "maybe", r"dmd-pipeline:failureBucketVersioning must be true or false"),
        ("erasureDeadlineDays", "31", r"dmd-pipeline:erasureDeadlineDays must be an integer between 1 and 30"),
        ("erasureDeadlineDays", "0", r"dmd-pipeline:erasureDeadlineDays must be an integer between 1 and 30"),
    ],
)
def test_bad_curation_or_failure_config_names_the_key(key: str, value: str, message: str) -> None:
    config = {**stack_config("qa1"), f"dmd-pipeline:{key}": value}
    with pytest.raises(SettingsError, match=rf"^Pulumi\.qa1\.yaml: {message}") as caught:
        run_program("qa1", config=config)
    assert "\n" not in str(caught.value)


def test_removed_compaction_keys_are_refused_by_name() -> None:
    config = {**stack_config("qa1"), "dmd-pipeline:compactionMemoryMb": "2048"}
    with pytest.raises(SettingsError, match=r"unknown config key dmd-pipeline:compactionMemoryMb"):
        run_program("qa1", config=config)


def test_curator_resources_sit_in_the_curation_component_with_the_tagged_provider(run: ProgramRun) -> None:
    """The resource options: every curator resource is a child of ``Curation`` and uses the stack's provider."""
    children = sorted(urn.rsplit("::", 1)[1] for urn in run.urns if "dmd-pipeline:index:Curation$" in urn)
    assert children == [
        "curation-async",
        "curation-erasure-deadline",
        "curation-errors",
        "curation-function",
        "curation-logs",
        "curation-policy",
        "curation-role",
        "curation-schedule",
        "curation-schedule-failures",
        "curation-schedule-group",
        "curation-scheduler-policy",
        "curation-scheduler-role",
        "curation-undelivered",
    ]
    for resource in run.declared:
        if resource.name in children:
            assert resource.provider is not None, resource.name
            assert "pulumi:providers:aws::aws::" in resource.provider, resource.name


def test_a_stack_without_an_erasure_salt_is_refused_naming_the_command() -> None:
    config = {key: value for key, value in stack_config("qa1").items() if key != "dmd-pipeline:erasureSalt"}
    with pytest.raises(SettingsError) as caught:
        run_program("qa1", config=config)
    assert str(caught.value) == (
        "Pulumi.qa1.yaml: dmd-pipeline:erasureSalt is not set (a secret per stack): run pulumi config set --secret"
        ' dmd-pipeline:erasureSalt "$(openssl rand -hex 32)" --stack qa1'
    )


def test_a_secret_salt_in_the_stack_file_is_left_to_the_program(tmp_path) -> None:
    """``pulumi config set --secret`` writes ciphertext into the stack file: the stack-file reader skips it."""
    text = (PROJECT_ROOT / "Pulumi.qa1.yaml").read_text()
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.qa1.yaml").write_text(
        text + "  dmd-pipeline:erasureSalt:\n    secure: AAABAJ1kZXYxLXNhbHQtY2lwaGVydGV4dA==\n"
    )
    settings = settings_from_stack_file("qa1", tmp_path)
    assert settings.erasure_deadline_days == 25
    assert not any("secure" in str(value) for value in vars(settings).values())


@pytest.mark.parametrize("days", [None, "7"])
def test_the_erasure_deadline_alarm_reads_the_curators_metric(days: str | None) -> None:
    config = stack_config("qa1") | ({"dmd-pipeline:erasureDeadlineDays": days} if days else {})
    run = program_run("qa1") if days is None else run_program("qa1", config=config)
    alarm = _logical(run, ALARM, "curation-erasure-deadline").inputs
    assert alarm["name"] == "prd3292-qa1-demand-curator-erasure-deadline"
    assert (alarm["namespace"], alarm["metricName"]) == ("DmdPipeline", "OldestPendingErasureAgeHours")
    from curator.handler import ERASURE_METRIC  # noqa: PLC0415 - pyiceberg: this test only

    assert alarm["metricName"] == ERASURE_METRIC  # the name the curator publishes every run
    assert alarm["dimensions"] == {"service": "prd3292-qa1-demand-curator"}  # Powertools' service dimension
    assert (alarm["statistic"], alarm["comparisonOperator"]) == ("Maximum", "GreaterThanOrEqualToThreshold")
    assert alarm["threshold"] == (25 if days is None else 7) * 24
    assert alarm["treatMissingData"] == "notBreaching"
    assert (
        alarm["alarmActions"] == alarm["okActions"] == ["arn:aws:sns:us-east-1:123456789012:prd3292-qa1-demand-alarms"]
    )
