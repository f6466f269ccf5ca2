"""The real program under mocks, for each stack's real config: resources, settings, IAM, alarms, outputs.

Assertions run on the resources the mocks recorded after the program finished (not inside Output.apply),
so a check cannot pass by never running; each test also asserts the resources it inspects exist.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.artifacts import artifact
from components.function_environment import lambda_environment
from components.naming import prefixes
from components.outputs import OUTPUT_KEYS
from components.settings import Settings, SettingsError, settings_from_stack_file
from ops.mocks import ACCOUNT_ID
from ops.outputs import StackOutputs
from ops.program import ProgramRun, run_program, stack_config
from pipeline.schema import arrow_schema, glue_columns
from tests.infra.conftest import STACKS, program_run
from tests.infra.iam_lint import lint_identity_policy, wildcards
from tests.infra.sdk_schema import unknown_inputs

FUNCTION = "aws:lambda/function:Function"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE = "aws:iam/role:Role"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SCHEDULE = "aws:scheduler/schedule:Schedule"


def _settings(stack: str) -> Settings:
    return settings_from_stack_file(stack)


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:us-east-1:{ACCOUNT_ID}:{resource}"


def _logical(run: ProgramRun, typ: str, logical_name: str) -> Any:
    """The resource of a type with this logical name (``data-bucket``, ``failures-bucket``)."""
    found = [resource for resource in run.of_type(typ) if resource.name == logical_name]
    assert len(found) == 1, f"{run.stack}: expected one {typ} {logical_name}, found {len(found)}"
    return found[0]


def _named_bucket(run: ProgramRun, bucket: str) -> Any:
    found = [resource for resource in run.of_type("aws:s3/bucket:Bucket") if resource.inputs["bucket"] == bucket]
    assert len(found) == 1, f"{run.stack}: expected one bucket {bucket}, found {len(found)}"
    return found[0]


def _named(run: ProgramRun, typ: str, name: str) -> Any:
    """The one resource of a type with this physical name; fails naming both."""
    found = [resource for resource in run.of_type(typ) if resource.inputs.get("name") == name]
    assert len(found) == 1, f"{run.stack}: expected one {typ} named {name}, found {len(found)}"
    return found[0]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run(stack: str) -> ProgramRun:
    return program_run(stack)


def test_output_keys_are_the_shared_contract() -> None:
    assert StackOutputs.output_keys() == OUTPUT_KEYS
    assert len(set(OUTPUT_KEYS)) == len(OUTPUT_KEYS)


def test_exports_exactly_the_output_keys(run: ProgramRun) -> None:
    assert sorted(run.outputs) == sorted(OUTPUT_KEYS)
    for key, value in run.outputs.items():
        assert isinstance(value, str), f"{run.stack}: output {key} is {value!r}"
        assert value, f"{run.stack}: output {key} is empty"
    StackOutputs.from_mapping(run.outputs, source=run.stack)


def test_outputs_carry_the_seed_names(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    env = run.stack
    assert run.outputs["table_name"] == settings.table_name
    assert run.outputs["bucket_name"] == settings.bucket_id
    assert run.outputs["stream_name"] == f"prd3292-{env}-dmnd-table-stream"
    assert run.outputs["stream_arn"] == _arn("kinesis", f"stream/prd3292-{env}-dmnd-table-stream")
    assert run.outputs["function_name"] == f"prd3292-{env}-demand-processor"
    assert run.outputs["function_alias_name"] == "live"
    assert run.outputs["function_alias_arn"] == _arn("lambda", f"function:prd3292-{env}-demand-processor:live")
    assert run.outputs["athena_database_name"] == f"prd3292_{env}_demand"
    assert run.outputs["athena_workgroup_name"] == f"prd3292_{env}_demand"
    assert run.outputs["glue_table_name"] == f"prd3292_{env}_demand_changes"
    assert run.outputs["ci_iam_role_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/prd3292-{env}-gitlab-ci"
    assert run.outputs["events_prefix"] == "demand/events/"
    assert run.outputs["quarantine_prefix"] == "demand/quarantine/"
    assert run.outputs["athena_results_prefix"] == "demand/athena-results/"
    assert run.outputs["log_group_name"] == f"/aws/lambda/prd3292-{env}-demand-processor"
    assert run.outputs["iterator_age_alarm_name"] == f"prd3292-{env}-demand-processor-iterator-age"
    assert run.outputs["failure_bucket_name"] == f"prd3292-{env}-us-east-1-demand-processor-failures"
    assert run.outputs["curator_function_name"] == f"prd3292-{env}-demand-curator"
    assert run.outputs["curator_log_group_name"] == f"/aws/lambda/prd3292-{env}-demand-curator"
    assert run.outputs["region"] == "us-east-1"
    assert run.outputs["athena_results_bucket_name"] == f"prd3292-{env}-us-east-1-demand-athena-results"


def test_provider_carries_region_profile_and_the_four_default_tags(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    provider = run.one("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    assert provider.inputs["profile"] == settings.profile
    assert json.loads(provider.inputs["defaultTags"]) == {
        "tags": {
            "Account": settings.account_tag,
            "Environment": run.stack,
            "ProductCode": "PRD3292",
            "InventoryCode": "dmnd-pipeline",
        }
    }


def test_every_resource_uses_the_tagged_provider_and_sits_in_a_component(run: ProgramRun) -> None:
    custom = [resource for resource in run.declared if resource.custom and resource.type != "pulumi:providers:aws"]
    assert len(custom) >= 20
    for resource in custom:
        assert resource.provider, resource.name
        assert "pulumi:providers:aws::aws::" in resource.provider, resource.name
        assert "tags" not in resource.inputs, f"{resource.name} repeats tags the provider already applies"
    children = [urn for urn in run.urns if "::aws:" in urn or "$aws:" in urn]
    assert len(children) == len(custom)
    for urn in children:
        assert "::dmd-pipeline:index:" in urn.split("$")[0] or "$dmd-pipeline:index:" in urn, urn
    components = {
        resource.type for resource in run.declared if not resource.custom and resource.type != "pulumi:pulumi:Stack"
    }
    # Lookups inside components inherit the explicit provider from their parent; an empty reference would be the
    # default provider (stack config only, no default tags).
    assert len(run.invoke_providers) == len(run.invokes) >= 3
    for token, provider in run.invoke_providers:
        assert "pulumi:providers:aws::aws::" in provider, f"{run.stack}: {token} uses {provider or 'the default'}"
    assert components == {
        "dmd-pipeline:index:ChangeStream",
        "dmd-pipeline:index:DataLayout",
        "dmd-pipeline:index:StreamProcessor",
        "dmd-pipeline:index:ProcessorAlarms",
        "dmd-pipeline:index:AthenaCatalog",
        "dmd-pipeline:index:CiAccess",
        "dmd-pipeline:index:DependencyLayer",
        "dmd-pipeline:index:AlarmTopic",
        "dmd-pipeline:index:FlowAlarms",
        "dmd-pipeline:index:PipelineDashboard",
        "dmd-pipeline:index:QueryResults",
        "dmd-pipeline:index:Curation",
        "dmd-pipeline:index:FailureDestination",
        "dmd-pipeline:index:Backfill",
    }


def test_every_input_is_a_property_of_the_sdk_type(run: ProgramRun) -> None:
    """Mocks accept any key; the real provider ignores the ones its schema lacks (a misspelt nested key is lost)."""
    checked = [resource for resource in run.declared if resource.custom]
    assert len(checked) >= 23
    for resource in checked:
        assert unknown_inputs(resource.type, resource.inputs) == [], f"{run.stack} {resource.name}"


def test_the_schema_check_catches_misspelt_nested_keys() -> None:
    lifecycle = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    found = unknown_inputs(lifecycle, {"bucket": "b", "rules": [{"id": "x", "filter": {"prefixx": "a/"}}]})
    assert [entry.split(" ")[0] for entry in found] == [f"{lifecycle}.rules[0].filter.prefixx"]
    table = "aws:glue/catalogTable:CatalogTable"
    found = unknown_inputs(table, {"storageDescriptor": {"serdeInfo": {}, "columns": [{"nam": "a"}]}})
    assert [entry.split(" ")[0] for entry in found] == [
        f"{table}.storageDescriptor.serdeInfo",
        f"{table}.storageDescriptor.columns[0].nam",
    ]
    assert unknown_inputs("aws:lambda/function:Function", {"loggingConfig": {"logFormat": "JSON", "logGroupName": "g"}})


def test_prod1_creates_the_stream_and_others_look_it_up(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    stream_lookups = [args for token, args in run.invokes if token == "aws:kinesis/getStream:getStream"]
    table_lookups = [args for token, args in run.invokes if token == "aws:dynamodb/getTable:getTable"]
    assert [args["name"] for args in table_lookups] == [settings.table_name]
    if run.stack == "prod1":
        assert stream_lookups == []
        stream = run.one("aws:kinesis/stream:Stream")
        assert stream.inputs["name"] == "prd3292-prod1-dmnd-table-stream"
        assert stream.inputs["streamModeDetails"] == {"streamMode": "ON_DEMAND"}
        assert stream.inputs["encryptionType"] == "KMS"
        assert stream.inputs["kmsKeyId"] == "alias/aws/kinesis"
        destination = run.one("aws:dynamodb/kinesisStreamingDestination:KinesisStreamingDestination")
        assert destination.inputs["tableName"] == settings.table_name
        assert destination.inputs["streamArn"] == stream.outputs["arn"]
        assert destination.inputs["approximateCreationDateTimePrecision"] == "MICROSECOND"
    else:
        assert [args["name"] for args in stream_lookups] == [settings.stream_name]
        assert run.of_type("aws:kinesis/stream:Stream") == []
        assert run.of_type("aws:dynamodb/kinesisStreamingDestination:KinesisStreamingDestination") == []


def test_bucket_is_looked_up_and_left_as_its_owner_configured_it(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    lookups = [args for token, args in run.invokes if token == "aws:s3/getBucket:getBucket"]
    assert lookups == [{"bucket": settings.bucket_id}]
    buckets = sorted(bucket.inputs["bucket"] for bucket in run.of_type("aws:s3/bucket:Bucket"))
    assert buckets == sorted([run.outputs["athena_results_bucket_name"], run.outputs["failure_bucket_name"]])
    # No configuration resource of any kind names the looked-up bucket (lifecycle, policy, encryption, ...).
    on_data_bucket = [
        resource.name
        for resource in run.declared
        if resource.type.startswith("aws:s3/bucket")
        and resource.type != "aws:s3/bucketObjectv2:BucketObjectv2"  # the layer zip: an object, not configuration
        and resource.inputs.get("bucket") == settings.bucket_id
    ]
    assert on_data_bucket == []


def test_function_version_alias_and_environment(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    function = _named(run, FUNCTION, f"prd3292-{run.stack}-demand-processor")
    inputs = function.inputs
    assert inputs["handler"] == "pipeline.handler.handler"
    assert inputs["runtime"] == "python3.12"
    assert inputs["architectures"] == ["arm64"]
    assert inputs["memorySize"] == settings.lambda_memory_mb
    assert inputs["timeout"] == settings.lambda_timeout_seconds
    assert inputs["publish"] is True
    # The deterministic zip's digest: unchanged code, no update and no new published version.
    assert inputs.get("sourceCodeHash") == artifact(settings.artifact_dir).function_digest
    assert inputs["code"].path == "dist/function.zip"
    assert inputs["role"] == f"arn:aws:iam::{ACCOUNT_ID}:role/prd3292-{run.stack}-demand-processor"
    assert inputs["environment"] == {"variables": lambda_environment(settings, settings.bucket_id, prefixes())}
    assert inputs["environment"]["variables"]["CHANGE_TIME_PRECISION"] == settings.change_time_precision
    assert inputs["environment"]["variables"]["SOURCE_TABLE_NAME"] == run.outputs["table_name"]
    assert inputs["loggingConfig"]["logGroup"] == f"/aws/lambda/prd3292-{run.stack}-demand-processor"
    layers = {layer.name: layer for layer in run.of_type("aws:lambda/layerVersion:LayerVersion")}
    assert sorted(layers) == ["curator-layer-version", "layer-version"]  # the stream handler's and the curator's
    layer = layers["layer-version"]
    assert layer.inputs["layerName"] == f"prd3292-{run.stack}-demand-dependencies"
    assert inputs["layers"] == [layer.outputs["arn"]]
    assert layer.inputs["compatibleRuntimes"] == ["python3.12"]
    assert layer.inputs["compatibleArchitectures"] == ["arm64"]
    (layer_zip,) = [zip_ for zip_ in run.of_type("aws:s3/bucketObjectv2:BucketObjectv2") if zip_.name == "layer-zip"]
    assert layer.inputs["s3Bucket"] == settings.bucket_id
    assert layer.inputs["s3Key"] == layer_zip.inputs["key"]
    assert layer_zip.inputs["key"].startswith("demand/artifacts/")
    alias = run.one("aws:lambda/alias:Alias")
    assert alias.inputs["name"] == "live"
    assert alias.inputs["functionName"] == inputs["name"]
    assert alias.inputs["functionVersion"] == function.outputs["version"]


def test_lambda_environment_names_match_the_handler() -> None:
    config = pytest.importorskip("pipeline.config")
    environment = lambda_environment(_settings("qa1"), "bucket", prefixes())
    # SOURCE_TABLE_NAME (issue 8) is optional for the handler: the program always sets it.
    assert set(environment) == {*config.ENVIRONMENT_VARIABLES, "SOURCE_TABLE_NAME"}


def test_event_source_mapping(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    mapping = run.one(MAPPING).inputs
    bucket = _named_bucket(run, f"prd3292-{run.stack}-us-east-1-demand-processor-failures")
    assert mapping["eventSourceArn"] == run.outputs["stream_arn"]
    assert mapping["functionName"] == run.outputs["function_alias_arn"]
    assert mapping["startingPosition"] == settings.stream_starting_position
    assert mapping.get("startingPositionTimestamp") == settings.stream_start_timestamp
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["bisectBatchOnFunctionError"] is True
    assert mapping["batchSize"] == settings.batch_size
    assert mapping["maximumBatchingWindowInSeconds"] == settings.batching_window_seconds
    assert mapping["parallelizationFactor"] == settings.parallelization_factor
    assert mapping["maximumRetryAttempts"] == settings.max_retry_attempts
    assert 0 <= mapping["maximumRetryAttempts"] <= 10000
    assert mapping["maximumRecordAgeInSeconds"] == settings.max_record_age_seconds
    assert 60 <= mapping["maximumRecordAgeInSeconds"] <= 604800
    assert mapping["destinationConfig"] == {"onFailure": {"destinationArn": bucket.outputs["arn"]}}
    # the only queue is the curation schedule's dead-letter queue: the mapping's failures go to S3
    assert [queue.name for queue in run.of_type("aws:sqs/queue:Queue")] == ["curation-undelivered"]


def test_log_group_has_finite_retention_and_no_subscription_by_default(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    for name in (run.outputs["log_group_name"], run.outputs["curator_log_group_name"]):
        log_group = _named(run, LOG_GROUP, name)
        assert log_group.inputs["retentionInDays"] == settings.log_retention_days
    for name in (
        f"/aws/lambda/prd3292-{run.stack}-demand-backfill",
        f"/aws/vendedlogs/states/prd3292-{run.stack}-demand-backfill",
    ):
        assert _named(run, LOG_GROUP, name).inputs["retentionInDays"] == settings.log_retention_days
    assert len(run.of_type(LOG_GROUP)) == 4
    assert run.of_type("aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter") == []


def test_alarm_thresholds_in_the_metric_units(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    processor_alarms = [
        alarm
        for alarm in run.of_type(ALARM)
        if "-demand-processor-" in alarm.inputs["name"] and "metricName" in alarm.inputs
    ]
    alarms = {alarm.inputs["metricName"]: alarm.inputs for alarm in processor_alarms}
    assert set(alarms) == {"IteratorAge", "Errors", "Throttles", "PutRequests"}
    function_dimensions = {
        "FunctionName": run.outputs["function_name"],
        "Resource": f"{run.outputs['function_name']}:live",
    }
    iterator_age = alarms["IteratorAge"]
    assert iterator_age["threshold"] == settings.iterator_age_alarm_seconds * 1000  # milliseconds
    assert iterator_age["unit"] == "Milliseconds"
    assert iterator_age["statistic"] == "Maximum"
    assert iterator_age["dimensions"] == {"FunctionName": run.outputs["function_name"]}
    assert iterator_age["name"] == run.outputs["iterator_age_alarm_name"]
    assert alarms["Errors"]["threshold"] == settings.errors_alarm_threshold
    assert alarms["Errors"]["dimensions"] == function_dimensions
    assert alarms["Throttles"]["threshold"] == settings.throttles_alarm_threshold
    # One PUT per discarded batch, counted by the failure bucket's request metrics under Lambda's key prefix.
    failed = alarms["PutRequests"]
    metric = run.one("aws:s3/bucketMetric:BucketMetric").inputs
    assert failed["namespace"] == "AWS/S3"
    assert failed["name"] == f"prd3292-{run.stack}-demand-processor-failed-batches"
    assert failed["dimensions"] == {"BucketName": run.outputs["failure_bucket_name"], "FilterId": metric["name"]}
    assert metric["bucket"] == run.outputs["failure_bucket_name"]
    assert metric["filter"] == {"prefix": "aws/lambda/"}
    assert failed["statistic"] == "Sum"
    assert failed["threshold"] == settings.failed_batches_alarm_threshold
    assert failed["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    for alarm in alarms.values():
        assert alarm["treatMissingData"] == "notBreaching"
        assert alarm["period"] * alarm["evaluationPeriods"] >= 300


def test_glue_columns_equal_the_handler_schema(run: ProgramRun) -> None:
    tables = {table.name: table.inputs for table in run.of_type("aws:glue/catalogTable:CatalogTable")}
    assert set(tables) == {"athena-events-table", "athena-snapshots-table"}
    table = tables["athena-events-table"]
    columns = table["storageDescriptor"]["columns"]
    schema = arrow_schema()
    assert [column["name"] for column in columns] == schema.names
    assert [(column["name"], column["type"]) for column in columns] == [
        (column.name, column.type) for column in glue_columns()
    ]
    assert table["storageDescriptor"]["location"] == f"s3://{run.outputs['bucket_name']}/demand/events/"
    assert table["storageDescriptor"]["serDeInfo"]["serializationLibrary"].endswith("ParquetHiveSerDe")
    assert [key["name"] for key in table["partitionKeys"]] == ["dt", "hour"]
    assert table["parameters"]["projection.enabled"] == "true"
    assert table["parameters"]["storage.location.template"].endswith("/demand/events/dt=${dt}/hour=${hour}/")
    assert table["databaseName"] == run.outputs["athena_database_name"]


def test_workgroup_and_named_queries(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    workgroup = run.one("aws:athena/workgroup:Workgroup").inputs
    configuration = workgroup["configuration"]
    assert configuration["engineVersion"] == {"selectedEngineVersion": "Athena engine version 3"}
    assert configuration["enforceWorkgroupConfiguration"] is True
    assert configuration["bytesScannedCutoffPerQuery"] == settings.athena_bytes_scanned_cutoff
    assert configuration["resultConfiguration"] == {
        "outputLocation": f"s3://{run.outputs['athena_results_bucket_name']}/demand/athena-results/",
        "encryptionConfiguration": {"encryptionOption": "SSE_S3"},
    }
    queries = run.of_type("aws:athena/namedQuery:NamedQuery")
    assert sorted(query.inputs["name"] for query in queries) == [
        "changes_not_yet_curated",
        "current_registrations",
        "current_registrations_to_the_minute",
        "demand_per_event_per_day",
        "pipeline_freshness",
        "registrations_as_of",
    ]
    database = run.outputs["athena_database_name"]
    for query in queries:
        assert query.inputs["workgroup"] == workgroup["name"]
        assert query.inputs["database"] == database
        # the curated tables, or the raw table for the minutes the curator has not reached
        assert f'"{database}"."registration' in query.inputs["query"], query.inputs["name"]
    raw_readers = sorted(
        q.inputs["name"] for q in queries if f'"{run.outputs["glue_table_name"]}"' in q.inputs["query"]
    )
    assert raw_readers == ["changes_not_yet_curated", "current_registrations_to_the_minute", "pipeline_freshness"]


def _policies(run: ProgramRun) -> dict[str, dict[str, Any]]:
    policies = {policy.name: json.loads(policy.inputs["policy"]) for policy in run.of_type(ROLE_POLICY)}
    assert set(policies) == {
        "processor-policy",
        "ci-policy",
        "curation-policy",
        "curation-scheduler-policy",
        "backfill-policy",
        "backfill-states-policy",
    }
    return policies


# The linter's two findings on the backfill state machine's role, both what the Step Functions guide asks for:
# CloudWatch Logs delivery needs logs:PutResourcePolicy (on "*", the only resource it takes), and parliament
# wants states:DescribeExecution to match express executions too, which a STANDARD Distributed Map never has.
KNOWN_FINDINGS = {
    "backfill-states-policy": [
        "PERMISSIONS_MANAGEMENT_ACTIONS: ",
        "RESOURCE_MISMATCH: [{'action': 'states:DescribeExecution', 'required_format': "
        "'arn:*:states:*:*:express:*:*:*'}]",
    ]
}


def test_every_identity_policy_passes_the_linter(run: ProgramRun) -> None:
    for name, document in _policies(run).items():
        assert lint_identity_policy(document) == KNOWN_FINDINGS.get(name, []), f"{run.stack} {name}"


def test_processor_policy_names_exact_arns(run: ProgramRun) -> None:
    document = _policies(run)["processor-policy"]
    by_sid = {statement["Sid"]: statement for statement in document["Statement"]}
    bucket = run.outputs["bucket_name"]
    assert by_sid["ReadChangeStream"]["Resource"] == [run.outputs["stream_arn"]]
    # The Lambda developer guide's list for a Kinesis event source mapping's execution role (ListStreams is
    # documented as not needed); SubscribeToShard acts on the stream's consumers.
    kinesis_actions = by_sid["ReadChangeStream"]["Action"] + by_sid["ReadChangeStreamConsumers"]["Action"]
    assert sorted(kinesis_actions) == [
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "kinesis:SubscribeToShard",
    ]
    assert by_sid["ReadChangeStreamConsumers"]["Resource"] == [f"{run.outputs['stream_arn']}/consumer/*"]
    # The Lambda guide's permissions for an S3 on-failure destination, on the failure bucket only.
    failure_bucket_arn = f"arn:aws:s3:::{run.outputs['failure_bucket_name']}"
    assert by_sid["ListFailedBatches"] == {
        "Sid": "ListFailedBatches",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": [failure_bucket_arn],
    }
    assert by_sid["WriteFailedBatches"]["Action"] == ["s3:PutObject"]
    assert by_sid["WriteFailedBatches"]["Resource"] == [f"{failure_bucket_arn}/*"]
    assert by_sid["WriteEventsAndQuarantine"]["Resource"] == [
        f"arn:aws:s3:::{bucket}/demand/events/*",
        f"arn:aws:s3:::{bucket}/demand/quarantine/*",
    ]
    log_group_arn = _arn("logs", f"log-group:{run.outputs['log_group_name']}")
    assert by_sid["WriteOwnLogs"]["Resource"] == [f"{log_group_arn}:log-stream:*"]
    assert set(by_sid) == {
        "ReadChangeStream",
        "ReadChangeStreamConsumers",
        "WriteEventsAndQuarantine",
        "ListFailedBatches",
        "WriteFailedBatches",
        "WriteOwnLogs",
    }


def test_lint_catches_a_wildcard() -> None:
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    assert len(wildcards(bad)) == 2
    scopable = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    assert wildcards(scopable) == [f"{None}: wildcard resource *"]
    unscopable = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:ListEventSourceMappings", "Resource": "*"}],
    }
    assert wildcards(unscopable) == []
    mismatch = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "arn:aws:s3:::b/x"}],
    }
    assert any("RESOURCE_MISMATCH" in finding for finding in lint_identity_policy(mismatch))


def test_ci_role_trusts_only_this_project_and_main_in_prod(run: ProgramRun) -> None:
    settings = _settings(run.stack)
    roles = {role.inputs["name"]: role for role in run.of_type(ROLE)}
    trust = json.loads(roles[f"prd3292-{run.stack}-gitlab-ci"].inputs["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/git.tmaws.io"}
    condition = statement["Condition"]
    assert condition["StringEquals"]["git.tmaws.io:aud"] == "https://git.tmaws.io"
    if settings.ci_main_branch_only:  # every stack but qa1 (the one a branch pipeline deploys to)
        assert condition == {
            "StringEquals": {
                "git.tmaws.io:aud": "https://git.tmaws.io",
                "git.tmaws.io:sub": "project_path:demand-capture/data-pipeline:ref_type:branch:ref:main",
            }
        }
    else:
        assert condition["StringLike"] == {
            "git.tmaws.io:sub": "project_path:demand-capture/data-pipeline:ref_type:*:ref:*"
        }
    processor_trust = json.loads(roles[f"prd3292-{run.stack}-demand-processor"].inputs["assumeRolePolicy"])
    assert processor_trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert wildcards(trust) == []


def test_no_app_stack_creates_the_oidc_provider(run: ProgramRun) -> None:
    """IAM allows one provider per URL per account: bootstrap/ owns it; every app stack only looks it up."""
    assert run.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider") == []
    looked_up = [
        (args, provider)
        for (token, args), (_, provider) in zip(run.invokes, run.invoke_providers, strict=True)
        if token == "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider"
    ]
    assert [args for args, _ in looked_up] == [{"url": "https://git.tmaws.io"}]
    assert "pulumi:providers:aws::aws::" in looked_up[0][1]


def test_ci_policy_scopes_rollback_and_queries(run: ProgramRun) -> None:
    by_sid = {statement["Sid"]: statement for statement in _policies(run)["ci-policy"]["Statement"]}
    function_arn = _arn("lambda", f"function:{run.outputs['function_name']}")
    assert by_sid["InspectAndRollBackFunction"]["Resource"] == [function_arn, f"{function_arn}:*"]
    assert "lambda:UpdateAlias" in by_sid["InspectAndRollBackFunction"]["Action"]
    assert by_sid["QueryWithAthena"]["Resource"] == [
        _arn("athena", f"workgroup/{run.outputs['athena_workgroup_name']}")
    ]
    assert by_sid["WriteAndReadTestChanges"]["Resource"] == [_arn("dynamodb", f"table/{run.outputs['table_name']}")]
    assert len(by_sid["ReadAlarms"]["Resource"]) == 10
    assert (
        _arn("cloudwatch", f"alarm:prd3292-{run.stack}-demand-curation-failed-invocations")
        in by_sid["ReadAlarms"]["Resource"]
    )
    # Once a snapshot is published, current_registrations reads the snapshot table and its objects.
    database = run.outputs["athena_database_name"]
    table = run.outputs["glue_table_name"]
    assert by_sid["ReadCatalog"]["Resource"][-4:] == [
        _arn("glue", f"table/{database}/{table}"),
        _arn("glue", f"table/{database}/{table}_snapshots"),
        # the curated Iceberg tables the curator creates in the same database, and their files
        _arn("glue", f"table/{database}/registration_changes"),
        _arn("glue", f"table/{database}/registrations"),
    ]
    assert f"arn:aws:s3:::{run.outputs['bucket_name']}/demand/snapshots/*" in by_sid["ReadLake"]["Resource"]
    assert f"arn:aws:s3:::{run.outputs['bucket_name']}/curated/*" in by_sid["ReadLake"]["Resource"]
    assert not {"s3:PutObject", "s3:DeleteObject"} & set(by_sid["ReadLake"]["Action"])
    assert (
        _arn("cloudwatch", f"alarm:prd3292-{run.stack}-demand-backfill-failed-executions")
        in by_sid["ReadAlarms"]["Resource"]
    )
    assert _arn("cloudwatch", f"alarm:prd3292-{run.stack}-demand-curator-errors") in by_sid["ReadAlarms"]["Resource"]
    assert by_sid["ListFailedBatches"]["Resource"] == [f"arn:aws:s3:::{run.outputs['failure_bucket_name']}"]
    # make erase: file requests, read audits, and read the failed batches its dry run counts; nothing else
    bucket = f"arn:aws:s3:::{run.outputs['bucket_name']}"
    assert by_sid["FileErasureRequests"]["Action"] == ["s3:PutObject"]
    assert by_sid["FileErasureRequests"]["Resource"] == [f"{bucket}/erasure/requests/*"]
    assert by_sid["ReadErasureAudit"]["Action"] == ["s3:GetObject"]
    assert by_sid["ReadErasureAudit"]["Resource"] == [f"{bucket}/erasure/audit/*"]
    assert by_sid["ReadFailedBatches"]["Resource"] == [f"arn:aws:s3:::{run.outputs['failure_bucket_name']}/*"]
    assert not any("s3:DeleteObject" in statement["Action"] for statement in by_sid.values())
    # its dry run also counts the old versions of what it reads: it lists and reads them, never purges one
    failures = f"arn:aws:s3:::{run.outputs['failure_bucket_name']}"
    assert by_sid["ListOldVersions"]["Resource"] == [bucket, failures]
    assert by_sid["ReadOldVersions"]["Resource"] == [*by_sid["ReadLake"]["Resource"], f"{failures}/*"]
    assert not any("s3:DeleteObjectVersion" in statement["Action"] for statement in by_sid.values())
    results_bucket = f"arn:aws:s3:::{run.outputs['athena_results_bucket_name']}"
    assert by_sid["AthenaResults"]["Resource"] == [f"{results_bucket}/demand/athena-results/*"]
    assert by_sid["AthenaResultsBucket"]["Resource"] == [results_bucket]
    # CloudWatch Logs authorizes FilterLogEvents on "log-group:<name>:*", not on the bare log group ARN.
    log_group_arn = _arn("logs", f"log-group:{run.outputs['log_group_name']}")
    assert by_sid["ReadFunctionLogs"]["Resource"] == [f"{log_group_arn}:*"]
    # The only "*": actions IAM cannot scope (checked against parliament's IAM definitions by the linter).
    starred = [statement for statement in by_sid.values() if statement["Resource"] == ["*"]]
    assert [statement["Sid"] for statement in starred] == ["ListMappingsAndReadMetrics"]
    assert starred[0]["Action"] == ["cloudwatch:GetMetricStatistics", "lambda:ListEventSourceMappings"]


# Variations of one stack's config: run in this process with their own config (not the cache).


def test_log_destination_adds_a_subscription_filter() -> None:
    destination = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:destination:central-logs"
    config = {**stack_config("qa1"), "dmd-pipeline:logDestinationArn": destination}
    run = run_program("qa1", config=config)
    subscription = run.one("aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter")
    assert subscription.inputs["destinationArn"] == destination
    assert subscription.inputs["logGroup"] == "/aws/lambda/prd3292-qa1-demand-processor"
    assert subscription.inputs["filterPattern"] == ""
    assert unknown_inputs(subscription.type, subscription.inputs) == []


def test_create_bucket_makes_a_hardened_bucket() -> None:
    config = {**stack_config("qa1"), "dmd-pipeline:createBucket": "true"}
    run = run_program("qa1", config=config)
    assert [args for token, args in run.invokes if token == "aws:s3/getBucket:getBucket"] == []
    bucket = _logical(run, "aws:s3/bucket:Bucket", "data-bucket")
    assert bucket.inputs["bucket"] == "prd3292.qa1.us-east-1.demand-capture.tmaws"
    encryption = _logical(run, ENCRYPTION, "data-encryption")
    assert encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    assert encryption.inputs["rules"][0]["bucketKeyEnabled"] is False  # S3 Bucket Keys are for SSE-KMS only
    versioning = _logical(run, "aws:s3/bucketVersioning:BucketVersioning", "data-versioning")
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
    public_access = _logical(run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "data-public-access").inputs
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert public_access[flag] is True, flag
    policy = json.loads(_logical(run, "aws:s3/bucketPolicy:BucketPolicy", "data-tls-only").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert run.outputs["bucket_name"] == bucket.inputs["bucket"]


def test_create_bucket_with_a_kms_key_uses_sse_kms_and_a_bucket_key() -> None:
    key = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/0a1b2c3d-0000-4000-8000-000000000000"
    config = {**stack_config("qa1"), "dmd-pipeline:createBucket": "true", "dmd-pipeline:bucketKmsKeyArn": key}
    run = run_program("qa1", config=config)
    for logical_name in ("data-encryption", "failures-encryption"):
        encryption = _logical(run, ENCRYPTION, logical_name)
        (rule,) = encryption.inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key}
        assert rule["bucketKeyEnabled"] is True
    # Both functions may use the key: the processor writes events, the curator reads them and writes the tables.
    curator = json.loads(_logical(run, ROLE_POLICY, "curation-policy").inputs["policy"])
    by_sid = {statement["Sid"]: statement for statement in curator["Statement"]}
    assert by_sid["ReadAndWriteEncryptedObjects"]["Resource"] == [key]
    assert by_sid["ReadAndWriteEncryptedObjects"]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert lint_identity_policy(curator) == []
    for resource in run.declared:
        if resource.custom:
            assert unknown_inputs(resource.type, resource.inputs) == [], resource.name


def test_missing_key_fails_the_program_naming_key_and_stack() -> None:
    config = {key: value for key, value in stack_config("qa1").items() if key != "dmd-pipeline:tableName"}
    with pytest.raises(SettingsError, match=r"^Pulumi\.qa1\.yaml: dmd-pipeline:tableName is required"):
        run_program("qa1", config=config)


def test_malformed_key_fails_the_program_naming_key_and_stack() -> None:
    config = {**stack_config("preprod1"), "dmd-pipeline:batchSize": "many"}
    with pytest.raises(SettingsError, match=r"^Pulumi\.preprod1\.yaml: dmd-pipeline:batchSize must be an integer"):
        run_program("preprod1", config=config)


def test_program_and_stack_file_reader_agree(stack: str) -> None:
    """The in-program loader (pulumi.Config) and the stack-file reader build the same settings."""
    from components.settings import load_settings  # noqa: PLC0415

    captured: list[Settings] = []
    import components.settings as settings_module  # noqa: PLC0415

    original = settings_module.load_settings

    def spy() -> Settings:
        loaded = original()
        captured.append(loaded)
        return loaded

    settings_module.load_settings = spy
    try:
        run_program(stack)
    finally:
        settings_module.load_settings = original
    assert load_settings is original
    assert captured == [settings_from_stack_file(stack)]
