"""The S3 operations the curator needs on a bucket: listing, reading, write-once creates and conditional deletes.

Deleting is only ever conditional (``If-Match`` the ETag the caller knows): an object replaced since it was
listed is never removed on its old ETag.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.exceptions import PipelineError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["IO_THREADS", "ObjectGoneError", "ObjectStore", "S3Store", "StoredObject"]

#: Concurrent S3 calls of one run (reads of raw objects, deletes).
IO_THREADS = 16
_GONE_CODES = {"NoSuchKey", "404"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
_EXISTS_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


class ObjectGoneError(PipelineError):
    """An object listed a moment ago is gone."""


@dataclass(frozen=True)
class StoredObject:
    """An object as listed or read: key, ETag (with its quotes, as S3 returns it), size, last-modified time."""

    key: str
    etag: str
    size: int = 0
    last_modified: datetime | None = None


class ObjectStore(Protocol):
    """The curator's operations on one bucket."""

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix``."""

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        """The whole object; ``ObjectGoneError`` if it does not exist."""

    def delete(self, key: str, etag: str) -> bool:
        """Delete ``key`` if its ETag is still ``etag``; False when it changed or is already gone."""

    def create(self, key: str, body: bytes) -> bool:
        """Write ``body`` at ``key`` only if no object is there (``If-None-Match``); False when one already is."""


def _error_code(error: Exception) -> tuple[str, int]:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


@dataclass
class S3Store:
    """``ObjectStore`` on one S3 bucket; the client is created on first use (``AWS_ENDPOINT_URL`` honoured)."""

    bucket: str
    client: S3Client | None = None

    def _client(self) -> S3Client:
        if self.client is None:
            import boto3  # noqa: PLC0415 - deferred: keeps the cold import cheap
            from botocore.config import Config  # noqa: PLC0415

            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=IO_THREADS + 4,
            )
            self.client = boto3.client("s3", config=config)
        return self.client

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (paginated)."""
        found: list[StoredObject] = []
        for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(
                StoredObject(item["Key"], item["ETag"], int(item["Size"]), item["LastModified"])
                for item in page.get("Contents", [])
            )
        return found

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        """The whole object."""
        try:
            response: Any = self._client().get_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            code, status = _error_code(error)
            if code in _GONE_CODES or status == 404:
                raise ObjectGoneError(f"s3 object {key!r} is gone") from error
            raise
        body = response["Body"].read()
        return body, StoredObject(key, response["ETag"], int(response["ContentLength"]), response["LastModified"])

    def delete(self, key: str, etag: str) -> bool:
        """Conditional DeleteObject (``If-Match``)."""
        try:
            self._client().delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except Exception as error:
            code, status = _error_code(error)
            if code in _CONFLICT_CODES or status in (404, 409, 412):
                return False
            raise
        return True

    def create(self, key: str, body: bytes) -> bool:
        """Conditional PutObject (``If-None-Match: *``): a write-once object, durable when this returns True."""
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except Exception as error:
            code, status = _error_code(error)
            if code in _EXISTS_CODES or status in (409, 412):
                return False
            raise
        return True
