"""Settings from environment variables, read and validated once at cold start.

The variable names are constants here so that the infrastructure code sets exactly what the handler reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.exceptions import ConfigError

__all__ = [
    "CHANGE_TIME_PRECISION",
    "DEFAULT_METRICS_NAMESPACE",
    "DEFAULT_OUTPUT_PREFIX",
    "DEFAULT_QUARANTINE_PREFIX",
    "DEFAULT_SERVICE_NAME",
    "ENVIRONMENT_VARIABLES",
    "LOG_LEVEL",
    "LOG_LEVELS",
    "OUTPUT_BUCKET",
    "OUTPUT_PREFIX",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_SERVICE_NAME",
    "PRECISIONS",
    "QUARANTINE_PREFIX",
    "SOURCE_TABLE_NAME",
    "Settings",
    "load_settings",
]

OUTPUT_BUCKET = "OUTPUT_BUCKET"
OUTPUT_PREFIX = "OUTPUT_PREFIX"
QUARANTINE_PREFIX = "QUARANTINE_PREFIX"
CHANGE_TIME_PRECISION = "CHANGE_TIME_PRECISION"
LOG_LEVEL = "LOG_LEVEL"
POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
SOURCE_TABLE_NAME = "SOURCE_TABLE_NAME"

#: Every variable the function reads, in the order the infrastructure should set them.
ENVIRONMENT_VARIABLES = (
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    QUARANTINE_PREFIX,
    CHANGE_TIME_PRECISION,
    LOG_LEVEL,
    POWERTOOLS_SERVICE_NAME,
    POWERTOOLS_METRICS_NAMESPACE,
    SOURCE_TABLE_NAME,
)

DEFAULT_OUTPUT_PREFIX = "demand/events/"
DEFAULT_QUARANTINE_PREFIX = "demand/quarantine/"
DEFAULT_SERVICE_NAME = "dmd-pipeline"
DEFAULT_METRICS_NAMESPACE = "DmdPipeline"
PRECISIONS = ("MILLISECOND", "MICROSECOND")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# S3 general purpose bucket names: 3-63 characters, lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# A key prefix: relative, ends with "/", no empty or dot segments, printable ASCII only.
_PREFIX = re.compile(r"^(?:[A-Za-z0-9!_.*'()=-]+/)+$")
# DynamoDB table names: 3-255 characters, letters, digits, '_', '-' and '.'.
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


@dataclass(frozen=True)
class Settings:
    """What the handler needs to know about where it writes and how it reads change times."""

    output_bucket: str
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    quarantine_prefix: str = DEFAULT_QUARANTINE_PREFIX
    change_time_precision: str = "MILLISECOND"
    log_level: str = "INFO"
    service_name: str = DEFAULT_SERVICE_NAME
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    #: The DynamoDB table whose changes this function owns; records of other tables are quarantined. None: any.
    source_table_name: str | None = None

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.output_bucket) or ".." in self.output_bucket:
            raise ConfigError(
                f"{OUTPUT_BUCKET}={self.output_bucket!r} is not an S3 bucket name "
                "(3-63 characters: lowercase letters, digits, '.' and '-')"
            )
        for name, prefix in ((OUTPUT_PREFIX, self.output_prefix), (QUARANTINE_PREFIX, self.quarantine_prefix)):
            if not _PREFIX.match(prefix) or any(part in (".", "..") for part in prefix.split("/")):
                raise ConfigError(
                    f"{name}={prefix!r} is not a key prefix: expected segments like 'demand/events/' "
                    "(no leading '/', ending with '/', letters, digits and !_.*'()=- only)"
                )
        if self.output_prefix.startswith(self.quarantine_prefix) or self.quarantine_prefix.startswith(
            self.output_prefix
        ):
            # Athena reads every object under the table location: quarantine files there would break queries.
            raise ConfigError(
                f"{OUTPUT_PREFIX}={self.output_prefix!r} and {QUARANTINE_PREFIX}={self.quarantine_prefix!r} "
                "must not contain one another"
            )
        if self.change_time_precision not in PRECISIONS:
            raise ConfigError(
                f"{CHANGE_TIME_PRECISION}={self.change_time_precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{LOG_LEVEL}={self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if not self.service_name.strip():
            raise ConfigError(f"{POWERTOOLS_SERVICE_NAME}={self.service_name!r} must not be blank")
        if not self.metrics_namespace.strip():
            raise ConfigError(f"{POWERTOOLS_METRICS_NAMESPACE}={self.metrics_namespace!r} must not be blank")
        if self.source_table_name is not None and not _TABLE.match(self.source_table_name):
            raise ConfigError(
                f"{SOURCE_TABLE_NAME}={self.source_table_name!r} is not a DynamoDB table name "
                "(3-255 characters: letters, digits, '_', '-' and '.')"
            )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (the process environment by default); raise ``ConfigError`` if invalid."""
    env = os.environ if environ is None else environ
    bucket = env.get(OUTPUT_BUCKET, "").strip()
    if not bucket:
        raise ConfigError(f"{OUTPUT_BUCKET} is required: the name of the bucket the Parquet objects go to")
    return Settings(
        output_bucket=bucket,
        output_prefix=env.get(OUTPUT_PREFIX, "").strip() or DEFAULT_OUTPUT_PREFIX,
        quarantine_prefix=env.get(QUARANTINE_PREFIX, "").strip() or DEFAULT_QUARANTINE_PREFIX,
        change_time_precision=env.get(CHANGE_TIME_PRECISION, "").strip().upper() or "MILLISECOND",
        log_level=env.get(LOG_LEVEL, "").strip().upper() or "INFO",
        service_name=env.get(POWERTOOLS_SERVICE_NAME, "").strip() or DEFAULT_SERVICE_NAME,
        metrics_namespace=env.get(POWERTOOLS_METRICS_NAMESPACE, "").strip() or DEFAULT_METRICS_NAMESPACE,
        source_table_name=env.get(SOURCE_TABLE_NAME, "").strip() or None,
    )
