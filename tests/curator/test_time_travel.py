"""Time travel: every run is one snapshot per table, older snapshots read as they were; snapshots past the window
are expired and the files only they needed deleted; the metadata log stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from tests.curator.conftest import HOUR, OTHER_SHARD, CuratedLake, generated_rows, latest_state, state_of

NEXT_HOUR = HOUR + timedelta(hours=1)


def data_files_listed(lake: CuratedLake, table: str) -> set[str]:
    return {f"s3://{lake.bucket}/{key}" for key in lake.keys(f"curated/{table}/data/") if not key.endswith("/")}


def data_files_referenced(lake: CuratedLake, table: str) -> set[str]:
    return {task.file.file_path for task in lake.table(table).scan().plan_files()}


def test_older_snapshots_read_as_they_were_until_the_window_passes(lake: CuratedLake):
    # Snapshot times are the catalog's (wall clock): the injected clock starts there and moves by days.
    lake.clock.now = datetime.now(UTC)
    first = generated_rows(150, seed=1)
    lake.write(first)
    curator = lake.curator()
    curator.run()
    changes_table, state_table = lake.table(CHANGES_TABLE), lake.table(REGISTRATIONS_TABLE)
    first_changes, first_state = changes_table.current_snapshot(), state_table.current_snapshot()
    assert first_changes is not None
    assert first_state is not None
    first_files = data_files_referenced(lake, CHANGES_TABLE)

    late = generated_rows(100, shard_id=OTHER_SHARD, seed=2)
    fresh = generated_rows(50, hour=NEXT_HOUR, seed=3)
    lake.write(late)
    lake.write(fresh, hour=NEXT_HOUR)
    lake.clock.advance(minutes=20)
    curator.run()
    everything = pa.concat_tables([first, late, fresh])

    changes_table, state_table = lake.table(CHANGES_TABLE), lake.table(REGISTRATIONS_TABLE)
    assert len(changes_table.metadata.snapshots) == 2
    assert len(state_table.metadata.snapshots) == 2
    as_of_first = changes_table.scan(snapshot_id=first_changes.snapshot_id).to_arrow()
    assert sorted(as_of_first.column("change_id").to_pylist()) == sorted(first.column("change_id").to_pylist())
    assert state_of(state_table.scan(snapshot_id=first_state.snapshot_id).to_arrow()) == latest_state(first)
    assert state_of(state_table.scan().to_arrow()) == latest_state(everything)
    # "As of" a time between the two runs resolves to the first run's snapshot.
    between = state_table.snapshot_as_of_timestamp(first_state.timestamp_ms + 1)
    assert between is not None
    assert between.snapshot_id == first_state.snapshot_id

    lake.clock.advance(days=6)
    within = curator.run()
    assert all(item.snapshots_expired == [] for item in within.retention)
    assert lake.table(CHANGES_TABLE).scan(snapshot_id=first_changes.snapshot_id).to_arrow().num_rows == 150
    assert first_files <= data_files_listed(lake, CHANGES_TABLE), "files of a kept snapshot stay"

    lake.clock.advance(days=2)
    past = curator.run()

    expired = {item.table: item.snapshots_expired for item in past.retention}
    assert expired == {CHANGES_TABLE: [first_changes.snapshot_id], REGISTRATIONS_TABLE: [first_state.snapshot_id]}
    changes_table = lake.table(CHANGES_TABLE)
    assert [snapshot.snapshot_id for snapshot in changes_table.metadata.snapshots] != [first_changes.snapshot_id]
    assert changes_table.metadata.snapshot_by_id(first_changes.snapshot_id) is None
    for table in (CHANGES_TABLE, REGISTRATIONS_TABLE):
        assert data_files_listed(lake, table) == data_files_referenced(lake, table), f"{table} keeps only live files"
    assert not first_files & data_files_listed(lake, CHANGES_TABLE), "the replaced hour's old files are deleted"
    assert sum(item.files_deleted for item in past.retention) >= len(first_files)
    ledgers = [key for key in lake.keys(f"curated/{CHANGES_TABLE}/metadata/") if "curator-ledger-" in key]
    assert len(ledgers) == 1, "only the kept snapshot's ledger remains"
    current = changes_table.scan().to_arrow()
    assert sorted(current.column("change_id").to_pylist()) == sorted(everything.column("change_id").to_pylist())
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == latest_state(everything)


def test_the_metadata_log_is_bounded(lake: CuratedLake):
    curator = lake.curator()
    changes_table, _ = curator.tables()
    with changes_table.transaction() as transaction:
        transaction.set_properties({"write.metadata.previous-versions-max": "2"})
    for seed in range(4):
        lake.write(generated_rows(20, seed=10 + seed, shard_id=f"shardId-00000000000{seed}"))
        curator.run()
    changes_table = lake.table(CHANGES_TABLE)
    assert len(changes_table.metadata.snapshots) == 4
    assert len(changes_table.metadata.metadata_log) <= 2
    metadata_files = [key for key in lake.keys(f"curated/{CHANGES_TABLE}/metadata/") if key.endswith(".metadata.json")]
    assert len(metadata_files) <= 3
