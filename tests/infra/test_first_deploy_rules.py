"""Rules a stack must meet before its first real deploy: cutover position, alarm destination, the stream's key,
the dashboard body and the bounded named queries (pure functions and settings, no program run)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from components.alarm_topic import subscription_parts
from components.catalog import RAW_WINDOW_DAYS, curated_window, named_queries, recent_partitions
from components.dashboard import DashboardMetric, PipelineDashboardArgs, dashboard_body
from components.policies import alarm_topic_key_policy, alarm_topic_policy
from components.settings import PROJECT_ROOT, SettingsError, settings_from_stack_file
from components.stream_key import StreamKey, StreamKeyError, stream_key
from curator.tables import changes_spec
from pipeline.schema import arrow_schema
from sandbox.athena_duckdb import AthenaOnDuckDB

STACKS = ("dev1", "qa1", "preprod1", "prod1")
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-qa1-dmnd-table-stream"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:us-east-1:123456789012:key/{KEY_ID}"


def _stack_file(tmp_path: Path, source: str, stack: str, drop: tuple[str, ...] = (), **overrides: Any) -> Path:
    """A copy of ``Pulumi.<source>.yaml`` as stack ``stack``, without ``drop`` keys and with ``overrides``."""
    config = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{source}.yaml").read_text())["config"]
    config["dmd-pipeline:environmentTag"] = stack
    for key in drop:
        config.pop(f"dmd-pipeline:{key}", None)
    config.update({f"dmd-pipeline:{key}": value for key, value in overrides.items()})
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return tmp_path


# Cutover: where the mapping starts reading.


def test_stack_files_choose_a_starting_position() -> None:
    positions = {stack: settings_from_stack_file(stack).stream_starting_position for stack in STACKS}
    # Existing streams the replaced system still consumes: new records only until the cutover; prod1's own stream
    # is read from its first record.
    assert positions == {"dev1": "LATEST", "qa1": "LATEST", "preprod1": "LATEST", "prod1": "TRIM_HORIZON"}
    assert all(settings_from_stack_file(stack).stream_start_timestamp is None for stack in STACKS)


def test_an_existing_stream_requires_a_starting_position(tmp_path: Path) -> None:
    path = _stack_file(tmp_path, "qa1", "qa1", drop=("streamStartingPosition",))
    with pytest.raises(SettingsError) as raised:
        settings_from_stack_file("qa1", path)
    message = str(raised.value)
    assert message.startswith("Pulumi.qa1.yaml: dmd-pipeline:streamStartingPosition is required")
    assert "dmd-pipeline:streamStartTimestamp" in message
    assert "prd3292-qa1-dmnd-table-stream" in message


def test_a_created_stream_defaults_to_trim_horizon(tmp_path: Path) -> None:
    settings = settings_from_stack_file("prod1", _stack_file(tmp_path, "prod1", "prod1"))
    assert settings.creates_stream
    assert settings.stream_starting_position == "TRIM_HORIZON"


def test_at_timestamp_takes_the_cutover_time(tmp_path: Path) -> None:
    path = _stack_file(
        tmp_path, "qa1", "qa1", streamStartingPosition="AT_TIMESTAMP", streamStartTimestamp="2026-12-01T09:00:00Z"
    )
    settings = settings_from_stack_file("qa1", path)
    assert (settings.stream_starting_position, settings.stream_start_timestamp) == (
        "AT_TIMESTAMP",
        "2026-12-01T09:00:00Z",
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"streamStartingPosition": "AT_TIMESTAMP"},
            "dmd-pipeline:streamStartTimestamp is required when dmd-pipeline:streamStartingPosition is AT_TIMESTAMP",
        ),
        (
            {"streamStartingPosition": "LATEST", "streamStartTimestamp": "2026-12-01T09:00:00Z"},
            "dmd-pipeline:streamStartTimestamp is set ('2026-12-01T09:00:00Z') but dmd-pipeline:streamStartingPosition"
            " is LATEST",
        ),
        (
            {"streamStartingPosition": "AT_TIMESTAMP", "streamStartTimestamp": "2026-12-01 09:00"},
            "dmd-pipeline:streamStartTimestamp must be an ISO-8601 UTC time YYYY-MM-DDTHH:MM:SSZ,"
            " got '2026-12-01 09:00'",
        ),
        (
            {"streamStartingPosition": "AT_TIMESTAMP", "streamStartTimestamp": "2026-12-01T09:00:00+01:00"},
            "must be an ISO-8601 UTC time",
        ),
        (
            {"streamStartingPosition": "EARLIEST"},
            "dmd-pipeline:streamStartingPosition must be one of , TRIM_HORIZON, LATEST, AT_TIMESTAMP, got 'EARLIEST'",
        ),
    ],
)
def test_bad_starting_positions_are_refused(tmp_path: Path, overrides: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=r"^Pulumi\.qa1\.yaml: ") as raised:
        settings_from_stack_file("qa1", _stack_file(tmp_path, "qa1", "qa1", (), **overrides))
    assert expected in str(raised.value)


# Alarms must reach someone.


def test_prod_account_stacks_name_an_alarm_destination() -> None:
    for stack in STACKS:
        settings = settings_from_stack_file(stack)
        if settings.is_prod_account:
            assert settings.alarm_subscriptions == ("email:demand-capture-alerts@ticketmaster.com",), stack
        else:  # nonprod: the stack's own topic, no subscriber until someone asks for one
            assert (settings.alarm_subscriptions, settings.alarm_topic_arn) == ((), None), stack


@pytest.mark.parametrize("stack", ["preprod1", "prod1"])
def test_prod_account_refuses_alarms_that_reach_nobody(tmp_path: Path, stack: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from_stack_file(stack, _stack_file(tmp_path, stack, stack, drop=("alarmSubscriptions",)))
    message = str(raised.value)
    assert message.startswith(f"Pulumi.{stack}.yaml: alarms in the tm-prod account must reach someone")
    assert "dmd-pipeline:alarmSubscriptions" in message
    assert "dmd-pipeline:alarmTopicArn" in message


def test_an_existing_topic_is_enough_in_prod(tmp_path: Path) -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:ops-alarms"
    path = _stack_file(tmp_path, "prod1", "prod1", drop=("alarmSubscriptions",), alarmTopicArn=topic)
    settings = settings_from_stack_file("prod1", path)
    assert (settings.alarm_topic_arn, settings.alarm_subscriptions) == (topic, ())


def test_nonprod_may_run_without_subscribers(tmp_path: Path) -> None:
    assert settings_from_stack_file("qa1").alarm_subscriptions == ()
    assert settings_from_stack_file("qa1").alarm_topic_arn is None


def test_topic_and_subscriptions_together_are_refused(tmp_path: Path) -> None:
    path = _stack_file(tmp_path, "prod1", "prod1", alarmTopicArn="arn:aws:sns:us-east-1:123456789012:ops-alarms")
    with pytest.raises(SettingsError, match="set dmd-pipeline:alarmTopicArn or dmd-pipeline:alarmSubscriptions, not"):
        settings_from_stack_file("prod1", path)


@pytest.mark.parametrize(
    ("subscriptions", "bad"),
    [
        (["http:http://example.com/hook"], "http:http://example.com/hook"),
        (["email:not-an-address"], "email:not-an-address"),
        (["https:http://example.com/hook"], "https:http://example.com/hook"),
        (["sqs:queue-name"], "sqs:queue-name"),
        (["ops@example.com"], "ops@example.com"),
    ],
)
def test_malformed_subscriptions_are_refused_naming_the_entry(
    tmp_path: Path, subscriptions: list[str], bad: str
) -> None:
    path = _stack_file(tmp_path, "qa1", "qa1", alarmSubscriptions=subscriptions)
    with pytest.raises(SettingsError, match=r"^Pulumi\.qa1\.yaml: dmd-pipeline:alarmSubscriptions must be") as raised:
        settings_from_stack_file("qa1", path)
    assert repr(bad) in str(raised.value)


def test_subscriptions_are_protocol_and_endpoint() -> None:
    assert subscription_parts("email:a@example.com") == ("email", "a@example.com")
    assert subscription_parts("https:https://events.example.com/x?y=1") == ("https", "https://events.example.com/x?y=1")
    with pytest.raises(ValueError, match="<protocol>:<endpoint>"):
        subscription_parts("email")


def test_alarm_topic_policies_let_only_this_stacks_alarms_publish() -> None:
    pattern = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:prd3292-prod1-demand-*"
    topic = "arn:aws:sns:us-east-1:123456789012:prd3292-prod1-demand-alarms"
    policy = alarm_topic_policy(topic_arn=topic, account_id="123456789012", alarm_arns=pattern)
    by_sid = {statement["Sid"]: statement for statement in policy["Statement"]}
    assert by_sid["StackAlarmsPublish"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert by_sid["StackAlarmsPublish"]["Action"] == "sns:Publish"
    assert by_sid["StackAlarmsPublish"]["Condition"] == {
        "ArnLike": {"aws:SourceArn": pattern},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }
    assert all(statement["Resource"] == topic for statement in policy["Statement"])
    key = {statement["Sid"]: statement for statement in alarm_topic_key_policy(account_id="123456789012")["Statement"]}
    assert key["CloudWatchAlarmsEncryptToTheTopic"]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert key["AccountAdministersThroughIam"]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}


# The stream's KMS key, from what the lookup reports.


@pytest.mark.parametrize(
    ("encryption_type", "key_id", "expected"),
    [
        ("NONE", "", StreamKey()),
        ("KMS", "alias/aws/kinesis", StreamKey()),
        ("KMS", "arn:aws:kms:us-east-1:123456789012:alias/aws/kinesis", StreamKey()),
        ("KMS", KEY_ARN, StreamKey(key_arn=KEY_ARN)),
        ("KMS", KEY_ID, StreamKey(key_arn=KEY_ARN)),
        ("KMS", "alias/demand-stream", StreamKey(alias_name="alias/demand-stream")),
        (
            "KMS",
            "arn:aws:kms:us-east-1:123456789012:alias/demand-stream",
            StreamKey(alias_name="alias/demand-stream"),
        ),
        (
            "KMS",
            "arn:aws:kms:us-east-1:210987654321:key/other",
            StreamKey(key_arn="arn:aws:kms:us-east-1:210987654321:key/other"),
        ),
    ],
)
def test_the_key_to_grant_from_the_lookup(encryption_type: str, key_id: str, expected: StreamKey) -> None:
    found = stream_key(encryption_type, key_id, STREAM_ARN)
    assert found == expected
    assert found.needs_grant == (expected != StreamKey())


@pytest.mark.parametrize(
    ("key_id", "expected"),
    [
        ("arn:aws:kms:us-east-1:210987654321:alias/shared", "an alias of another account or region"),
        ("not a key", "neither a key ARN, key id nor alias"),
    ],
)
def test_unresolvable_keys_ask_for_the_override(key_id: str, expected: str) -> None:
    with pytest.raises(StreamKeyError, match=expected) as raised:
        stream_key("KMS", key_id, STREAM_ARN)
    assert "streamKmsKeyArn" in str(raised.value)


# The dashboard body.


def _dashboard_args() -> PipelineDashboardArgs:
    return PipelineDashboardArgs(
        dashboard_name="prd3292-qa1-demand-pipeline",
        region="us-east-1",
        stream_name="prd3292-qa1-dmnd-table-stream",
        function_name="prd3292-qa1-demand-processor",
        metrics_namespace="DmdPipeline",
        service_name="prd3292-qa1-demand-processor",
        failure_arrivals=DashboardMetric(
            "AWS/SQS", "NumberOfMessagesSent", {"QueueName": "q"}, "Sum", "Batches given up"
        ),
    )


def test_dashboard_shows_what_an_operator_looks_at_first() -> None:
    alarms = [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:a{index}" for index in range(6)]
    body = dashboard_body(_dashboard_args(), list(reversed(alarms)))
    widgets = body["widgets"]
    assert [widget["type"] for widget in widgets] == ["alarm", *["metric"] * 5]
    assert widgets[0]["properties"]["alarms"] == alarms
    series = {(row[0], row[1]): row for widget in widgets[1:] for row in widget["properties"]["metrics"]}
    assert set(series) == {
        ("AWS/Lambda", "IteratorAge"),
        ("AWS/Kinesis", "IncomingRecords"),
        ("DmdPipeline", "RecordsReceived"),
        ("DmdPipeline", "RowsWritten"),
        ("DmdPipeline", "RecordsQuarantined"),
        ("DmdPipeline", "RecordsFailed"),
        ("DmdPipeline", "Freshness"),
        ("DmdPipeline", "ObjectsWritten"),
        ("AWS/SQS", "NumberOfMessagesSent"),
    }
    assert series[("AWS/Lambda", "IteratorAge")][2:4] == ["FunctionName", "prd3292-qa1-demand-processor"]
    assert series[("DmdPipeline", "RecordsQuarantined")][2:4] == ["service", "prd3292-qa1-demand-processor"]
    assert series[("DmdPipeline", "Freshness")][-1]["stat"] == "Maximum"
    assert series[("AWS/SQS", "NumberOfMessagesSent")][2:4] == ["QueueName", "q"]
    # Laid out two per row without overlap, and serialisable as CloudWatch expects.
    assert [(widget["x"], widget["y"]) for widget in widgets] == [(0, 0), (12, 0), (0, 6), (12, 6), (0, 12), (12, 12)]
    assert json.loads(json.dumps(body)) == body


def test_dashboard_needs_its_alarms() -> None:
    with pytest.raises(ValueError, match="at least one alarm ARN"):
        dashboard_body(_dashboard_args(), [])


# Named queries read a bounded window: dt partitions of the raw table, hours of the curated change log.


def test_every_named_query_is_bounded() -> None:
    for window in (1, 7, 30):
        for query in named_queries("db", "tbl", window_days=window):
            if '"db"."tbl"' in query.sql:
                assert f"WHERE {recent_partitions(RAW_WINDOW_DAYS)}" in query.sql, (window, query.name)
            if '"db"."registration_changes"' in query.sql:
                days = window if query.name == "demand_per_event_per_day" else RAW_WINDOW_DAYS
                assert curated_window(days) in query.sql, (window, query.name)
            # registrations is read whole: one row per live registration, however long the lake's history
    assert recent_partitions(7) == "dt >= date_format(current_timestamp - INTERVAL '6' DAY, '%Y-%m-%d')"
    assert curated_window(7) == "change_time >= date_trunc('day', current_timestamp - INTERVAL '6' DAY)"
    for bound in (recent_partitions, curated_window):
        with pytest.raises(ValueError, match="window_days must be at least 1, got 0"):
            bound(0)


def test_the_window_drops_older_partitions_in_duckdb() -> None:
    """The same SQL the workgroup holds, transpiled as the sandbox does: rows outside the window are not read."""
    now = datetime.now(UTC).replace(microsecond=0)
    schema = arrow_schema().append(pa.field("dt", pa.string())).append(pa.field("hour", pa.string()))
    rows = []
    for days_ago, fan in ((0, "today"), (1, "yesterday"), (2, "recent"), (9, "old")):
        change_time = now - timedelta(days=days_ago)
        row = dict.fromkeys(schema.names)
        row.update(
            event_id="E1",
            fan_id=fan,
            status="REGISTERED",
            quantity=1,
            op="INSERT",
            change_id=f"c-{fan}",
            change_time=change_time,
            change_time_us=(change_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1),
            sequence_number=str(days_ago + 1),
            dt=f"{change_time:%Y-%m-%d}",
            hour=f"{change_time:%H}",
        )
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=schema)
    runner = AthenaOnDuckDB(now=now)
    runner.add_rows("db", "tbl", table)  # not yet curated: the raw window is two days
    runner.add_rows("db", "registration_changes", changes_spec().arrow_schema.empty_table())
    queries = {query.name: query.sql for query in named_queries("db", "tbl", window_days=7)}
    assert sorted(row["fan_id"] for row in runner.rows(queries["changes_not_yet_curated"])) == ["today", "yesterday"]
    log = table.select(changes_spec().arrow_schema.names)
    runner.add_rows("db", "registration_changes", log)  # curated: the log's window is the query's
    assert sorted(row["fan_id"] for row in runner.rows(queries["changes_not_yet_curated"])) == []
    per_day = runner.rows(queries["demand_per_event_per_day"])
    assert [(row["event_id"], row["fans"]) for row in per_day] == [("E1", 1)] * 3  # today, yesterday, 2 days ago
    narrow = {query.name: query.sql for query in named_queries("db", "tbl", window_days=1)}
    per_day = runner.rows(narrow["demand_per_event_per_day"])
    assert [(row["dt"], row["fans"]) for row in per_day] == [(f"{now:%Y-%m-%d}", 1)]
