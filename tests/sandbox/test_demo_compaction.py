"""The demo's last step: the hours it wrote are compacted, and the lake still holds every change once."""

from __future__ import annotations

from rich.console import Console

from sandbox import demo
from sandbox.lake import Lake
from sandbox.local_aws import local_aws
from tests.compaction.conftest import SHARD, TAG, LocalLake, generated_rows


def test_compaction_step_reports_objects_and_duplicates_before_and_after() -> None:
    with local_aws("dev1") as aws:
        lake_objects = LocalLake(aws.client("s3"), aws.outputs.bucket_name)
        rows = generated_rows(90)
        for start in range(0, 90, 30):
            lake_objects.write(rows.slice(start, 30))
        lake_objects.write(rows.slice(15, 30))  # a re-delivered batch
        lake = Lake(aws.outputs, s3=aws.client("s3"), filesystem=aws.filesystem())
        before = lake.counts()
        console = Console(record=True, width=200)

        figures = demo._compaction(console, aws, lake, before)

        after = lake.counts()
        names = lake_objects.names()
        printed = console.export_text()
    assert (before.parquet_objects, before.rows, before.duplicate_rows) == (4, 120, 30)
    assert (after.parquet_objects, after.rows, after.duplicate_rows) == (1, 90, 0)
    assert names == [f"{TAG}-{SHARD}-compacted.parquet"]
    assert figures.same_changes
    assert figures.summary["duplicates_removed"] == 30
    assert figures.summary["hours"] == ["2026-03-31T23"]
    assert "hours 2026-03-31T23: 4 objects in, 1 out, 30 duplicates removed, 4 inputs deleted" in printed
    result = demo.DemoResult(90, 90, after, 0, 1.0, figures)
    assert result.accounted
