"""The curator's entry point: settings from the environment (errors name the variable), and one run per
invocation against the local AWS."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest

from curator import handler as entry
from curator.erasure import ROWS_PER_RUN
from curator.erasure_requests import ErasureRequest
from curator.exports import REQUEST_TIME_FORMAT
from curator.tables import CHANGES_TABLE
from pipeline.exceptions import ConfigError
from pipeline.snapshot import DEFAULT_SNAPSHOT_PREFIX
from tests.curator.conftest import PREFIX, CuratedLake, generated_rows

VALID = {"OUTPUT_BUCKET": "demand-bucket", "GLUE_DATABASE": "prd3292_dev1_demand"}


def test_settings_defaults():
    settings = entry.load_curator_settings(VALID)
    assert settings.bucket == "demand-bucket"
    assert settings.raw_prefix == "demand/events/"
    assert settings.tables_prefix == "curated/"
    assert settings.time_travel == timedelta(days=7)
    assert settings.delete_grace == timedelta(minutes=15)
    assert settings.export_retention == timedelta(days=14)
    assert entry.load_curator_settings({**VALID, "EXPORT_RETENTION_DAYS": "3"}).export_retention == timedelta(days=3)
    assert settings.location(CHANGES_TABLE) == "s3://demand-bucket/curated/registration_changes"


def test_erasure_settings_are_optional_and_read_from_their_variables():
    settings = entry.load_curator_settings(VALID)
    assert settings.erasure_salt == ""
    assert settings.failure_bucket is None
    assert settings.quarantine_prefix == "demand/quarantine/"
    assert settings.snapshot_prefix == DEFAULT_SNAPSHOT_PREFIX
    assert settings.exports_prefix == "demand/exports/"
    given = entry.load_curator_settings(
        {
            **VALID,
            "ERASURE_SALT": " s3cret ",
            "FAILURE_BUCKET": "demand-failures",
            "QUARANTINE_PREFIX": "q/",
            "EXPORTS_PREFIX": "x/",
            "ERASURE_ROWS_PER_RUN": "2500000",
        }
    )
    assert (given.erasure_salt, given.failure_bucket, given.quarantine_prefix, given.exports_prefix) == (
        "s3cret",
        "demand-failures",
        "q/",
        "x/",
    )
    assert given.erasure_rows_per_run == 2_500_000
    assert settings.erasure_rows_per_run == ROWS_PER_RUN  # unset: the curator's default
    assert set(entry.ERASURE_VARIABLES) == {
        "ERASURE_SALT",
        "FAILURE_BUCKET",
        "QUARANTINE_PREFIX",
        "ERASURE_ROWS_PER_RUN",
    }
    assert set(entry.ERASURE_VARIABLES).isdisjoint(entry.ENVIRONMENT_VARIABLES)


def test_a_published_snapshot_is_read_from_its_variables():
    settings = entry.load_curator_settings(
        {**VALID, "SNAPSHOT_EXPORT_ID": "01774998000000-a1b2c3d4", "SNAPSHOT_EXPORT_TIME": "2026-12-01T10:05:00+01:00"}
    )
    assert settings.snapshot is not None
    assert settings.snapshot.export_id == "01774998000000-a1b2c3d4"
    assert settings.snapshot.export_time == datetime(2026, 12, 1, 9, 5, tzinfo=UTC)
    assert settings.snapshot.objects_prefix == f"{DEFAULT_SNAPSHOT_PREFIX}export_id=01774998000000-a1b2c3d4/"
    assert entry.load_curator_settings(VALID).snapshot is None
    assert {"SNAPSHOT_EXPORT_ID", "SNAPSHOT_EXPORT_TIME", "SNAPSHOT_PREFIX"} <= set(entry.ENVIRONMENT_VARIABLES)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"OUTPUT_BUCKET": ""}, "OUTPUT_BUCKET"),
        ({"GLUE_DATABASE": "Bad-Name"}, "GLUE_DATABASE"),
        ({"TIME_TRAVEL_DAYS": "0"}, "TIME_TRAVEL_DAYS"),
        ({"TIME_TRAVEL_DAYS": "week"}, "TIME_TRAVEL_DAYS"),
        ({"CURATION_DELETE_GRACE_MINUTES": "-1"}, "CURATION_DELETE_GRACE_MINUTES"),
        ({"CURATED_PREFIX": "/curated"}, "CURATED_PREFIX"),
        ({"CURATED_PREFIX": "demand/"}, "CURATED_PREFIX"),
        ({"FAILURE_BUCKET": "Not_A_Bucket"}, "FAILURE_BUCKET='Not_A_Bucket'"),
        ({"QUARANTINE_PREFIX": "quarantine"}, "QUARANTINE_PREFIX='quarantine'"),
        ({"EXPORTS_PREFIX": "exports"}, "EXPORTS_PREFIX='exports'"),
        ({"EXPORT_RETENTION_DAYS": "0"}, "EXPORT_RETENTION_DAYS=0"),
        ({"EXPORT_RETENTION_DAYS": "two weeks"}, "EXPORT_RETENTION_DAYS='two weeks'"),
        ({"ERASURE_ROWS_PER_RUN": "0"}, "ERASURE_ROWS_PER_RUN=0"),
        ({"ERASURE_ROWS_PER_RUN": "40M"}, "ERASURE_ROWS_PER_RUN='40M'"),
        ({"SNAPSHOT_EXPORT_ID": "01774998000000-a1b2c3d4"}, "SNAPSHOT_EXPORT_TIME is required"),
        ({"SNAPSHOT_EXPORT_TIME": "2026-12-01T09:05:00Z"}, "SNAPSHOT_EXPORT_ID is required"),
        (
            {"SNAPSHOT_EXPORT_ID": "export/1", "SNAPSHOT_EXPORT_TIME": "2026-12-01T09:05:00Z"},
            "SNAPSHOT_EXPORT_ID='export/1'",
        ),
        (
            {"SNAPSHOT_EXPORT_ID": "01774998000000-a1b2c3d4", "SNAPSHOT_EXPORT_TIME": "2026-12-01T09:05:00"},
            "SNAPSHOT_EXPORT_TIME='2026-12-01T09:05:00'",
        ),
        (
            {"SNAPSHOT_EXPORT_ID": "01774998000000-a1b2c3d4", "SNAPSHOT_EXPORT_TIME": "yesterday"},
            "SNAPSHOT_EXPORT_TIME='yesterday'",
        ),
        (
            {
                "SNAPSHOT_EXPORT_ID": "01774998000000-a1b2c3d4",
                "SNAPSHOT_EXPORT_TIME": "2026-12-01T09:05:00Z",
                "SNAPSHOT_PREFIX": "demand/events/snapshots/",
            },
            "SNAPSHOT_PREFIX='demand/events/snapshots/' and OUTPUT_PREFIX",
        ),
    ],
)
def test_invalid_settings_name_the_variable(override, named):
    with pytest.raises(ConfigError, match=named):
        entry.load_curator_settings({**VALID, **override})


def _invoked_against(lake: CuratedLake, monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """The function's environment pointed at the lake, and a fresh execution environment (no curator yet)."""
    for name, value in {
        "OUTPUT_BUCKET": lake.bucket,
        "OUTPUT_PREFIX": PREFIX,
        "GLUE_DATABASE": lake.database,
        "AWS_ENDPOINT_URL": lake.endpoint_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **variables,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(entry, "_state", {})


def _published(stdout: str) -> dict[str, float]:
    """The metrics of the invocation's EMF line(s), by name (CloudWatch reads them from the function's stdout)."""
    values: dict[str, float] = {}
    for line in stdout.splitlines():
        document = json.loads(line) if line.startswith("{") else {}
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            assert directive["Namespace"] == "DmdPipeline"
            assert directive["Dimensions"] == [["service"]]
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                values[metric["Name"]] = value[0] if isinstance(value, list) else value
    return values


def test_an_invocation_runs_one_curation(lake: CuratedLake, monkeypatch: pytest.MonkeyPatch):
    _invoked_against(lake, monkeypatch)
    lake.write(generated_rows(40))

    summary = entry.handler({}, None)

    assert summary["changes_added"] == 40
    assert summary["conflict"] is None
    assert lake.table(CHANGES_TABLE).scan().to_arrow().num_rows == 40
    again = entry.handler({}, None)
    assert again["raw_objects_read"] == 0


def test_an_invocation_publishes_its_counts_and_the_age_of_the_oldest_pending_request(
    lake: CuratedLake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    now = datetime(2026, 4, 3, 12, tzinfo=UTC)
    _invoked_against(lake, monkeypatch, ERASURE_SALT="salt")
    monkeypatch.setattr(entry, "_now", lambda: now)
    lake.write(generated_rows(40))
    # a request 30 hours old that stays pending: an object the erasure must search cannot be read
    request = ErasureRequest.new(("fan-pending",), now=now - timedelta(hours=30), token="0000000a")
    lake.s3.put_object(Bucket=lake.bucket, Key=request.key, Body=request.to_json(), IfNoneMatch="*")
    lake.s3.put_object(Bucket=lake.bucket, Key="demand/quarantine/dt=2026-04-01/broken.jsonl.gz", Body=b"not gzip")
    # an export past its retention whose snapshot holds it
    export = f"demand/exports/{now - timedelta(days=30):{REQUEST_TIME_FORMAT}}/AWSDynamoDB/01700000000000-0000000a/"
    item = gzip.compress(b'{"Item": {"sk": {"S": "FAN#fan-kept"}}}\n')
    lake.s3.put_object(Bucket=lake.bucket, Key=f"{export}data/a.json.gz", Body=item)
    counts = "demand/snapshots/export_id=01700000000000-0000000a/_a.counts.json"
    lake.s3.put_object(Bucket=lake.bucket, Key=counts, Body=b"{}")
    capsys.readouterr()

    with pytest.raises(entry.CurationFailedError, match="erasure left pending: 1 object"):
        entry.handler({}, None)

    published = _published(capsys.readouterr().out)
    assert published["OldestPendingErasureAgeHours"] == 30.0  # the deadline alarm's input
    assert (published["RawObjectsCurated"], published["ChangesAdded"], published["ExportsExpired"]) == (1, 40, 1)
    assert (published["ErasureRequestsCompleted"], published["RawObjectsUnreadable"]) == (0, 0)
    assert "RunsFailed" not in published


def test_a_run_that_fails_publishes_it(
    lake: CuratedLake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    _invoked_against(lake, monkeypatch, OUTPUT_BUCKET=f"{lake.bucket}-missing")
    capsys.readouterr()

    with pytest.raises(OSError, match="NO_SUCH_BUCKET"):
        entry.handler({}, None)

    assert _published(capsys.readouterr().out) == {"RunsFailed": 1}
