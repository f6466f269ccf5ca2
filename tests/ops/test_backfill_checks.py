"""The cutover checks of ``make backfill``: one line per failed check naming the fix, exit 2 before any export."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from ops import backfill
from ops.backfill_checks import CutoverFacts, check_cutover, cutover_problems, deployed_facts, local_facts
from sandbox.local_aws import LocalAws, local_aws
from sandbox.standins import LocalStandIns, read_standins

STANDIN_TAG_PREFIX = "dmd-sandbox-"  # the stand-ins' records on the local stream (sandbox.standins)

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TABLE = "prd3292-qa1-us-east-1-demand-table"
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/prd3292-qa1-dmnd-table-stream"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:prd3292-qa1-demand-capture:live"

READY = CutoverFacts(
    table=TABLE,
    stream_arn=STREAM,
    function=FUNCTION,
    destination_status="ACTIVE",
    destination_active_since=T - timedelta(days=3),
    pitr_status="ENABLED",
    earliest_restorable=T - timedelta(days=35),
    latest_restorable=T + timedelta(minutes=1),
    mapping_state="Enabled",
    starting_position="AT_TIMESTAMP",
    starting_position_timestamp=T - timedelta(minutes=5),
)


def test_the_runbook_cutover_passes():
    assert cutover_problems(READY, T) == []
    # a mapping that reads from earlier, or from the stream's start, reads every change from T - 5 min too
    assert cutover_problems(dataclasses.replace(READY, starting_position_timestamp=T - timedelta(hours=2)), T) == []
    assert cutover_problems(dataclasses.replace(READY, starting_position="TRIM_HORIZON"), T) == []
    late = dataclasses.replace(READY, starting_position="LATEST", mapping_created=T - timedelta(minutes=6))
    assert cutover_problems(late, T) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"destination_status": None},
            "is missing (the table's Kinesis streaming destination): enable it (aws dynamodb "
            f"enable-kinesis-streaming-destination --table-name {TABLE} --stream-arn {STREAM})",
        ),
        ({"destination_status": "ENABLING"}, "is ENABLING"),
        ({"destination_active_since": None}, "became ACTIVE is unknown: look up when it became ACTIVE"),
        (
            {"destination_active_since": T - timedelta(minutes=4)},
            "export time T 2026-12-01T09:00:00Z is less than 5 min after the streaming destination became ACTIVE at "
            "2026-12-01T08:56:00Z: run again at 2026-12-01T09:01:00Z or later",
        ),
        ({"pitr_status": "DISABLED"}, "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true"),
        ({"latest_restorable": None}, "reports no point-in-time recovery window"),
        (
            {"latest_restorable": T - timedelta(minutes=5)},
            "export time T 2026-12-01T09:00:00Z is outside the point-in-time recovery window of table "
            f"{TABLE} (2026-10-27T09:00:00Z..2026-12-01T08:55:00Z): choose a T inside it",
        ),
        ({"earliest_restorable": T + timedelta(seconds=1)}, "outside the point-in-time recovery window"),
        (
            {"mapping_state": None},
            f"no event source mapping from {STREAM} to {FUNCTION}: deploy the stack with "
            "dmd-pipeline:streamStartingPosition AT_TIMESTAMP and dmd-pipeline:streamStartTimestamp "
            "2026-12-01T08:55:00Z (T - 5 min) before the export",
        ),
        ({"mapping_state": "Disabled"}, "is Disabled: enable it (aws lambda update-event-source-mapping"),
        (
            {"starting_position_timestamp": T - timedelta(minutes=4)},
            "the event source mapping starts AT_TIMESTAMP 2026-12-01T08:56:00Z, after T - 5 min = 2026-12-01T08:55:00Z",
        ),
        (
            {"starting_position": "LATEST", "mapping_created": T - timedelta(minutes=1)},
            "starts at LATEST, from its creation 2026-12-01T08:59:00Z",
        ),
        ({"starting_position": "LATEST"}, "starts at LATEST, from its creation (time unknown)"),
        ({"starting_position": None}, "starting position is unknown: deploy the stack with"),
    ],
)
def test_each_failed_check_is_one_line_naming_the_fix(change: dict[str, Any], expected: str):
    problems = cutover_problems(dataclasses.replace(READY, **change), T)
    assert len(problems) == 1, problems
    assert "\n" not in problems[0]
    assert expected in problems[0]


def test_the_lead_is_the_callers():
    facts = dataclasses.replace(READY, destination_active_since=T - timedelta(seconds=3))
    assert cutover_problems(facts, T, timedelta(seconds=2)) == []
    [problem] = cutover_problems(facts, T, timedelta(seconds=4))
    assert "is less than 4 s after the streaming destination became ACTIVE" in problem
    with pytest.raises(ValueError, match="has no time zone"):
        cutover_problems(READY, datetime(2026, 12, 1, 9, 0))


# -- a deployed stack: the facts from AWS's answers ------------------------------------------------------------------
class _Session:
    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients

    def client(self, name: str) -> Any:
        return self.clients[name]


def _outputs(local: LocalAws) -> Any:
    return dataclasses.replace(local.outputs, table_name=TABLE, stream_arn=STREAM, function_alias_arn=FUNCTION)


def _stubbed_session() -> tuple[_Session, dict[str, Stubber]]:
    """A session whose clients answer as AWS would for a stack ready for its cutover at T - 5 min."""
    clients = {name: boto3.client(name, region_name="us-east-1") for name in ("dynamodb", "lambda", "cloudtrail")}
    stubs = {name: Stubber(client) for name, client in clients.items()}
    stubs["dynamodb"].add_response(
        "describe_kinesis_streaming_destination",
        {"TableName": TABLE, "KinesisDataStreamDestinations": [{"StreamArn": STREAM, "DestinationStatus": "ACTIVE"}]},
        {"TableName": TABLE},
    )
    enabled = {"requestParameters": {"tableName": TABLE, "streamArn": STREAM}}
    other = {"requestParameters": {"tableName": "another-table", "streamArn": STREAM}}
    stubs["cloudtrail"].add_response(
        "lookup_events",
        {
            "Events": [
                {"EventTime": T - timedelta(hours=1), "CloudTrailEvent": json.dumps(other)},
                {"EventTime": T - timedelta(days=2), "CloudTrailEvent": json.dumps(enabled)},
            ]
        },
    )
    stubs["dynamodb"].add_response(
        "describe_continuous_backups",
        {
            "ContinuousBackupsDescription": {
                "ContinuousBackupsStatus": "ENABLED",
                "PointInTimeRecoveryDescription": {
                    "PointInTimeRecoveryStatus": "ENABLED",
                    "EarliestRestorableDateTime": T - timedelta(days=35),
                    "LatestRestorableDateTime": T - timedelta(minutes=5),
                },
            }
        },
        {"TableName": TABLE},
    )
    stubs["lambda"].add_response(
        "list_event_source_mappings",
        {
            "EventSourceMappings": [
                {
                    "UUID": "6f1e5a4c-0b8d-4c43-9f3e-2a1b7c9d8e01",
                    "State": "Enabled",
                    "StartingPosition": "AT_TIMESTAMP",
                    "StartingPositionTimestamp": T - timedelta(minutes=10),
                    "LastModified": T - timedelta(minutes=20),
                }
            ]
        },
        {"EventSourceArn": STREAM, "FunctionName": FUNCTION},
    )
    for stub in stubs.values():
        stub.activate()
    return _Session(clients), stubs


def test_deployed_facts_come_from_the_apis(local: LocalAws):
    session, stubs = _stubbed_session()
    facts = deployed_facts(session, _outputs(local), now=T)
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    assert facts.destination_status == "ACTIVE"
    assert facts.destination_active_since == T - timedelta(days=2)
    assert (facts.earliest_restorable, facts.latest_restorable) == (T - timedelta(days=35), T - timedelta(minutes=5))
    assert (facts.mapping_state, facts.starting_position) == ("Enabled", "AT_TIMESTAMP")
    assert facts.starting_position_timestamp == T - timedelta(minutes=10)
    # AWS restores up to about 5 minutes ago: T must be chosen inside the window
    assert cutover_problems(facts, T - timedelta(minutes=5)) == []
    [problem] = cutover_problems(facts, T)
    assert "outside the point-in-time recovery window" in problem


def test_a_deployed_export_time_defaults_to_the_latest_restorable_time(local: LocalAws):
    session, _ = _stubbed_session()
    problems, export_time = check_cutover(session, _outputs(local), local=False)
    assert export_time == T - timedelta(minutes=5)  # LatestRestorableDateTime: the export's ExportTime
    assert problems == []


# -- the local AWS: make backfill refuses before requesting anything -----------------------------------------------
@pytest.fixture(scope="module")
def module_aws() -> Iterator[LocalAws]:
    with local_aws("dev1") as aws:
        yield aws


@pytest.fixture
def local(module_aws: LocalAws) -> LocalAws:
    """The module's local AWS as a new stack has it: no bridge and no mapping recorded on the stream, no export."""
    kinesis, stream = module_aws.client("kinesis"), module_aws.outputs.stream_name
    recorded = [tag["Key"] for tag in kinesis.list_tags_for_stream(StreamName=stream)["Tags"]]
    standins = [key for key in recorded if key.startswith(STANDIN_TAG_PREFIX)]
    if standins:
        kinesis.remove_tags_from_stream(StreamName=stream, TagKeys=standins)
    assert read_standins(kinesis, stream) == LocalStandIns(None, None, None, None, None)
    _nothing_exported(module_aws)
    return module_aws


