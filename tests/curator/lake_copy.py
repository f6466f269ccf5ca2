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
    """One version of a key: its bytes, or None for a delete marker."""

    body: bytes | None
    etag: str | None = None


def _listed(s3: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Every version and delete marker of every key, oldest first (current last; the others by last-modified
    time, then as listed, newest first, reversed). boto3 answers versions and markers in two lists, so their
    exact interleaving among a key's noncurrent entries is not known; which is current is."""
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for position, item in enumerate(page.get("Versions", [])):
            entries[item["Key"]].append({**item, "_position": position, "_marker": False})
        for position, item in enumerate(page.get("DeleteMarkers", [])):
            entries[item["Key"]].append({**item, "_position": position, "_marker": True})
    for versions in entries.values():
        versions.sort(key=lambda item: (item["IsLatest"], item["LastModified"], -item["_position"]))
    return dict(entries)


def _signature(entries: Iterable[dict[str, Any]]) -> tuple[str | None, ...]:
    return tuple(None if item["_marker"] else item["ETag"] for item in entries)


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
    #: Keys rewritten by the last restore, per bucket (what the run before it changed).
    rewritten: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def save(cls, s3: Any, glue: Any, buckets: Iterable[str], database: str, clock: Any = None) -> LakeCopy:
        """Copy every version of every object of ``buckets``, the Glue tables of ``database`` and ``clock.now``."""
        objects: dict[str, dict[str, list[ObjectVersion]]] = {}
        for bucket in buckets:
            listed = _listed(s3, bucket)

            def read(entry: dict[str, Any], bucket: str = bucket) -> ObjectVersion:
                if entry["_marker"]:
                    return ObjectVersion(None)
                response = s3.get_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
                return ObjectVersion(response["Body"].read(), entry["ETag"])

            with ThreadPoolExecutor(max_workers=_THREADS) as pool:
                objects[bucket] = {key: list(pool.map(read, entries)) for key, entries in listed.items()}
        tables = {
            table["Name"]: {name: table[name] for name in _TABLE_INPUT if name in table}
            for table in _glue_tables(glue, database)
        }
        now = clock.now if clock is not None else None
        return cls(s3, glue, database, objects, tables, clock, now)

    def restore(self) -> None:
        """Make the buckets, the Glue tables and the clock what they were when saved."""
        self.rewritten = {}
        for bucket, saved in self.objects.items():
            self.rewritten[bucket] = self._restore_bucket(bucket, saved)
        self._restore_tables()
        if self.clock is not None:
            self.clock.now = self.now

    def _restore_bucket(self, bucket: str, saved: dict[str, list[ObjectVersion]]) -> list[str]:
        listed = _listed(self.s3, bucket)
        differing = sorted(
            key
            for key in set(listed) | set(saved)
            if _signature(listed.get(key, [])) != tuple(version.etag for version in saved.get(key, []))
        )
        doomed = [{"Key": key, "VersionId": item["VersionId"]} for key in differing for item in listed.get(key, [])]
        for start in range(0, len(doomed), 1000):
            answer = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000]})
            if answer.get("Errors"):
                raise RuntimeError(f"restoring {bucket}: deletes refused: {answer['Errors']}")

        def replay(key: str) -> list[ObjectVersion]:
            replayed = []
            for version in saved.get(key, []):
                if version.body is None:
                    self.s3.delete_object(Bucket=bucket, Key=key)
                    replayed.append(version)
                else:
                    answer = self.s3.put_object(Bucket=bucket, Key=key, Body=version.body)
                    replayed.append(ObjectVersion(version.body, answer["ETag"]))
            return replayed

        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            for key, replayed in zip(differing, pool.map(replay, differing), strict=True):
                if replayed:
                    saved[key] = replayed  # a one-part put's ETag, where the first write was in parts
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
