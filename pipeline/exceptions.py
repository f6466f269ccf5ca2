"""The handler's failure kinds: one class each, messages name the bad value and what was expected."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidEventError",
    "NotBase64Error",
    "NotChangeRecordError",
    "NotJsonError",
    "PipelineError",
    "RecordError",
    "SchemaViolationError",
    "WriteError",
    "WrongSourceError",
    "WrongTableError",
]


class PipelineError(Exception):
    """Base class of every error the handler raises on purpose."""


class ConfigError(PipelineError):
    """An environment variable is missing or holds a value the handler cannot use."""


class InvalidEventError(PipelineError):
    """The Lambda event is not a Kinesis batch (a wiring fault, not a bad record): the invocation fails."""


class RecordError(PipelineError):
    """A record that can never succeed: it is quarantined, not retried. ``kind`` names the failure in quarantine."""

    kind = "record"


class NotBase64Error(RecordError):
    """The Kinesis data is not valid base64."""

    kind = "not_base64"


class NotJsonError(RecordError):
    """The decoded payload is not one UTF-8 JSON object."""

    kind = "not_json"


class NotChangeRecordError(RecordError):
    """The JSON is not a DynamoDB change record (missing or malformed envelope fields)."""

    kind = "not_change_record"


class SchemaViolationError(RecordError):
    """The item violates the record contract: missing attribute, wrong type, bad timestamp, unknown symbol."""

    kind = "schema_violation"


class WrongSourceError(RecordError):
    """The record's ``eventSource`` is not ``aws:dynamodb``: something other than DynamoDB wrote it."""

    kind = "wrong_source"


class WrongTableError(RecordError):
    """The change comes from another DynamoDB table than ``SOURCE_TABLE_NAME`` (tables can share a stream)."""

    kind = "wrong_table"


class WriteError(PipelineError):
    """An object could not be written durably; Lambda re-sends the records from its first sequence number on."""

    def __init__(self, key: str, cause: BaseException) -> None:
        super().__init__(f"writing s3 object {key!r} failed: {type(cause).__name__}: {cause}")
        self.key = key
        self.cause = cause
