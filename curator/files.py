"""Reading and writing the curated tables' data files: whole partitions in, whole partitions out.

Every change a run makes is copy-on-write at partition grain: the files of a touched partition are read, merged
in Arrow with the run's rows, written anew, and swapped for the old ones in one overwrite snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.fileformat import FileFormatFactory
from pyiceberg.io.pyarrow import (
    ArrowScan,
    MetricModeTypes,
    MetricsMode,
    _dataframe_to_data_files,
    _get_parquet_writer_kwargs,
    _to_requested_schema,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    pyarrow_to_schema,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestEntryStatus
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import TableProperties
from pyiceberg.table.locations import load_location_provider

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

__all__ = [
    "DICTIONARY_COLUMNS",
    "STATISTICS_COLUMNS",
    "SnapshotChanges",
    "conform_to",
    "files_matching",
    "read_files",
    "snapshot_changes",
    "write_files",
    "write_partition",
]


#: Parquet columns of the curated tables written with a dictionary: those with few distinct values in a file. The
#: others (``fan_id``, ``change_id``, ``sequence_number``, the times) are nearly all distinct: a dictionary is built
#: for them only to be given up once it outgrows its page, which cost CPU and made the files bigger, not smaller.
DICTIONARY_COLUMNS = frozenset(
    {
        "event_id",
        "market_id",
        "status",
        "quantity",
        "price_levels.list.element",
        "channel",
        "presale_code",
        "attributes.key_value.key",
        "attributes.key_value.value",
        "op",
        "shard_id",
        "table_name",
        "extra_attributes",
    }
)
#: Parquet columns whose statistics (min, max, nulls) are written, in the row groups and so in the manifests'
#: bounds: the columns readers prune on (the partition and sort keys, the change's identity and time, the
#: ``op`` the late-REMOVE check filters on) and the cheap numeric ones. Min and max of the other text columns
#: (sequence numbers, attributes) cost a comparison per value and prune no query.
STATISTICS_COLUMNS = frozenset(
    {
        "event_id",
        "fan_id",
        "market_id",
        "quantity",
        "created_at",
        "updated_at",
        "op",
        "change_id",
        "change_time",
        "change_time_us",
    }
)

_NO_METRICS = MetricsMode(MetricModeTypes.NONE)


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
    """``rows`` (all of the one partition whose value is ``value``, in order) as one data file of ``table``: the
    partition is known, so the rows are not grouped by partition again, as ``write_files`` does for any rows.

    Written as pyiceberg writes a data file (the table's schema with field ids, its compression and page settings,
    the same column metrics in the manifest), except that only ``DICTIONARY_COLUMNS`` are dictionary-encoded and
    only ``STATISTICS_COLUMNS`` carry statistics."""
    if rows.num_rows == 0:
        return []
    metadata = table.metadata
    schema = metadata.schema()
    spec = metadata.spec()
    key = PartitionKey(
        field_values=[PartitionFieldValue(field=spec.fields[0], value=value)], partition_spec=spec, schema=schema
    )
    given = pyarrow_to_schema(rows.schema, name_mapping=schema.name_mapping, format_version=2)
    parquet = FileFormatFactory.get(FileFormat.PARQUET)
    batches = [
        _to_requested_schema(schema, given, batch, include_field_ids=True, format_model=parquet)
        for batch in rows.to_batches()
    ]
    arrow = pa.Table.from_batches(batches)
    path = load_location_provider(metadata.location, metadata.properties).new_data_location(
        data_file_name=f"00000-0-{uuid.uuid4()}.parquet", partition_key=key
    )
    columns = parquet_path_to_id_mapping(schema)
    output = table.io.new_output(path)
    with output.create(overwrite=True) as stream:
        writer = pq.ParquetWriter(
            stream,
            schema=arrow.schema,
            store_decimal_as_integer=True,
            use_dictionary=sorted(DICTIONARY_COLUMNS.intersection(columns)),
            write_statistics=sorted(STATISTICS_COLUMNS.intersection(columns)),
            **_get_parquet_writer_kwargs(metadata.properties),
        )
        with writer:
            writer.write_table(
                arrow,
                row_group_size=int(
                    metadata.properties.get(
                        TableProperties.PARQUET_ROW_GROUP_LIMIT, TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT
                    )
                ),
            )
        size = stream.tell()  # the file's size, without asking the store for it again
    # The manifest's metrics of a column without Parquet statistics: none (rather than counts pyiceberg would log a
    # warning per column and file for, then drop).
    measured = {columns[path] for path in STATISTICS_COLUMNS.intersection(columns)}
    plan = {
        field_id: collector if field_id in measured else replace(collector, mode=_NO_METRICS)
        for field_id, collector in compute_statistics_plan(schema, metadata.properties).items()
    }
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=writer.writer.metadata, stats_columns=plan, parquet_column_mapping=columns
    )
    data_file = DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=key.partition,
        file_size_in_bytes=size,
        sort_order_id=None,
        spec_id=metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )
    data_file.spec_id = metadata.default_spec_id  # as a manifest would record it: the file is readable now
    return [data_file]


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
