"""The S3 operations the curator needs on a bucket: listing, reading, write-once creates and conditional deletes,
and, for erasure, conditional overwrites (export data files keep their names) and the versions of a versioned
bucket.

Deleting is only ever conditional (``If-Match`` the ETag the caller knows): an object replaced since it was
listed is never removed on its old ETag. On a versioned bucket that delete only adds a delete marker; erasure then
purges the old version itself (``purge``: ``DeleteObject`` with its ``VersionId``, permanent). On a bucket that was
never versioned every object has one version, ``null``, listed as the current one, and erasure purges only
noncurrent versions, so there the version operations change nothing.
"""

from __future__ import annotations

import builtins
import functools
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.exceptions import PipelineError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "IO_THREADS",
    "ObjectGoneError",
    "ObjectStore",
    "ObjectVersion",
    "S3Store",
    "StoredObject",
    "iso_timestamp",
    "s3_client",
]

#: Concurrent S3 calls of one run (reads of raw objects, deletes).
IO_THREADS = 16
_GONE_CODES = {"NoSuchKey", "404"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
_EXISTS_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def iso_timestamp(value: str) -> datetime:
    """A timestamp of an S3 response, as botocore parses it (with the zone it gives), at a fraction of its cost
    for the ISO 8601 times of every listing's ``LastModified`` (botocore's parser, through dateutil: about 57 us a
    value; this: under 1 us); any other form (an HTTP date header, digits botocore reads as epoch seconds) goes to
    botocore's parser."""
    if isinstance(value, str) and "T" in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp  # noqa: PLC0415 - deferred: keeps the cold import cheap

    return parse_timestamp(value)


_CREATING = threading.Lock()


@functools.cache
def _data_loader() -> Any:
    """botocore's loader of service models, shared: loading S3's model is most of a new session's cost."""
    import botocore.session  # noqa: PLC0415 - deferred: keeps the cold import cheap

    return botocore.session.get_session().get_component("data_loader")


def s3_client(**options: Any) -> S3Client:
    """``boto3.client("s3", **options)`` whose responses' timestamps are parsed by ``iso_timestamp``: a listing of
    thousands of objects or versions (every run lists the raw layer; erasure lists every version under the tables)
    costs a few ms of parsing, not a few hundred.

    Each client gets a session of its own, which resolves the credentials of the environment it is made in (a
    session keeps the first it finds); only the service models are shared. One at a time: a boto3 session is not
    thread-safe."""
    import boto3  # noqa: PLC0415 - deferred: keeps the cold import cheap
    import botocore.session  # noqa: PLC0415

    with _CREATING:
        core = botocore.session.get_session()
        core.register_component("data_loader", _data_loader())
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=iso_timestamp)
        return boto3.session.Session(botocore_session=core).client("s3", **options)


class ObjectGoneError(PipelineError):
    """An object listed a moment ago is gone."""


@dataclass(frozen=True)
class StoredObject:
    """An object as listed or read: key, ETag (with its quotes, as S3 returns it), size, last-modified time."""

    key: str
    etag: str
    size: int = 0
    last_modified: datetime | None = None


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object as ``ListObjectVersions`` gives it: a delete marker has no ETag; ``latest``: the
    key's current version (a current delete marker: the key reads as deleted)."""

    key: str
    version_id: str
    latest: bool
    delete_marker: bool = False
    etag: str = ""
    size: int = 0
    last_modified: datetime | None = None

    @property
    def noncurrent(self) -> bool:
        """An object version (not a marker) that a plain GET no longer returns."""
        return not self.latest and not self.delete_marker


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

    def overwrite(self, key: str, body: bytes, etag: str) -> bool:
        """Replace ``key`` with ``body`` in one write only if its ETag is still ``etag`` (``If-Match``); False when it
        changed or is gone. At every moment the object exists: the old bytes until the new ones are durable."""

    def versions(self, prefix: str) -> builtins.list[ObjectVersion]:
        """Every version and delete marker under ``prefix``, by key, the current one first within a key."""

    def get_version(self, key: str, version_id: str) -> bytes:
        """One version's bytes; ``ObjectGoneError`` if that version does not exist (any more)."""

    def purge(self, key: str, version_id: str) -> bool:
        """Delete one version (or delete marker) for good; False when it was already gone."""


