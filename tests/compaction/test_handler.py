"""The compaction function: its settings, its event, and one invocation against the local S3 server."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pyarrow as pa
import pytest

from pipeline.compaction import (
    ENVIRONMENT_VARIABLES,
    CompactionRequest,
    CompactionSettings,
    load_compaction_settings,
    parse_request,
)
from pipeline.exceptions import ConfigError, InvalidEventError
from sandbox.server import MotoProcess
from tests.compaction.conftest import HOUR, SHARD, TAG, LocalLake, change_ids, generated_rows, is_sorted


def test_environment_variables_are_the_contract() -> None:
    assert ENVIRONMENT_VARIABLES == (
        "OUTPUT_BUCKET",
        "OUTPUT_PREFIX",
        "COMPACTION_DELAY_MINUTES",
        "COMPACTION_LOOKBACK_HOURS",
        "COMPACTION_DELETE_GRACE_MINUTES",
        "LOG_LEVEL",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    )


def test_settings_defaults() -> None:
    settings = load_compaction_settings({"OUTPUT_BUCKET": "lake-bucket"})

    assert settings == CompactionSettings(
        output_bucket="lake-bucket",
        output_prefix="demand/events/",
        delay_minutes=120,
        lookback_hours=192,
        delete_grace_minutes=15,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, r"OUTPUT_BUCKET is required"),
        ({"OUTPUT_BUCKET": "Lake_Bucket"}, r"OUTPUT_BUCKET='Lake_Bucket' is not an S3 bucket name"),
        ({"OUTPUT_PREFIX": "/events"}, r"OUTPUT_PREFIX='/events' is not a key prefix"),
        ({"COMPACTION_DELAY_MINUTES": "two hours"}, r"COMPACTION_DELAY_MINUTES='two hours' is not a whole number"),
        ({"COMPACTION_DELAY_MINUTES": "-5"}, r"COMPACTION_DELAY_MINUTES=-5 must be 0 or more"),
        ({"COMPACTION_LOOKBACK_HOURS": "0"}, r"COMPACTION_LOOKBACK_HOURS=0 must be between 1 and 9600"),
        ({"COMPACTION_LOOKBACK_HOURS": "2"}, r"COMPACTION_LOOKBACK_HOURS=2 leaves no hour to compact"),
        ({"COMPACTION_DELETE_GRACE_MINUTES": "1.5"}, r"COMPACTION_DELETE_GRACE_MINUTES='1.5' is not a whole number"),
        ({"COMPACTION_DELETE_GRACE_MINUTES": "-1"}, r"COMPACTION_DELETE_GRACE_MINUTES=-1 must be 0 or more"),
        ({"LOG_LEVEL": "chatty"}, r"LOG_LEVEL='CHATTY' is not one of"),
    ],
)
def test_bad_settings_name_the_variable_and_value(environ: dict[str, str], message: str) -> None:
    base = {"OUTPUT_BUCKET": "lake-bucket"} if "OUTPUT_BUCKET" not in environ and environ else {}
    with pytest.raises(ConfigError, match=message):
        load_compaction_settings(base | environ)


def test_requests() -> None:
    assert parse_request({}) == CompactionRequest(None)
    assert parse_request(None) == CompactionRequest(None)
    scheduled = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "time": "2026-04-01T03:00Z"}
    assert parse_request(scheduled) == CompactionRequest(None)
    assert parse_request({"hours": ["2026-03-31T23", "2026-03-31T22", "2026-03-31T23"], "delete_grace_minutes": 0}) == (
        CompactionRequest((datetime(2026, 3, 31, 22, tzinfo=UTC), datetime(2026, 3, 31, 23, tzinfo=UTC)), 0)
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"hours": ["2026-3-31T23"]}, r"hour '2026-3-31T23' is not in the form YYYY-MM-DDTHH"),
        ({"hours": ["2026-02-30T10"]}, r"hour '2026-02-30T10' is not a real date and hour"),
        ({"hours": ["2026-03-31T24"]}, r"hour '2026-03-31T24' is not a real date and hour"),
        ({"hours": ["2026-03-31 23"]}, r"hour '2026-03-31 23' is not in the form"),
        ({"hours": [2026033123]}, r"hour 2026033123 is not in the form"),
        ({"hours": "2026-03-31T23"}, r"hours='2026-03-31T23' must be a non-empty list"),
        ({"hours": []}, r"hours=\[\] must be a non-empty list"),
        ({"hours": ["2026-03-31T23"], "delete_grace_minutes": -1}, r"delete_grace_minutes=-1 must be a whole number"),
        ({"hours": ["2026-03-31T23"], "delete_grace_minutes": "0"}, r"delete_grace_minutes='0' must be a whole"),
        ({"delete_grace_minutes": True}, r"delete_grace_minutes=True must be a whole number"),
        (["2026-03-31T23"], r"compaction event must be a JSON object, got list"),
    ],
)
def test_bad_events_name_the_bad_value(event: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        parse_request(event)


def _fresh_module() -> ModuleType:
    """``pipeline.compaction`` imported afresh (its settings are read on the first invocation)."""
    spec = importlib.util.find_spec("pipeline.compaction")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Context:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.function_name = "prd3292-dev1-demand-compaction"
        self.memory_limit_in_mb = 2048
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:prd3292-dev1-demand-compaction"
        self.aws_request_id = "c0ffee00-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


@pytest.fixture
def function_env(lake: LocalLake, s3_server: MotoProcess, monkeypatch: pytest.MonkeyPatch) -> LocalLake:
    for name, value in {
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "OUTPUT_BUCKET": lake.bucket,
        "OUTPUT_PREFIX": "demand/events/",
        "POWERTOOLS_SERVICE_NAME": "dmd-compaction-test",
        "POWERTOOLS_METRICS_NAMESPACE": "DmdPipelineTest",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "COMPACTION_DELAY_MINUTES", "COMPACTION_LOOKBACK_HOURS", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    return lake


def test_handler_compacts_the_requested_hours_and_reports_counts(function_env: LocalLake, capsys) -> None:
    lake = function_env
    rows = generated_rows(120)
    for start in range(0, 120, 30):
        lake.write(rows.slice(start, 30))
    lake.write(rows.slice(15, 30))
    module = _fresh_module()

    summary = module.handler({"hours": ["2026-03-31T23"], "delete_grace_minutes": 0}, _Context(600))

    assert {key: summary[key] for key in ("hours", "objects_in", "objects_out", "rows_in", "rows_out")} == {
        "hours": ["2026-03-31T23"],
        "objects_in": 5,
        "objects_out": 1,
        "rows_in": 150,
        "rows_out": 120,
    }
    assert summary["duplicates_removed"] == 30
    assert summary["objects_deleted"] == 5
    assert lake.names() == [f"{TAG}-{SHARD}-compacted.parquet"]
    compacted = lake.read(f"{TAG}-{SHARD}-compacted.parquet")
    assert change_ids(compacted) == change_ids(rows)
    assert is_sorted(compacted)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = next(line for line in lines if "_aws" in line)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "DmdPipelineTest"
    assert (emf["RowsIn"], emf["RowsOut"], emf["DuplicatesRemoved"], emf["ObjectsOut"]) == ([150], [120], [30], [1])
    logged = next(line for line in lines if line.get("message") == "compaction done")
    assert logged["rows_out"] == 120


def test_scheduled_invocation_uses_the_window_and_the_grace_period(
    function_env: LocalLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = function_env
    now = datetime.now(UTC)
    due = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    recent = (now - timedelta(minutes=30)).replace(minute=0, second=0, microsecond=0)
    for hour in (due, recent):
        rows = generated_rows(20, hour=hour, seed=hour.hour + 1)
        lake.write(rows.slice(0, 10), hour)
        lake.write(rows.slice(10, 10), hour)
    monkeypatch.setenv("COMPACTION_LOOKBACK_HOURS", "6")
    module = _fresh_module()

    summary = module.handler({"source": "aws.scheduler"}, _Context(600))

    assert summary["hours"] == [due.strftime("%Y-%m-%dT%H")]
    assert (summary["objects_out"], summary["objects_pending_deletion"], summary["objects_deleted"]) == (1, 2, 0)
    assert len(lake.names(due)) == 3
    assert len(lake.names(recent)) == 2


def test_handler_fails_after_the_other_shard_hours_when_one_cannot_be_compacted(function_env: LocalLake) -> None:
    lake = function_env
    rows = generated_rows(20)
    lake.write(rows.slice(0, 10))
    lake.write(rows.slice(10, 10).append_column("surprise", pa.array([1] * 10)))
    module = _fresh_module()

    with pytest.raises(module.CompactionFailedError, match=r"1 shard-hour\(s\) failed: .*surprise"):
        module.handler({"hours": ["2026-03-31T23"], "delete_grace_minutes": 0}, _Context(600))
    assert len(lake.names()) == 2


def test_handler_rejects_a_bad_event_before_touching_anything(function_env: LocalLake) -> None:
    module = _fresh_module()
    with pytest.raises(InvalidEventError, match=r"hour '2026-03-31T5' is not in the form"):
        module.handler({"hours": ["2026-03-31T5"]}, _Context(600))


def test_handler_rejects_bad_settings_naming_the_variable(function_env: LocalLake, monkeypatch) -> None:
    monkeypatch.setenv("COMPACTION_DELETE_GRACE_MINUTES", "soon")
    module = _fresh_module()
    with pytest.raises(ConfigError, match=r"COMPACTION_DELETE_GRACE_MINUTES='soon' is not a whole number"):
        module.handler({"hours": [HOUR.strftime("%Y-%m-%dT%H")]}, _Context(600))
