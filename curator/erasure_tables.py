"""An erasure's work on one Iceberg table: finding the fans' rows in its data files, writing the files that hold
some anew without them, and cutting the table's history so no older snapshot, manifest or file still holds them
(``curator.erasure`` runs these in order)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import TableProperties

from curator.commits import Staged
from curator.erasure_versions import VersionPurge, purge_versions
from curator.files import read_files, write_files, write_partition
from curator.retention import referenced_files
from curator.store import ObjectStore
from curator.tables import PREVIOUS_METADATA_VERSIONS, REGISTRATIONS_TABLE

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

__all__ = [
    "TableErasure",
    "bound_holds_fan",
    "drop_deleted_manifests",
    "forget_history",
    "needs_cleanup",
    "purge_table_versions",
    "summary_properties",
    "table_rows",
]

_PREVIOUS_MAX = TableProperties.METADATA_PREVIOUS_VERSIONS_MAX
#: Data files read whole at once (in parallel) to be rewritten: the erasure's memory is their rows, up to
#: ``SLICE_ROWS`` each.
_READ_AHEAD = 4
#: Data files whose ``fan_id`` column alone is read at once while the fans' rows are looked for: a column of a
#: file is a few MB, and the reads are S3 round trips to overlap.
_SCAN_AHEAD = 16


@dataclass
class TableErasure:
    """The fans' rows in one table: the files holding them, and (once written) those files without them."""

    table: Table
    rows: Counter[str] = field(default_factory=Counter)
    removed: list[DataFile] = field(default_factory=list)
    added: list[DataFile] = field(default_factory=list)
    #: The fans' rows in each file holding some.
    per_file: dict[str, Counter[str]] = field(default_factory=dict)


def table_rows(
    table: Table,
    fans: Collection[str],
    *,
    write: bool,
    files: Sequence[DataFile],
    staged: Staged | None = None,
) -> TableErasure:
    """Find the fans' rows in ``files`` of ``table`` (the run picks them among the files whose ``fan_id`` bounds
    allow a fan); with ``write``, write each file that holds some anew
    without them (rows in the same order, same partition).

    Looking is reading the ``fan_id`` column alone, ``_SCAN_AHEAD`` files at a time: a tenth of a file's bytes and
    decoding, and at the documented load nearly every file of the period is looked at. Only ``write`` reads files
    whole (``_READ_AHEAD`` at a time), and the run passes it just the files its look found holding a fan."""
    erasure = TableErasure(table)
    wanted = pa.array(sorted(fans), pa.string())
    candidates = list(files)
    columns = None if write else ["fan_id"]
    at_once = _READ_AHEAD if write else _SCAN_AHEAD

    def read(data_file: DataFile) -> tuple[DataFile, Counter[str], pa.Table | None, pa.Array | None]:
        rows = read_files(table, [data_file], columns=columns)
        mask = pc.fill_null(pc.is_in(rows.column("fan_id"), value_set=wanted), False)
        counts = Counter(str(fan) for fan in rows.column("fan_id").filter(mask).to_pylist())
        return (data_file, counts, rows, mask) if write and counts else (data_file, counts, None, None)

    # A few files at a time: memory holds their rows, whatever the table's size.
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        for start in range(0, len(candidates), at_once):
            for data_file, counts, rows, mask in pool.map(read, candidates[start : start + at_once]):
                if not counts:
                    continue
                erasure.rows.update(counts)
                erasure.per_file[data_file.file_path] = counts
                erasure.removed.append(data_file)
                if rows is None or mask is None:
                    continue
                kept = rows.filter(pc.invert(mask))
                del rows, mask
                if table.name()[-1] == REGISTRATIONS_TABLE:
                    files = write_partition(table, data_file.partition[0], kept)
                else:
                    files = write_files(table, kept)
                if staged is not None:
                    staged.written.extend(item.file_path for item in files)
                erasure.added.extend(files)
    return erasure


