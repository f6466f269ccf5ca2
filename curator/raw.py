"""The raw layer as the curator sees it: the stream handler's objects, and the ledger of those consumed.

The ledger is a JSON object written next to the table's metadata before a commit, and named in the
snapshot's summary: it becomes true exactly when the snapshot commits (a ledger of a failed commit is an
unreferenced file, removed by the orphan cleanup). It lists every raw object the table's rows cover (key ->
ETag and the time it was first consumed) that still existed when the run listed the raw layer, so it stays as
small as the raw layer itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from curator.store import StoredObject

if TYPE_CHECKING:
    from pyiceberg.io import FileIO

__all__ = [
    "LEDGER_PROPERTY",
    "LedgerEntry",
    "is_raw_key",
    "parse_object_name",
    "raw_objects",
    "read_ledger",
    "write_ledger",
]

#: Snapshot summary property naming the ledger file the snapshot committed.
LEDGER_PROPERTY = "curator.ledger"
_PARTITION = re.compile(r"^dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/$")
# Object names of the stream handler (contract C1), parsed from the right because shard ids contain hyphens; the
# name without a digest is the layout before write-once objects, and ``-compacted`` the raw compaction's output.
_COMPACTED = re.compile(r"^(?P<tag>[0-9a-f]{8})-(?P<shard>.+)-compacted\.parquet$")
_RAW = re.compile(r"^(?P<tag>[0-9a-f]{8})-(?P<shard>.+)-\d+-[0-9a-f]{12}\.parquet$")
_RAW_BEFORE_DIGEST = re.compile(r"^(?P<tag>[0-9a-f]{8})-(?P<shard>.+)-\d+\.parquet$")


@dataclass(frozen=True)
class LedgerEntry:
    """A raw object the table covers: its ETag when read, and when it was first consumed."""

    etag: str
    consumed_at: datetime


def parse_object_name(name: str) -> tuple[str, str, bool] | None:
    """``(stream tag, shard id, is compacted)`` of a raw object's name, or None for anything else."""
    for pattern, compacted in ((_COMPACTED, True), (_RAW, False), (_RAW_BEFORE_DIGEST, False)):
        match = pattern.match(name)
        if match:
            return match["tag"], match["shard"], compacted
    return None


def is_raw_key(prefix: str, key: str) -> bool:
    """Whether ``key`` is a stream-handler (or compacted) object in an hour partition under ``prefix``."""
    if not key.startswith(prefix):
        return False
    folder, _, name = key[len(prefix) :].rpartition("/")
    return bool(_PARTITION.match(folder + "/")) and parse_object_name(name) is not None


def raw_objects(prefix: str, listed: Iterable[StoredObject]) -> list[StoredObject]:
    """The raw objects among ``listed``, in key order."""
    return sorted((item for item in listed if is_raw_key(prefix, item.key)), key=lambda item: item.key)


def read_ledger(io: FileIO, location: str | None) -> dict[str, LedgerEntry]:
    """The ledger at ``location`` (None: an empty ledger)."""
    if not location:
        return {}
    with io.new_input(location).open() as stream:
        entries = json.loads(stream.read())
    return {
        key: LedgerEntry(etag, datetime.fromtimestamp(millis / 1000, UTC)) for key, (etag, millis) in entries.items()
    }


def write_ledger(io: FileIO, location: str, ledger: Mapping[str, LedgerEntry]) -> None:
    """Write the ledger once at ``location`` (a new name per commit)."""
    entries = {key: [entry.etag, int(entry.consumed_at.timestamp() * 1000)] for key, entry in sorted(ledger.items())}
    body = json.dumps(entries, separators=(",", ":")).encode()
    with io.new_output(location).create(overwrite=False) as stream:
        stream.write(body)
