"""Lambda entry point of the curator: one curation run per invocation (schedule, ``make compact``, any path).

Importing this module reads no setting; the first invocation reads and validates them (``ConfigError`` names the
variable and its value). The run's guarantees are in ``curator.curation``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit

from curator.curation import CurationResult, Curator, CuratorSettings
from curator.erasure import ROWS_PER_RUN
from curator.seed import PublishedSnapshot
from curator.store import S3Store
from pipeline.config import (
    DEFAULT_METRICS_NAMESPACE,
    DEFAULT_OUTPUT_PREFIX,
    DEFAULT_QUARANTINE_PREFIX,
    DEFAULT_SERVICE_NAME,
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    POWERTOOLS_METRICS_NAMESPACE,
    POWERTOOLS_SERVICE_NAME,
    QUARANTINE_PREFIX,
)
from pipeline.exceptions import ConfigError, PipelineError

__all__ = [
    "CURATED_PREFIX",
    "CURATION_DELETE_GRACE_MINUTES",
    "ENVIRONMENT_VARIABLES",
    "ERASURE_METRIC",
    "ERASURE_ROWS_PER_RUN",
    "ERASURE_SALT",
    "ERASURE_VARIABLES",
    "EXPORTS_PREFIX",
    "EXPORT_RETENTION_DAYS",
    "FAILURE_BUCKET",
    "GLUE_DATABASE",
    "SNAPSHOT_EXPORT_ID",
    "SNAPSHOT_EXPORT_TIME",
    "SNAPSHOT_PREFIX",
    "TIME_TRAVEL_DAYS",
    "CurationFailedError",
    "handler",
    "load_curator_settings",
]

GLUE_DATABASE = "GLUE_DATABASE"
CURATED_PREFIX = "CURATED_PREFIX"
TIME_TRAVEL_DAYS = "TIME_TRAVEL_DAYS"
CURATION_DELETE_GRACE_MINUTES = "CURATION_DELETE_GRACE_MINUTES"
#: The published backfill snapshot (stack config ``snapshotExportId`` / ``snapshotExportTime``): both or neither.
SNAPSHOT_EXPORT_ID = "SNAPSHOT_EXPORT_ID"
SNAPSHOT_EXPORT_TIME = "SNAPSHOT_EXPORT_TIME"
#: Where the backfill writes snapshots (the backfill function's ``SNAPSHOT_PREFIX``).
SNAPSHOT_PREFIX = "SNAPSHOT_PREFIX"
#: Erasure (``curator.erasure``): the stack's salt of the audit's fan id HMACs (stack config ``erasureSalt``,
#: a secret; unset: erasure is off and ``erasure/`` is not listed) and the failure bucket whose on-failure records
#: are searched (unset: not searched). Both optional, so a stack deployed before erasure keeps working.
ERASURE_SALT = "ERASURE_SALT"
FAILURE_BUCKET = "FAILURE_BUCKET"
#: Rows of data files an erasure rewrites in one run (stack config ``erasureRowsPerRun``; unset: ``ROWS_PER_RUN``).
ERASURE_ROWS_PER_RUN = "ERASURE_ROWS_PER_RUN"
#: Where the backfill's DynamoDB exports are (``demand/exports/<request time>/AWSDynamoDB/...``): erasure rewrites
#: their data files, and each is purged this many days after its request once its snapshot holds all of it
#: (``curator.exports``; stack config ``exportRetentionDays``).
EXPORTS_PREFIX = "EXPORTS_PREFIX"
EXPORT_RETENTION_DAYS = "EXPORT_RETENTION_DAYS"
#: Published every run: hours since the oldest pending erasure request was filed (the stack's deadline alarm).
ERASURE_METRIC = "OldestPendingErasureAgeHours"
AWS_REGION = "AWS_REGION"
#: Every variable the curator reads, in the order the infrastructure should set them.
ENVIRONMENT_VARIABLES = (
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    GLUE_DATABASE,
    CURATED_PREFIX,
    TIME_TRAVEL_DAYS,
    CURATION_DELETE_GRACE_MINUTES,
    SNAPSHOT_PREFIX,
    SNAPSHOT_EXPORT_ID,
    SNAPSHOT_EXPORT_TIME,
    EXPORTS_PREFIX,
    EXPORT_RETENTION_DAYS,
    POWERTOOLS_SERVICE_NAME,
    POWERTOOLS_METRICS_NAMESPACE,
)
#: The variables of erasure, all optional (the infrastructure sets them once the stack has an erasure salt).
ERASURE_VARIABLES = (ERASURE_SALT, FAILURE_BUCKET, QUARANTINE_PREFIX, ERASURE_ROWS_PER_RUN)
DEFAULT_CURATED_PREFIX = "curated/"
DEFAULT_TIME_TRAVEL_DAYS = 7
DEFAULT_DELETE_GRACE_MINUTES = 15
DEFAULT_SNAPSHOT_PREFIX = "demand/snapshots/"
DEFAULT_EXPORTS_PREFIX = "demand/exports/"
DEFAULT_EXPORT_RETENTION_DAYS = 14
_EXPORT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_DATABASE = re.compile(r"^[a-z0-9_]{1,255}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^(?:[A-Za-z0-9!_.*'()=-]+/)+$")


class CurationFailedError(PipelineError):
    """Some raw objects could not be read (they are left in place, never deleted); the message names them."""


def _whole_number(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be {minimum} or more")
    return value


def _published_snapshot(env: Mapping[str, str], raw_prefix: str, tables_prefix: str) -> PublishedSnapshot | None:
    """The published snapshot ``registrations`` is seeded from, or None when neither variable is set."""
    export_id = env.get(SNAPSHOT_EXPORT_ID, "").strip()
    export_time = env.get(SNAPSHOT_EXPORT_TIME, "").strip()
    if not export_id and not export_time:
        return None
    if not export_id or not export_time:
        if export_id:
            missing, given = SNAPSHOT_EXPORT_TIME, f"{SNAPSHOT_EXPORT_ID}={export_id!r}"
        else:
            missing, given = SNAPSHOT_EXPORT_ID, f"{SNAPSHOT_EXPORT_TIME}={export_time!r}"
        raise ConfigError(f"{missing} is required with {given}: a published snapshot names both")
    if not _EXPORT_ID.match(export_id):
        raise ConfigError(f"{SNAPSHOT_EXPORT_ID}={export_id!r} is not a DynamoDB export id (letters, digits, '-')")
    try:
        moment = datetime.fromisoformat(export_time.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None or not 2000 <= moment.year < 2100:
        raise ConfigError(
            f"{SNAPSHOT_EXPORT_TIME}={export_time!r} is not an ISO-8601 time with its offset, like 2026-12-01T09:05:00Z"
        )
    prefix = env.get(SNAPSHOT_PREFIX, "").strip() or DEFAULT_SNAPSHOT_PREFIX
    if not _PREFIX.match(prefix):
        raise ConfigError(
            f"{SNAPSHOT_PREFIX}={prefix!r} is not a key prefix like 'demand/snapshots/' (ending with '/')"
        )
    for name, other in ((OUTPUT_PREFIX, raw_prefix), (CURATED_PREFIX, tables_prefix)):
        if prefix.startswith(other) or other.startswith(prefix):
            raise ConfigError(f"{SNAPSHOT_PREFIX}={prefix!r} and {name}={other!r} must not overlap")
    return PublishedSnapshot(export_id, moment.astimezone(UTC), prefix)


def load_curator_settings(environ: Mapping[str, str] | None = None) -> CuratorSettings:
    """Read the settings from ``environ`` (the process environment by default); raise ``ConfigError`` if invalid."""
    env = os.environ if environ is None else environ
    bucket = env.get(OUTPUT_BUCKET, "").strip()
    if not bucket:
        raise ConfigError(f"{OUTPUT_BUCKET} is required: the bucket of the raw objects and the curated tables")
    database = env.get(GLUE_DATABASE, "").strip()
    if not _DATABASE.match(database):
        raise ConfigError(f"{GLUE_DATABASE}={database!r} must be a Glue database name (lowercase, digits, '_')")
    raw_prefix = env.get(OUTPUT_PREFIX, "").strip() or DEFAULT_OUTPUT_PREFIX
    tables_prefix = env.get(CURATED_PREFIX, "").strip() or DEFAULT_CURATED_PREFIX
    for name, prefix in ((OUTPUT_PREFIX, raw_prefix), (CURATED_PREFIX, tables_prefix)):
        if not _PREFIX.match(prefix):
            raise ConfigError(f"{name}={prefix!r} is not a key prefix like 'curated/' (ending with '/')")
    if raw_prefix.startswith(tables_prefix) or tables_prefix.startswith(raw_prefix):
        raise ConfigError(f"{CURATED_PREFIX}={tables_prefix!r} and {OUTPUT_PREFIX}={raw_prefix!r} must not overlap")
    quarantine_prefix = env.get(QUARANTINE_PREFIX, "").strip() or DEFAULT_QUARANTINE_PREFIX
    snapshot_prefix = env.get(SNAPSHOT_PREFIX, "").strip() or DEFAULT_SNAPSHOT_PREFIX
    exports_prefix = env.get(EXPORTS_PREFIX, "").strip() or DEFAULT_EXPORTS_PREFIX
    for name, prefix in (
        (QUARANTINE_PREFIX, quarantine_prefix),
        (SNAPSHOT_PREFIX, snapshot_prefix),
        (EXPORTS_PREFIX, exports_prefix),
    ):
        if not _PREFIX.match(prefix):
            raise ConfigError(f"{name}={prefix!r} is not a key prefix like 'demand/quarantine/' (ending with '/')")
    failure_bucket = env.get(FAILURE_BUCKET, "").strip() or None
    if failure_bucket is not None and not _BUCKET.match(failure_bucket):
        raise ConfigError(f"{FAILURE_BUCKET}={failure_bucket!r} is not an S3 bucket name")
    return CuratorSettings(
        bucket=bucket,
        raw_prefix=raw_prefix,
        database=database,
        tables_prefix=tables_prefix,
        time_travel=timedelta(days=_whole_number(env, TIME_TRAVEL_DAYS, DEFAULT_TIME_TRAVEL_DAYS, 1)),
        delete_grace=timedelta(
            minutes=_whole_number(env, CURATION_DELETE_GRACE_MINUTES, DEFAULT_DELETE_GRACE_MINUTES, 0)
        ),
        snapshot=_published_snapshot(env, raw_prefix, tables_prefix),
        snapshot_prefix=snapshot_prefix,
        quarantine_prefix=quarantine_prefix,
        exports_prefix=exports_prefix,
        erasure_salt=env.get(ERASURE_SALT, "").strip(),
        failure_bucket=failure_bucket,
        export_retention=timedelta(days=_whole_number(env, EXPORT_RETENTION_DAYS, DEFAULT_EXPORT_RETENTION_DAYS, 1)),
        erasure_rows_per_run=_whole_number(env, ERASURE_ROWS_PER_RUN, ROWS_PER_RUN, 1),
    )


logger = Logger(service=os.environ.get(POWERTOOLS_SERVICE_NAME) or DEFAULT_SERVICE_NAME)
metrics = Metrics(
    namespace=os.environ.get(POWERTOOLS_METRICS_NAMESPACE) or DEFAULT_METRICS_NAMESPACE,
    service=os.environ.get(POWERTOOLS_SERVICE_NAME) or DEFAULT_SERVICE_NAME,
)
_state: dict[str, Any] = {}


def _now() -> datetime:
    """The time of the run (the curator's clock and the erasure deadline metric's)."""
    return datetime.now(UTC)


def _curator() -> Curator:
    """The curator of this execution environment, made on the first invocation."""
    if not _state:
        from curator.catalog import glue_catalog  # noqa: PLC0415 - pyiceberg's import is slow: pay it once

        settings = load_curator_settings()
        region = os.environ.get(AWS_REGION) or "us-east-1"
        catalog = glue_catalog(region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        failures = S3Store(settings.failure_bucket) if settings.failure_bucket else None
        _state["curator"] = Curator(
            catalog=catalog,
            store=S3Store(settings.bucket),
            settings=settings,
            clock=_now,
            failure_store=failures,
        )
    curator: Curator = _state["curator"]
    return curator


def _publish(result: CurationResult, now: datetime) -> None:
    # The deadline alarm's input, every run (0 when nothing is pending): hours since the oldest pending request.
    metrics.add_metric(
        name=ERASURE_METRIC, unit=MetricUnit.NoUnit, value=round(result.erasure.oldest_pending_hours(now), 3)
    )
    for name, value in (
        ("RawObjectsCurated", result.raw_objects_read),
        ("ChangesAdded", result.changes_added),
        ("StateChangesApplied", result.state_changes_applied),
        ("RawObjectsDeleted", result.raw_deleted),
        ("RawObjectsUnreadable", len(result.unreadable)),
        ("CommitConflicts", int(result.conflict is not None)),
        ("ErasureRequestsCompleted", len(result.erasure.requests_completed)),
        ("ErasureRequestsMalformed", len(result.erasure.requests_malformed)),
        ("ErasureDataFilesLeft", result.erasure.data_files_left),
        ("ExportsExpired", len(result.exports_expired)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one curation; return and log its counts. A conflict is reported (the next run retries); unreadable raw
    objects fail the invocation so the alarm fires."""
    try:
        curator = _curator()
    except ConfigError:
        metrics.add_metric(name="InvalidSettings", unit=MetricUnit.Count, value=1)
        logger.exception("invalid curator settings")
        raise
    try:
        result = curator.run()
    except Exception:
        # Lambda counts the error and logs its traceback; this metric carries the stack's service dimension, like
        # the run's counts (and ``make compact`` on the local AWS keeps its one line: no log line of its own here).
        metrics.add_metric(name="RunsFailed", unit=MetricUnit.Count, value=1)
        raise
    _publish(result, _now())
    summary = result.summary()
    logger.info("curation done", extra=summary)
    if result.exports_incomplete:
        # Not a failure of the run: the export stays (its rows are nowhere else) until its backfill is finished.
        logger.warning(
            "exports past their retention kept: their snapshot lacks a data file (finish the backfill with "
            "make backfill ARGS='--export-arn <arn>')",
            extra={"exports": result.exports_incomplete},
        )
    if result.erasure.data_files_left:
        logger.info(
            "erasure goes on next run: the tables have more data files to look at or rewrite for the requests' fans "
            "than one run does (erasureRowsPerRun)",
            extra={"data_files_left": result.erasure.data_files_left},
        )
    if result.unreadable:
        raise CurationFailedError(f"{len(result.unreadable)} raw object(s) unreadable: {', '.join(result.unreadable)}")
    if result.erasure.objects_unreadable:
        unreadable = result.erasure.objects_unreadable
        raise CurationFailedError(
            f"erasure left pending: {len(unreadable)} object(s) unreadable: {', '.join(unreadable)}"
        )
    return summary