def bound_holds_fan(table: Table, fans: Collection[str]) -> str | None:
    """The first kept manifest with an entry whose column bound is a fan's id, or None. (A bound equal to the id
    is the case that matters: Iceberg keeps string bounds whole up to 16 characters, truncated beyond, and a
    truncated bound is shared by every id with that prefix.)"""
    encoded = {fan.encode() for fan in fans}
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            bounds = [*(entry.data_file.lower_bounds or {}).values(), *(entry.data_file.upper_bounds or {}).values()]
            if any(bytes(bound) in encoded for bound in bounds):
                return manifest.manifest_path
    return None


def _unreferenced(table: Table, store: ObjectStore, bucket: str) -> list[tuple[str, str]]:
    """(key, ETag) of every object under the table's location that its current metadata does not reference."""
    location = table.location().rstrip("/") + "/"
    scheme_bucket = f"s3://{bucket}/"
    needed = referenced_files(table)
    return [
        (item.key, item.etag)
        for item in store.list(location[len(scheme_bucket) :])
        if not item.key.endswith("/") and f"{scheme_bucket}{item.key}" not in needed
    ]


def needs_cleanup(table: Table, store: ObjectStore, bucket: str, fans: Collection[str]) -> bool:
    """Whether anything of ``table`` besides its current rows could still hold a fan: an older snapshot, a
    manifest with deleted entries, older metadata files, unreferenced files."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return bool(_unreferenced(table, store, bucket))
    if len(table.metadata.snapshots) > 1 or len(table.metadata.metadata_log) > 1:
        return True
    if any(manifest.deleted_files_count for manifest in snapshot.manifests(table.io)):
        return True
    return bound_holds_fan(table, fans) is not None or bool(_unreferenced(table, store, bucket))


def summary_properties(table: Table, names: Sequence[str]) -> dict[str, str]:
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot is not None else None
    if summary is None:
        return {}
    return {name: str(value) for name in names if (value := summary.get(name)) is not None}


def drop_deleted_manifests(table: Table, properties: dict[str, str]) -> Table:
    """An append of no file: its manifest list keeps only the manifests with live files (pyiceberg's fast append),
    so the manifests holding only deleted entries, whose bounds may be a fan's id, are no longer referenced."""
    transaction = table.transaction()
    with transaction.update_snapshot(snapshot_properties=properties).fast_append():
        pass
    return transaction.commit_transaction()


def forget_history(table: Table, store: ObjectStore, bucket: str) -> Table:
    """Expire every snapshot but the current one, cut the metadata log to one entry (pyiceberg deletes the metadata
    files it drops), and delete every file the current metadata does not reference."""
    current = table.current_snapshot()
    keep = current.snapshot_id if current is not None else None
    older = [item.snapshot_id for item in table.metadata.snapshots if item.snapshot_id != keep]
    if older:
        table.maintenance.expire_snapshots().by_ids(older).commit()
        table.refresh()
    if len(table.metadata.metadata_log) > 1:
        with table.transaction() as transaction:
            transaction.set_properties({_PREVIOUS_MAX: "1"})
        table.refresh()
        with table.transaction() as transaction:
            transaction.set_properties({_PREVIOUS_MAX: str(PREVIOUS_METADATA_VERSIONS)})
        table.refresh()
    for key, etag in _unreferenced(table, store, bucket):
        store.delete(key, etag)
    return table


def purge_table_versions(table: Table, store: ObjectStore, bucket: str, *, dry_run: bool = False) -> VersionPurge:
    """Every noncurrent version under the table's location, and the delete markers left without a version: table
    files are written once, so each is a file already deleted (an old data file, a manifest whose bounds may be a
    fan's id, older metadata) that ``GetObject?versionId=`` could still read."""
    location = table.location().rstrip("/") + "/"
    return purge_versions(store, location[len(f"s3://{bucket}/") :], holds=None, dry_run=dry_run)
