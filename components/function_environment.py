"""The functions' environment variables: the only channel from stack config to the handlers."""

from __future__ import annotations

from components.naming import Prefixes
from components.settings import Settings

__all__ = ["METRICS_NAMESPACE", "backfill_environment", "compaction_environment", "lambda_environment"]

METRICS_NAMESPACE = "DmdPipeline"


def lambda_environment(settings: Settings, bucket: str, prefixes: Prefixes) -> dict[str, str]:
    """Environment of the handler (``pipeline/config.py`` reads these names).

    ``CHANGE_TIME_PRECISION`` is the same value the stream component gives the table's streaming destination.
    ``SOURCE_TABLE_NAME`` is the stack's table: records of another table on a shared stream are quarantined.
    """
    return {
        "OUTPUT_BUCKET": bucket,
        "OUTPUT_PREFIX": prefixes.events,
        "QUARANTINE_PREFIX": prefixes.quarantine,
        "CHANGE_TIME_PRECISION": settings.change_time_precision,
        "LOG_LEVEL": settings.log_level,
        "POWERTOOLS_SERVICE_NAME": settings.naming.physical("demand-processor"),
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "SOURCE_TABLE_NAME": settings.table_name,
    }


def compaction_environment(settings: Settings, bucket: str, prefixes: Prefixes) -> dict[str, str]:
    """Environment of the compaction function ``pipeline.compaction.handler`` (contract C3)."""
    return {
        "OUTPUT_BUCKET": bucket,
        "OUTPUT_PREFIX": prefixes.events,
        "COMPACTION_DELAY_MINUTES": str(settings.compaction_delay_minutes),
        "COMPACTION_LOOKBACK_HOURS": str(settings.compaction_lookback_hours),
        "COMPACTION_DELETE_GRACE_MINUTES": str(settings.compaction_delete_grace_minutes),
        "LOG_LEVEL": settings.log_level,
        "POWERTOOLS_SERVICE_NAME": settings.naming.physical("demand-compactor"),
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    }


def backfill_environment(settings: Settings, bucket: str, prefixes: Prefixes) -> dict[str, str]:
    """Environment of the backfill function ``pipeline.backfill.handler`` (contract C3; the names are
    ``pipeline.snapshot.ENVIRONMENT_VARIABLES``, in that order)."""
    return {
        "OUTPUT_BUCKET": bucket,
        "SNAPSHOT_PREFIX": prefixes.snapshots,
        "QUARANTINE_PREFIX": prefixes.quarantine,
        "SOURCE_TABLE_NAME": settings.table_name,
        "LOG_LEVEL": settings.log_level,
        "POWERTOOLS_SERVICE_NAME": settings.naming.physical("demand-backfill"),
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    }
