"""A crash after each S3 and catalog call of an erasure run, then a rerun: the same end result as a run that did not
crash (no byte of the fan anywhere, every other row kept, the audit's counts), and the request completed once.

The lake is planted once per module. The run that counts the erasure's changing calls also copies the lake right
after each of them (``CopyingPlan``): what a process killed there leaves, since nothing after that call happened
in it. Each crash point then restores its copy in place and reruns. One point also crashes for real (``Crash``
raised in the run, on the planted lake restored). The buckets are versioned, so the erasure's calls include the
purges of old versions (``s3 DeleteObject version``). ``crash_points`` picks about a quarter of the erasure's
calls, each a different state a crash can leave; ``make test`` crashes after every fourth one of them and the
first of each kind of call those leave out (``suite_points``: the suite's six minutes, a rerun costs 3-5 s there);
``DMD_ERASURE_CRASH_EVERY_CALL=1`` crashes after every call (CI's ``crash-matrix`` job, before the qa1 deploy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest

from curator.erasure_requests import AUDIT_PREFIX, REQUESTS_PREFIX, AuditRecord, ErasureRequest
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from sandbox.server import MotoProcess
from tests.curator.conftest import CuratedLake, latest_state, new_lake, state_of
from tests.curator.crash_harness import (
    CopiedRun,
    Crash,
    CrashPlan,
    Instrumented,
    copied_after_each_call,
    copies_differ_by_their_calls,
    crash_plan,
    file_writes_reporting,
    instrumented,
)
from tests.curator.erasure_lake import ERASED, PlantedLake, find_bytes, normalized, plant
from tests.curator.lake_copy import LakeCopy

__all__ = ["crash_plan", "instrumented"]  # the crash harness's fixtures

#: One worker runs the module: the planted lake and its copies (``counted``) are made once, not once per worker
#: (each a plant, an erasure run and 72 copies: 10-20 s); the module's ~2 minutes still fit beside the others.
pytestmark = pytest.mark.xdist_group("erasure_crashes")

#: Crash points are shared out among this many tests (each reports its own points' failures).
PARTS = 4


def planted_lake(lake: CuratedLake) -> PlantedLake:
    failure_bucket = f"{lake.bucket}-failures"
    lake.s3.create_bucket(Bucket=failure_bucket)
    return plant(lake, failure_bucket)


def crash_then_rerun(planted: PlantedLake, instrumented: Instrumented) -> tuple[str | None, Any]:
    """File the request, run with the plan armed (only the erasure step counts), then rerun."""
    request = planted.file_request(ERASED)
    plan = instrumented.plan

    def arm(step: str) -> None:
        if step == "erasure ready":
            plan.armed = True

    curator = planted.curator(catalog=instrumented.catalog, s3=instrumented.s3, checkpoint=_disarming(plan, arm))
    crashed: str | None = None
    try:
        curator.run()
    except Crash as crash:
        crashed = str(crash)
    plan.armed = False
    planted.curator().run()
    return crashed, request


def _disarming(plan: CrashPlan, arm: Any) -> Any:
    """A checkpoint that arms the plan when the erasure starts and disarms it when the erasure is done."""

    def checkpoint(step: str) -> None:
        arm(step)
        if step == "erasure done":
            plan.armed = False

    return checkpoint


@dataclass
class _Unsearched(PlantedLake):
    """The planted lake less the objects whose bytes (by ETag, a digest of them) a search found clean before."""

    clean: set[str] = field(default_factory=set)

    def objects(self) -> dict[tuple[str, str], str]:
        return {location: etag for location, etag in super().objects().items() if etag not in self.clean}


def found_erased(planted: PlantedLake, clean: set[str] | None = None) -> list[str]:
    """``find_bytes`` for the erased fan; with ``clean``, the ETags of bytes found clean before are not read again
    (a crash point's search reads what its rerun wrote) and the ones found clean now are added."""
    if clean is None:
        return find_bytes(planted, ERASED)
    unsearched = _Unsearched(planted.lake, planted.failure_bucket, planted.everything, clean)
    listed = unsearched.objects()
    hits = find_bytes(unsearched, ERASED)
    clean.update(etag for (bucket, key), etag in listed.items() if f"s3://{bucket}/{key}" not in hits)
    return hits


def assert_erased(
    planted: PlantedLake, request: Any, expected: dict[str, int], where: str, clean: set[str] | None = None
) -> None:
    lake = planted.lake
    assert found_erased(planted, clean) == [], where
    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    wanted = sorted(row for row in normalized(planted.everything) if row[2] != ERASED)
    assert sorted(normalized(changes)) == wanted, f"a change is lost or duplicated after {where}"
    others = planted.everything.filter(pa.compute.not_equal(planted.everything["fan_id"], ERASED))
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == latest_state(others), where
    assert lake.keys(REQUESTS_PREFIX) == [], where
    assert lake.keys(AUDIT_PREFIX) == [request.audit_key], where
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert dict(audit.rows_removed) == expected, where


def copy_of(planted: PlantedLake, previous: LakeCopy | None = None) -> LakeCopy:
    lake = planted.lake
    buckets = (lake.bucket, planted.failure_bucket)
    return LakeCopy.save(lake.s3, lake.glue, buckets, lake.database, lake.clock, previous=previous)


@dataclass
class Erasure:
    """The lake planted once per module, its copy as planted, the changing calls of its erasure when nothing
    crashes with a copy of the lake right after each, and the audit's counts."""

    planted: PlantedLake
    copy: LakeCopy
    run: CopiedRun
    request: ErasureRequest
    rows: dict[str, int]
    #: ETags of the objects searched and found without the fan (the search's result is a function of the bytes).
    clean: set[str] = field(default_factory=set)

    @property
    def calls(self) -> list[str]:
        return self.run.calls

    @property
    def after(self) -> list[LakeCopy]:
        return self.run.after


@pytest.fixture(scope="module")
def counted(
    aws_server: MotoProcess, session_clients: tuple[Any, Any], session_catalog: Any, instrumented: Instrumented
) -> Erasure:
    """Plant the lake, copy it, and carry out the request once without a crash, counting its changing calls and
    copying the lake after each."""
    planted = planted_lake(new_lake(aws_server, session_clients, session_catalog))
    lake = planted.lake
    planted_copy = copy_of(planted)
    requests: list[ErasureRequest] = []

    def run(plan: CrashPlan) -> None:
        crashed, request = crash_then_rerun(planted, instrumented)
        assert crashed is None
        requests.append(request)

    copied = copied_after_each_call(instrumented, lambda previous: copy_of(planted, previous), run)
    [request] = requests
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert_erased(planted, request, dict(audit.rows_removed), "nowhere")
    return Erasure(planted, planted_copy, copied, request, dict(audit.rows_removed))


#: Set (to anything) to crash after every changing call, not only after those ``crash_points`` picks.
EVERY_CALL = bool(os.environ.get("DMD_ERASURE_CRASH_EVERY_CALL"))


def _kind(call: str) -> str:
    """Table file writes of one table are one kind (a commit's files), as are its table file deletes."""
    for verb in ("put", "delete"):
        if call.startswith(f"s3 {verb} "):
            return f"{verb} {call.split()[2]}"
    return call


def crash_points(calls: list[str], *, every_call: bool = EVERY_CALL) -> list[int]:
    """After every call (``every_call``), or: after every commit and every object written (the tally, each object
    rewritten); after the first of each run of deletes or purges of one kind (old metadata files, unreferenced
    files, each place's old objects and versions, the request): a crash after a later one of the run leaves the lake
    between that first one's and the next point's; and after the last table file written for each table's first
    commit (its rows rewritten). A crash after the other table files leaves what a crash after the commit before
    them leaves, and files nothing references: what the rewrite's crash point leaves too, with more of them. The
    matrix (CI's ``crash-matrix``) crashes after every call."""
    if every_call:
        return list(range(1, len(calls) + 1))
    points: list[int] = []
    tables_written: set[str] = set()
    start = 0
    for end in range(len(calls)):
        if end + 1 < len(calls) and _kind(calls[end + 1]) == _kind(calls[start]):
            continue
        kind = _kind(calls[start])
        if kind.startswith("put "):
            if kind not in tables_written:
                points.append(end + 1)
            tables_written.add(kind)
        elif kind.startswith("glue ") or kind == "s3 PutObject":
            points.extend(range(start + 1, end + 2))
        else:
            points.append(start + 1)
        start = end + 1
    return points


#: ``make test`` crashes after every ``SUITE_STEP``th of ``crash_points`` (and the first of each kind of call).
SUITE_STEP = 4


def suite_points(calls: list[str], points: list[int]) -> list[int]:
    """Every fourth one of ``points`` (the first, the fifth, ...: spread over every step of the run), and the first
    point of each kind of call (``_kind``) those leave out."""
    chosen = set(points[::SUITE_STEP])
    kinds = {_kind(calls[at - 1]) for at in chosen}
    for at in points:
        if _kind(calls[at - 1]) not in kinds:
            chosen.add(at)
            kinds.add(_kind(calls[at - 1]))
    return sorted(chosen)


def points_to_crash_at(calls: list[str], *, every_call: bool = EVERY_CALL) -> list[int]:
    """After every call (``every_call``, the matrix), else the suite's share of ``crash_points``."""
    points = crash_points(calls, every_call=every_call)
    return points if every_call else suite_points(calls, points)


def real_crash_points(calls: list[str]) -> list[int]:
    """The point that also crashes for real: the first commit."""
    return [calls.index("glue UpdateTable") + 1]


def test_an_erasure_makes_every_kind_of_changing_call(counted: Erasure):
    for expected in (
        "s3 PutObject",
        "s3 DeleteObject",
        "s3 DeleteObject version",
        "glue UpdateTable",
        f"s3 put {CHANGES_TABLE} data file",
        f"s3 put {CHANGES_TABLE} manifest list",
        f"s3 put {REGISTRATIONS_TABLE} metadata",
    ):
        assert expected in counted.calls, (expected, counted.calls)
    assert all(count > 0 for count in counted.rows.values()), counted.rows
    assert len(counted.calls) >= 60, counted.calls
    assert len(counted.after) == len(counted.calls)


def test_the_crash_points_leave_out_only_the_middle_of_long_runs_of_one_kind(counted: Erasure):
    calls = [
        "s3 PutObject",
        *("s3 put t data file", "s3 put t manifest", "s3 put t metadata"),
        "glue UpdateTable",
        *["s3 delete t metadata"] * 3,
        *["s3 DeleteObject"] * 2,
        "s3 PutObject",
        "s3 put t metadata",
        "glue UpdateTable",
    ]
    assert crash_points(calls, every_call=False) == [1, 4, 5, 6, 9, 11, 13]
    assert crash_points(calls, every_call=True) == list(range(1, 14))
    points = set(crash_points(counted.calls, every_call=False))
    numbered = list(enumerate(counted.calls, start=1))
    assert {at for at, call in numbered if call.startswith("glue ")} <= points  # every commit
    assert {at for at, call in numbered if call == "s3 PutObject"} <= points  # every object rewritten
    # the first call of each run of one kind: each place's first delete and purge
    runs = [(at, call) for at, call in numbered if at == 1 or counted.calls[at - 2] != call]
    assert {at for at, call in runs if not call.startswith("s3 put")} <= points
    assert counted.calls.count("s3 DeleteObject version") > 10
    assert 30 <= len(points) < len(counted.calls) / 3


def test_the_suite_crashes_after_every_fourth_point_and_each_kind_of_call_once_at_least(counted: Erasure):
    calls = [
        "glue UpdateTable",
        "s3 PutObject",
        "glue UpdateTable",
        "s3 PutObject",
        "s3 DeleteObject",
        "glue UpdateTable",
    ]
    # every fourth point (1, 5), then the first PutObject (2); the second PutObject (4) and the commits 3 and 6 are
    # left out
    assert suite_points(calls, [1, 2, 3, 4, 5, 6]) == [1, 2, 5]
    points = crash_points(counted.calls, every_call=False)
    chosen = points_to_crash_at(counted.calls, every_call=False)
    assert set(points[::SUITE_STEP]) <= set(chosen) <= set(points)
    assert {_kind(counted.calls[at - 1]) for at in chosen} == {_kind(counted.calls[at - 1]) for at in points}
    added = set(chosen) - set(points[::SUITE_STEP])  # one point for each kind of call the fourths leave out
    assert len({_kind(counted.calls[at - 1]) for at in added}) == len(added)
    assert len(chosen) < len(points) / 2
    assert points_to_crash_at(counted.calls, every_call=True) == list(range(1, len(counted.calls) + 1))


def test_a_restored_lake_is_the_planted_one_to_the_curator(counted: Erasure, instrumented: Instrumented):
    """Restored in place, the buckets hold the planted bytes and the tables their planted metadata; the erasure run
    on them makes the same changing calls, in the same order, and ends the same."""
    planted, copy = counted.planted, counted.copy
    erased = {location: planted.body(*location) for location in planted.objects()}
    clean: set[str] = set()
    assert found_erased(planted, clean) == []
    assert clean == set(planted.objects().values())
    copy.restore()
    # The fan is back, and found where it is whatever was found clean before.
    everywhere = find_bytes(planted, ERASED)
    assert found_erased(planted, clean) == everywhere
    assert len(everywhere) >= 8
    restored = {location: planted.body(*location) for location in planted.objects()}
    saved = {
        (bucket, key): versions[-1].body
        for bucket, keys in copy.objects.items()
        for key, versions in keys.items()
        if versions[-1].body is not None
    }
    assert restored == saved
    assert restored != erased
    tables = planted.lake.glue.get_tables(DatabaseName=planted.lake.database)["TableList"]
    assert {table["Name"]: table["Parameters"] for table in tables} == {
        name: table["Parameters"] for name, table in copy.tables.items()
    }
    instrumented.plan = plan = CrashPlan()
    with file_writes_reporting(instrumented):
        crashed, request = crash_then_rerun(planted, instrumented)
    instrumented.plan = CrashPlan()
    assert crashed is None
    assert plan.calls == counted.calls
    assert_erased(planted, request, counted.rows, "the restored lake")


def test_each_copy_differs_from_the_one_before_by_its_call(counted: Erasure):
    """A copy is taken right after its call, not before it nor after a later one (an export file is overwritten in
    place; the request, filed after the planted copy, is its only version and its purge removes the key)."""
    filed = frozenset({(counted.planted.lake.bucket, counted.request.key)})
    copies_differ_by_their_calls(counted.copy, counted.run, outside=filed)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_after_any_call_of_an_erasure_then_a_rerun_ends_the_same(
    part: int, instrumented: Instrumented, counted: Erasure
):
    """The crash points (``points_to_crash_at``) ``part``, ``part + PARTS``, ...: together the parts crash after each
    of them. Each starts from the lake as the run left it right after its call; the request is the one filed before
    the run."""
    points = points_to_crash_at(counted.calls)[part::PARTS]
    assert len(points) > 0
    planted = counted.planted
    for at in points:
        counted.after[at - 1].restore()
        planted.curator().run()
        assert_erased(planted, counted.request, counted.rows, f"call {at} ({counted.calls[at - 1]})", counted.clean)


@pytest.mark.slow
def test_a_real_crash_then_a_rerun_ends_the_same(instrumented: Instrumented, crash_plan: CrashPlan, counted: Erasure):
    planted = counted.planted
    for at in real_crash_points(counted.calls):
        counted.copy.restore()
        crash_plan.at, crash_plan.calls = at, []
        crashed, request = crash_then_rerun(planted, instrumented)
        assert crashed == counted.calls[at - 1]
        assert_erased(planted, request, counted.rows, f"call {at} ({crashed})", counted.clean)
