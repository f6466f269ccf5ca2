"""The table's current state as the lake should hold it, and its comparison with the lake's current state.

A scan of the table gives every live item; each goes through the stream's decoder as an INSERT of that item (so
its columns are typed and converted exactly as a change row would be). Items the record contract refuses (the
poison items: in quarantine, never rows) are counted apart: the lake cannot hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from boto3.dynamodb.types import TypeDeserializer

from components.current_state import state_columns
from pipeline.columnar import decode_batch
from pipeline.decode import parse_kinesis_records
from sandbox.changes import Change, changes_event, item_key

__all__ = ["StateComparison", "TableState", "compare_states", "lake_state", "table_state"]

Key = tuple[str, str]  # (event_id, fan_id)
_deserializer = TypeDeserializer()
_DECODE_CHUNK = 1000


@dataclass(frozen=True)
class TableState:
    """A scan of the table: the rows its live items make, and how many items the contract refuses."""

    items: int
    rows: dict[Key, dict[str, Any]]
    refused: int


@dataclass(frozen=True)
class StateComparison:
    """The table's state against the lake's current state, registration by registration."""

    table_items: int
    refused: int  # items of the table the record contract refuses (quarantined, never rows)
    lake_registrations: int
    missing: list[Key] = field(default_factory=list)  # live in the table, not in the lake
    unexpected: list[Key] = field(default_factory=list)  # in the lake, not live in the table
    different: dict[Key, list[str]] = field(default_factory=dict)  # the columns that differ

    @property
    def mismatches(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.different)

    @property
    def equal(self) -> bool:
        return self.mismatches == 0

    def describe(self, limit: int = 3, held_by: str = "the lake") -> list[str]:
        """A few lines naming mismatching registrations (empty when equal); ``held_by`` names the compared side."""
        lines = [f"live in the table, not in {held_by}: {key}" for key in self.missing[:limit]]
        lines += [f"in {held_by}, not live in the table: {key}" for key in self.unexpected[:limit]]
        lines += [f"{key} differs in {', '.join(names)}" for key, names in list(self.different.items())[:limit]]
        return lines


def _keyed(rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {(str(row["event_id"]), str(row["fan_id"])): row for row in rows}


def table_state(dynamodb: Any, table_name: str) -> TableState:
    """Scan ``table_name``; decode each item as the stream would decode an INSERT of it."""
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table_name):
        items.extend({name: _deserializer.deserialize(value) for name, value in item.items()} for item in page["Items"])
    rows: dict[Key, dict[str, Any]] = {}
    refused = 0
    now = datetime.now(UTC)
    columns = state_columns()
    for start in range(0, len(items), _DECODE_CHUNK):
        chunk = [Change("INSERT", item_key(item), item, None, now) for item in items[start : start + _DECODE_CHUNK]]
        decoded = decode_batch(parse_kinesis_records(changes_event(chunk, table_name=table_name)), "MILLISECOND")
        refused += len(decoded.quarantined)
        rows.update(_keyed(decoded.rows.select(columns).to_pylist()))
    return TableState(items=len(items), rows=rows, refused=refused)


def lake_state(current: pa.Table) -> dict[Key, dict[str, Any]]:
    """The current-state query's result (``sandbox.lake.Lake.current_state``), keyed like ``table_state``."""
    return _keyed(current.select(state_columns()).to_pylist())


def compare_states(table: TableState, lake: Mapping[Key, dict[str, Any]]) -> StateComparison:
    """Every attribute of every live registration, and no registration the table does not hold."""
    different: dict[Key, list[str]] = {}
    for key in sorted(set(table.rows) & set(lake)):
        expected, found = table.rows[key], lake[key]
        names = [name for name in expected if expected[name] != found.get(name)]
        if names:
            different[key] = names
    return StateComparison(
        table_items=table.items,
        refused=table.refused,
        lake_registrations=len(lake),
        missing=sorted(set(table.rows) - set(lake)),
        unexpected=sorted(set(lake) - set(table.rows)),
        different=different,
    )
