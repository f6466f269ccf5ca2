"""A crash after each S3 and catalog call of a run, then a rerun: no change lost, none duplicated, the state equal
to the brute-force latest state, and raw objects deleted only once covered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.io.pyarrow import PyArrowFile, PyArrowFileIO

from curator.curation import Curator
from curator.store import S3Store
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from sandbox.server import MotoProcess
from tests.curator.conftest import (
    HOUR,
    OTHER_SHARD,
    CuratedLake,
    generated_rows,
    latest_state,
    new_catalog,
    new_lake,
    state_of,
)

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


@dataclass
class Instrumented:
    """A catalog and an S3 client whose changing calls report to ``plan`` (built once per module: a catalog
    costs a quarter of a second), and the plan of the test in progress."""

    catalog: Any
    s3: Any
    plan: CrashPlan = field(default_factory=CrashPlan)


@contextmanager
def file_writes_reporting(instrumented: Instrumented) -> Iterator[None]:
    """Every table file written or deleted (through pyiceberg's file IO) reports to the current plan."""
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
                instrumented.plan.tick(f"s3 put {kind_of(self_location)}")

        self_location = self.location
        return Closing()

    def delete(self: PyArrowFileIO, location: Any) -> None:
        real_delete(self, location)
        instrumented.plan.tick(f"s3 delete {kind_of(str(location))}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PyArrowFile, "create", create)
        patch.setattr(PyArrowFileIO, "delete", delete)
        yield


@pytest.fixture(scope="module")
def instrumented(aws_server: MotoProcess) -> Instrumented:
    catalog = new_catalog(aws_server.endpoint_url)
    s3 = boto3.client(
        "s3",
        endpoint_url=aws_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    result = Instrumented(catalog, s3)
    s3.meta.events.register("after-call.s3", lambda **kw: tick_if_changing(result.plan, "s3", kw))
    catalog.glue.meta.events.register("after-call.glue", lambda **kw: tick_if_changing(result.plan, "glue", kw))
    return result


@pytest.fixture
def crash_plan(instrumented: Instrumented) -> Iterator[CrashPlan]:
    instrumented.plan = CrashPlan()
    with file_writes_reporting(instrumented):
        yield instrumented.plan
    instrumented.plan = CrashPlan()


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


def tick_if_changing(plan: CrashPlan, service: str, call: dict[str, Any]) -> None:
    """A changing call that succeeded is a crash point. One that failed (``CreateDatabase`` of a database that
    exists) changed nothing: a crash after it leaves what a crash after the call before it leaves. A
    ``DeleteObject`` of one version (a purge) is ``s3 DeleteObject version``."""
    status = call["http_response"].status_code
    if call["model"].name in _CHANGING and status < 300:
        purge = call["model"].name == "DeleteObject" and "versionId=" in call["http_response"].url
        plan.tick(f"{service} {call['model'].name}" + (" version" if purge else ""))


def crashable(lake: CuratedLake, instrumented: Instrumented) -> Curator:
    """A curator whose S3 client, Glue client and file writes all report to the current plan."""
    return Curator(
        catalog=instrumented.catalog,
        store=S3Store(lake.bucket, client=instrumented.s3),
        settings=lake.settings,
        clock=lake.clock,
    )


def two_events(rows: pa.Table) -> pa.Table:
    """``rows`` with their events folded into two (a key's changes stay together): fewer files, fewer calls."""
    folded = pc.if_else(pc.less(rows.column("event_id"), "vvU"), "event-a", "event-b")
    index = rows.schema.get_field_index("event_id")
    return rows.set_column(index, rows.schema.field(index), folded)


# The smallest data reaching every crash point: two events, two hours, INSERTs, MODIFYs and REMOVEs, late rows
# of another shard in an hour already committed, and a re-delivered slice (duplicates).
FIRST = two_events(generated_rows(24, seed=1))
LATE = two_events(generated_rows(16, shard_id=OTHER_SHARD, seed=2))
FRESH = two_events(generated_rows(12, hour=NEXT_HOUR, seed=3))
REDELIVERED = FIRST.slice(0, 6)
EVERYTHING = pa.concat_tables([FIRST, LATE, FRESH])
#: Crash points are shared out among this many tests (so that parallel workers share them).
PARTS = 4


def crash_then_rerun(lake: CuratedLake, instrumented: Instrumented) -> str | None:
    """Curate FIRST; then write late, fresh and re-delivered rows and run with the plan armed; then rerun."""
    plan = instrumented.plan
    lake.write(FIRST)
    lake.curator().run()
    lake.clock.advance(minutes=20)  # FIRST's raw object is past the grace period: this run deletes it
    lake.write(LATE)
    lake.write(FRESH, hour=NEXT_HOUR)
    lake.write(REDELIVERED)
    crashed: str | None = None
    curator = crashable(lake, instrumented)
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


def test_the_data_reaches_every_kind_of_change():
    for rows in (FIRST, LATE, FRESH):
        assert set(rows.column("event_id").to_pylist()) == {"event-a", "event-b"}
    assert set(EVERYTHING.column("op").to_pylist()) == {"INSERT", "MODIFY", "REMOVE"}
    assert set(REDELIVERED.column("change_id").to_pylist()) <= set(FIRST.column("change_id").to_pylist())
    assert {value.hour for value in EVERYTHING.column("change_time").to_pylist()} == {HOUR.hour, NEXT_HOUR.hour}
    # LATE's rows are of the hour FIRST fills, from another shard, written after that hour is committed.
    assert {value.hour for value in LATE.column("change_time").to_pylist()} == {HOUR.hour}
    assert set(LATE.column("shard_id").to_pylist()).isdisjoint(FIRST.column("shard_id").to_pylist())


@pytest.fixture(scope="module")
def counted_calls(
    aws_server: MotoProcess, session_clients: tuple[Any, Any], session_catalog: Any, instrumented: Instrumented
) -> list[str]:
    """The changing calls of the run when nothing crashes (the same in every fresh lake): counted once."""
    lake = new_lake(aws_server, session_clients, session_catalog)
    instrumented.plan = plan = CrashPlan()
    with file_writes_reporting(instrumented):
        assert crash_then_rerun(lake, instrumented) is None
    instrumented.plan = CrashPlan()
    assert_exactly_once(lake, "nowhere")
    return list(plan.calls)


def test_a_run_without_a_crash_makes_every_kind_of_changing_call(counted_calls: list[str]):
    assert len(counted_calls) >= 10, counted_calls
    for expected in (
        "glue UpdateTable",
        "s3 DeleteObject",
        f"s3 put {CHANGES_TABLE} data file",
        f"s3 put {CHANGES_TABLE} ledger",
        f"s3 put {CHANGES_TABLE} metadata",
        f"s3 put {REGISTRATIONS_TABLE} data file",
        f"s3 put {REGISTRATIONS_TABLE} metadata",
    ):
        assert expected in counted_calls, (expected, counted_calls)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_after_any_call_then_a_rerun_loses_and_duplicates_nothing(
    part: int, lake: CuratedLake, instrumented: Instrumented, crash_plan: CrashPlan, counted_calls: list[str]
):
    """Crash points ``part + 1``, ``part + 1 + PARTS``, ...: together the parts crash after every call."""
    points = range(part + 1, len(counted_calls) + 1, PARTS)
    assert len(points) > 0
    for at in points:
        crash_plan.at, crash_plan.calls = at, []
        crashed_lake = lake.with_fresh_names()
        crashed = crash_then_rerun(crashed_lake, instrumented)
        assert crashed == counted_calls[at - 1]
        assert_exactly_once(crashed_lake, f"call {at} ({crashed})")
        # Later runs past the grace period delete every covered raw object and change no row.
        crashed_lake.clock.advance(minutes=20)
        crashed_lake.curator().run()
        assert crashed_lake.raw_keys() == []
        assert_exactly_once(crashed_lake, f"the cleanup after call {at}")
