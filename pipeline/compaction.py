"""Lambda entry point of compaction: per shard and hour, one deduplicated, sorted Parquet object.

    {}  (or any scheduled event without "hours")     every hour older than COMPACTION_DELAY_MINUTES and younger
                                                     than COMPACTION_LOOKBACK_HOURS holding more than one object
                                                     for some shard
    {"hours": ["2026-03-31T23", ...]}               exactly those hours
    {"hours": [...], "delete_grace_minutes": 0}     ... and delete the compacted inputs at once

Importing this module reads no setting (the infrastructure code imports ``ENVIRONMENT_VARIABLES`` from here);
the first invocation reads and validates them (``ConfigError`` names the variable and its value). The commit
protocol and why it never loses a row are in ``pipeline.compactor``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit

from pipeline.compactor import Compactor, RunResult, S3CompactionStore, parse_hour
from pipeline.config import (
    DEFAULT_METRICS_NAMESPACE,
    DEFAULT_OUTPUT_PREFIX,
    DEFAULT_SERVICE_NAME,
    LOG_LEVEL,
    LOG_LEVELS,
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    POWERTOOLS_METRICS_NAMESPACE,
    POWERTOOLS_SERVICE_NAME,
)
from pipeline.exceptions import ConfigError, InvalidEventError, PipelineError

__all__ = [
    "COMPACTION_DELAY_MINUTES",
    "COMPACTION_DELETE_GRACE_MINUTES",
    "COMPACTION_LOOKBACK_HOURS",
    "DEFAULT_DELAY_MINUTES",
    "DEFAULT_DELETE_GRACE_MINUTES",
    "DEFAULT_LOOKBACK_HOURS",
    "ENVIRONMENT_VARIABLES",
    "CompactionFailedError",
    "CompactionRequest",
    "CompactionSettings",
    "handler",
    "load_compaction_settings",
    "parse_request",
    "run_compaction",
]

COMPACTION_DELAY_MINUTES = "COMPACTION_DELAY_MINUTES"
COMPACTION_LOOKBACK_HOURS = "COMPACTION_LOOKBACK_HOURS"
COMPACTION_DELETE_GRACE_MINUTES = "COMPACTION_DELETE_GRACE_MINUTES"

#: Every variable the compaction function reads, in the order the infrastructure should set them.
ENVIRONMENT_VARIABLES = (
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    COMPACTION_DELAY_MINUTES,
    COMPACTION_LOOKBACK_HOURS,
    COMPACTION_DELETE_GRACE_MINUTES,
    LOG_LEVEL,
    POWERTOOLS_SERVICE_NAME,
    POWERTOOLS_METRICS_NAMESPACE,
)

DEFAULT_DELAY_MINUTES = 120
DEFAULT_LOOKBACK_HOURS = 192  # the stream's 7-day retention plus a day of margin for replays
DEFAULT_DELETE_GRACE_MINUTES = 15
_MAX_LOOKBACK_HOURS = 24 * 400
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^(?:[A-Za-z0-9!_.*'()=-]+/)+$")
# Time kept back when the invocation's deadline nears: a shard-hour is not started without it.
_RESERVE_SECONDS = 60.0


@dataclass(frozen=True)
class CompactionSettings:
    """Where the events are and when hours are compacted and their inputs deleted."""

    output_bucket: str
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    delay_minutes: int = DEFAULT_DELAY_MINUTES
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS
    delete_grace_minutes: int = DEFAULT_DELETE_GRACE_MINUTES
    log_level: str = "INFO"
    service_name: str = DEFAULT_SERVICE_NAME
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.output_bucket) or ".." in self.output_bucket:
            raise ConfigError(
                f"{OUTPUT_BUCKET}={self.output_bucket!r} is not an S3 bucket name "
                "(3-63 characters: lowercase letters, digits, '.' and '-')"
            )
        prefix = self.output_prefix
        if not _PREFIX.match(prefix) or any(part in (".", "..") for part in prefix.split("/")):
            raise ConfigError(
                f"{OUTPUT_PREFIX}={prefix!r} is not a key prefix: expected segments like 'demand/events/' "
                "(no leading '/', ending with '/', letters, digits and !_.*'()=- only)"
            )
        if self.delay_minutes < 0:
            raise ConfigError(f"{COMPACTION_DELAY_MINUTES}={self.delay_minutes!r} must be 0 or more minutes")
        if not 1 <= self.lookback_hours <= _MAX_LOOKBACK_HOURS:
            raise ConfigError(
                f"{COMPACTION_LOOKBACK_HOURS}={self.lookback_hours!r} must be between 1 and {_MAX_LOOKBACK_HOURS} hours"
            )
        if self.lookback_hours * 60 <= self.delay_minutes + 60:
            raise ConfigError(
                f"{COMPACTION_LOOKBACK_HOURS}={self.lookback_hours} leaves no hour to compact after "
                f"{COMPACTION_DELAY_MINUTES}={self.delay_minutes}: the lookback must exceed the delay by over an hour"
            )
        if self.delete_grace_minutes < 0:
            raise ConfigError(
                f"{COMPACTION_DELETE_GRACE_MINUTES}={self.delete_grace_minutes!r} must be 0 or more minutes"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{LOG_LEVEL}={self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if not self.service_name.strip():
            raise ConfigError(f"{POWERTOOLS_SERVICE_NAME}={self.service_name!r} must not be blank")
        if not self.metrics_namespace.strip():
            raise ConfigError(f"{POWERTOOLS_METRICS_NAMESPACE}={self.metrics_namespace!r} must not be blank")


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number") from None


def load_compaction_settings(environ: Mapping[str, str] | None = None) -> CompactionSettings:
    """Read the settings from ``environ`` (the process environment by default); raise ``ConfigError`` if invalid."""
    env = os.environ if environ is None else environ
    bucket = env.get(OUTPUT_BUCKET, "").strip()
    if not bucket:
        raise ConfigError(f"{OUTPUT_BUCKET} is required: the name of the bucket the Parquet objects are in")
    return CompactionSettings(
        output_bucket=bucket,
        output_prefix=env.get(OUTPUT_PREFIX, "").strip() or DEFAULT_OUTPUT_PREFIX,
        delay_minutes=_whole_number(env, COMPACTION_DELAY_MINUTES, DEFAULT_DELAY_MINUTES),
        lookback_hours=_whole_number(env, COMPACTION_LOOKBACK_HOURS, DEFAULT_LOOKBACK_HOURS),
        delete_grace_minutes=_whole_number(env, COMPACTION_DELETE_GRACE_MINUTES, DEFAULT_DELETE_GRACE_MINUTES),
        log_level=env.get(LOG_LEVEL, "").strip().upper() or "INFO",
        service_name=env.get(POWERTOOLS_SERVICE_NAME, "").strip() or DEFAULT_SERVICE_NAME,
        metrics_namespace=env.get(POWERTOOLS_METRICS_NAMESPACE, "").strip() or DEFAULT_METRICS_NAMESPACE,
    )


class CompactionFailedError(PipelineError):
    """Some shard-hours could not be compacted (their objects are left as they were); the message names them."""


@dataclass(frozen=True)
class CompactionRequest:
    """What an invocation asks for: explicit hours (None: the scheduled window) and the deletion grace."""

    hours: tuple[datetime, ...] | None
    delete_grace_minutes: int | None = None


def parse_request(event: Any) -> CompactionRequest:
    """The event -> a request; ``InvalidEventError`` naming the bad value. Without "hours" it is scheduled."""
    if event is None:
        return CompactionRequest(None)
    if not isinstance(event, Mapping):
        raise InvalidEventError(f"compaction event must be a JSON object, got {type(event).__name__}: {event!r:.200}")
    grace = event.get("delete_grace_minutes")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 0):
        raise InvalidEventError(f"delete_grace_minutes={grace!r} must be a whole number of minutes, 0 or more")
    if "hours" not in event:
        return CompactionRequest(None, grace)
    hours = event["hours"]
    if not isinstance(hours, list) or not hours:
        raise InvalidEventError(f"hours={hours!r:.200} must be a non-empty list like ['2026-03-31T23']")
    parsed: list[datetime] = []
    for text in hours:
        try:
            hour = parse_hour(text)
        except ValueError as error:
            raise InvalidEventError(str(error)) from None
        if hour not in parsed:
            parsed.append(hour)
    return CompactionRequest(tuple(sorted(parsed)), grace)


def run_compaction(
    request: CompactionRequest, settings: CompactionSettings, compactor: Compactor, context: Any = None
) -> RunResult:
    """Select the hours (scheduled window or the request's), compact them, within the invocation's time."""
    hours = request.hours
    if hours is None:
        hours = tuple(compactor.scheduled_hours(settings.delay_minutes, settings.lookback_hours))
    grace = settings.delete_grace_minutes if request.delete_grace_minutes is None else request.delete_grace_minutes
    remaining = None
    if context is not None and callable(getattr(context, "get_remaining_time_in_millis", None)):
        remaining = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    return compactor.run(
        hours, delete_grace=timedelta(minutes=grace), remaining_seconds=remaining, reserve_seconds=_RESERVE_SECONDS
    )


logger = Logger(service=os.environ.get(POWERTOOLS_SERVICE_NAME) or DEFAULT_SERVICE_NAME)
metrics = Metrics(
    namespace=os.environ.get(POWERTOOLS_METRICS_NAMESPACE) or DEFAULT_METRICS_NAMESPACE,
    service=os.environ.get(POWERTOOLS_SERVICE_NAME) or DEFAULT_SERVICE_NAME,
)
_state: dict[str, Any] = {}


def _runtime() -> tuple[CompactionSettings, Compactor]:
    """Settings and compactor of this execution environment, made on the first invocation."""
    if not _state:
        settings = load_compaction_settings()
        logger.setLevel(settings.log_level)
        metrics.namespace, metrics.service = settings.metrics_namespace, settings.service_name
        store = S3CompactionStore(settings.output_bucket)
        _state.update(settings=settings, compactor=Compactor(store, settings.output_prefix))
    return _state["settings"], _state["compactor"]


def _publish(summary: Mapping[str, Any]) -> None:
    for name, key in (
        ("HoursCompacted", "hours"),
        ("ObjectsIn", "objects_in"),
        ("ObjectsOut", "objects_out"),
        ("RowsIn", "rows_in"),
        ("RowsOut", "rows_out"),
        ("DuplicatesRemoved", "duplicates_removed"),
        ("ObjectsDeleted", "objects_deleted"),
        ("ObjectsPendingDeletion", "objects_pending_deletion"),
        ("CommitConflicts", "conflicts"),
        ("ShardHoursFailed", "failures"),
        ("HoursDeferred", "deferred_hours"),
    ):
        value = summary[key]
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=len(value) if isinstance(value, list) else value)


@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: Any, context: Any) -> dict[str, Any]:
    """Compact the requested (or scheduled) hours; return and log the counts. Fails if a shard-hour failed."""
    try:
        settings, compactor = _runtime()
    except ConfigError:
        metrics.add_metric(name="InvalidSettings", unit=MetricUnit.Count, value=1)
        logger.exception("invalid compaction settings")
        raise
    try:
        request = parse_request(event)
    except InvalidEventError:
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        logger.exception("invalid compaction request")
        raise
    try:
        result = run_compaction(request, settings, compactor, context)
    except Exception:
        metrics.add_metric(name="UnhandledErrors", unit=MetricUnit.Count, value=1)
        logger.exception("compaction failed")
        raise
    summary = result.summary()
    _publish(summary)
    logger.info("compaction done", extra=summary)
    if result.failures:
        # Lambda reports the error (the alarm fires, an asynchronous invocation is retried); nothing was deleted
        # for these shard-hours, and the others are done.
        raise CompactionFailedError(f"{len(result.failures)} shard-hour(s) failed: {'; '.join(summary['failures'])}")
    return summary
