"""make backfill against a deployed stack: export, manifest, the state machine, the count check.

DynamoDB and Step Functions are botocore Stubber clients (each call and its parameters asserted), S3 is moto
holding the export's manifest and the counts objects the backfill function would have written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from ops import backfill
from ops.backfill import manifest_files_key, run_deployed
from ops.outputs import BoundStack, StackOutputs
from tests.ops.conftest import outputs_values

REGION = "us-east-1"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/prd3292-qa1-us-east-1-demand-table"
EXPORT_ID = "01764201600000-a1b2c3d4"
EXPORT_ARN = f"{TABLE_ARN}/export/{EXPORT_ID}"
EXPORT_TIME = datetime(2026, 11, 30, 9, 5, 0, tzinfo=UTC)
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:prd3292-qa1-demand-backfill"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:prd3292-qa1-demand-backfill:run"
MAP_RUN = f"{MACHINE.replace(':stateMachine:', ':mapRun:')}/BackfillDataFiles:run"
FILES = {"aaaa1111": 1200, "bbbb2222": 800, "cccc3333": 5}


@pytest.fixture(autouse=True)
def cutover(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The cutover checks (ops.backfill_checks, tested on their own) pass and choose T = EXPORT_TIME."""
    calls: list[dict[str, Any]] = []

    def check(session: Any, outputs: StackOutputs, **kwargs: Any) -> tuple[list[str], datetime]:
        calls.append(kwargs)
        return [], EXPORT_TIME

    monkeypatch.setattr(backfill, "check_cutover", check)
    return calls


@pytest.fixture
def outputs() -> StackOutputs:
    values = outputs_values(bucket_name="prd3292.qa1.us-east-1.demand-capture.tmaws")
    return StackOutputs.from_mapping(values, source="test")


def _data_key(prefix: str, stem: str) -> str:
    return f"{prefix}/AWSDynamoDB/{EXPORT_ID}/data/{stem}.json.gz"


