"""A crash after each S3 and catalog call of a run, then a rerun: no change lost, none duplicated, the state equal
to the brute-force latest state, and raw objects deleted only once covered.

The lake is prepared once per module (FIRST curated; late, fresh and re-delivered rows written after it; the clock
past FIRST's grace period). The run that counts the changing calls copies the lake right after each of them
(``copied_after_each_call``): what a process killed there leaves. Each crash point restores its copy in place and
reruns; two points also crash for real (``Crash`` raised in the run, on the prepared lake restored).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

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
    new_lake,
    state_of,
)
from tests.curator.crash_harness import (
    CopiedRun,
    Crash,
    CrashPlan,
    Instrumented,
    copied_after_each_call,
    copies_differ_by_their_calls,
    crash_plan,
    instrumented,
    two_events,
)
from tests.curator.lake_copy import LakeCopy

__all__ = ["crash_plan", "instrumented"]  # the crash harness's fixtures

#: One worker runs the module: the prepared lake and its copies (``counted``) are made once, not once per worker.
pytestmark = pytest.mark.xdist_group("curation_crashes")

NEXT_HOUR = HOUR + timedelta(hours=1)


def crashable(lake: CuratedLake, instrumented: Instrumented) -> Curator:
    """A curator whose S3 client, Glue client and file writes all report to the current plan."""
    return Curator(
        catalog=instrumented.catalog,
        store=S3Store(lake.bucket, client=instrumented.s3),
        settings=lake.settings,
        clock=lake.clock,
    )


# The smallest data reaching every crash point: two events, two hours, INSERTs, MODIFYs and REMOVEs, late rows
# of another shard in an hour already committed, and a re-delivered slice (duplicates).
FIRST = two_events(generated_rows(24, seed=1))
LATE = two_events(generated_rows(16, shard_id=OTHER_SHARD, seed=2))
FRESH = two_events(generated_rows(12, hour=NEXT_HOUR, seed=3))
REDELIVERED = FIRST.slice(0, 6)
EVERYTHING = pa.concat_tables([FIRST, LATE, FRESH])
#: Crash points are shared out among this many tests (each reports its own points' failures).
PARTS = 4


def prepare(lake: CuratedLake) -> None:
    """Curate FIRST; then, FIRST's raw object past the grace period, write late, fresh and re-delivered rows."""
    lake.write(FIRST)
    lake.curator().run()
    lake.clock.advance(minutes=20)  # FIRST's raw object is past the grace period: the next run deletes it
    lake.write(LATE)
    lake.write(FRESH, hour=NEXT_HOUR)
    lake.write(REDELIVERED)


def crash_then_rerun(lake: CuratedLake, instrumented: Instrumented) -> str | None:
    """Run with the plan armed, then rerun."""
    plan = instrumented.plan
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


def copy_of(lake: CuratedLake, previous: LakeCopy | None = None) -> LakeCopy:
    return LakeCopy.save(lake.s3, lake.glue, (lake.bucket,), lake.database, lake.clock, previous=previous)


@dataclass
class Curation:
    """The lake prepared once per module, its copy as prepared, and the changing calls of its run when nothing
    crashes with a copy of the lake right after each."""

    lake: CuratedLake
    copy: LakeCopy
    run: CopiedRun


@pytest.fixture(scope="module")
def counted(
    aws_server: MotoProcess, session_clients: tuple[Any, Any], session_catalog: Any, instrumented: Instrumented
) -> Curation:
    lake = new_lake(aws_server, session_clients, session_catalog)
    prepare(lake)
    prepared = copy_of(lake)

    def run(plan: CrashPlan) -> None:
        assert crash_then_rerun(lake, instrumented) is None

    copied = copied_after_each_call(instrumented, lambda previous: copy_of(lake, previous), run)
    assert_exactly_once(lake, "nowhere")
    return Curation(lake, prepared, copied)


def test_a_run_without_a_crash_makes_every_kind_of_changing_call(counted: Curation):
    calls = counted.run.calls
    assert len(calls) >= 10, calls
    for expected in (
        "glue UpdateTable",
        "s3 DeleteObject",
        f"s3 put {CHANGES_TABLE} data file",
        f"s3 put {CHANGES_TABLE} ledger",
        f"s3 put {CHANGES_TABLE} metadata",
        f"s3 put {REGISTRATIONS_TABLE} data file",
        f"s3 put {REGISTRATIONS_TABLE} metadata",
    ):
        assert expected in calls, (expected, calls)
    assert len(counted.run.after) == len(calls)


def test_each_copy_differs_from_the_one_before_by_its_call(counted: Curation):
    copies_differ_by_their_calls(counted.copy, counted.run)


def assert_cleaned_up(lake: CuratedLake, where: str) -> None:
    """Later runs past the grace period delete every covered raw object and change no row."""
    lake.clock.advance(minutes=20)
    lake.curator().run()
    assert lake.raw_keys() == [], where
    assert_exactly_once(lake, f"the cleanup after {where}")


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_after_any_call_then_a_rerun_loses_and_duplicates_nothing(part: int, counted: Curation):
    """Crash points ``part + 1``, ``part + 1 + PARTS``, ...: together the parts crash after every call. Each starts
    from the lake as the run left it right after its call."""
    calls, lake = counted.run.calls, counted.lake
    points = range(part + 1, len(calls) + 1, PARTS)
    assert len(points) > 0
    for at in points:
        counted.run.after[at - 1].restore()
        lake.curator().run()
        where = f"call {at} ({calls[at - 1]})"
        assert_exactly_once(lake, where)
        assert_cleaned_up(lake, where)


@pytest.mark.slow
def test_a_real_crash_then_a_rerun_loses_and_duplicates_nothing(
    counted: Curation, instrumented: Instrumented, crash_plan: CrashPlan
):
    """On the prepared lake restored: a crash after the first commit, and after the last call (the restored lake's
    run makes every call the counted run made, in order)."""
    calls, lake = counted.run.calls, counted.lake
    for at in (calls.index("glue UpdateTable") + 1, len(calls)):
        counted.copy.restore()
        crash_plan.at, crash_plan.calls = at, []
        crashed = crash_then_rerun(lake, instrumented)
        assert crash_plan.calls == calls[:at]
        assert crashed == calls[at - 1]
        assert_exactly_once(lake, f"call {at} ({crashed})")
        assert_cleaned_up(lake, f"call {at}")
