"""Which of two changes to the same registration is the later one: the one rule the current state follows.

Latest change time wins; a tie is broken by the higher sequence number. This is the single place the rule
lives, so that a finer change time (or another tie-break) is one edit here.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ORDER_COLUMNS", "SEQUENCE_DIGITS", "ordering_keys"]

#: Kinesis sequence numbers are decimal text of up to ~56 digits: zero-padded to this width they order as integers.
SEQUENCE_DIGITS = 64
#: The columns ``ordering_keys`` returns, most significant first; ascending order = oldest first.
ORDER_COLUMNS = ("_order_time", "_order_sequence")


def ordering_keys(rows: pa.Table) -> pa.Table:
    """Sortable keys of ``rows``' changes (``ORDER_COLUMNS``): sorted ascending, the latest change comes last."""
    sequences = rows.column("sequence_number").cast(pa.string())
    return pa.table(
        {
            ORDER_COLUMNS[0]: rows.column("change_time"),
            ORDER_COLUMNS[1]: pc.utf8_lpad(sequences, width=SEQUENCE_DIGITS, padding="0"),
        }
    )
