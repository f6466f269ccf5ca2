"""A crash after each S3 and catalog call of a run, then a rerun: no change lost, none duplicated, the state equal
to the brute-force latest state, and raw objects deleted only once covered."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.io.pyarrow import PyArrowFile, PyArrowFileIO

from curator.curation import Curator
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from pipeline.compactor import S3CompactionStore
from tests.compaction.conftest import OTHER_SHARD
from tests.curator.conftest import HOUR, Clock, CuratedLake, generated_rows, latest_state, state_of

NEXT_HOUR = HOUR + timedelta(hours=1)


class Crash(BaseException):
    """The process dies here (nothing after this point of the run happens)."""


# Calls that change something. A crash after a read leaves what a crash after the change before it leaves,
# so only these are crash points (every table file write and delete is one too).
_CHANGING = frozenset({"PutObject", "DeleteObject", "CopyObject", "CreateDatabase", "CreateTable", "UpdateTable"})


@dataclass
class CrashPlan:
    """Counts the run's changing calls to S3 (raw store and table files) and Glue; raises ``Crash`` right after
    call ``at``."""

    at: int | None = None
    calls: list[str] = field(default_factory=list)
    armed: bool = False

    def tick(self, name: str) -> None:
        if not self.armed:
            return
        self.calls.append(name)
        if self.at is not None and len(self.calls) == self.at:
            self.armed = False
            raise Crash(name)


@pytest.fixture
def crash_plan(monkeypatch: pytest.MonkeyPatch) -> CrashPlan:
    plan = CrashPlan()
    real_create, real_delete = PyArrowFile.create, PyArrowFileIO.delete

    def create(self: PyArrowFile, overwrite: bool = False) -> Any:
        stream = real_create(self, overwrite=overwrite)
        real_close = stream.close

        class Closing:
            def __getattr__(self, name: str) -> Any:
                return getattr(stream, name)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                self.close()

            def close(self) -> None:
                real_close()
                plan.tick(f"s3 put {kind_of(self_location)}")

        self_location = self.location
        return Closing()

    def delete(self: PyArrowFileIO, location: Any) -> None:
        real_delete(self, location)
        plan.tick(f"s3 delete {kind_of(str(location))}")

    monkeypatch.setattr(PyArrowFile, "create", create)
    monkeypatch.setattr(PyArrowFileIO, "delete", delete)
    return plan


def kind_of(location: str) -> str:
    """What a table file is (names hold random ids, so runs are compared by kind and table)."""
    table = REGISTRATIONS_TABLE if f"/{REGISTRATIONS_TABLE}/" in location else CHANGES_TABLE
    name = location.rsplit("/", 1)[-1]
    if "/data/" in location:
        kind = "data file"
    elif name.startswith("curator-ledger-"):
        kind = "ledger"
    elif name.startswith("snap-"):
        kind = "manifest list"
    elif name.endswith(".metadata.json"):
        kind = "metadata"
    else:
        kind = "manifest"
    return f"{table} {kind}"


def tick_if_changing(plan: CrashPlan, service: str, operation: str) -> None:
    if operation in _CHANGING:
        plan.tick(f"{service} {operation}")


def crashable(lake: CuratedLake, plan: CrashPlan) -> Curator:
    """A curator whose S3 client, Glue client and file writes all report to ``plan``."""
    curator = lake.curator()
    own = boto3.client(
        "s3",
        endpoint_url=lake.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    own.meta.events.register("after-call.s3", lambda **kw: tick_if_changing(plan, "s3", kw["model"].name))
    curator.store = S3CompactionStore(lake.bucket, client=own)
    glue = curator.catalog.glue  # type: ignore[attr-defined]
    glue.meta.events.register("after-call.glue", lambda **kw: tick_if_changing(plan, "glue", kw["model"].name))
    return curator


def fresh_lake(lake: CuratedLake) -> CuratedLake:
    suffix = uuid.uuid4().hex[:12]
    bucket = f"crash-{suffix}"
    lake.s3.create_bucket(Bucket=bucket)
    return CuratedLake(lake.endpoint_url, lake.s3, lake.glue, bucket, f"crash_{suffix}", Clock())


def two_events(rows: pa.Table) -> pa.Table:
    """``rows`` with their events folded into two (a key's changes stay together): fewer files, fewer calls."""
    folded = pc.if_else(pc.less(rows.column("event_id"), "vvU"), "event-a", "event-b")
    index = rows.schema.get_field_index("event_id")
    return rows.set_column(index, rows.schema.field(index), folded)


FIRST = two_events(generated_rows(150, seed=1))
LATE = two_events(generated_rows(100, shard_id=OTHER_SHARD, seed=2))
FRESH = two_events(generated_rows(60, hour=NEXT_HOUR, seed=3))
EVERYTHING = pa.concat_tables([FIRST, LATE, FRESH])


def crash_then_rerun(lake: CuratedLake, plan: CrashPlan) -> str | None:
    """Curate FIRST; then write late, fresh and re-delivered rows and run with ``plan`` armed; then rerun."""
    lake.write(FIRST)
    lake.curator().run()
    lake.clock.advance(minutes=20)  # FIRST's raw object is past the grace period: this run deletes it
    lake.write(LATE)
    lake.write(FRESH, hour=NEXT_HOUR)
    lake.write(FIRST.slice(0, 30))
    crashed: str | None = None
    curator = crashable(lake, plan)
    plan.armed = True
    try:
        curator.run()
    except Crash as crash:
        crashed = str(crash)
    plan.armed = False
    lake.curator().run()
    return crashed


def assert_exactly_once(lake: CuratedLake, where: str) -> None:
    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    ids = changes.column("change_id").to_pylist()
    assert len(ids) == len(set(ids)), f"a change is duplicated after a crash at {where}"
    assert sorted(ids) == sorted(EVERYTHING.column("change_id").to_pylist()), f"a change is lost after {where}"
    state = state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow())
    assert state == latest_state(EVERYTHING), f"the state is wrong after a crash at {where}"


@pytest.mark.slow
def test_a_crash_after_any_call_then_a_rerun_loses_and_duplicates_nothing(lake: CuratedLake, crash_plan: CrashPlan):
    counting = fresh_lake(lake)
    assert crash_then_rerun(counting, crash_plan) is None
    calls = list(crash_plan.calls)
    assert len(calls) >= 10, calls
    assert any(name.startswith("glue UpdateTable") for name in calls)
    assert any(name == "s3 DeleteObject" for name in calls)
    assert_exactly_once(counting, "nowhere")
    for at in range(1, len(calls) + 1):
        crash_plan.at, crash_plan.calls = at, []
        crashed_lake = fresh_lake(lake)
        crashed = crash_then_rerun(crashed_lake, crash_plan)
        assert crashed == calls[at - 1]
        assert_exactly_once(crashed_lake, f"call {at} ({crashed})")
        # Later runs past the grace period delete every covered raw object and change no row.
        crashed_lake.clock.advance(minutes=20)
        crashed_lake.curator().run()
        assert crashed_lake.raw_keys() == []
        assert_exactly_once(crashed_lake, f"the cleanup after call {at}")
