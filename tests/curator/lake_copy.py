"""A copy of a lake on the local AWS (every version of every object of its buckets, its Glue tables, its clock),
restored in place: crash tests plant a lake once and put it back before each crash point instead of planting it
again.

A restore compares each key's versions with the copy's and rewrites only the keys that differ: it deletes every
version the key has now, then replays the copy's, oldest first (the bytes put again, a delete marker made by a
delete), so a versioned bucket gets back its noncurrent versions and delete markers too. What a curator can see
comes back: keys, bytes, which version is current, the noncurrent versions and markers, and the ETags of objects
written in one put (raw objects, requests, quarantine lines: the same bytes give the same ETag). Version ids,
last-modified times and the ETags of table files pyarrow wrote in parts are new ones (one put's); the curator reads
none of them but to pass a listed ETag back in a conditional delete, and last-modified only against its injected
clock (the local S3 stamps real time, far from the tests' clock either way).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["LakeCopy", "ObjectVersion"]

#: Keys rewritten at once (the local server answers requests in threads).
_THREADS = 8
#: Glue ``TableInput`` fields (``GetTable`` answers more: its own read-only ones).
_TABLE_INPUT = (
    "Name",
    "Description",
    "Owner",
    "Retention",
    "StorageDescriptor",
    "PartitionKeys",
    "TableType",
    "Parameters",
)


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key: its bytes and ETag, or None for a delete marker."""

    body: bytes | None
    etag: str | None = None

    def is_version(self, item: dict[str, Any]) -> bool:
        """Whether a listed version or marker is this one (a replayed version has a one-put ETag)."""
        if self.body is None or item["_marker"]:
            return self.body is None and bool(item["_marker"])
        return item["ETag"] in (self.etag, f'"{hashlib.md5(self.body).hexdigest()}"')  # noqa: S324 - S3's ETag


def _listed(s3: Any, bucket: str, versioned: dict[str, bool]) -> dict[str, list[dict[str, Any]]]:
    """Every version and delete marker of every key, oldest first (current last; the others by last-modified
    time, then as listed, newest first, reversed). boto3 answers versions and markers in two lists, so their
    exact interleaving among a key's noncurrent entries is not known; which is current is. A bucket never
    versioned is listed by ``ListObjectsV2`` (the local S3 copies every version of every key to list versions)."""
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if bucket not in versioned:  # a curator never turns versioning on or off: asked once per bucket
        versioned[bucket] = "Status" in s3.get_bucket_versioning(Bucket=bucket)
    if not versioned[bucket]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                entries[item["Key"]].append({**item, "VersionId": "null", "_marker": False})
        return dict(entries)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for position, item in enumerate(page.get("Versions", [])):
            entries[item["Key"]].append({**item, "_position": position, "_marker": False})
        for position, item in enumerate(page.get("DeleteMarkers", [])):
            entries[item["Key"]].append({**item, "_position": position, "_marker": True})
    for versions in entries.values():
        versions.sort(key=lambda item: (item["IsLatest"], item["LastModified"], -item["_position"]))
    return dict(entries)


def _unchanged(listed: list[dict[str, Any]], saved: list[ObjectVersion]) -> bool:
    return len(listed) == len(saved) and all(
        version.is_version(item) for item, version in zip(listed, saved, strict=True)
    )


