"""Column-wise decoding (fast path); until it lands, the strict path."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.batch import DecodedBatch, decode_strict
from pipeline.decode import KinesisRecord

__all__ = ["decode_batch"]


def decode_batch(records: Sequence[KinesisRecord], precision: str) -> DecodedBatch:
    """Decode a batch."""
    return decode_strict(records, precision)