class _Session:
    """boto3-like session: moto S3, stubbed DynamoDB and Step Functions."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients

    def client(self, name: str) -> Any:
        return self.clients[name]


@pytest.fixture
def s3(outputs: StackOutputs, aws: None) -> Any:
    """moto S3 in this process (the ``aws`` fixture: no endpoint or profile of a local server leaks in)."""
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=outputs.bucket_name)
    return client


def _export_description(prefix: str, status: str) -> dict[str, Any]:
    description: dict[str, Any] = {
        "ExportArn": EXPORT_ARN,
        "ExportStatus": status,
        "TableArn": TABLE_ARN,
        "S3Bucket": "prd3292.qa1.us-east-1.demand-capture.tmaws",
        "S3Prefix": prefix,
        "ExportFormat": "DYNAMODB_JSON",
    }
    if status == "COMPLETED":
        description |= {
            "ExportTime": EXPORT_TIME,
            "ItemCount": sum(FILES.values()),
            "ExportManifest": f"{prefix}/AWSDynamoDB/{EXPORT_ID}/manifest-summary.json",
        }
    return description


def _stub_dynamodb(outputs: StackOutputs) -> tuple[Any, Stubber, dict[str, str]]:
    client = boto3.client("dynamodb", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    table = {"TableName": outputs.table_name}
    seen: dict[str, str] = {}
    stubber.add_response("describe_table", {"Table": {"TableArn": TABLE_ARN, "TableName": outputs.table_name}}, table)
    return client, stubber, seen


def _write_manifest_and_counts(s3: Any, bucket: str, prefix: str, *, skip: str | None = None, short: str | None = None):
    lines = [
        json.dumps({"itemCount": count, "md5Checksum": "x", "etag": "y", "dataFileS3Key": _data_key(prefix, stem)})
        for stem, count in FILES.items()
    ]
    s3.put_object(Bucket=bucket, Key=f"{prefix}/AWSDynamoDB/{EXPORT_ID}/manifest-files.json", Body="\n".join(lines))
    for stem, count in FILES.items():
        if stem == skip:
            continue
        # each file: one line quarantined; the short file's counts miss that line
        rows, quarantined = count - 1, (0 if stem == short else 1)
        body = json.dumps({"items": count, "rows": rows, "quarantined": quarantined})
        s3.put_object(Bucket=bucket, Key=f"demand/snapshots/export_id={EXPORT_ID}/_{stem}.counts.json", Body=body)


def _run(
    outputs: StackOutputs, s3: Any, *, status: str = "SUCCEEDED", skip: str | None = None, short: str | None = None
):
    dynamodb, dynamo_stub, _ = _stub_dynamodb(outputs)
    captured: dict[str, Any] = {}

    def export_request(**params: Any) -> None:
        captured.update(params)

    # The export request: into the stack's bucket under demand/exports/<request time>, DynamoDB JSON.
    dynamo_stub.add_response(
        "export_table_to_point_in_time",
        {"ExportDescription": _export_description("PENDING", "IN_PROGRESS")},
        {
            "TableArn": TABLE_ARN,
            "S3Bucket": outputs.bucket_name,
            "S3Prefix": ANY,
            "ExportFormat": "DYNAMODB_JSON",
            "ExportTime": EXPORT_TIME,  # the T the cutover checks checked
        },
    )
    dynamo_stub.add_response(
        "describe_export",
        {"ExportDescription": _export_description("PENDING", "IN_PROGRESS")},
        {"ExportArn": EXPORT_ARN},
    )
    sfn = boto3.client("stepfunctions", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sfn_stub = Stubber(sfn)
    # The prefix is chosen at request time: write the manifest once the request is made (in describe_export's turn).
    original = dynamodb.describe_export

    def describe_export(**kwargs: Any) -> Any:
        prefix = captured["S3Prefix"]
        _write_manifest_and_counts(s3, outputs.bucket_name, prefix, skip=skip, short=short)
        original(**kwargs)  # consumes the stubbed IN_PROGRESS answer: the command keeps waiting
        return {"ExportDescription": _export_description(prefix, "COMPLETED")}

    original_request = dynamodb.export_table_to_point_in_time

    def request(**kwargs: Any) -> Any:
        export_request(**kwargs)
        answer = original_request(**kwargs)
        answer["ExportDescription"]["S3Prefix"] = kwargs["S3Prefix"]
        return answer

    dynamodb.export_table_to_point_in_time = request
    dynamodb.describe_export = describe_export
    sfn_stub.add_response(
        "start_execution",
        {"executionArn": EXECUTION, "startDate": EXPORT_TIME},
        {"stateMachineArn": MACHINE, "name": ANY, "input": ANY},
    )
    running = {"executionArn": EXECUTION, "stateMachineArn": MACHINE, "status": "RUNNING", "startDate": EXPORT_TIME}
    sfn_stub.add_response("describe_execution", running, {"executionArn": EXECUTION})
    sfn_stub.add_response("list_map_runs", {"mapRuns": []}, {"executionArn": EXECUTION})
    ended = {**running, "status": status, "stopDate": EXPORT_TIME}
    if status != "SUCCEEDED":
        ended |= {"error": "States.ExceedToleratedFailureThreshold", "cause": "one data file failed"}
    sfn_stub.add_response("describe_execution", ended, {"executionArn": EXECUTION})
    map_run = {"executionArn": EXECUTION, "mapRunArn": MAP_RUN, "stateMachineArn": MACHINE, "startDate": EXPORT_TIME}
    sfn_stub.add_response("list_map_runs", {"mapRuns": [map_run]}, {"executionArn": EXECUTION})
    counts = {
        "pending": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 0,
        "timedOut": 0,
        "aborted": 0,
        "total": 3,
        "resultsWritten": 3,
    }
    sfn_stub.add_response(
        "describe_map_run",
        {
            "mapRunArn": MAP_RUN,
            "executionArn": EXECUTION,
            "status": "SUCCEEDED",
            "startDate": EXPORT_TIME,
            "maxConcurrency": 100,
            "toleratedFailurePercentage": 0.0,
            "toleratedFailureCount": 0,
            "itemCounts": counts,
            "executionCounts": counts,
        },
        {"mapRunArn": MAP_RUN},
    )
    session = _Session({"dynamodb": dynamodb, "s3": s3, "stepfunctions": sfn})
    with dynamo_stub, sfn_stub:
        original_start = sfn.start_execution

        def start(**kwargs: Any) -> Any:
            captured["execution"] = kwargs
            return original_start(**kwargs)

        sfn.start_execution = start
        report = run_deployed(outputs, session=session, poll_seconds=0.0)
        dynamo_stub.assert_no_pending_responses()
        sfn_stub.assert_no_pending_responses()
    return report, captured


def test_a_deployed_backfill_runs_the_state_machine_and_checks_every_file(
    outputs: StackOutputs, s3: Any, cutover: list[dict[str, Any]]
) -> None:
    report, captured = _run(outputs, s3)
    assert cutover == [{"local": False, "lead": backfill.DEFAULT_LEAD}]
    assert captured["ExportTime"] == EXPORT_TIME
    prefix = captured["S3Prefix"]
    assert prefix.startswith("demand/exports/")
    execution = captured["execution"]
    assert execution["stateMachineArn"] == outputs.backfill_state_machine_arn == MACHINE
    assert execution["name"].startswith(f"{EXPORT_ID}-")
    assert json.loads(execution["input"]) == {
        "export_bucket": outputs.bucket_name,
        "export_time": "2026-11-30T09:05:00.000Z",
        "manifest_files_key": f"{prefix}/AWSDynamoDB/{EXPORT_ID}/manifest-files.json",
    }
    assert report.problems == []
    assert (report.export_id, report.item_count, report.export_time) == (EXPORT_ID, 2005, "2026-11-30T09:05:00.000Z")
    assert report.totals() == {"data files": 3, "items": 2005, "rows": 2002, "quarantined": 3, "already done": 0}
    assert sorted(outcome.data_key for outcome in report.files) == sorted(_data_key(prefix, s) for s in FILES)


def test_a_file_without_counts_and_a_failed_execution_are_reported(outputs: StackOutputs, s3: Any) -> None:
    report, captured = _run(outputs, s3, status="FAILED", skip="cccc3333")
    missing = _data_key(captured["S3Prefix"], "cccc3333")
    assert report.problems == [
        f"execution {EXECUTION} FAILED States.ExceedToleratedFailureThreshold",
        f"{missing}: failed: no counts object: the file was not back-filled",
    ]
    assert report.totals() == {"data files": 3, "items": 2005, "rows": 1998, "quarantined": 2, "already done": 0}


def test_a_file_short_of_its_manifest_item_count_fails_the_check(outputs: StackOutputs, s3: Any) -> None:
    report, captured = _run(outputs, s3, short="bbbb2222")
    short = _data_key(captured["S3Prefix"], "bbbb2222")
    assert report.problems == [f"{short}: 800 items but 799 rows + quarantined"]


def test_manifest_files_key_comes_from_the_export_summary() -> None:
    summary = {
        "ExportArn": EXPORT_ARN,
        "ExportManifest": f"demand/exports/x/AWSDynamoDB/{EXPORT_ID}/manifest-summary.json",
    }
    assert manifest_files_key(summary) == f"demand/exports/x/AWSDynamoDB/{EXPORT_ID}/manifest-files.json"
    with pytest.raises(backfill.BackfillError, match="reports no manifest"):
        manifest_files_key({"ExportArn": EXPORT_ARN})


def test_main_takes_the_deployed_path_with_the_bound_stack(
    monkeypatch: pytest.MonkeyPatch, outputs: StackOutputs, capsys
):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bound: list[str] = []

    def _bind(stack: str, outputs_file: str | None = None) -> BoundStack:
        bound.append(stack)
        return BoundStack(stack, outputs, outputs.account_id)

    def fake_run(given: StackOutputs, **kwargs: Any) -> backfill.BackfillReport:
        assert given is outputs
        report = backfill.BackfillReport(EXPORT_ARN, EXPORT_ID, "2026-11-30T09:05:00.000Z", 5)
        report.files = [backfill.FileOutcome("k", 5, {"rows": 5, "quarantined": 0})]
        return report

    monkeypatch.setattr(backfill, "bind_stack", _bind)
    monkeypatch.setattr(backfill, "run_deployed", fake_run)
    assert backfill.main(["qa1"]) == 0
    assert bound == ["qa1"]
    out = capsys.readouterr().out
    assert "counts match" in out
    assert out.splitlines()[-1] == (
        f"publish it: pulumi config set dmd-pipeline:snapshotExportId {EXPORT_ID} --stack qa1 && "
        "pulumi config set dmd-pipeline:snapshotExportTime 2026-11-30T09:05:00.000Z --stack qa1"
    )


def test_an_aws_refusal_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, outputs: StackOutputs, capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    def refused(given: StackOutputs, **kwargs: Any) -> backfill.BackfillReport:
        raise ClientError(
            {"Error": {"Code": "StateMachineDoesNotExist", "Message": f"State Machine Does Not Exist: '{MACHINE}'"}},
            "StartExecution",
        )

    monkeypatch.setattr(backfill, "bind_stack", lambda stack, outputs_file=None: BoundStack(stack, outputs, None))
    monkeypatch.setattr(backfill, "run_deployed", refused)
    assert backfill.main(["qa1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("backfill: qa1: An error occurred (StateMachineDoesNotExist) when calling the StartExecution")


def test_a_failed_cutover_check_requests_no_export(monkeypatch: pytest.MonkeyPatch, outputs: StackOutputs) -> None:
    problem = "the streaming destination is not ACTIVE"
    monkeypatch.setattr(backfill, "check_cutover", lambda session, outputs, **kwargs: ([problem], EXPORT_TIME))
    dynamodb = boto3.client("dynamodb", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(dynamodb) as stubber:  # no response queued: any DynamoDB call would fail the test
        with pytest.raises(backfill.PreconditionError, match=problem):
            run_deployed(outputs, session=_Session({"dynamodb": dynamodb, "s3": None, "stepfunctions": None}))
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("quarantined", "argv", "status"),
    [
        (0, [], 0),
        (1, [], 0),
        (2, [], 1),
        (2, ["--max-quarantined-percent", "0.2"], 0),
        (1, ["--max-quarantined-percent", "0"], 1),
    ],
)
def test_publishing_is_recommended_only_below_the_quarantine_threshold(  # noqa: PLR0917 - fixtures + parameters
    monkeypatch: pytest.MonkeyPatch, outputs: StackOutputs, capsys, quarantined: int, argv: list[str], status: int
):
    """1,000 items: the default 0.1 % allows one quarantined line; the counts match in every case."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    def fake_run(given: StackOutputs, **kwargs: Any) -> backfill.BackfillReport:
        report = backfill.BackfillReport(EXPORT_ARN, EXPORT_ID, "2026-11-30T09:05:00.000Z", 1000)
        report.files = [backfill.FileOutcome("k", 1000, {"rows": 1000 - quarantined, "quarantined": quarantined})]
        return report

    bound = BoundStack("qa1", outputs, "123456789012")
    monkeypatch.setattr(backfill, "bind_stack", lambda stack, outputs_file=None, **_: bound)
    monkeypatch.setattr(backfill, "run_deployed", fake_run)
    assert backfill.main(["qa1", *argv]) == status
    captured = capsys.readouterr()
    assert "counts match" in captured.out
    assert ("publish it:" in captured.out) is (status == 0)
    if status:
        assert f"{quarantined:,} of 1,000 items quarantined" in captured.err
        assert captured.out.splitlines()[-1].startswith("backfill: do not publish this snapshot")