@dataclass
class LakeCopy:
    """What ``save`` found; ``restore`` puts it back in place."""

    s3: Any
    glue: Any
    database: str
    objects: dict[str, dict[str, list[ObjectVersion]]]  # bucket -> key -> versions, oldest first
    tables: dict[str, dict[str, Any]]  # name -> TableInput
    clock: Any = None
    now: datetime | None = None
    #: Each version read, by (bucket, key, version id, ETag): what a later ``save`` need not read again.
    versions: dict[tuple[str, str, str, str], ObjectVersion] = field(default_factory=dict)
    #: Whether each bucket has versioning on (or suspended).
    versioned: dict[str, bool] = field(default_factory=dict)
    #: Keys rewritten by the last restore, per bucket (what the run before it changed).
    rewritten: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def save(
        cls,
        s3: Any,
        glue: Any,
        buckets: Iterable[str],
        database: str,
        clock: Any = None,
        *,
        previous: LakeCopy | None = None,
    ) -> LakeCopy:
        """Copy every version of every object of ``buckets``, the Glue tables of ``database`` and ``clock.now``;
        a version ``previous`` holds (same key, version id and ETag) is not read again."""
        objects: dict[str, dict[str, list[ObjectVersion]]] = {}
        versions: dict[tuple[str, str, str, str], ObjectVersion] = {}
        known = previous.versions if previous is not None else {}
        versioned = dict(previous.versioned) if previous is not None else {}
        for bucket in buckets:
            listed = _listed(s3, bucket, versioned)

            def read(entry: dict[str, Any], bucket: str = bucket) -> ObjectVersion:
                if entry["_marker"]:
                    return ObjectVersion(None)
                identity = (bucket, entry["Key"], entry["VersionId"], entry["ETag"])
                if identity in known:
                    return known[identity]
                version_id = {} if entry["VersionId"] == "null" else {"VersionId": entry["VersionId"]}
                response = s3.get_object(Bucket=bucket, Key=entry["Key"], **version_id)
                return ObjectVersion(response["Body"].read(), entry["ETag"])

            unknown = sum(
                not entry["_marker"] and (bucket, key, entry["VersionId"], entry["ETag"]) not in known
                for key, entries in listed.items()
                for entry in entries
            )
            if unknown > 1:
                with ThreadPoolExecutor(max_workers=_THREADS) as pool:
                    objects[bucket] = {key: list(pool.map(read, entries)) for key, entries in listed.items()}
            else:
                objects[bucket] = {key: [read(entry) for entry in entries] for key, entries in listed.items()}
            for key, entries in listed.items():
                for entry, version in zip(entries, objects[bucket][key], strict=True):
                    if version.body is not None:
                        versions[(bucket, key, entry["VersionId"], entry["ETag"])] = version
        tables = {
            table["Name"]: {name: table[name] for name in _TABLE_INPUT if name in table}
            for table in _glue_tables(glue, database)
        }
        now = clock.now if clock is not None else None
        return cls(s3, glue, database, objects, tables, clock, now, versions, versioned)

    def restore(self) -> None:
        """Make the buckets, the Glue tables and the clock what they were when saved."""
        self.rewritten = {}
        for bucket, saved in self.objects.items():
            self.rewritten[bucket] = self._restore_bucket(bucket, saved)
        self._restore_tables()
        if self.clock is not None:
            self.clock.now = self.now

    def _restore_bucket(self, bucket: str, saved: dict[str, list[ObjectVersion]]) -> list[str]:
        listed = _listed(self.s3, bucket, self.versioned)
        differing = sorted(
            key for key in set(listed) | set(saved) if not _unchanged(listed.get(key, []), saved.get(key, []))
        )
        doomed = [{"Key": key, "VersionId": item["VersionId"]} for key in differing for item in listed.get(key, [])]
        for start in range(0, len(doomed), 1000):
            answer = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000]})
            if answer.get("Errors"):
                raise RuntimeError(f"restoring {bucket}: deletes refused: {answer['Errors']}")

        def replay(key: str) -> None:
            for version in saved.get(key, []):
                if version.body is None:
                    self.s3.delete_object(Bucket=bucket, Key=key)
                else:
                    self.s3.put_object(Bucket=bucket, Key=key, Body=version.body)

        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            list(pool.map(replay, differing))
        return differing

    def _restore_tables(self) -> None:
        current = {table["Name"]: table for table in _glue_tables(self.glue, self.database)}
        for name in sorted(set(current) - set(self.tables)):
            self.glue.delete_table(DatabaseName=self.database, Name=name)
        for name, table_input in self.tables.items():
            if name not in current:
                self.glue.create_table(DatabaseName=self.database, TableInput=table_input)
            elif any(current[name].get(field_name) != value for field_name, value in table_input.items()):
                self.glue.update_table(DatabaseName=self.database, TableInput=table_input)


def _glue_tables(glue: Any, database: str) -> list[dict[str, Any]]:
    pages = glue.get_paginator("get_tables").paginate(DatabaseName=database)
    return [table for page in pages for table in page["TableList"]]