def _error_code(error: Exception) -> tuple[str, int]:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _unless_precondition_fails(call: Any, *, gone_fails_too: bool = True) -> bool:
    """Run a conditional request: True when it was applied, False when its condition failed (the object changed,
    already exists or, with ``gone_fails_too``, is gone); any other error is raised."""
    try:
        call()
    except Exception as error:
        code, status = _error_code(error)
        codes, statuses = (_CONFLICT_CODES, (404, 409, 412)) if gone_fails_too else (_EXISTS_CODES, (409, 412))
        if code in codes or status in statuses:
            return False
        raise
    return True


@dataclass
class S3Store:
    """``ObjectStore`` on one S3 bucket; the client is created on first use (``AWS_ENDPOINT_URL`` honoured)."""

    bucket: str
    client: S3Client | None = None

    def _client(self) -> S3Client:
        if self.client is None:
            from botocore.config import Config  # noqa: PLC0415 - deferred: keeps the cold import cheap

            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=IO_THREADS + 4,
            )
            self.client = s3_client(config=config)
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
        return _unless_precondition_fails(
            lambda: self._client().delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        )

    def create(self, key: str, body: bytes) -> bool:
        """Conditional PutObject (``If-None-Match: *``): a write-once object, durable when this returns True."""
        return _unless_precondition_fails(
            lambda: self._client().put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*"),
            gone_fails_too=False,
        )

    def overwrite(self, key: str, body: bytes, etag: str) -> bool:
        """Conditional PutObject (``If-Match``): the new bytes replace the old atomically; on a versioned bucket the
        old ones stay as a noncurrent version (erasure purges it)."""
        return _unless_precondition_fails(
            lambda: self._client().put_object(Bucket=self.bucket, Key=key, Body=body, IfMatch=etag)
        )

    def versions(self, prefix: str) -> builtins.list[ObjectVersion]:
        """``ListObjectVersions`` (paginated): versions and delete markers, by key, the current one first."""
        found: builtins.list[ObjectVersion] = []
        pages = self._client().get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            entries = [
                ObjectVersion(
                    item["Key"],
                    item["VersionId"],
                    item["IsLatest"],
                    False,
                    item["ETag"],
                    int(item.get("Size", 0)),
                    item.get("LastModified"),
                )
                for item in page.get("Versions", [])
            ]
            entries += [
                ObjectVersion(
                    item["Key"], item["VersionId"], item["IsLatest"], True, last_modified=item.get("LastModified")
                )
                for item in page.get("DeleteMarkers", [])
            ]
            found.extend(entries)
        # S3 lists versions and markers apart; one order (by key, the latest first) keeps the calls deterministic.
        return sorted(found, key=lambda item: (item.key, not item.latest))

    def get_version(self, key: str, version_id: str) -> bytes:
        """``GetObject`` of one version."""
        try:
            response: Any = self._client().get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        except Exception as error:
            code, status = _error_code(error)
            if code in _GONE_CODES or code == "NoSuchVersion" or status == 404:
                raise ObjectGoneError(f"s3 object {key!r} version {version_id!r} is gone") from error
            raise
        body: bytes = response["Body"].read()
        return body

    def purge(self, key: str, version_id: str) -> bool:
        """``DeleteObject`` with ``VersionId``: permanent. S3 answers a version already gone with success, so a
        rerun purging it again is no error."""
        try:
            self._client().delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        except Exception as error:
            code, status = _error_code(error)
            if code in _GONE_CODES or code == "NoSuchVersion" or status == 404:
                return False
            raise
        return True
