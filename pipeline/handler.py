"""Lambda entry point: Kinesis batch of DynamoDB changes -> Parquet on S3, reporting the exact failure point.

Cold start reads and validates the settings (``ConfigError`` names the variable and its value). The S3 client
is created on the first write (boto3 honours ``AWS_ENDPOINT_URL``), which keeps this module's import cheap.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit

from pipeline.columnar import decode_batch
from pipeline.config import load_settings
from pipeline.exceptions import InvalidEventError
from pipeline.processor import BatchResult, StreamProcessor
from pipeline.writer import S3ObjectStore

__all__ = ["handler", "processor"]

SETTINGS = load_settings()
logger = Logger(service=SETTINGS.service_name, level=SETTINGS.log_level)
metrics = Metrics(namespace=SETTINGS.metrics_namespace, service=SETTINGS.service_name)
processor = StreamProcessor(SETTINGS, S3ObjectStore(SETTINGS.output_bucket), decode_batch)


def _publish(result: BatchResult) -> None:
    summary = result.summary()
    logger.info("batch processed", extra=summary)
    metrics.add_metric(name="RecordsReceived", unit=MetricUnit.Count, value=result.received)
    metrics.add_metric(name="RowsWritten", unit=MetricUnit.Count, value=result.rows_written)
    metrics.add_metric(name="RecordsQuarantined", unit=MetricUnit.Count, value=result.quarantined)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=result.failed)
    metrics.add_metric(name="ObjectsWritten", unit=MetricUnit.Count, value=result.objects_created)
    metrics.add_metric(name="BytesWritten", unit=MetricUnit.Bytes, value=result.bytes_written)
    metrics.add_metric(name="ProcessingDuration", unit=MetricUnit.Milliseconds, value=summary["duration_ms"])
    if summary["freshness_seconds"] is not None:
        metrics.add_metric(name="Freshness", unit=MetricUnit.Seconds, value=summary["freshness_seconds"])


@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Decode, validate, write; return ``batchItemFailures`` naming the lowest sequence number not durably written.

    The writes get the invocation's remaining time (``context.get_remaining_time_in_millis()``) less a margin.
    """
    try:
        result = processor.process(event, context)
        _publish(result)
    except InvalidEventError:
        # A wiring fault, not a bad record: count it, then fail the invocation so every record is kept for a retry.
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        logger.exception("invalid event")
        raise
    except Exception:
        # A crash (not a failed write, which is reported per record): Lambda retries or bisects the batch.
        metrics.add_metric(name="UnhandledErrors", unit=MetricUnit.Count, value=1)
        logger.exception("batch failed")
        raise
    return result.batch_item_failures()
