"""The stream processor's environment variables: the only channel from stack config to the handler."""

from __future__ import annotations

from components.naming import Prefixes
from components.settings import Settings

__all__ = ["METRICS_NAMESPACE", "lambda_environment"]

METRICS_NAMESPACE = "DmdPipeline"


def lambda_environment(settings: Settings, bucket: str, prefixes: Prefixes) -> dict[str, str]:
    """Environment of the handler (``pipeline/config.py`` reads these names).

    ``CHANGE_TIME_PRECISION`` is the same value the stream component gives the table's streaming destination.
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