def _nothing_exported(local: LocalAws) -> None:
    dynamodb = local.client("dynamodb")
    table_arn = dynamodb.describe_table(TableName=local.outputs.table_name)["Table"]["TableArn"]
    assert dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"] == []
    listed = local.client("s3").list_objects_v2(Bucket=local.outputs.bucket_name, Prefix="demand/exports/")
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.slow
def test_no_bridge_and_no_mapping_are_refused_before_any_export(local: LocalAws, capsys):
    assert backfill.main(["dev1"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"backfill: streaming destination of table {local.outputs.table_name} to ")
    assert "is missing (the sandbox bridge; start the local pipeline: make demo ARGS=--keep)" in lines[0]
    assert lines[1].startswith(f"backfill: no event source mapping from {local.outputs.stream_arn}")
    _nothing_exported(local)


@pytest.mark.slow
def test_a_fresh_pipeline_is_refused_for_five_minutes(local: LocalAws, capsys):
    started = datetime.now(UTC)
    local.pipeline(config=local.mapping_config(starting_position="AT_TIMESTAMP", starting_position_timestamp=started))
    created = datetime.now(UTC)
    assert backfill.main(["dev1"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[2].startswith("backfill: on the local AWS the 5 minutes can be shortened: make backfill STACK=dev1")
    assert "is less than 5 min after the streaming destination became ACTIVE" in lines[0]
    assert "the event source mapping starts AT_TIMESTAMP" in lines[1]
    _nothing_exported(local)
    # the facts as the sandbox recorded them on the stream
    facts = local_facts(local.session(), local.outputs)
    assert facts.starting_position == "AT_TIMESTAMP"
    assert facts.destination_active_since is not None
    started_ms = started.replace(microsecond=started.microsecond // 1000 * 1000)  # recorded in milliseconds
    assert started_ms <= facts.destination_active_since <= created  # the bridge became active as the pipeline began
    assert facts.starting_position_timestamp == started_ms


@pytest.mark.slow
def test_a_mapping_at_latest_created_after_t_minus_the_lead_is_refused(local: LocalAws, capsys):
    local.pipeline(config=local.mapping_config(starting_position="LATEST"))
    assert backfill.main(["dev1", "--lead-seconds", "60"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2
    assert "the event source mapping starts at LATEST, from its creation" in err
    _nothing_exported(local)


def test_the_lead_cannot_exceed_five_minutes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        backfill.main(["dev1", "--lead-seconds", "301"])
    assert exit_info.value.code == 2
    assert "--lead-seconds 301 must be between 0 and 300" in capsys.readouterr().err


def test_the_lead_is_five_minutes_on_a_deployed_stack(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        backfill.main(["qa1", "--lead-seconds", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--lead-seconds is for the local AWS only" in err
