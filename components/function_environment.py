"""The functions' environment variables: the only channel from stack config to the handlers."""

from __future__ import annotations

from components.naming import Prefixes
from components.settings import Settings

__all__ = [
    "ERASURE_METRIC",
    "ERASURE_SALT_VARIABLE",
    "FAILURE_BUCKET_VARIABLE",
    "METRICS_NAMESPACE",
    "backfill_environment",
    "curator_environment",
    "curator_erasure_environment",
    "lambda_environment",
]

METRICS_NAMESPACE = "DmdPipeline"
#: Published by the curator at the start of every run (namespace ``METRICS_NAMESPACE``, dimension ``service`` = its
#: ``POWERTOOLS_SERVICE_NAME``): hours since the oldest erasure request still pending was filed, 0 when none is.
ERASURE_METRIC = "OldestPendingErasureAgeHours"
FAILURE_BUCKET_VARIABLE = "FAILURE_BUCKET"
ERASURE_SALT_VARIABLE = "ERASURE_SALT"


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


def curator_environment(settings: Settings, bucket: str, prefixes: Prefixes, database: str) -> dict[str, str]:
    """Environment of the curator ``curator.handler.handler``: ``curator.handler.ENVIRONMENT_VARIABLES`` in that
    order (a test holds them equal; the program does not import the curator and its pyiceberg), then ``LOG_LEVEL``.

    ``database`` is the stack's Glue database, which the program declares and the curator's role may not create.
    """
    return {
        "OUTPUT_BUCKET": bucket,
        "OUTPUT_PREFIX": prefixes.events,
        "GLUE_DATABASE": database,
        "CURATED_PREFIX": prefixes.curated,
        "TIME_TRAVEL_DAYS": str(settings.time_travel_days),
        "CURATION_DELETE_GRACE_MINUTES": str(settings.curation_delete_grace_minutes),
        # The published backfill snapshot registrations is seeded from (both empty until one is published).
        "SNAPSHOT_PREFIX": prefixes.snapshots,
        "SNAPSHOT_EXPORT_ID": settings.snapshot_export_id or "",
        "SNAPSHOT_EXPORT_TIME": settings.snapshot_export_time or "",
        # The backfill's exports: purged once their snapshot holds them and they are this old; erasure rewrites them.
        "EXPORTS_PREFIX": prefixes.exports,
        "EXPORT_RETENTION_DAYS": str(settings.export_retention_days),
        "POWERTOOLS_SERVICE_NAME": settings.naming.physical("demand-curator"),
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "LOG_LEVEL": settings.log_level,
    }


def curator_erasure_environment(failure_bucket: str, prefixes: Prefixes, rows_per_run: int) -> dict[str, str]:
    """The curator's erasure variables (``curator.handler.ERASURE_VARIABLES``), after ``curator_environment``'s: the
    failure bucket whose on-failure records it rewrites without the erased fans and the quarantine prefix whose
    lines it rewrites (the exports prefix, whose data files it rewrites too, is a base variable).
    ``ERASURE_SALT_VARIABLE`` (the stack's ``dmd-pipeline:erasureSalt``, keying the audit's HMAC of each fan id)
    comes as a secret Output (``CurationArgs.erasure_salt``), never in plain text."""
    return {
        FAILURE_BUCKET_VARIABLE: failure_bucket,
        "QUARANTINE_PREFIX": prefixes.quarantine,
        "ERASURE_ROWS_PER_RUN": str(rows_per_run),
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
