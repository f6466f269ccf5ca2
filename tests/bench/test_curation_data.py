"""The curation benchmark's data: built through the stream handler, without leaving the process changed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sandbox.changes as changes_module
from bench.curation_data import ShardStream, _build


def test_building_a_stream_restores_the_serializer_other_code_uses(tmp_path: Path) -> None:
    serializer = changes_module.to_dynamodb_json
    stream = ShardStream(0, datetime(2026, 11, 28, 12, tzinfo=UTC), seconds=1, rate=200, batch_size=100)

    _build(stream, tmp_path)

    # 200 records in batches of 100, each batch after the first re-sending the 1 % that ended the one before
    assert (tmp_path / "rows.txt").read_text() == "202"
    assert changes_module.to_dynamodb_json is serializer  # a string set still serializes afterwards
    assert changes_module.to_dynamodb_json({"tags": {"a", "b"}})["tags"]["SS"] in (["a", "b"], ["b", "a"])
