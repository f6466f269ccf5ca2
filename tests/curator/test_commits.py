"""The one overwrite commit: while threads judge the parent snapshot's manifests at once, each manifest is judged on
its own partitions, and the commit removes exactly the files it was given."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
from pyiceberg.expressions.visitors import _ManifestEvalVisitor
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType

from curator.commits import commit_overwrite
from tests.curator.conftest import CuratedLake

#: A wait that only a broken test reaches: each event is set by a thread already running.
GATE_SECONDS = 60


def two_partition_table(lake: CuratedLake) -> Any:
    """A table partitioned by ``event_id`` with one manifest per partition: ``a`` (row 1) and ``b`` (row 2)."""
    catalog = lake.catalog()
    catalog.create_namespace(lake.database)
    schema = Schema(
        NestedField(1, "event_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False)
    )
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="event_id"))
    table = catalog.create_table(
        (lake.database, "two_partitions"), schema, partition_spec=spec, location=f"s3://{lake.bucket}/two_partitions"
    )
    table.append(pa.table({"event_id": ["a"], "n": pa.array([1], pa.int64())}))
    table.append(pa.table({"event_id": ["b"], "n": pa.array([2], pa.int64())}))
    return table


def test_an_overwrite_removes_its_file_while_another_thread_judges_another_manifest(lake: CuratedLake, monkeypatch):
    table = two_partition_table(lake)
    assert len(table.current_snapshot().manifests(table.io)) == 2
    (removed,) = [task.file for task in table.scan().plan_files() if task.file.partition[0] == "a"]
    # The interleaving that broke commits under load, forced: the thread judging manifest "a" has taken it in
    # and pauses; the thread judging "b" takes "b" in and finishes; then "a"'s judgement goes on.
    a_taken, b_judged = threading.Event(), threading.Event()
    judging = threading.local()
    threads: dict[bytes, int] = {}
    original_eval, original_equal = _ManifestEvalVisitor.eval, _ManifestEvalVisitor.visit_equal

    def eval_(visitor: Any, manifest: Any) -> bool:
        judging.partition = bytes(manifest.partitions[0].lower_bound)
        threads.setdefault(judging.partition, threading.get_ident())
        if judging.partition == b"b":
            assert a_taken.wait(GATE_SECONDS), "manifest a was never judged"
        return original_eval(visitor, manifest)

    def visit_equal(visitor: Any, term: Any, literal: Any) -> bool:
        if judging.partition == b"a":
            a_taken.set()
            assert b_judged.wait(GATE_SECONDS), "manifest b was never judged on another thread"
        else:
            b_judged.set()
        return original_equal(visitor, term, literal)

    monkeypatch.setattr(_ManifestEvalVisitor, "eval", eval_)
    monkeypatch.setattr(_ManifestEvalVisitor, "visit_equal", visit_equal)

    after: Any = commit_overwrite(table, [removed], [], {"reason": "test"})

    assert a_taken.is_set()
    assert b_judged.is_set()
    assert threads[b"a"] != threads[b"b"], "the manifests were judged on one thread: nothing was interleaved"
    assert after.scan().to_arrow().to_pylist() == [{"event_id": "b", "n": 2}]
    assert removed.file_path not in {task.file.file_path for task in after.scan().plan_files()}
    assert after.current_snapshot().summary["deleted-data-files"] == "1"
    assert after.current_snapshot().summary["reason"] == "test"
