"""Rows of the change log: raw rows conformed to the record contract, one row per change, the file order, and
the hash that splits an hour's rows into bounded slices.

The deduplication rule is the contract's copy rule (``pipeline.change_order``): of the copies of one change
(one ``change_id``), the lowest Kinesis sequence number is kept, then the lowest ``shard_id``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.change_order import CHANGE_TIME_US, change_time_us_of
from pipeline.exceptions import PipelineError

__all__ = [
    "SORT_KEYS",
    "ContractError",
    "conform_to_contract",
    "first_of_each_change",
    "slice_of",
    "sort_order",
]

#: Row order within a data file: each registration's changes together, oldest first.
SORT_KEYS = ("event_id", "fan_id", CHANGE_TIME_US)
_SEQUENCE_DIGITS = 64  # Kinesis sequence numbers are decimal text of up to ~56 digits
_HASHED_BYTES = 8  # the slice hash reads the last bytes of a change id (DynamoDB's are 32 random hex digits)
#: splitmix64's finalizer: (shift, multiplier) twice, then a last shift.
_MIX_STEPS = (
    (pa.scalar(30, pa.uint64()), pa.scalar(0xBF58476D1CE4E5B9, pa.uint64())),
    (pa.scalar(27, pa.uint64()), pa.scalar(0x94D049BB133111EB, pa.uint64())),
)
_MIX_LAST_SHIFT = pa.scalar(31, pa.uint64())


class ContractError(PipelineError):
    """Rows that do not fit the record contract (a column it does not know, a sequence number too long)."""


def conform_to_contract(rows: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """``rows`` with exactly ``schema``'s columns and types: a column older rows lack is null (as Athena shows
    it), ``change_time_us`` follows from ``change_time`` where it is missing; a column the contract does not know
    is an error (curating the rows would drop it)."""
    unknown = [name for name in rows.column_names if name not in schema.names]
    if unknown:
        raise ContractError(
            f"{source} has column(s) {', '.join(unknown)} that the record contract does not know: "
            "curating it would drop them"
        )
    columns = []
    for field in schema:
        if field.name in rows.column_names:
            columns.append(rows.column(field.name).cast(field.type))
        elif field.name == CHANGE_TIME_US and "change_time" in rows.column_names:
            columns.append(change_time_us_of(rows.column("change_time")).cast(field.type))
        else:
            columns.append(pa.nulls(rows.num_rows, field.type))
    fields = [
        field.with_nullable(True) if not field.nullable and column.null_count else field
        for field, column in zip(schema, columns, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))


def first_of_each_change(rows: pa.Table) -> pa.Array | None:
    """Positions of the rows to keep, one per ``change_id`` (lowest sequence number, then lowest ``shard_id``);
    None if every ``change_id`` is distinct. Duplicates are rare: they are found by hashing, and only their
    rows are sorted."""
    counts = pc.value_counts(rows.column("change_id"))  # one hash pass, cheaper than a group-by
    if len(counts) == rows.num_rows:
        return None
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    is_repeated = pc.is_in(rows["change_id"], value_set=repeated)
    positions = pc.indices_nonzero(is_repeated)
    sequences = pc.take(rows["sequence_number"], positions)
    longest = pc.max(pc.utf8_length(sequences)).as_py()
    if longest > _SEQUENCE_DIGITS:
        raise ContractError(f"a sequence number has {longest} digits; at most {_SEQUENCE_DIGITS} are expected")
    # Zero-padded decimal text orders as the integers do: the lowest sequence number of a change comes first.
    keys = pa.table(
        {
            "change_id": pc.take(rows["change_id"], positions),
            "sequence": pc.utf8_lpad(sequences, width=_SEQUENCE_DIGITS, padding="0"),
            "shard_id": pc.take(rows["shard_id"], positions),
        }
    )
    by_change = pc.sort_indices(
        keys, sort_keys=[("change_id", "ascending"), ("sequence", "ascending"), ("shard_id", "ascending")]
    )
    ordered = pc.take(keys["change_id"], by_change)
    first = pc.not_equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    winners = pc.take(positions, pc.filter(by_change, pa.concat_arrays([pa.array([True]), first.combine_chunks()])))
    singles = pc.indices_nonzero(pc.invert(is_repeated))
    return pa.concat_arrays([singles.cast(pa.uint64()), winners.cast(pa.uint64())])


def sort_order(keys: pa.Table) -> pa.Array:
    """Indices that order ``keys`` (the ``SORT_KEYS`` columns) by ``SORT_KEYS``, a stable sort.

    The first key (event_id: a few hundred values an hour) is sorted as its rank among the distinct values, an
    integer; then each event's rows, gathered next to each other, are sorted by the other keys on their own: the
    same order as one sort by all the keys, at a fraction of the cost."""
    if keys.num_rows == 0:
        return pa.array([], pa.uint64())
    first, *rest = SORT_KEYS
    encoded = pc.dictionary_encode(keys[first].combine_chunks())
    ranks = pc.rank(encoded.dictionary, sort_keys="ascending").cast(pa.int32())
    row_ranks = pc.take(ranks, encoded.indices)
    by_first = pc.sort_indices(row_ranks)
    run_ends = pc.run_end_encode(pc.take(row_ranks, by_first)).run_ends.to_pylist()
    others = keys.select(rest).take(by_first).combine_chunks()
    pieces: list[pa.Array] = []
    start = 0
    for end in run_ends:
        local = pc.sort_indices(others.slice(start, end - start), sort_keys=[(name, "ascending") for name in rest])
        pieces.append(pc.take(by_first.slice(start, end - start), local))
        start = end
    return pa.concat_arrays(pieces)


def slice_of(change_ids: pa.Array | pa.ChunkedArray, slices: int) -> pa.Array:
    """For each change id, its slice in ``range(slices)`` (int64): a hash of the id's last 8 bytes (a shorter id
    padded on the left), the same in every run, so every copy of a change lands in the same slice.

    The 8 bytes are read as one unsigned 64-bit integer (the buffer viewed as integers, not a byte at a time) and
    mixed by splitmix64's finalizer, so every bit of them reaches the slice."""
    ids = change_ids.combine_chunks() if isinstance(change_ids, pa.ChunkedArray) else change_ids
    text = pc.fill_null(pc.cast(ids, pa.large_string()), "")
    padded = pc.cast(pc.utf8_lpad(text, width=_HASHED_BYTES, padding=" "), pa.large_binary())
    tails = pc.cast(pc.binary_slice(padded, -_HASHED_BYTES), pa.binary(_HASHED_BYTES))
    mixed = pa.Array.from_buffers(pa.uint64(), len(tails), [None, tails.buffers()[1]], offset=tails.offset)
    for shift, factor in _MIX_STEPS:
        mixed = pc.multiply(pc.bit_wise_xor(mixed, pc.shift_right(mixed, shift)), factor)  # unchecked: wraps around
    mixed = pc.bit_wise_xor(mixed, pc.shift_right(mixed, _MIX_LAST_SHIFT))
    count = pa.scalar(slices, pa.uint64())
    return pc.subtract(mixed, pc.multiply(pc.divide(mixed, count), count)).cast(pa.int64())
