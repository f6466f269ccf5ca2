"""The ``registrations`` table: one row per live ``(event_id, fan_id)``, advanced from ``registration_changes``.

``registrations`` records (``curator.changes-snapshot-id``) the ``registration_changes`` snapshot it reflects.
Each run applies the changes between that snapshot and the current one (files added minus the change ids of files
removed), so a run that committed the changes but crashed before the state is caught up by the next, exactly once.
Per key the newest change wins by the contract's order of changes (``pipeline.change_order``); a REMOVE deletes
the row. Only the partitions (events) the changes touch are read and rewritten, in one overwrite snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, In

from curator.commits import CurationError, Staged, commit_overwrite, predicate
from curator.files import conform_to, files_matching, read_files, snapshot_changes, write_files
from curator.tables import registrations_spec
from pipeline.change_order import CHANGE_TIME_US, NEWER_ORDER_COLUMNS, newer_order_columns

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from curator.curation import CurationResult

__all__ = ["APPLIED_PROPERTY", "WATERMARK_PROPERTY", "advance_registrations"]

#: Summary property of a ``registrations`` snapshot: the ``registration_changes`` snapshot it reflects.
APPLIED_PROPERTY = "curator.changes-snapshot-id"
#: Summary property of a ``registrations`` snapshot: the latest ``change_time_us`` applied so far.
WATERMARK_PROPERTY = "curator.applied-change-time-us"


def advance_registrations(
    changes: Table, state: Table, result: CurationResult, checkpoint: Callable[[str], None]
) -> None:
    """Apply the ``registration_changes`` snapshots ``state`` does not reflect yet, in one overwrite snapshot."""
    target = changes.current_snapshot()
    if target is None:
        return
    snapshot = state.current_snapshot()
    summary = snapshot.summary if snapshot is not None and snapshot.summary is not None else None
    applied_text = summary.get(APPLIED_PROPERTY) if summary is not None else None
    applied = int(applied_text) if applied_text else None
    if applied == target.snapshot_id:
        return
    delta = snapshot_changes(changes, applied, target.snapshot_id)
    if delta is None:
        raise CurationError(
            f"registrations reflects registration_changes snapshot {applied}, which is no longer an ancestor of "
            f"snapshot {target.snapshot_id}: the state cannot be advanced incrementally"
        )
    added_rows = read_files(changes, list(delta.added.values()))
    removed_ids = read_files(changes, list(delta.removed.values()), columns=["change_id"]).column("change_id")
    new_changes = added_rows.filter(pc.invert(pc.is_in(added_rows.column("change_id"), value_set=removed_ids)))
    del added_rows, removed_ids
    watermark_text = summary.get(WATERMARK_PROPERTY) if summary is not None else None
    watermark = int(watermark_text) if watermark_text else None
    staged = Staged(state)
    try:
        removed, added, applied_count = _merge_state(
            changes=changes,
            changes_snapshot=target.snapshot_id,
            state=state,
            new_changes=new_changes,
            watermark=watermark,
            result=result,
        )
        staged.written.extend(data_file.file_path for data_file in added)
        newest = pc.max(new_changes.column(CHANGE_TIME_US)).as_py()
        properties = {
            APPLIED_PROPERTY: str(target.snapshot_id),
            WATERMARK_PROPERTY: str(max(watermark or 0, newest or 0)),
            "curator.changes-applied": str(applied_count),
        }
        state = commit_overwrite(state, removed, added, properties)
    except CommitFailedException:
        staged.discard()
        raise
    checkpoint("registrations committed")
    result.state_changes_applied = applied_count
    committed = state.current_snapshot()
    result.registrations_snapshot = committed.snapshot_id if committed else None


def _merge_state(
    *,
    changes: Table,
    changes_snapshot: int,
    state: Table,
    new_changes: pa.Table,
    watermark: int | None,
    result: CurationResult,
) -> tuple[list[DataFile], list[DataFile], int]:
    """The touched events' partitions of ``state`` merged with the latest of ``new_changes`` per key."""
    if new_changes.num_rows == 0:
        return [], [], 0
    winners = _latest_per_key(new_changes)
    events = pc.unique(winners.column("event_id")).to_pylist()
    old_files = files_matching(state, predicate(In, "event_id", events))
    current = read_files(state, old_files)
    schema = registrations_spec().arrow_schema
    # Candidates per key: the stored row (op null) and the run's latest change; the later one wins.
    stored = current.append_column("op", pa.nulls(current.num_rows, pa.large_string()))
    incoming = conform_to(winners.select([*schema.names, "op"]), stored.schema)
    candidates = pa.concat_tables([stored, incoming])
    chosen = _latest_per_key(candidates)
    removed_keys = _removed_later(changes, changes_snapshot, chosen, current, watermark)
    keep = pc.not_equal(pc.fill_null(chosen.column("op"), ""), "REMOVE")
    if removed_keys is not None:
        keep = pc.and_(keep, pc.invert(removed_keys))
    rows = chosen.filter(keep).select(schema.names)
    order = pc.sort_indices(rows, sort_keys=[("event_id", "ascending"), ("fan_id", "ascending")])
    rows = conform_to(rows.take(order), schema)
    files = write_files(state, rows)
    result.events_written = len(events)
    return old_files, files, winners.num_rows


