"""The program under mocks, per stack, for what the first real deploy needs: the results bucket, the cutover
position on the mapping, the stream key grant, the alarm topic and the alarms' actions, the flow alarms, the
dashboard, the central-logs warning and the promotion outputs."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.dashboard import DashboardMetric, PipelineDashboardArgs, dashboard_body
from components.lambda_function import application_log_level
from components.processor import mapping_options
from components.settings import SettingsError, settings_from_stack_file
from ops.mocks import ACCOUNT_ID, MOCK_CODE_SHA256, AwsMocks, Declared
from ops.outputs import StackOutputs
from ops.program import ProgramRun, run_program, stack_config
from tests.infra.conftest import STACKS, program_run
from tests.infra.sdk_schema import unknown_inputs

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(str(request.param))


def _by_name(run: ProgramRun, typ: str) -> dict[str, Declared]:
    return {resource.name: resource for resource in run.of_type(typ)}


def _processor_statements(run: ProgramRun) -> dict[str, dict[str, Any]]:
    (policy,) = [policy for policy in run.of_type("aws:iam/rolePolicy:RolePolicy") if policy.name == "processor-policy"]
    return {statement["Sid"]: statement for statement in json.loads(policy.inputs["policy"])["Statement"]}


# Athena results: a bucket the stack owns.


def test_each_stack_owns_a_hardened_results_bucket(run: ProgramRun) -> None:
    settings = settings_from_stack_file(run.stack)
    name = f"prd3292-{run.stack}-us-east-1-demand-athena-results"
    (bucket,) = [bucket for bucket in run.of_type("aws:s3/bucket:Bucket") if bucket.name == "athena-results-bucket"]
    assert bucket.inputs["bucket"] == name
    assert bucket.inputs["forceDestroy"] is True
    controls = {
        resource.type.split(":")[-1]: resource.inputs
        for resource in run.declared
        if resource.name.startswith("athena-results-")
    }
    assert set(controls) == {
        "Bucket",
        "BucketServerSideEncryptionConfiguration",
        "BucketOwnershipControls",
        "BucketPublicAccessBlock",
        "BucketPolicy",
        "BucketLifecycleConfiguration",
    }
    for inputs in controls.values():
        assert inputs.get("bucket") == name
    encryption = controls["BucketServerSideEncryptionConfiguration"]["rules"]
    assert encryption == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}, "bucketKeyEnabled": False}]
    assert controls["BucketOwnershipControls"]["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    public = controls["BucketPublicAccessBlock"]
    assert [
        public[flag] for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    ] == [True] * 4
    (deny,) = json.loads(controls["BucketPolicy"]["policy"])["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]
    (rule,) = controls["BucketLifecycleConfiguration"]["rules"]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == {"prefix": ""}
    assert rule["expiration"] == {"days": settings.athena_results_expiry_days}
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    workgroup = run.one("aws:athena/workgroup:Workgroup")
    output = workgroup.inputs["configuration"]["resultConfiguration"]["outputLocation"]
    assert output == f"s3://{name}/demand/athena-results/"


def test_a_created_data_bucket_expires_noncurrent_versions() -> None:
    config = {**stack_config("qa1"), "dmd-pipeline:createBucket": "true"}
    run = run_program("qa1", config=config)
    lifecycles = _by_name(run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert sorted(lifecycles) == ["athena-results-lifecycle", "data-lifecycle", "failures-lifecycle"]
    rules = {rule["id"]: rule for rule in lifecycles["data-lifecycle"].inputs["rules"]}
    assert lifecycles["data-lifecycle"].inputs["bucket"] == "prd3292.qa1.us-east-1.demand-capture.tmaws"
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    curated = rules["curated-noncurrent-versions-and-uploads"]
    assert curated["filter"] == {"prefix": "curated/"}  # the curated tables live outside the raw root demand/
    assert curated["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert curated["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    assert {rule["filter"]["prefix"] for rule in rules.values()} == {"demand/", "curated/"}


# Named queries in the workgroup read a bounded window (dt partitions of the raw table, hours of the change log).


def test_named_queries_in_the_workgroup_read_a_bounded_window(run: ProgramRun) -> None:
    queries = {query.inputs["name"]: query.inputs["query"] for query in run.of_type("aws:athena/namedQuery:NamedQuery")}
    assert len(queries) == 6
    window = settings_from_stack_file(run.stack).athena_query_window_days
    assert window == 7
    raw = "WHERE dt >= date_format(current_timestamp - INTERVAL '1' DAY, '%Y-%m-%d')"
    for name in ("pipeline_freshness", "changes_not_yet_curated", "current_registrations_to_the_minute"):
        assert raw in queries[name], name
    demand = queries["demand_per_event_per_day"]
    assert f"change_time >= date_trunc('day', current_timestamp - INTERVAL '{window - 1}' DAY)" in demand


def test_query_window_comes_from_config() -> None:
    run = run_program("qa1", config={**stack_config("qa1"), "dmd-pipeline:athenaQueryWindowDays": "3"})
    (query,) = [
        q for q in run.of_type("aws:athena/namedQuery:NamedQuery") if q.inputs["name"] == "demand_per_event_per_day"
    ]
    assert "INTERVAL '2' DAY" in query.inputs["query"]
    assert "last 3 days" in query.inputs["description"]


# Cutover: the mapping's starting position.


def test_mapping_starts_where_the_stack_file_says(run: ProgramRun) -> None:
    mapping = run.one("aws:lambda/eventSourceMapping:EventSourceMapping").inputs
    expected = "TRIM_HORIZON" if run.stack == "prod1" else "LATEST"
    assert mapping["startingPosition"] == expected
    assert "startingPositionTimestamp" not in mapping


@pytest.mark.parametrize("stack", ["dev1", "qa1", "preprod1"])
def test_a_preview_without_a_starting_position_fails_naming_the_keys(stack: str) -> None:
    config = {key: value for key, value in stack_config(stack).items() if "streamStartingPosition" not in key}
    with pytest.raises(SettingsError) as raised:
        run_program(stack, config=config)
    message = str(raised.value)
    assert message.startswith(f"Pulumi.{stack}.yaml: dmd-pipeline:streamStartingPosition is required")
    assert "dmd-pipeline:streamStartTimestamp" in message


def test_cutover_deploys_at_the_timestamp() -> None:
    config = {
        **stack_config("preprod1"),
        "dmd-pipeline:streamStartingPosition": "AT_TIMESTAMP",
        "dmd-pipeline:streamStartTimestamp": "2026-12-01T09:00:00Z",
    }
    mapping = run_program("preprod1", config=config).one("aws:lambda/eventSourceMapping:EventSourceMapping")
    assert mapping.inputs["startingPosition"] == "AT_TIMESTAMP"
    assert mapping.inputs["startingPositionTimestamp"] == "2026-12-01T09:00:00Z"
    assert unknown_inputs(mapping.type, mapping.inputs) == []


def test_a_replaced_mapping_is_deleted_first() -> None:
    """A changed starting position replaces the mapping; two mappings must never feed the alias at once."""
    parent, role_policy = object.__new__(pulumi.ComponentResource), object.__new__(pulumi.CustomResource)
    options = mapping_options(parent, role_policy)
    assert options.delete_before_replace is True
    assert options.parent is parent
    assert options.depends_on == [role_policy]  # Lambda checks the role's rights when it creates the mapping


# The stream's KMS key, from the lookup.


def _run_with_stream_key(key_id: str, **config: str) -> ProgramRun:
    mocks = AwsMocks(
        stream_encryption=("KMS", key_id),
        alias_targets={"alias/demand-stream": KEY_ARN},
    )
    return run_program("qa1", config={**stack_config("qa1"), **config}, mocks=mocks)


def test_the_mocks_default_stream_uses_the_aws_managed_key(run: ProgramRun) -> None:
    assert "DecryptChangeStream" not in _processor_statements(run)


@pytest.mark.parametrize(
    "key_id",
    [
        KEY_ARN,
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "alias/demand-stream",
        f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:alias/demand-stream",
    ],
)
def test_a_customer_managed_stream_key_is_granted(key_id: str) -> None:
    run = _run_with_stream_key(key_id)
    statements = _processor_statements(run)
    assert statements["DecryptChangeStream"]["Action"] == ["kms:Decrypt"]
    assert statements["DecryptChangeStream"]["Resource"] == [KEY_ARN]
    alias_lookups = [args for token, args in run.invokes if token == "aws:kms/getAlias:getAlias"]
    assert alias_lookups == ([{"name": "alias/demand-stream"}] if "alias/" in key_id else [])
    for token, provider in run.invoke_providers:
        assert "pulumi:providers:aws::aws::" in provider, token


def test_stream_kms_key_arn_overrides_the_lookup() -> None:
    override = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/override-0000-0000-0000-000000000000"
    run = _run_with_stream_key("alias/demand-stream", **{"dmd-pipeline:streamKmsKeyArn": override})
    assert _processor_statements(run)["DecryptChangeStream"]["Resource"] == [override]
    assert [args for token, args in run.invokes if token == "aws:kms/getAlias:getAlias"] == []


def test_an_unresolvable_stream_key_fails_the_preview() -> None:
    # The program's error (a StreamKeyError) reaches the engine wrapped in the resources that depended on it.
    with pytest.raises(ValueError, match=r"an alias of another account or region .* set streamKmsKeyArn"):
        _run_with_stream_key("arn:aws:kms:us-east-1:210987654321:alias/shared")


# Alarms that reach someone.


def test_every_alarm_notifies_the_topic_on_alarm_and_ok(run: ProgramRun) -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:prd3292-{run.stack}-demand-alarms"
    assert run.one("aws:sns/topic:Topic").inputs["name"] == f"prd3292-{run.stack}-demand-alarms"
    alarms = run.of_type(ALARM)
    assert sorted(alarm.inputs["name"].removeprefix(f"prd3292-{run.stack}-demand-") for alarm in alarms) == [
        "backfill-failed-executions",
        "curation-failed-invocations",
        "curator-erasure-deadline",
        "curator-errors",
        "processor-errors",
        "processor-failed-batches",
        "processor-iterator-age",
        "processor-quarantine-rate",
        "processor-stalled-mapping",
        "processor-throttles",
    ]
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == [topic], alarm.name
        assert alarm.inputs["okActions"] == [topic], alarm.name


def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(run: ProgramRun) -> None:
    key = run.one("aws:kms/key:Key")
    topic = run.one("aws:sns/topic:Topic")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    key_policy = {statement["Sid"]: statement for statement in json.loads(key.inputs["policy"])["Statement"]}
    assert key_policy["CloudWatchAlarmsEncryptToTheTopic"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert key_policy["AccountAdministersThroughIam"]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}
    assert run.one("aws:kms/alias:Alias").inputs["name"] == f"alias/prd3292-{run.stack}-demand-alarms"
    topic_policy = json.loads(run.one("aws:sns/topicPolicy:TopicPolicy").inputs["policy"])
    publish = {statement["Sid"]: statement for statement in topic_policy["Statement"]}["StackAlarmsPublish"]
    pattern = f"arn:aws:cloudwatch:us-east-1:{ACCOUNT_ID}:alarm:prd3292-{run.stack}-demand-*"
    assert publish["Condition"]["ArnLike"] == {"aws:SourceArn": pattern}


def test_prod_account_topics_have_their_subscriber(run: ProgramRun) -> None:
    subscriptions = run.of_type("aws:sns/topicSubscription:TopicSubscription")
    if run.stack in ("preprod1", "prod1"):
        assert [(s.inputs["protocol"], s.inputs["endpoint"]) for s in subscriptions] == [
            ("email", "demand-capture-alerts@ticketmaster.com")
        ]
        assert subscriptions[0].inputs["topic"] == run.one("aws:sns/topic:Topic").outputs["arn"]
    else:
        assert subscriptions == []


def test_an_existing_topic_is_used_as_is() -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:ops-alarms"
    config = {key: value for key, value in stack_config("prod1").items() if key != "dmd-pipeline:alarmSubscriptions"}
    run = run_program("prod1", config={**config, "dmd-pipeline:alarmTopicArn": topic})
    assert run.of_type("aws:sns/topic:Topic") == []
    assert run.of_type("aws:kms/key:Key") == []
    assert run.of_type("aws:sns/topicSubscription:TopicSubscription") == []
    alarms = run.of_type(ALARM)
    assert len(alarms) == 10
    assert all(alarm.inputs["alarmActions"] == [topic] == alarm.inputs["okActions"] for alarm in alarms)


def test_prod1_has_the_two_flow_alarms() -> None:
    run = program_run("prod1")
    alarms = {alarm.inputs["name"]: alarm.inputs for alarm in run.of_type(ALARM)}
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:prd3292-prod1-demand-alarms"
    stalled = alarms["prd3292-prod1-demand-processor-stalled-mapping"]
    queries = {query["id"]: query for query in stalled["metricQueries"]}
    assert queries["result"]["expression"] == "IF(FILL(incoming, 0) > 0 AND FILL(invocations, 0) == 0, 1, 0)"
    assert queries["result"]["returnData"] is True
    assert queries["incoming"]["metric"] == {
        "namespace": "AWS/Kinesis",
        "metricName": "IncomingRecords",
        "dimensions": {"StreamName": "prd3292-prod1-dmnd-table-stream"},
        "stat": "Sum",
        "period": 300,
    }
    assert queries["invocations"]["metric"]["dimensions"] == {
        "FunctionName": "prd3292-prod1-demand-processor",
        "Resource": "prd3292-prod1-demand-processor:live",
    }
    assert queries["invocations"]["metric"]["metricName"] == "Invocations"
    # 15 minutes: three five-minute periods in a row.
    assert (stalled["evaluationPeriods"], stalled["datapointsToAlarm"], stalled["threshold"]) == (3, 3, 1)
    assert stalled["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    quarantine = alarms["prd3292-prod1-demand-processor-quarantine-rate"]
    queries = {query["id"]: query for query in quarantine["metricQueries"]}
    assert queries["result"]["expression"] == "IF(FILL(received, 0) > 0, 100 * FILL(quarantined, 0) / received, 0)"
    for query_id, metric_name in (("received", "RecordsReceived"), ("quarantined", "RecordsQuarantined")):
        assert queries[query_id]["metric"]["namespace"] == "DmdPipeline"
        assert queries[query_id]["metric"]["metricName"] == metric_name
        assert queries[query_id]["metric"]["dimensions"] == {"service": "prd3292-prod1-demand-processor"}
        assert queries[query_id]["returnData"] is False
    assert quarantine["threshold"] == settings_from_stack_file("prod1").quarantine_rate_alarm_percent == 5
    assert quarantine["comparisonOperator"] == "GreaterThanThreshold"
    for alarm in (stalled, quarantine):
        assert alarm["alarmActions"] == [topic] == alarm["okActions"]
        assert alarm["treatMissingData"] == "notBreaching"
        assert "metricName" not in alarm  # metric math only
        assert "namespace" not in alarm
    ci = {p.name: p for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}["ci-policy"]
    readable = {s["Sid"]: s for s in json.loads(ci.inputs["policy"])["Statement"]}["ReadAlarms"]["Resource"]
    assert f"arn:aws:cloudwatch:us-east-1:{ACCOUNT_ID}:alarm:prd3292-prod1-demand-processor-stalled-mapping" in readable


def test_quarantine_threshold_comes_from_config() -> None:
    run = run_program("qa1", config={**stack_config("qa1"), "dmd-pipeline:quarantineRateAlarmPercent": "20"})
    (alarm,) = [a for a in run.of_type(ALARM) if a.inputs["name"].endswith("-quarantine-rate")]
    assert alarm.inputs["threshold"] == 20


# The dashboard.


def test_each_stack_has_its_dashboard(run: ProgramRun) -> None:
    dashboard = run.one("aws:cloudwatch/dashboard:Dashboard")
    assert dashboard.inputs["dashboardName"] == f"prd3292-{run.stack}-demand-pipeline"
    alarm_arns = [alarm.outputs["arn"] for alarm in run.of_type(ALARM)]
    function = f"prd3292-{run.stack}-demand-processor"
    expected = dashboard_body(
        PipelineDashboardArgs(
            dashboard_name=f"prd3292-{run.stack}-demand-pipeline",
            region="us-east-1",
            stream_name=f"prd3292-{run.stack}-dmnd-table-stream",
            function_name=function,
            metrics_namespace="DmdPipeline",
            service_name=function,
            failure_arrivals=DashboardMetric(
                "AWS/S3",
                "PutRequests",
                {"BucketName": run.outputs["failure_bucket_name"], "FilterId": "discarded-batches"},
                "Sum",
                "Batches given up",
            ),
        ),
        alarm_arns,
    )
    assert json.loads(dashboard.inputs["dashboardBody"]) == expected
    assert len(expected["widgets"][0]["properties"]["alarms"]) == 10


# Central logs.


@pytest.mark.parametrize("stack", STACKS)
def test_prod_account_previews_warn_while_logs_stay_local(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    run_program(stack)
    expected = (
        [
            f"{stack}: dmd-pipeline:logDestinationArn is unset: the function's logs are not shipped to the central log"
            " destination the replaced system used"
        ]
        if stack in ("preprod1", "prod1")
        else []
    )
    assert warned == expected
    destination = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:destination:central-logs"
    warned.clear()
    run_program(stack, config={**stack_config(stack), "dmd-pipeline:logDestinationArn": destination})
    assert warned == []


# Outputs for promotion.


def test_outputs_name_the_live_version_and_its_code(run: ProgramRun) -> None:
    (function,) = [f for f in run.of_type("aws:lambda/function:Function") if f.name == "processor-function"]
    alias = run.one("aws:lambda/alias:Alias")
    assert run.outputs["function_alias_version"] == alias.inputs["functionVersion"] == function.outputs["version"]
    expected = function.inputs.get("sourceCodeHash") or MOCK_CODE_SHA256
    assert run.outputs["function_code_sha256"] == function.outputs["codeSha256"] == expected
    outputs = StackOutputs.from_mapping(run.outputs, source=run.stack)
    assert outputs.function_alias_version == "1"
    assert outputs.as_dict()["function_code_sha256"] == expected


# Metrics whatever the log level.


def test_a_stack_logging_at_warning_keeps_lambdas_info_level_so_metrics_are_not_dropped() -> None:
    """EMF metric lines carry no level (Lambda counts them as INFO): filtering at WARN would drop every metric."""
    run = run_program("qa1", config={**stack_config("qa1"), "dmd-pipeline:logLevel": "WARNING"})
    functions = run.of_type("aws:lambda/function:Function")

    assert len(functions) == 3
    for function in functions:
        assert function.inputs["environment"]["variables"]["LOG_LEVEL"] == "WARNING", function.name
        assert function.inputs["loggingConfig"]["applicationLogLevel"] == "INFO", function.name
        assert function.inputs["loggingConfig"]["logFormat"] == "JSON", function.name


@pytest.mark.parametrize(
    ("log_level", "lambda_level"),
    [("DEBUG", "DEBUG"), ("INFO", "INFO"), ("WARNING", "INFO"), ("ERROR", "INFO"), ("CRITICAL", "INFO")],
)
def test_lambda_filters_application_logs_at_info_at_most(log_level: str, lambda_level: str) -> None:
    assert application_log_level(log_level) == lambda_level


def test_an_unknown_log_level_is_named() -> None:
    with pytest.raises(ValueError, match="'VERBOSE'"):
        application_log_level("VERBOSE")


def test_a_private_gitlabs_issuer_names_the_provider_and_the_trust_keys() -> None:
    run = run_program("qa1", config={**stack_config("qa1"), "dmd-pipeline:gitlabIssuerUrl": "https://oidc.tmaws.io"})
    role = next(role for role in run.of_type("aws:iam/role:Role") if role.name == "ci-role")
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]

    assert ("aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider", {"url": "https://oidc.tmaws.io"}) in [
        (token, {key: value for key, value in args.items() if key == "url"}) for token, args in run.invokes
    ]
    assert statement["Condition"]["StringEquals"]["oidc.tmaws.io:aud"] == "https://git.tmaws.io"
    assert not [key for key in json.dumps(statement["Condition"]).split('"') if key.startswith("git.tmaws.io:")]
