"""One writer: the local AWS refuses a stale Glue table version as Glue does, and a run whose commit meets another
writer abandons, leaving the tables as the other writer left them; nothing is lost."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from curator import curation
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from tests.curator.conftest import OTHER_SHARD, CuratedLake, generated_rows, latest_state, state_of


def test_glue_refuses_an_update_with_a_stale_version(lake: CuratedLake):
    lake.glue.create_database(DatabaseInput={"Name": lake.database})
    lake.glue.create_table(DatabaseName=lake.database, TableInput={"Name": "t", "Parameters": {"v": "0"}})
    read = lake.glue.get_table(DatabaseName=lake.database, Name="t")["Table"]["VersionId"]
    lake.glue.update_table(
        DatabaseName=lake.database, TableInput={"Name": "t", "Parameters": {"v": "1"}}, VersionId=read
    )

    with pytest.raises(lake.glue.exceptions.ConcurrentModificationException):
        lake.glue.update_table(
            DatabaseName=lake.database, TableInput={"Name": "t", "Parameters": {"v": "2"}}, VersionId=read
        )

    table = lake.glue.get_table(DatabaseName=lake.database, Name="t")["Table"]
    assert table["Parameters"] == {"v": "1"}
    assert table["VersionId"] != read


def data_files_listed(lake: CuratedLake, table: str) -> set[str]:
    prefix = f"curated/{table}/data/"
    # pyarrow's filesystem leaves directory markers ("<folder>/" objects): not files.
    return {f"s3://{lake.bucket}/{key}" for key in lake.keys(prefix) if not key.endswith("/")}


def data_files_referenced(lake: CuratedLake, table: str) -> set[str]:
    return {task.file.file_path for task in lake.table(table).scan().plan_files()}


def test_two_concurrent_runs_lose_nothing_when_glue_sees_the_race(lake: CuratedLake):
    """B reads the catalog, A commits in between, B's UpdateTable carries a stale version: refused."""
    first = generated_rows(200, seed=1)
    lake.write(first)
    lake.curator().tables()
    second = generated_rows(150, shard_id=OTHER_SHARD, seed=2)
    runner_a, runner_b = lake.curator(), lake.curator(catalog=lake.new_catalog())  # two processes
    results: dict[str, Any] = {}
    catalog_b = runner_b.catalog
    original = catalog_b._update_glue_table  # type: ignore[attr-defined]

    def race_then_update(*args: Any, **kwargs: Any) -> Any:
        if "a" not in results:  # A runs once, between B's GetTable and B's UpdateTable
            lake.write(second)
            results["a"] = runner_a.run()
        return original(*args, **kwargs)

    catalog_b._update_glue_table = race_then_update  # type: ignore[attr-defined]
    results["b"] = runner_b.run()

    assert results["a"].conflict is None
    assert results["a"].changes_added == 350
    assert results["b"].conflict is not None
    assert "concurrent" in results["b"].conflict.lower()
    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    assert changes.num_rows == 350, "the stale commit did not replace the other run's snapshot"
    assert data_files_listed(lake, CHANGES_TABLE) == data_files_referenced(lake, CHANGES_TABLE), (
        "the abandoned run left no data file behind"
    )
    everything = first.to_pylist() + second.to_pylist()
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == latest_state(
        pa.Table.from_pylist(everything, schema=first.schema)
    )
    again = lake.curator().run()
    assert again.raw_objects_read == 0
    assert lake.table(CHANGES_TABLE).scan().to_arrow().num_rows == 350


def test_a_run_whose_table_moved_on_abandons_and_the_next_run_completes(
    lake: CuratedLake, monkeypatch: pytest.MonkeyPatch
):
    """B has staged its commit on the snapshot it read; A commits first; B's commit fails its requirement."""
    first = generated_rows(120, seed=4)
    lake.write(first)
    runner_a, runner_b = lake.curator(), lake.curator(catalog=lake.new_catalog())
    runner_b.tables()
    results: dict[str, Any] = {}
    real_commit = curation._commit_overwrite

    def commit_after_the_other_run(table: Any, *args: Any) -> Any:
        if "a" not in results:
            results["a"] = "running"
            results["a"] = runner_a.run()
        return real_commit(table, *args)

    monkeypatch.setattr(curation, "_commit_overwrite", commit_after_the_other_run)
    results["b"] = runner_b.run()
    monkeypatch.undo()

    assert results["a"].changes_added == 120
    assert results["b"].conflict is not None
    changes_table = lake.table(CHANGES_TABLE)
    assert len(changes_table.metadata.snapshots) == 1
    assert changes_table.scan().to_arrow().num_rows == 120
    assert data_files_listed(lake, CHANGES_TABLE) == data_files_referenced(lake, CHANGES_TABLE)
    second = generated_rows(80, shard_id=OTHER_SHARD, seed=6)
    lake.write(second)
    third = lake.curator().run()
    assert third.conflict is None
    assert third.changes_added == 80
    assert lake.table(CHANGES_TABLE).scan().to_arrow().num_rows == 200
