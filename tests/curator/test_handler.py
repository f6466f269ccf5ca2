"""The curator's entry point: settings from the environment (errors name the variable), and one run per
invocation against the local AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from curator import handler as entry
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
        }
    )
    assert (given.erasure_salt, given.failure_bucket, given.quarantine_prefix, given.exports_prefix) == (
        "s3cret",
        "demand-failures",
        "q/",
        "x/",
    )
    assert set(entry.ERASURE_VARIABLES) == {"ERASURE_SALT", "FAILURE_BUCKET", "QUARANTINE_PREFIX"}
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


def test_an_invocation_runs_one_curation(lake: CuratedLake, monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "OUTPUT_BUCKET": lake.bucket,
        "OUTPUT_PREFIX": PREFIX,
        "GLUE_DATABASE": lake.database,
        "AWS_ENDPOINT_URL": lake.endpoint_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(entry, "_state", {})
    lake.write(generated_rows(40))

    summary = entry.handler({}, None)

    assert summary["changes_added"] == 40
    assert summary["conflict"] is None
    assert lake.table(CHANGES_TABLE).scan().to_arrow().num_rows == 40
    again = entry.handler({}, None)
    assert again["raw_objects_read"] == 0
