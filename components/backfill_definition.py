"""The backfill state machine's definition (Amazon States Language) as plain data: a pure builder, no Pulumi.

One Distributed Map over an export's ``manifest-files.json`` (JSON Lines: ``itemCount``, ``dataFileS3Key``, ...):
each line becomes one invocation of the backfill function with the event ``pipeline.backfill.handler`` takes,
the manifest's ``itemCount`` included, so a file that disagrees with its manifest fails. No failure is
tolerated: one failed file fails the map and the execution, and a partial backfill is an error, not a smaller
table. A re-run of the execution is safe: files already done return their counts and write nothing.

Execution input: ``{"export_bucket": "...", "export_time": "2026-03-31T23:10:00Z",
"manifest_files_key": "demand/exports/<request time>/AWSDynamoDB/<export id>/manifest-files.json"}``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DETERMINISTIC_ERRORS",
    "MAP_STATE",
    "MAX_CONCURRENCY_LIMIT",
    "TASK_STATE",
    "state_machine_definition",
]

MAP_STATE = "BackfillDataFiles"
TASK_STATE = "BackfillDataFile"
#: Distributed Map runs at most 10,000 child executions at once.
MAX_CONCURRENCY_LIMIT = 10_000
#: Errors the function raises that a retry cannot change (the event or the file itself is wrong).
DETERMINISTIC_ERRORS = ("InvalidEventError", "ItemCountError", "SnapshotConflictError", "ConfigError")
# Lambda's own transient failures, retried with backoff (AWS's recommended set for lambda:invoke).
_LAMBDA_TRANSIENT = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)


def _task(function_arn: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
        # the counts only: the map's results stay small whatever the file
        "ResultSelector": {
            "data_key.$": "$.Payload.data_key",
            "items.$": "$.Payload.items",
            "rows.$": "$.Payload.rows",
            "quarantined.$": "$.Payload.quarantined",
            "already_done.$": "$.Payload.already_done",
        },
        "Retry": [
            {"ErrorEquals": list(DETERMINISTIC_ERRORS), "MaxAttempts": 0},
            {
                "ErrorEquals": list(_LAMBDA_TRANSIENT),
                "IntervalSeconds": 2,
                "MaxAttempts": 6,
                "BackoffRate": 2.0,
                "JitterStrategy": "FULL",
            },
            # anything else (an S3 timeout, a crash): the file is not committed, and a re-run writes it once
            {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 5, "MaxAttempts": 2, "BackoffRate": 2.0},
        ],
        "End": True,
    }


def state_machine_definition(
    function_arn: Any, *, max_concurrency: int, results_bucket: Any, results_prefix: str
) -> dict[str, Any]:
    """The definition; ``function_arn`` and ``results_bucket`` may be Pulumi outputs (render with
    ``pulumi.Output.json_dumps``). ``max_concurrency`` bounds the function's concurrent invocations."""
    if type(max_concurrency) is not int or not 1 <= max_concurrency <= MAX_CONCURRENCY_LIMIT:
        raise ValueError(f"max_concurrency {max_concurrency!r} must be an integer in [1, {MAX_CONCURRENCY_LIMIT}]")
    if not results_prefix or results_prefix.startswith("/") or not results_prefix.endswith("/"):
        raise ValueError(f"results_prefix {results_prefix!r} must be a relative key prefix ending with '/'")
    return {
        "Comment": "Back-fill the snapshot table from one DynamoDB export: one function invocation per data file.",
        "StartAt": MAP_STATE,
        "States": {
            MAP_STATE: {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSONL"},
                    "Parameters": {"Bucket.$": "$.export_bucket", "Key.$": "$.manifest_files_key"},
                },
                "ItemSelector": {
                    "export_bucket.$": "$.export_bucket",
                    "export_time.$": "$.export_time",
                    "data_key.$": "$$.Map.Item.Value.dataFileS3Key",
                    "item_count.$": "$$.Map.Item.Value.itemCount",
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": TASK_STATE,
                    "States": {TASK_STATE: _task(function_arn)},
                },
                "MaxConcurrency": max_concurrency,
                "ToleratedFailurePercentage": 0,
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": results_bucket, "Prefix": results_prefix},
                },
                "End": True,
            }
        },
    }
