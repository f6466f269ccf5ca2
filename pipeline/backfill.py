"""Lambda entry point: one DynamoDB export data file -> one snapshot Parquet object, returning the counts.

Event: ``{"export_bucket": "...", "data_key": ".../AWSDynamoDB/<export id>/data/<name>.json.gz",
"export_time": "2026-03-31T23:10:00Z"}`` (one item of the export's manifest, plus the export's ExportTime).
Cold start reads and validates the settings (``ConfigError`` names the variable and its value); the S3 client
is created on the first invocation (boto3 honours ``AWS_ENDPOINT_URL``), which keeps this module's import cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit

from pipeline.exceptions import InvalidEventError
from pipeline.export import ExportFile
from pipeline.snapshot import BackfillResult, backfill_file, load_snapshot_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["handler"]

SETTINGS = load_snapshot_settings()
logger = Logger(service=SETTINGS.service_name, level=SETTINGS.log_level)
metrics = Metrics(namespace=SETTINGS.metrics_namespace, service=SETTINGS.service_name)
_clients: list[S3Client] = []


def _client() -> S3Client:
    if not _clients:
        import boto3  # noqa: PLC0415 - deferred: keeps the cold import of the handler cheap
        from botocore.config import Config  # noqa: PLC0415

        config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=60)
        _clients.append(boto3.client("s3", config=config))
    return _clients[0]


def _publish(result: BackfillResult) -> None:
    logger.info("export data file processed", extra=result.summary())
    metrics.add_metric(name="ItemsRead", unit=MetricUnit.Count, value=result.items)
    metrics.add_metric(
        name="SnapshotRowsWritten", unit=MetricUnit.Count, value=0 if result.already_done else result.rows
    )
    metrics.add_metric(
        name="RecordsQuarantined", unit=MetricUnit.Count, value=0 if result.already_done else result.quarantined
    )
    metrics.add_metric(name="DataFilesAlreadyDone", unit=MetricUnit.Count, value=int(result.already_done))
    metrics.add_metric(name="BytesWritten", unit=MetricUnit.Bytes, value=result.bytes_written)
    metrics.add_metric(name="ProcessingDuration", unit=MetricUnit.Milliseconds, value=round(result.duration_ms, 3))


@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Back-fill one data file; return its counts (``rows + quarantined == items``) and object keys."""
    try:
        export = ExportFile.from_event(event)
        result = backfill_file(export, SETTINGS, _client())
    except InvalidEventError:
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        logger.exception("invalid event")
        raise
    except Exception:
        # the file is not done (nothing was committed): the caller retries it, and a re-run adds nothing twice
        metrics.add_metric(name="UnhandledErrors", unit=MetricUnit.Count, value=1)
        logger.exception(
            "data file failed", extra={"data_key": event.get("data_key") if isinstance(event, dict) else None}
        )
        raise
    _publish(result)
    return result.summary()
