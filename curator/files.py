"""Reading and writing the curated tables' data files: whole partitions in, whole partitions out.

Every change a run makes is copy-on-write at partition grain: the files of a touched partition are read, merged
in Arrow with the run's rows, written anew, and swapped for the old ones in one overwrite snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files, pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import WriteTask

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

__all__ = [
    "SnapshotChanges",
    "conform_to",
    "files_matching",
    "read_files",
    "snapshot_changes",
    "write_files",
    "write_partition",
]


def conform_to(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with ``schema``'s column order and types (milliseconds widen to microseconds, strings to large)."""
    columns = [rows.column(field.name).cast(field.type) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def files_matching(table: Table, row_filter: BooleanExpression, snapshot_id: int | None = None) -> list[DataFile]:
    """The data files of ``table`` (at ``snapshot_id``, default current) that may hold rows matching the filter;
    with a filter on the partition source, exactly the files of those partitions."""
    if table.current_snapshot() is None:
        return []
    scan = table.scan(row_filter=row_filter, snapshot_id=snapshot_id)
    return [task.file for task in scan.plan_files()]


def read_files(table: Table, files: Sequence[DataFile], columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of ``files`` (all of each file), in ``table``'s Arrow schema or the ``columns`` of it."""
    from pyiceberg.table import FileScanTask  # noqa: PLC0415

    schema = table.schema() if columns is None else table.schema().select(*columns)
    arrow = schema.as_arrow()
    if not files:
        return arrow.empty_table()
    scan = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
    return conform_to(scan.to_table([FileScanTask(data_file) for data_file in files]), arrow)


def write_files(table: Table, rows: pa.Table) -> list[DataFile]:
    """Write ``rows`` (already in the order wanted in the files) as data files of ``table``, split by partition;
    the files are not part of the table until a snapshot adds them."""
    if rows.num_rows == 0:
        return []
    files = list(_dataframe_to_data_files(table_metadata=table.metadata, df=rows, io=table.io, write_uuid=uuid.uuid4()))
    for data_file in files:
        data_file.spec_id = table.metadata.default_spec_id  # as a manifest would record it: the file is readable now
    return files


def write_partition(table: Table, value: Any, rows: pa.Table) -> list[DataFile]:
    """``rows`` (all of the one partition whose value is ``value``, in order) as data files of ``table``: the
    partition is known, so the rows are not grouped by partition again, as ``write_files`` does for any rows."""
    if rows.num_rows == 0:
        return []
    spec = table.metadata.spec()
    key = PartitionKey(
        field_values=[PartitionFieldValue(field=spec.fields[0], value=value)],
        partition_spec=spec,
        schema=table.schema(),
    )
    task = WriteTask(
        write_uuid=uuid.uuid4(),
        task_id=0,
        record_batches=rows.to_batches(),
        partition_key=key,
        schema=pyarrow_to_schema(rows.schema, name_mapping=table.metadata.schema().name_mapping, format_version=2),
    )
    files = list(write_file(io=table.io, table_metadata=table.metadata, tasks=iter([task])))
    for data_file in files:
        data_file.spec_id = table.metadata.default_spec_id
    return files


class SnapshotChanges:
    """The data files a chain of snapshots added and removed, net: a file added then removed in the chain is in
    neither."""

    def __init__(self) -> None:
        self.added: dict[str, DataFile] = {}
        self.removed: dict[str, DataFile] = {}

    def apply(self, added: Iterable[DataFile], removed: Iterable[DataFile]) -> None:
        for data_file in removed:
            if self.added.pop(data_file.file_path, None) is None:
                self.removed[data_file.file_path] = data_file
        for data_file in added:
            self.added[data_file.file_path] = data_file


def _own_entries(table: Table, snapshot: Snapshot) -> tuple[list[DataFile], list[DataFile]]:
    """The files ``snapshot`` itself added and removed (from the manifests it wrote, not the whole table)."""
    added: list[DataFile] = []
    removed: list[DataFile] = []
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            if entry.snapshot_id != snapshot.snapshot_id:
                continue
            if entry.status == ManifestEntryStatus.ADDED:
                added.append(entry.data_file)
            elif entry.status == ManifestEntryStatus.DELETED:
                removed.append(entry.data_file)
    return added, removed


def snapshot_changes(table: Table, since_id: int | None, until_id: int) -> SnapshotChanges | None:
    """The net files added and removed from snapshot ``since_id`` (None: the empty table) to ``until_id``,
    following parents back from ``until_id``; None when ``since_id`` is not an ancestor (expired, or another
    branch)."""
    chain: list[Snapshot] = []
    current = table.metadata.snapshot_by_id(until_id)
    while current is not None and current.snapshot_id != since_id:
        chain.append(current)
        parent = current.parent_snapshot_id
        current = table.metadata.snapshot_by_id(parent) if parent is not None else None
    if since_id is not None and current is None:
        return None
    if since_id is None and chain and chain[-1].parent_snapshot_id is not None:
        return None
    changes = SnapshotChanges()
    for snapshot in reversed(chain):
        added, removed = _own_entries(table, snapshot)
        changes.apply(added, removed)
    return changes
