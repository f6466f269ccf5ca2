"""A decoded batch: the good rows as one Arrow table, and the records that go to quarantine.

``decode_strict`` is the reference path: one record at a time through ``pipeline.decode`` and
``pipeline.normalize``. ``pipeline.columnar.decode_batch`` is the fast path that falls back to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.decode import KinesisRecord, decode_data, parse_change_record
from pipeline.exceptions import RecordError
from pipeline.normalize import normalize
from pipeline.schema import arrow_schema

__all__ = ["DecodedBatch", "Quarantined", "decode_one", "decode_strict", "rows_table"]


@dataclass(frozen=True)
class Quarantined:
    """A record that can never succeed, with why."""

    position: int  # index in the batch, in sequence-number order
    error: RecordError


@dataclass(frozen=True)
class DecodedBatch:
    """Rows (in record order) and quarantined records; together they cover every position exactly once."""

    rows: pa.Table
    positions: tuple[int, ...]  # batch position of each row, ascending
    quarantined: tuple[Quarantined, ...]  # ascending position


def decode_one(record: KinesisRecord, precision: str, source_table: str | None = None) -> dict[str, Any]:
    """One record through the strict path: a row, or ``RecordError``."""
    return normalize(record, parse_change_record(decode_data(record.data), precision, source_table))


def rows_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows from the strict path -> a table with the contract's Arrow schema."""
    return pa.Table.from_pylist(list(rows), schema=arrow_schema())


def decode_strict(records: Sequence[KinesisRecord], precision: str, source_table: str | None = None) -> DecodedBatch:
    """Every record through the strict path (``source_table``: see ``pipeline.decode.parse_change_record``)."""
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    quarantined: list[Quarantined] = []
    for position, record in enumerate(records):
        try:
            rows.append(decode_one(record, precision, source_table))
        except RecordError as error:
            quarantined.append(Quarantined(position, error))
        else:
            positions.append(position)
    return DecodedBatch(rows_table(rows), tuple(positions), tuple(quarantined))