@pytest.mark.parametrize(
    ("export", "refused"),
    [
        ({"ExportType": "FULL_EXPORT", "ExportFormat": "DYNAMODB_JSON"}, None),
        ({}, None),  # the API's defaults, which the local AWS leaves out
        ({"ExportType": "INCREMENTAL_EXPORT", "ExportFormat": "DYNAMODB_JSON"}, "INCREMENTAL_EXPORT in DYNAMODB_JSON"),
        ({"ExportType": "FULL_EXPORT", "ExportFormat": "ION"}, "FULL_EXPORT in ION"),
    ],
)
def test_only_a_full_dynamodb_json_export_can_become_a_snapshot(export: dict[str, str], refused: str | None):
    described = {"ExportArn": EXPORT_ARN, **export}
    if refused is None:
        backfill.check_export_kind(described)
        return
    with pytest.raises(backfill.PreconditionError, match=f"is a {refused}: a snapshot needs a FULL_EXPORT"):
        backfill.check_export_kind(described)


def test_an_export_arn_of_an_ion_export_is_refused_before_anything_runs(outputs: StackOutputs):
    class _Dynamodb:
        def describe_table(self, TableName: str) -> dict[str, Any]:  # noqa: N803
            return {"Table": {"TableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t"}}

        def list_exports(self, TableArn: str) -> dict[str, Any]:  # noqa: N803
            return {"ExportSummaries": [{"ExportArn": EXPORT_ARN}]}

        def describe_export(self, ExportArn: str) -> dict[str, Any]:  # noqa: N803
            description = {"ExportArn": ExportArn, "ExportType": "FULL_EXPORT", "ExportFormat": "ION"}
            return {"ExportDescription": {**description, "ExportStatus": "COMPLETED"}}

    with pytest.raises(backfill.PreconditionError, match="ION"):
        backfill._request_export(_Dynamodb(), outputs, 1.0, EXPORT_ARN)
