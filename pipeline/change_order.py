"""The order of changes: which of two changes of one registration is the newer, and which copy of a change is kept.

The one rule every reader of the lake applies (the named queries, the current state, compaction, and any later
curator), written here once, as Python sort keys and as Athena SQL ``ORDER BY`` terms:

- **Newest change first**: the larger ``change_time_us`` (``ApproximateCreationDateTime`` in whole microseconds
  since the epoch, an integer column: Athena reads a Hive table's Parquet timestamps at millisecond precision,
  so ``change_time`` cannot order two changes of the same millisecond); on a tie, the larger Kinesis sequence
  number (compared as an integer); on a tie again, the larger ``change_id``. Kinesis Data Streams for DynamoDB
  may deliver an item's changes out of order, so delivery order is never the rule; the sequence number only
  decides between changes DynamoDB stamped with the same microsecond, where nothing better is known (one item's
  records share a partition key, whose sequence numbers generally increase over time), and ``change_id`` makes
  the rule total.
- **Which copy of a change is kept** (the same ``change_id`` delivered twice: same change, new sequence number):
  the lowest sequence number, then the lowest ``shard_id``, so the queries keep the copy compaction keeps
  whatever the order of files and rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decode import sequence_key as sequence_order_key

__all__ = [
    "CHANGE_TIME_US",
    "NEWER_ORDER_COLUMNS",
    "SEQUENCE_SQL_DIGITS",
    "change_time_us_of",
    "copy_order_key",
    "first_copy_sql",
    "newer_order_columns",
    "newer_order_key",
    "newest_first_sql",
    "newest_key_sql",
    "sequence_order_key",
]

#: The integer column the order is read from: epoch microseconds of the change (the snapshot's export time).
CHANGE_TIME_US = "change_time_us"
#: Kinesis sequence numbers are decimal text of at most 128 digits: SQL compares them left-padded to this width.
SEQUENCE_SQL_DIGITS = 129
#: The columns ``newer_order_columns`` returns, most significant first; ascending order = oldest first.
NEWER_ORDER_COLUMNS = ("_order_time_us", "_order_sequence", "_order_change_id")


def newer_order_key(row: Mapping[str, Any]) -> tuple[int, tuple[int, str], str]:
    """Sort key of a change row: of two changes of one registration, the newer has the larger key."""
    return (int(row[CHANGE_TIME_US]), sequence_order_key(str(row["sequence_number"])), str(row["change_id"]))


def newer_order_columns(rows: pa.Table) -> pa.Table:
    """The order of ``rows``' changes as Arrow columns (``NEWER_ORDER_COLUMNS``), for sorting whole tables:
    sorted ascending by all three, of two changes of one registration the newer comes last (as ``newer_order_key``:
    the sequence number left-padded, as in the SQL)."""
    sequences = rows.column("sequence_number").cast(pa.string())
    return pa.table(
        {
            NEWER_ORDER_COLUMNS[0]: change_time_us_of(rows.column(CHANGE_TIME_US)),
            NEWER_ORDER_COLUMNS[1]: pc.utf8_lpad(sequences, width=SEQUENCE_SQL_DIGITS, padding="0"),
            NEWER_ORDER_COLUMNS[2]: rows.column("change_id").cast(pa.string()),
        }
    )


def copy_order_key(row: Mapping[str, Any]) -> tuple[tuple[int, str], str]:
    """Sort key of one copy of a change: of the copies with one ``change_id``, the kept one has the smallest key."""
    return (sequence_order_key(str(row["sequence_number"])), str(row["shard_id"]))


def _padded_sequence(column: str = "sequence_number") -> str:
    return f"lpad({column}, {SEQUENCE_SQL_DIGITS}, '0')"


def newest_first_sql(time_column: str = CHANGE_TIME_US, *, then: tuple[str, ...] = ()) -> str:
    """``ORDER BY`` terms putting the newest change of a partition first (Athena SQL, DuckDB-transpilable).

    ``time_column`` is an integer of epoch microseconds (``change_time_us``, or a derived one such as a snapshot
    row's place in the order); ``then`` are terms placed right after it, before the sequence number."""
    terms = [f"{time_column} DESC", *then, f"{_padded_sequence()} DESC", "change_id DESC"]
    return ", ".join(terms)


def newest_key_sql(time_column: str = CHANGE_TIME_US) -> str:
    """A ``ROW`` value whose largest is the newest change (the order of ``newest_first_sql``), for ``max_by``: an
    aggregate then keeps each group's newest change without sorting the rows by a window (Athena SQL,
    DuckDB-transpilable; both order rows field by field). The sequence number compares as an integer by its length
    without leading zeros, then its digits: the order of the padded text, without padding every row to
    ``SEQUENCE_SQL_DIGITS`` characters (which cost the curated demand query about a third of its time in DuckDB)."""
    digits = "trim(LEADING '0' FROM sequence_number)"
    return f"ROW({time_column}, length({digits}), {digits}, change_id)"


def first_copy_sql() -> str:
    """``ORDER BY`` terms putting the kept copy of a change first, in a window ``PARTITION BY change_id``."""
    return f"{_padded_sequence()}, shard_id"


def change_time_us_of(change_time: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``change_time_us`` from a ``change_time`` column (a timestamp of any unit, or integer microseconds)."""
    if pa.types.is_timestamp(change_time.type):
        change_time = change_time.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return pc.cast(change_time, pa.int64())
