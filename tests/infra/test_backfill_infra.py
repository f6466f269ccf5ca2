"""The backfill's deployed side for each stack's real config, under mocks: function, state machine, their roles,
log groups and alarm; the snapshot table; current_registrations published from the stack's snapshot config."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from components.artifacts import artifact
from components.backfill_definition import MAP_STATE, TASK_STATE
from components.catalog import named_queries
from components.current_state import PublishedSnapshot, published_snapshot
from components.function_environment import backfill_environment
from components.naming import prefixes
from components.settings import SettingsError, backfill_concurrency_ceiling, settings_from_stack_file
from ops.mocks import ACCOUNT_ID
from ops.program import ProgramRun, run_program, stack_config
from pipeline.schema import glue_columns
from pipeline.snapshot import ENVIRONMENT_VARIABLES, load_snapshot_settings
from tests.infra.conftest import STACKS, program_run
from tests.infra.iam_lint import lint_identity_policy
from tests.infra.sdk_schema import unknown_inputs

FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
STATE_MACHINE = "aws:sfn/stateMachine:StateMachine"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TABLE = "aws:glue/catalogTable:CatalogTable"
QUERY = "aws:athena/namedQuery:NamedQuery"


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(str(request.param))


def _logical(run: ProgramRun, typ: str, logical_name: str) -> Any:
    found = [resource for resource in run.declared if resource.type == typ and resource.name == logical_name]
    assert len(found) == 1, f"{run.stack}: expected one {typ} {logical_name}, found {len(found)}"
    return found[0]


def _policy(run: ProgramRun, logical_name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_logical(run, ROLE_POLICY, logical_name).inputs["policy"])
    return document


def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


def _bucket_arn(run: ProgramRun) -> str:
    return f"arn:aws:s3:::{run.outputs['bucket_name']}"


# -- the function -------------------------------------------------------------------------------------------------
def test_backfill_function_shares_the_artifact_and_layer(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    function = _logical(run, FUNCTION, "backfill-function").inputs
    processor = _logical(run, FUNCTION, "processor-function").inputs
    assert function["name"] == f"prd3292-{run.stack}-demand-backfill"
    assert function["handler"] == "pipeline.backfill.handler"
    assert function["code"].path == processor["code"].path == "dist/function.zip"
    assert function.get("sourceCodeHash") == artifact(settings.artifact_dir).function_digest
    assert function["layers"] == processor["layers"]
    assert (function["runtime"], function["architectures"]) == ("python3.12", ["arm64"])
    assert (function["memorySize"], function["timeout"]) == (1769, 900)
    assert function["role"] == f"arn:aws:iam::{ACCOUNT_ID}:role/prd3292-{run.stack}-demand-backfill"
    assert function["loggingConfig"]["logGroup"] == f"/aws/lambda/prd3292-{run.stack}-demand-backfill"
    assert unknown_inputs(FUNCTION, function) == []


def test_backfill_environment_is_exactly_what_the_function_reads(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    variables = _logical(run, FUNCTION, "backfill-function").inputs["environment"]["variables"]
    assert variables == backfill_environment(settings, settings.bucket_id, prefixes())
    assert sorted(variables) == sorted(ENVIRONMENT_VARIABLES)
    assert tuple(backfill_environment(settings, settings.bucket_id, prefixes())) == ENVIRONMENT_VARIABLES
    loaded = load_snapshot_settings(variables)
    assert loaded.output_bucket == run.outputs["bucket_name"]
    assert loaded.source_table_name == run.outputs["table_name"]
    assert (loaded.snapshot_prefix, loaded.quarantine_prefix) == ("demand/snapshots/", run.outputs["quarantine_prefix"])
    assert loaded.service_name == f"prd3292-{run.stack}-demand-backfill"


def test_backfill_function_role_reads_exports_and_writes_snapshots_only(run: ProgramRun) -> None:
    bucket = _bucket_arn(run)
    settings = settings_from_stack_file(run.stack)
    role = _logical(run, ROLE, "backfill-role").inputs
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert _logical(run, ROLE_POLICY, "backfill-policy").inputs["role"] == role["name"]
    document = _policy(run, "backfill-policy")
    assert lint_identity_policy(document) == []
    by_sid = _by_sid(document)
    assert by_sid["ReadExportDataFiles"]["Action"] == ["s3:GetObject"]
    assert by_sid["ReadExportDataFiles"]["Resource"] == [f"{bucket}/demand/exports/*"]
    assert by_sid["ListSnapshots"]["Resource"] == [bucket]
    # A re-run GETs the counts object and the earlier quarantine object, either of which may be missing: S3 answers
    # 404 there only if the role may list that prefix (403 otherwise, and the re-run fails forever).
    assert by_sid["ListSnapshots"]["Condition"] == {
        "StringLike": {"s3:prefix": ["demand/snapshots/*", "demand/quarantine/snapshots/*"]}
    }
    assert by_sid["WriteSnapshotsAndQuarantine"]["Action"] == [
        "s3:AbortMultipartUpload",
        "s3:GetObject",
        "s3:PutObject",
    ]
    assert by_sid["WriteSnapshotsAndQuarantine"]["Resource"] == [
        f"{bucket}/demand/snapshots/*",
        f"{bucket}/{run.outputs['quarantine_prefix']}snapshots/*",
    ]
    log_group = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:/aws/lambda/prd3292-{run.stack}-demand-backfill"
    assert by_sid["WriteOwnLogs"]["Resource"] == [f"{log_group}:log-stream:*"]
    kms = by_sid.get("ReadAndWriteEncryptedObjects")
    if settings.bucket_kms_key_arn:
        assert kms is not None
        assert kms["Resource"] == [settings.bucket_kms_key_arn]
    else:
        assert kms is None
    assert set(by_sid) <= {
        "ReadExportDataFiles",
        "ListSnapshots",
        "WriteSnapshotsAndQuarantine",
        "WriteOwnLogs",
        "ReadAndWriteEncryptedObjects",
    }


# -- the state machine --------------------------------------------------------------------------------------------
def test_state_machine_runs_the_distributed_map_over_the_manifest_with_the_function(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    function_arn = _logical(run, FUNCTION, "backfill-function").outputs["arn"]
    assert function_arn == f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:prd3292-{run.stack}-demand-backfill"
    machine = _logical(run, STATE_MACHINE, "backfill-state-machine")
    assert unknown_inputs(STATE_MACHINE, machine.inputs) == []
    assert machine.inputs["name"] == f"prd3292-{run.stack}-demand-backfill"
    assert machine.inputs["type"] == "STANDARD"
    assert machine.outputs["arn"] == run.outputs["backfill_state_machine_arn"]
    assert run.outputs["backfill_state_machine_arn"] == (
        f"arn:aws:states:us-east-1:{ACCOUNT_ID}:stateMachine:prd3292-{run.stack}-demand-backfill"
    )
    definition = json.loads(machine.inputs["definition"])
    state = definition["States"][MAP_STATE]
    assert definition["StartAt"] == MAP_STATE
    assert state["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSONL"},
        "Parameters": {"Bucket.$": "$.export_bucket", "Key.$": "$.manifest_files_key"},
    }
    assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    task = state["ItemProcessor"]["States"][TASK_STATE]
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"] == {"FunctionName": function_arn, "Payload.$": "$"}
    assert state["MaxConcurrency"] == settings.backfill_max_concurrency == 100
    assert state["ToleratedFailurePercentage"] == 0
    assert state["ResultWriter"]["Parameters"] == {
        "Bucket": run.outputs["bucket_name"],
        "Prefix": "demand/backfill-results/",
    }
    log_group = _logical(run, LOG_GROUP, "backfill-states-logs")
    assert log_group.inputs["name"] == f"/aws/vendedlogs/states/prd3292-{run.stack}-demand-backfill"
    assert log_group.inputs["retentionInDays"] == settings.log_retention_days
    assert machine.inputs["loggingConfiguration"] == {
        "level": "ERROR",
        "includeExecutionData": False,
        "logDestination": f"{log_group.outputs['arn']}:*",
    }


def test_state_machine_role_invokes_this_function_and_runs_its_own_map_only(run: ProgramRun) -> None:
    machine_arn = run.outputs["backfill_state_machine_arn"]
    function_arn = _logical(run, FUNCTION, "backfill-function").outputs["arn"]
    role = _logical(run, ROLE, "backfill-states-role").inputs
    assert role["name"] == f"prd3292-{run.stack}-demand-backfill-states"
    assert _logical(run, STATE_MACHINE, "backfill-state-machine").inputs["roleArn"] == (
        f"arn:aws:iam::{ACCOUNT_ID}:role/{role['name']}"
    )
    trust = json.loads(role["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT_ID},
        "ArnLike": {"aws:SourceArn": machine_arn},
    }
    by_sid = _by_sid(_policy(run, "backfill-states-policy"))
    assert by_sid["InvokeBackfillFunction"] == {
        "Sid": "InvokeBackfillFunction",
        "Effect": "Allow",
        "Action": ["lambda:InvokeFunction"],
        "Resource": [function_arn],
    }
    assert by_sid["RunDistributedMap"]["Action"] == ["states:StartExecution"]
    assert by_sid["RunDistributedMap"]["Resource"] == [machine_arn]
    executions = machine_arn.replace(":stateMachine:", ":execution:")
    # As "IAM policies for using Distributed Map states" lists: its own executions and the map runs' children.
    assert by_sid["FollowChildExecutions"]["Action"] == ["states:DescribeExecution", "states:StopExecution"]
    assert by_sid["FollowChildExecutions"]["Resource"] == [f"{executions}:*", f"{executions}/*:*"]
    assert by_sid["RedriveMapRuns"]["Action"] == ["states:RedriveExecution"]
    assert by_sid["RedriveMapRuns"]["Resource"] == [f"{executions}/*:*"]
    assert by_sid["ReadExportManifest"]["Resource"] == [f"{_bucket_arn(run)}/demand/exports/*"]
    assert by_sid["WriteMapResults"]["Resource"] == [f"{_bucket_arn(run)}/demand/backfill-results/*"]
    # only log delivery (which takes no narrower resource) is on "*"
    assert [sid for sid, statement in by_sid.items() if "*" in statement["Resource"]] == ["DeliverExecutionLogs"]


def test_failed_executions_alarm_notifies_the_topic(run: ProgramRun) -> None:
    alarm = _logical(run, ALARM, "backfill-failed-executions").inputs
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:prd3292-{run.stack}-demand-alarms"
    assert alarm["name"] == f"prd3292-{run.stack}-demand-backfill-failed-executions"
    queries = {query["id"]: query for query in alarm["metricQueries"]}
    # failed, aborted and timed out executions all leave the snapshot incomplete
    assert queries["unsuccessful"]["expression"] == "FILL(failed,0) + FILL(aborted,0) + FILL(timedout,0)"
    assert [query["id"] for query in alarm["metricQueries"] if query["returnData"]] == ["unsuccessful"]
    metrics = {query_id: queries[query_id]["metric"] for query_id in ("failed", "aborted", "timedout")}
    assert {query_id: metric["metricName"] for query_id, metric in metrics.items()} == {
        "failed": "ExecutionsFailed",
        "aborted": "ExecutionsAborted",
        "timedout": "ExecutionsTimedOut",
    }
    for metric in metrics.values():
        assert (metric["namespace"], metric["stat"], metric["period"]) == ("AWS/States", "Sum", 300)
        assert metric["dimensions"] == {"StateMachineArn": run.outputs["backfill_state_machine_arn"]}
    assert "metricName" not in alarm
    assert (alarm["threshold"], alarm["comparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["alarmActions"] == alarm["okActions"] == [topic]


# -- the snapshot table and the published current state ---------------------------------------------------------
def test_snapshot_table_has_the_change_columns_partitioned_by_injected_export_id(run: ProgramRun) -> None:
    table = _logical(run, TABLE, "athena-snapshots-table").inputs
    changes = _logical(run, TABLE, "athena-events-table").inputs
    assert unknown_inputs(TABLE, table) == []
    assert table["name"] == f"{run.outputs['glue_table_name']}_snapshots"
    assert table["databaseName"] == run.outputs["athena_database_name"]
    location = f"s3://{run.outputs['bucket_name']}/demand/snapshots/"
    assert table["storageDescriptor"]["location"] == location
    assert table["storageDescriptor"]["columns"] == changes["storageDescriptor"]["columns"]
    assert [column["name"] for column in table["storageDescriptor"]["columns"]] == [c.name for c in glue_columns()]
    assert [key["name"] for key in table["partitionKeys"]] == ["export_id"]
    assert table["parameters"]["projection.enabled"] == "true"
    assert table["parameters"]["projection.export_id.type"] == "injected"
    assert table["parameters"]["storage.location.template"] == f"{location}export_id=${{export_id}}/"
    assert not any(key.startswith("projection.dt") for key in table["parameters"])


def _current_registrations(run: ProgramRun) -> str:
    queries = [query for query in run.of_type(QUERY) if query.inputs["name"] == "current_registrations"]
    assert len(queries) == 1
    return str(queries[0].inputs["query"])


def test_without_a_published_snapshot_current_registrations_reads_registrations(run: ProgramRun) -> None:
    sql = _current_registrations(run)
    assert "_snapshots" not in sql
    expected = {
        query.name: query.sql
        for query in named_queries(run.outputs["athena_database_name"], run.outputs["glue_table_name"])
    }
    assert sql == expected["current_registrations"]
    assert f'FROM "{run.outputs["athena_database_name"]}"."registrations"' in sql


def test_a_published_snapshot_is_named_as_what_registrations_was_seeded_from() -> None:
    """The curated registrations table starts from the published snapshot: current_registrations stays a read of
    it (the snapshot-plus-changes query, ``current_registrations_sql``, would grow with the lake's age, and the
    curator deletes the raw changes it has covered)."""
    config = {
        **stack_config("qa1"),
        "dmd-pipeline:snapshotExportId": "01764201600000-a1b2c3d4",
        "dmd-pipeline:snapshotExportTime": "2026-11-30T09:05:00Z",
    }
    run = run_program("qa1", config=config)
    snapshot = PublishedSnapshot("01764201600000-a1b2c3d4", datetime(2026, 11, 30, 9, 5, tzinfo=UTC))
    expected = {
        query.name: query
        for query in named_queries("prd3292_qa1_demand", "prd3292_qa1_demand_changes", snapshot=snapshot)
    }
    sql = _current_registrations(run)
    assert sql == expected["current_registrations"].sql
    assert "export_id" not in sql
    queries = {query.inputs["name"]: query.inputs for query in run.of_type(QUERY)}
    assert set(queries) == set(expected)
    assert queries["current_registrations"]["description"] == expected["current_registrations"].description
    assert (
        "snapshot 01764201600000-a1b2c3d4 (exported 2026-11-30T09:05:00Z)"
        in queries["current_registrations"]["description"]
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"snapshotExportId": "01764201600000-a1b2c3d4"},
            r"dmd-pipeline:snapshotExportTime is required with dmd-pipeline:snapshotExportId",
        ),
        ({"snapshotExportTime": "2026-11-30T09:05:00Z"}, r"dmd-pipeline:snapshotExportId is required with"),
        ({"snapshotExportId": "bad id!"}, r"dmd-pipeline:snapshotExportId must be a DynamoDB export id"),
        (
            {"snapshotExportTime": "2026-11-30 09:05"},
            r"dmd-pipeline:snapshotExportTime must be an ISO-8601 UTC time YYYY-MM-DDTHH:MM:SS\[\.fff\]Z",
        ),
        (
            {"snapshotExportId": "abc-1", "snapshotExportTime": "2026-02-30T09:05:00Z"},
            r"dmd-pipeline:snapshotExportTime '2026-02-30T09:05:00Z' is not a real time",
        ),
        ({"backfillMaxConcurrency": "0"}, r"dmd-pipeline:backfillMaxConcurrency must be an integer between 1"),
        (
            {"backfillMaxConcurrency": "936"},
            r"dmd-pipeline:backfillMaxConcurrency 936 leaves the stream function too little .* at most 935",
        ),
        (
            {"backfillMaxConcurrency": "400", "parallelizationFactor": "10"},
            r"backfillMaxConcurrency 400 .* at most 359 \(1000 - 64 shards x parallelizationFactor 10 - 1",
        ),
    ],
)
def test_bad_backfill_or_snapshot_config_names_the_key(values: dict[str, str], message: str) -> None:
    config = {**stack_config("qa1"), **{f"dmd-pipeline:{key}": value for key, value in values.items()}}
    with pytest.raises((SettingsError, Exception), match=message):
        run_program("qa1", config=config)


def test_the_concurrency_ceiling_leaves_the_stream_its_shards() -> None:
    assert backfill_concurrency_ceiling(1) == 1000 - 64 - 1
    assert backfill_concurrency_ceiling(10) == 1000 - 640 - 1
    for stack in STACKS:
        settings = settings_from_stack_file(stack)
        assert settings.backfill_max_concurrency <= backfill_concurrency_ceiling(settings.parallelization_factor)


def test_published_snapshot_is_both_or_neither() -> None:
    assert published_snapshot(None, None) is None
    assert published_snapshot("", "") is None
    assert published_snapshot("abc-1", "2026-11-30T09:05:00Z") == PublishedSnapshot(
        "abc-1", datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
    )
    # as make backfill prints it: milliseconds
    assert published_snapshot("abc-1", "2026-11-30T09:05:00.250Z") == PublishedSnapshot(
        "abc-1", datetime(2026, 11, 30, 9, 5, 0, 250000, tzinfo=UTC)
    )
    with pytest.raises(ValueError, match="needs both"):
        published_snapshot("abc-1", None)
    with pytest.raises(ValueError, match="not an ISO-8601"):
        published_snapshot("abc-1", "yesterday")
    with pytest.raises(ValueError, match="no time zone"):
        PublishedSnapshot("abc-1", datetime(2026, 11, 30, 9, 5))
