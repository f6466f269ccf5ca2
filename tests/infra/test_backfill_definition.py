"""The backfill state machine's definition: a Distributed Map over the manifest, invoking the backfill function."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.backfill_definition import (
    DETERMINISTIC_ERRORS,
    MAP_STATE,
    MAX_CONCURRENCY_LIMIT,
    TASK_STATE,
    state_machine_definition,
)
from pipeline import exceptions
from pipeline.export import ExportFile, ItemCountError
from pipeline.snapshot import BackfillResult, SnapshotConflictError

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:prd3292-dev1-demand-backfill"
BUCKET = "prd3292.dev1.us-east-1.demand-capture.tmaws"
# one line of manifest-files.json, as DynamoDB writes it
MANIFEST_LINE = (
    '{"itemCount":3,"md5Checksum":"q7ETjJhEBiGFLjQRiURAxg==","etag":"f6d1c2a3b4e5f60718293a4b5c6d7e8f-1",'
    '"dataFileS3Key":"demand/exports/20261130T131225252048Z/AWSDynamoDB/01764201600000-a1b2c3d4/data/'
    'hcxsrcrp4a6ztitu6r5yjzbbbu.json.gz"}'
)
EXECUTION_INPUT = {
    "export_bucket": BUCKET,
    "export_time": "2026-03-31T23:10:00Z",
    "manifest_files_key": (
        "demand/exports/20261130T131225252048Z/AWSDynamoDB/01764201600000-a1b2c3d4/manifest-files.json"
    ),
}


@pytest.fixture
def definition() -> dict[str, Any]:
    return state_machine_definition(
        FUNCTION_ARN, max_concurrency=40, results_bucket=BUCKET, results_prefix="demand/exports/_results/"
    )


def _resolve(path: str, state_input: dict[str, Any], item: dict[str, Any]) -> Any:
    """The two JSONPath forms the definition uses: ``$.<field>`` (state input) and ``$$.Map.Item.Value.<field>``."""
    if path.startswith("$$.Map.Item.Value."):
        return item[path.removeprefix("$$.Map.Item.Value.")]
    assert path.startswith("$."), path
    assert path.count(".") == 1, path
    return state_input[path.removeprefix("$.")]


def test_map_is_distributed_over_the_manifest_with_no_tolerated_failure(definition: dict[str, Any]):
    assert definition["StartAt"] == MAP_STATE
    state = definition["States"][MAP_STATE]
    assert state["Type"] == "Map"
    assert state["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSONL"},
        "Parameters": {"Bucket.$": "$.export_bucket", "Key.$": "$.manifest_files_key"},
    }
    assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert state["ToleratedFailurePercentage"] == 0
    assert state["MaxConcurrency"] == 40
    assert state["ResultWriter"]["Parameters"] == {"Bucket": BUCKET, "Prefix": "demand/exports/_results/"}
    assert state["End"] is True
    json.dumps(definition)  # plain data


def test_each_manifest_line_becomes_the_event_the_function_takes(definition: dict[str, Any]):
    selector = definition["States"][MAP_STATE]["ItemSelector"]
    item = json.loads(MANIFEST_LINE)
    event = {key.removesuffix(".$"): _resolve(path, EXECUTION_INPUT, item) for key, path in selector.items()}
    export = ExportFile.from_event(event)
    assert export.bucket == BUCKET
    assert export.data_key == item["dataFileS3Key"]
    assert export.export_id == "01764201600000-a1b2c3d4"
    assert export.item_count == 3
    assert export.export_time.isoformat() == "2026-03-31T23:10:00+00:00"


def test_the_task_invokes_the_backfill_function_and_keeps_its_counts(definition: dict[str, Any]):
    processor = definition["States"][MAP_STATE]["ItemProcessor"]
    assert processor["StartAt"] == TASK_STATE
    task = processor["States"][TASK_STATE]
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"] == {"FunctionName": FUNCTION_ARN, "Payload.$": "$"}
    summary = BackfillResult("e", "k", "o", None).summary()
    for path in task["ResultSelector"].values():
        assert path.removeprefix("$.Payload.") in summary, path
    assert task["End"] is True


def test_retries_skip_what_a_retry_cannot_change(definition: dict[str, Any]):
    retry = definition["States"][MAP_STATE]["ItemProcessor"]["States"][TASK_STATE]["Retry"]
    assert retry[0] == {"ErrorEquals": list(DETERMINISTIC_ERRORS), "MaxAttempts": 0}
    assert retry[-1]["ErrorEquals"] == ["States.ALL"]  # States.ALL must come last
    # the names are the exception classes the function raises (Lambda reports the class name as errorType)
    raised = {
        exceptions.InvalidEventError.__name__,
        exceptions.ConfigError.__name__,
        ItemCountError.__name__,
        SnapshotConflictError.__name__,
    }
    assert set(DETERMINISTIC_ERRORS) == raised


@pytest.mark.parametrize("concurrency", [0, MAX_CONCURRENCY_LIMIT + 1, 2.5, True])
def test_max_concurrency_is_bounded(concurrency: Any):
    with pytest.raises(ValueError, match=f"max_concurrency {concurrency!r}"):
        state_machine_definition(FUNCTION_ARN, max_concurrency=concurrency, results_bucket=BUCKET, results_prefix="r/")


def test_results_prefix_must_be_a_prefix():
    with pytest.raises(ValueError, match="results_prefix '/r'"):
        state_machine_definition(FUNCTION_ARN, max_concurrency=1, results_bucket=BUCKET, results_prefix="/r")
