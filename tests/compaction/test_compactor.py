"""Compaction against the local S3 server: rows, counts and keys after duplicates, late objects, two shards,
crashes after every step, two compactions interleaved at every step, the grace period and the schedule."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline import compactor as compactor_module
from pipeline.compactor import (
    INPUTS_METADATA_KEY,
    CompactionStore,
    StoredObject,
    merge_tables,
    parse_hour,
    parse_object_name,
)
from pipeline.schema import arrow_schema
from pipeline.writer import encode_parquet
from tests.compaction.conftest import (
    HOUR,
    OTHER_SHARD,
    SHARD,
    TAG,
    LocalLake,
    change_ids,
    generated_rows,
    is_sorted,
    sequence_of,
    with_sequences,
)

COMPACTED = f"{TAG}-{SHARD}-compacted.parquet"
NO_GRACE = timedelta(0)
GRACE = timedelta(minutes=15)


def _write_batches(lake: LocalLake, rows: pa.Table, size: int) -> list[str]:
    return [lake.write(rows.slice(start, size)) for start in range(0, rows.num_rows, size)]


def test_duplicates_keep_the_lowest_sequence_number_compared_as_integers(lake: LocalLake) -> None:
    rows = generated_rows(200)
    _write_batches(lake, rows, 100)
    lake.write(rows.slice(50, 100))  # a re-delivered batch with other boundaries: same rows, same sequence numbers
    originals = rows.column("sequence_number").to_pylist()
    # KDS delivered changes 0-19 twice: once more with 55-digit numbers (lower as integers, higher as text) ...
    lower = with_sequences(rows.slice(0, 20), [str(int(value) // 10) for value in originals[:20]])
    # ... and changes 20-39 once more with 57-digit numbers (higher as integers, lower as text).
    higher = with_sequences(rows.slice(20, 20), [str(int(value) * 10 + 1) for value in originals[20:40]])
    lake.write(lower)
    lake.write(higher)

    result = lake.compactor().run([HOUR], delete_grace=NO_GRACE)

    assert result.summary() | {"hours": None} == {
        "hours": None,
        "objects_in": 5,
        "objects_out": 1,
        "rows_in": 340,
        "rows_out": 200,
        "duplicates_removed": 140,
        "objects_deleted": 5,
        "objects_pending_deletion": 0,
        "conflicts": 0,
        "failures": [],
        "deferred_hours": [],
    }
    assert lake.names() == [COMPACTED]
    compacted = lake.read(COMPACTED)
    assert change_ids(compacted) == change_ids(rows)
    kept = sequence_of(compacted)
    expected = sequence_of(rows) | sequence_of(lower)
    assert kept == expected
    assert is_sorted(compacted)
    assert compacted.schema.names == arrow_schema().names


def test_compacted_object_has_row_groups_page_index_and_its_inputs(lake: LocalLake, monkeypatch) -> None:
    monkeypatch.setattr(compactor_module, "ROW_GROUP_ROWS", 120)
    rows = generated_rows(300)
    keys = _write_batches(lake, rows, 100)

    lake.compactor().run([HOUR], delete_grace=GRACE)

    metadata = lake.metadata(COMPACTED)
    assert [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)] == [120, 120, 60]
    first_column = metadata.row_group(0).column(0)
    assert first_column.has_column_index
    assert first_column.has_offset_index
    listed = {item["Key"]: item["ETag"] for item in lake.client.list_objects_v2(Bucket=lake.bucket)["Contents"]}
    recorded = json.loads(metadata.metadata[INPUTS_METADATA_KEY.encode()])
    assert recorded == sorted([key, listed[key]] for key in keys)


def test_late_objects_are_merged_on_the_next_run(lake: LocalLake) -> None:
    rows = generated_rows(300)
    _write_batches(lake, rows.slice(0, 200), 100)
    compactor = lake.compactor()
    first = compactor.run([HOUR], delete_grace=NO_GRACE)
    assert first.summary()["rows_out"] == 200
    late = [lake.write(rows.slice(200, 100)), lake.write(rows.slice(150, 100))]  # new rows, some already compacted

    second = compactor.run([HOUR], delete_grace=NO_GRACE)

    summary = second.summary()
    assert (summary["objects_in"], summary["rows_in"], summary["rows_out"]) == (3, 400, 300)
    assert summary["duplicates_removed"] == 100
    assert summary["objects_deleted"] == 2
    assert lake.names() == [COMPACTED]
    assert all(key.rsplit("/", 1)[1] not in lake.names() for key in late)
    compacted = lake.read(COMPACTED)
    assert change_ids(compacted) == change_ids(rows)
    assert is_sorted(compacted)


def test_an_hour_with_two_shards_gets_one_object_per_shard(lake: LocalLake) -> None:
    first = generated_rows(150, shard_id=SHARD, seed=1)
    second = generated_rows(90, shard_id=OTHER_SHARD, seed=2)
    _write_batches(lake, first, 50)
    _write_batches(lake, second, 30)
    lake.write(second.slice(10, 30))  # a re-delivery with other boundaries

    result = lake.compactor().run([HOUR], delete_grace=NO_GRACE)

    assert [(item.shard_id, item.rows_in, item.rows_out) for item in result.shard_hours] == [
        (SHARD, 150, 150),
        (OTHER_SHARD, 120, 90),
    ]
    assert lake.names() == [COMPACTED, f"{TAG}-{OTHER_SHARD}-compacted.parquet"]
    assert change_ids(lake.read(COMPACTED)) == change_ids(first)
    other = lake.read(f"{TAG}-{OTHER_SHARD}-compacted.parquet")
    assert change_ids(other) == change_ids(second)
    assert set(other.column("shard_id").to_pylist()) == {OTHER_SHARD}


def test_compaction_is_idempotent(lake: LocalLake) -> None:
    rows = generated_rows(200)
    _write_batches(lake, rows, 40)
    compactor = lake.compactor()
    compactor.run([HOUR], delete_grace=GRACE)
    etag = lake.client.head_object(Bucket=lake.bucket, Key=f"demand/events/dt=2026-03-31/hour=23/{COMPACTED}")["ETag"]

    again = compactor.run([HOUR], delete_grace=GRACE)

    assert [item.status for item in again.shard_hours] == ["up_to_date"]
    assert again.summary()["objects_out"] == 0
    assert again.summary()["objects_pending_deletion"] == 5
    head = lake.client.head_object(Bucket=lake.bucket, Key=f"demand/events/dt=2026-03-31/hour=23/{COMPACTED}")
    assert head["ETag"] == etag
    assert len(lake.names()) == 6
    compactor.run([HOUR], delete_grace=NO_GRACE)
    last = compactor.run([HOUR], delete_grace=NO_GRACE)
    assert last.summary()["objects_in"] == last.summary()["objects_deleted"] == 0
    assert lake.names() == [COMPACTED]
    assert change_ids(lake.read(COMPACTED)) == change_ids(rows)


def test_inputs_are_deleted_only_after_the_grace_period_by_a_later_run(lake: LocalLake) -> None:
    rows = generated_rows(120)
    _write_batches(lake, rows, 40)
    now = datetime.now(UTC)
    compactor = lake.compactor(clock=lambda: now)
    committed = compactor.run([HOUR], delete_grace=GRACE)
    assert committed.summary()["objects_pending_deletion"] == 3

    compactor.clock = lambda: now + timedelta(minutes=10)
    early = compactor.run([HOUR], delete_grace=GRACE)
    assert early.summary()["objects_deleted"] == 0
    assert len(lake.names()) == 4

    compactor.clock = lambda: now + timedelta(minutes=16)
    due = compactor.run([HOUR], delete_grace=GRACE)
    assert due.summary()["objects_deleted"] == 3
    assert due.summary()["objects_out"] == 0
    assert lake.names() == [COMPACTED]
    assert change_ids(lake.read(COMPACTED)) == change_ids(rows)


def test_an_input_rewritten_with_other_content_is_not_deleted_but_merged(lake: LocalLake) -> None:
    rows = generated_rows(100)
    keys = _write_batches(lake, rows, 50)
    compactor = lake.compactor()
    compactor.run([HOUR], delete_grace=GRACE)
    # The same object name written again with other bytes (an older encoder, say): its ETag is not the recorded one.
    altered = rows.slice(0, 50).replace_schema_metadata({"writer": "another"})
    lake.client.put_object(Bucket=lake.bucket, Key=keys[0], Body=encode_parquet(altered))

    result = compactor.run([HOUR], delete_grace=NO_GRACE)

    assert result.summary()["objects_in"] == 2  # the compacted object and the rewritten input
    assert result.summary()["duplicates_removed"] == 50
    assert lake.names() == [COMPACTED]
    assert change_ids(lake.read(COMPACTED)) == change_ids(rows)


# -- crashes and interleavings ----------------------------------------------------------------------------------
class Crash(BaseException):
    """The process died (not an error the compactor could handle)."""


class SteppingStore:
    """A store that runs ``before(step)`` ahead of each operation, and crashes right after step ``crash_after``."""

    def __init__(
        self, inner: CompactionStore, *, crash_after: int | None = None, before: Callable[[int], None] | None = None
    ) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.before = before
        self.steps: list[str] = []

    def _step(self, name: str, call: Callable[[], Any]) -> Any:
        step = len(self.steps)
        if self.before is not None:
            self.before(step)
        self.steps.append(name)
        value = call()
        if self.crash_after is not None and step >= self.crash_after:
            raise Crash(f"crashed after step {step} ({name})")
        return value

    def list(self, prefix: str) -> list[StoredObject]:
        result: list[StoredObject] = self._step("list", lambda: self.inner.list(prefix))
        return result

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        result: tuple[bytes, StoredObject] = self._step(f"get {key[-30:]}", lambda: self.inner.get(key))
        return result

    def get_tail(self, key: str, length: int) -> tuple[bytes, StoredObject]:
        result: tuple[bytes, StoredObject] = self._step("get_tail", lambda: self.inner.get_tail(key, length))
        return result

    def put(self, key: str, body: bytes, *, if_match: str | None) -> str:
        result: str = self._step("put", lambda: self.inner.put(key, body, if_match=if_match))
        return result

    def delete(self, key: str, etag: str) -> bool:
        result: bool = self._step(f"delete {key[-30:]}", lambda: self.inner.delete(key, etag))
        return result


def _scenario(lake: LocalLake) -> pa.Table:
    """A compacted hour with pending inputs, plus late objects (one overlapping): every step of a run happens."""
    rows = generated_rows(160)
    _write_batches(lake, rows.slice(0, 100), 50)
    lake.compactor().run([HOUR], delete_grace=GRACE)
    lake.write(rows.slice(100, 60))
    lake.write(rows.slice(90, 30))
    return rows


def _assert_no_gap(lake: LocalLake, rows: pa.Table) -> None:
    assert set(change_ids(lake.rows())) == set(change_ids(rows)), "a change is missing from the hour"


def _assert_exact(lake: LocalLake, rows: pa.Table) -> None:
    assert lake.names() == [COMPACTED]
    compacted = lake.read(COMPACTED)
    assert change_ids(compacted) == change_ids(rows)
    assert is_sorted(compacted)


def _serial(compactor: Any) -> Any:
    compactor.io_threads = 1  # one operation at a time, so that step numbers are the same on every run
    return compactor


def test_a_crash_after_any_step_leaves_duplicates_never_a_gap(lake: LocalLake) -> None:
    probe_rows = _scenario(lake)
    probe = SteppingStore(lake.store())
    _serial(lake.compactor(probe)).run([HOUR], delete_grace=NO_GRACE)
    _assert_exact(lake, probe_rows)
    steps = probe.steps
    assert steps[:3] == ["list", "get_tail", f"get {COMPACTED[-30:]}"]
    assert "put" in steps
    assert sum(step.startswith("delete") for step in steps) == 4

    for crash_after in range(len(steps)):
        fresh = _fresh_lake(lake)
        rows = _scenario(fresh)
        store = SteppingStore(fresh.store(), crash_after=crash_after)
        with pytest.raises(Crash):
            _serial(fresh.compactor(store)).run([HOUR], delete_grace=NO_GRACE)
        _assert_no_gap(fresh, rows)
        recovery = fresh.compactor().run([HOUR], delete_grace=NO_GRACE)
        assert not recovery.failures, f"after a crash at step {crash_after}: {recovery.summary()}"
        _assert_exact(fresh, rows)


def _fresh_lake(lake: LocalLake) -> LocalLake:
    bucket = f"compaction-{uuid.uuid4().hex[:12]}"
    lake.client.create_bucket(Bucket=bucket)
    return LocalLake(lake.client, bucket)


@pytest.mark.parametrize("other_grace", [NO_GRACE, GRACE], ids=["other-deletes-at-once", "other-keeps-inputs"])
def test_two_compactions_interleaved_at_every_step_never_lose_a_row(lake: LocalLake, other_grace: timedelta) -> None:
    probe_lake = _fresh_lake(lake)
    _scenario(probe_lake)
    probe = SteppingStore(probe_lake.store())
    _serial(probe_lake.compactor(probe)).run([HOUR], delete_grace=NO_GRACE)
    step_count = len(probe.steps)

    for interleave_at in range(step_count + 1):
        fresh = _fresh_lake(lake)
        rows = _scenario(fresh)
        late = generated_rows(20, seed=99)  # written by the stream handler while both run

        def other_run(
            step: int, fresh: LocalLake = fresh, rows: pa.Table = rows, late: pa.Table = late, at: int = interleave_at
        ) -> None:
            if step == at:
                fresh.write(late)
                other = fresh.compactor().run([HOUR], delete_grace=other_grace)
                assert not other.failures, other.summary()
                _assert_no_gap(fresh, pa.concat_tables([rows, late]))

        store = SteppingStore(fresh.store(), before=other_run)
        first = _serial(fresh.compactor(store)).run([HOUR], delete_grace=NO_GRACE)
        if interleave_at >= len(store.steps):
            other_run(interleave_at)
        assert not first.failures, first.summary()
        everything = pa.concat_tables([rows, late])
        _assert_no_gap(fresh, everything)
        fresh.compactor().run([HOUR], delete_grace=NO_GRACE)
        _assert_exact(fresh, everything)


# -- the scheduled window ---------------------------------------------------------------------------------------
def test_scheduled_hours_are_old_enough_young_enough_and_hold_several_objects_of_a_shard(lake: LocalLake) -> None:
    now = datetime(2026, 4, 1, 3, 10, tzinfo=UTC)

    def hour_rows(hour: str, count: int = 20, shard: str = SHARD) -> pa.Table:
        return generated_rows(count, hour=parse_hour(hour), shard_id=shard, seed=int(hour[-2:]) + 1)

    def two_objects(hour: str) -> None:
        rows = hour_rows(hour)
        lake.write(rows.slice(0, 10), parse_hour(hour))
        lake.write(rows.slice(10, 10), parse_hour(hour))

    two_objects("2026-04-01T01")  # ended 70 minutes ago: too recent for a 120-minute delay
    two_objects("2026-04-01T00")  # ended 130 minutes ago: due
    lake.write(hour_rows("2026-03-31T23"), parse_hour("2026-03-31T23"))  # one object per shard: nothing to do
    lake.write(hour_rows("2026-03-31T22", shard=SHARD), parse_hour("2026-03-31T22"))
    lake.write(hour_rows("2026-03-31T22", shard=OTHER_SHARD), parse_hour("2026-03-31T22"))  # two shards, one each
    two_objects("2026-03-31T21")  # compacted below, then a late object: due
    two_objects("2026-03-31T19")  # started 8 h 10 min ago: outside a 8-hour lookback
    two_objects("2026-03-31T20")  # started 7 h 10 min ago: inside
    compactor = lake.compactor(clock=lambda: now)
    compactor.run([parse_hour("2026-03-31T21")], delete_grace=NO_GRACE)
    lake.write(hour_rows("2026-03-31T21", count=25).slice(20, 5), parse_hour("2026-03-31T21"))

    hours = compactor.scheduled_hours(delay_minutes=120, lookback_hours=8)

    assert hours == [parse_hour("2026-03-31T20"), parse_hour("2026-03-31T21"), parse_hour("2026-04-01T00")]


def test_the_run_stops_starting_hours_when_time_runs_short(lake: LocalLake) -> None:
    hours = [parse_hour("2026-03-31T21"), parse_hour("2026-03-31T22"), HOUR]
    for hour in hours:
        rows = generated_rows(20, hour=hour)
        lake.write(rows.slice(0, 10), hour)
        lake.write(rows.slice(10, 10), hour)
    left = iter([300.0, 30.0])

    result = lake.compactor().run(hours, delete_grace=NO_GRACE, remaining_seconds=lambda: next(left))

    assert [item.hour for item in result.shard_hours] == ["2026-03-31T21"]
    assert result.deferred_hours == ["2026-03-31T22", "2026-03-31T23"]
    assert len(lake.names(hours[1])) == 2


# -- schema, names and rows -------------------------------------------------------------------------------------
def test_an_input_without_a_newer_column_gets_nulls_and_the_column_stays(lake: LocalLake) -> None:
    schema = arrow_schema().append(pa.field("deleted_by_later", pa.bool_(), nullable=False))
    rows = generated_rows(40)
    newer = rows.slice(20, 20).append_column(schema.field("deleted_by_later"), pa.array([False] * 20))
    lake.write(rows.slice(0, 20))
    lake.write(newer)
    compactor = lake.compactor()
    compactor.schema = schema

    result = compactor.run([HOUR], delete_grace=NO_GRACE)

    assert not result.failures
    compacted = lake.read(COMPACTED)
    assert compacted.schema.names == schema.names
    values = dict(
        zip(compacted.column("change_id").to_pylist(), compacted.column("deleted_by_later").to_pylist(), strict=True)
    )
    older_ids = rows.slice(0, 20).column("change_id").to_pylist()
    assert {values[change_id] for change_id in older_ids} == {None}
    assert pc.sum(compacted.column("deleted_by_later").is_null()).as_py() == 20


def test_an_input_written_before_change_time_us_gets_it_from_its_change_time(lake: LocalLake) -> None:
    rows = generated_rows(40)
    older = rows.slice(0, 20).drop_columns(["change_time_us"])
    lake.write(older)
    lake.write(rows.slice(20, 20))

    result = lake.compactor().run([HOUR], delete_grace=NO_GRACE)

    assert not result.failures
    compacted = lake.read(COMPACTED)
    assert compacted.schema.field("change_time_us").type == pa.int64()
    assert compacted.column("change_time_us").null_count == 0
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for row in compacted.to_pylist():
        assert row["change_time_us"] == (row["change_time"] - epoch) // timedelta(microseconds=1), row["change_id"]
    assert sorted(compacted.column("change_time_us").to_pylist()) == sorted(rows.column("change_time_us").to_pylist())


def test_an_input_with_a_column_the_contract_does_not_know_is_left_alone(lake: LocalLake) -> None:
    rows = generated_rows(40)
    lake.write(rows.slice(0, 20))
    lake.write(rows.slice(20, 20).append_column("surprise", pa.array(["x"] * 20)))
    before = lake.names()

    result = lake.compactor().run([HOUR], delete_grace=NO_GRACE)

    assert [item.status for item in result.shard_hours] == ["failed"]
    assert "surprise" in str(result.failures[0].error)
    assert result.summary()["rows_in"] == 0
    assert lake.names() == before


def test_objects_names_parse_from_the_right() -> None:
    assert parse_object_name(f"{TAG}-shardId-000000000007-4959033827149-0123456789ab.parquet") == (
        TAG,
        "shardId-000000000007",
        False,
    )
    assert parse_object_name(f"{TAG}-shardId-000000000007-4959033827149.parquet") == (
        TAG,
        "shardId-000000000007",
        False,
    )
    assert parse_object_name(f"{TAG}-shardId-000000000007-compacted.parquet") == (TAG, "shardId-000000000007", True)
    assert parse_object_name("_compaction.json") is None
    assert parse_object_name("part-0000.parquet") is None


def test_unrelated_and_bookkeeping_objects_are_left_alone(lake: LocalLake) -> None:
    rows = generated_rows(40)
    _write_batches(lake, rows, 20)
    prefix = "demand/events/dt=2026-03-31/hour=23/"
    for name in ("_bookkeeping.json", "notes.txt", "nested/x.parquet"):
        lake.client.put_object(Bucket=lake.bucket, Key=prefix + name, Body=b"{}")

    lake.compactor().run([HOUR], delete_grace=NO_GRACE)

    assert lake.names() == sorted([COMPACTED, "_bookkeeping.json", "notes.txt", "nested/x.parquet"])


def test_merge_without_duplicates_only_sorts() -> None:
    rows = generated_rows(50)
    shuffled = rows.take(pa.array(list(range(49, -1, -1))))

    merged, order = merge_tables([shuffled])

    assert len(order) == 50
    assert is_sorted(merged.take(order))


def test_sort_order_is_that_of_one_stable_sort_by_all_keys() -> None:
    rows = generated_rows(400)
    # Ties on every key: the same (event, fan) many times, some with the same change_time too.
    fans = rows.column("fan_id").to_pylist()
    tied = rows.set_column(
        rows.schema.get_field_index("fan_id"), rows.schema.field("fan_id"), pa.array([fans[i % 7] for i in range(400)])
    )
    times = tied.column("change_time").to_pylist()
    tied = tied.set_column(
        tied.schema.get_field_index("change_time"),
        tied.schema.field("change_time"),
        pa.array([times[i - i % 3] for i in range(400)], tied.schema.field("change_time").type),
    )
    shuffled = tied.take(pa.array([(i * 37) % 400 for i in range(400)]))

    merged, order = merge_tables([shuffled])

    expected = pc.sort_indices(
        merged, sort_keys=[(name, "ascending") for name in ("event_id", "fan_id", "change_time")]
    )
    assert order.to_pylist() == expected.to_pylist()
    assert len(set(tied.column("event_id").to_pylist())) > 3


def test_an_hour_that_cannot_be_listed_is_reported_and_the_others_are_compacted(lake: LocalLake) -> None:
    earlier = parse_hour("2026-03-31T22")
    for hour in (earlier, HOUR):
        rows = generated_rows(20, hour=hour)
        lake.write(rows.slice(0, 10), hour)
        lake.write(rows.slice(10, 10), hour)

    class FailingList(SteppingStore):
        def list(self, prefix: str) -> list[StoredObject]:
            if "hour=22" in prefix:
                raise OSError("listing refused")
            return super().list(prefix)

    result = lake.compactor(FailingList(lake.store())).run([earlier, HOUR], delete_grace=NO_GRACE)

    assert [(item.hour, item.status) for item in result.shard_hours] == [
        ("2026-03-31T22", "failed"),
        ("2026-03-31T23", "committed"),
    ]
    assert "listing refused" in str(result.failures[0].error)
    assert len(lake.names(earlier)) == 2
    assert lake.names() == [COMPACTED]