def _removed_later(
    changes: Table, snapshot_id: int, chosen: pa.Table, current: pa.Table, watermark: int | None
) -> pa.Array | None:
    """For each chosen row: whether an already-applied REMOVE of its key is later than it.

    Only a late change (no later than what was applied before) of a key with no stored row can be one: its
    key may have been removed by a change applied in an earlier run, which the state no longer shows."""
    if watermark is None:
        return None
    stored_keys, keys = _key_text(current), _key_text(chosen)
    # A stored row (op null) is never a suspect: nulls are filled, or Arrow's and_ would make the row null.
    operations = pc.fill_null(chosen.column("op"), "")
    suspect = pc.and_(
        pc.and_(pc.not_equal(operations, ""), pc.not_equal(operations, "REMOVE")),
        pc.and_(
            pc.less_equal(chosen.column(CHANGE_TIME_US), watermark),
            pc.invert(pc.is_in(keys, value_set=stored_keys)),
        ),
    )
    if not pc.any(suspect).as_py():
        return None
    suspects = chosen.filter(suspect)
    since = pc.min(suspects.column("change_time")).as_py()
    row_filter = And(
        And(
            predicate(EqualTo, "op", "REMOVE"),
            predicate(GreaterThanOrEqual, "change_time", since.isoformat()),
        ),
        predicate(In, "event_id", pc.unique(suspects.column("event_id")).to_pylist()),
    )
    removes = changes.scan(
        row_filter=row_filter,
        snapshot_id=snapshot_id,
        selected_fields=("event_id", "fan_id", "change_time", CHANGE_TIME_US, "sequence_number", "change_id"),
    ).to_arrow()
    if removes.num_rows == 0:
        return None
    latest_removes = _latest_per_key(removes)
    remove_keys = _key_text(latest_removes)
    # A key whose latest REMOVE orders after the chosen change: compare through a table join on the key.
    joined = pa.table({"key": keys, "row": pa.array(range(chosen.num_rows), pa.int64())}).join(
        pa.table({"key": remove_keys}).append_column("remove_rank", _rank_table(latest_removes)),
        "key",
        join_type="inner",
    )
    chosen_rank = _rank_table(chosen)
    pairs = zip(joined.column("row").to_pylist(), joined.column("remove_rank").to_pylist(), strict=True)
    later = [row for row, rank in pairs if rank > chosen_rank[row].as_py()]
    flags = [False] * chosen.num_rows
    for row in later:
        flags[row] = True
    return pc.and_(suspect, pa.array(flags))


def _key_text(rows: pa.Table) -> pa.Array:
    """``event_id`` and ``fan_id`` joined into one text per row (a unit separator between them)."""
    return pc.binary_join_element_wise(
        rows.column("event_id").cast(pa.string()), rows.column("fan_id").cast(pa.string()), "\x1f"
    )


def _rank_table(rows: pa.Table) -> pa.Array:
    """The order of changes (``pipeline.change_order``) as one comparable text per row."""
    keys = newer_order_columns(rows)
    micros = pc.utf8_lpad(keys.column(NEWER_ORDER_COLUMNS[0]).cast(pa.string()), width=20, padding="0")
    return pc.binary_join_element_wise(
        micros, keys.column(NEWER_ORDER_COLUMNS[1]), keys.column(NEWER_ORDER_COLUMNS[2]), "/"
    )


def _latest_per_key(rows: pa.Table) -> pa.Table:
    """The newest row (by the order of changes, ``pipeline.change_order``) of each (event_id, fan_id), in key
    order."""
    if rows.num_rows == 0:
        return rows
    keys = newer_order_columns(rows)
    index = pa.table(
        {
            "event_id": rows.column("event_id"),
            "fan_id": rows.column("fan_id"),
            **{name: keys.column(name) for name in NEWER_ORDER_COLUMNS},
        }
    )
    order = pc.sort_indices(
        index,
        sort_keys=[
            ("event_id", "ascending"),
            ("fan_id", "ascending"),
            *((name, "descending") for name in NEWER_ORDER_COLUMNS),
        ],
    )
    sorted_keys = index.select(["event_id", "fan_id"]).take(order)
    events, fans = sorted_keys.column("event_id").combine_chunks(), sorted_keys.column("fan_id").combine_chunks()
    if len(order) == 1:
        first = pa.array([True])
    else:
        differs = pc.or_(
            pc.not_equal(events.slice(1), events.slice(0, len(events) - 1)),
            pc.not_equal(fans.slice(1), fans.slice(0, len(fans) - 1)),
        )
        first = pa.concat_arrays([pa.array([True]), differs])
    return rows.take(pc.filter(order, first))
