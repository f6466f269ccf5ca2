"""Time travel kept bounded: snapshots older than the time-travel window are expired, and the files no kept
snapshot references (replaced data files, their manifests, ledgers, files of abandoned commits) are deleted.

pyiceberg expires snapshots but has no orphan-file cleanup: the files a table still needs are computed here from
its metadata (every kept snapshot's manifest list, manifests, live data files and ledger; the metadata files in
its log), and everything else under the table's location that is older than the grace period is deleted with a
conditional delete. The grace period keeps the files of a commit in flight (written, not yet committed) safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pyiceberg.exceptions import CommitFailedException

from curator.raw import LEDGER_PROPERTY
from curator.store import ObjectStore

if TYPE_CHECKING:
    from pyiceberg.manifest import ManifestFile
    from pyiceberg.table import Table

__all__ = ["RetentionResult", "apply_retention", "expire_snapshots", "referenced_files", "remove_unreferenced_files"]


@dataclass
class RetentionResult:
    """What the retention step did to one table."""

    table: str
    snapshots_expired: list[int] = field(default_factory=list)
    files_deleted: int = 0
    conflict: str | None = None


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def expire_snapshots(table: Table, now: datetime, keep_for: timedelta, protected: Iterable[int] = ()) -> list[int]:
    """Expire the snapshots older than ``now - keep_for`` (never the current one nor ``protected``); their ids."""
    current = table.current_snapshot()
    keep = {*protected, *(ref.snapshot_id for ref in table.metadata.refs.values())}
    if current is not None:
        keep.add(current.snapshot_id)
    cutoff = _millis(now - keep_for)
    expired = [
        snapshot.snapshot_id
        for snapshot in table.metadata.snapshots
        if snapshot.timestamp_ms < cutoff and snapshot.snapshot_id not in keep
    ]
    if expired:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return expired


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata references: metadata files, manifest lists, manifests, live data files
    of every kept snapshot, and the ledgers kept snapshots name."""
    metadata = table.metadata
    needed = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    manifests: dict[str, ManifestFile] = {}
    for snapshot in metadata.snapshots:
        needed.add(snapshot.manifest_list)
        ledger = snapshot.summary.get(LEDGER_PROPERTY) if snapshot.summary is not None else None
        if ledger:
            needed.add(ledger)
        for manifest in snapshot.manifests(table.io):
            manifests.setdefault(manifest.manifest_path, manifest)
    for path, manifest in manifests.items():
        needed.add(path)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            needed.add(entry.data_file.file_path)
    return needed


def remove_unreferenced_files(table: Table, store: ObjectStore, bucket: str, now: datetime, grace: timedelta) -> int:
    """Delete the objects under the table's location that its metadata does not reference and that are older
    than ``grace``; how many were deleted."""
    location = table.location().rstrip("/") + "/"
    scheme_bucket = f"s3://{bucket}/"
    if not location.startswith(scheme_bucket):
        raise ValueError(f"table location {location!r} is not in bucket {bucket!r}")
    needed = referenced_files(table)
    deleted = 0
    for item in store.list(location[len(scheme_bucket) :]):
        if item.key.endswith("/"):
            continue  # a folder marker of pyarrow's filesystem, not a file
        if f"{scheme_bucket}{item.key}" in needed:
            continue
        if item.last_modified is not None and now - item.last_modified < grace:
            continue
        deleted += store.delete(item.key, item.etag)
    return deleted


def apply_retention(
    table: Table,
    store: ObjectStore,
    bucket: str,
    *,
    now: datetime,
    keep_for: timedelta,
    grace: timedelta,
    protected: Iterable[int] = (),
) -> RetentionResult:
    """Expire old snapshots, then delete the files nothing references; a conflict skips to the next run."""
    result = RetentionResult(table.name()[-1])
    try:
        result.snapshots_expired = expire_snapshots(table, now, keep_for, protected)
    except CommitFailedException as error:
        result.conflict = str(error)
        return result
    table.refresh()
    result.files_deleted = remove_unreferenced_files(table, store, bucket, now, grace)
    return result
