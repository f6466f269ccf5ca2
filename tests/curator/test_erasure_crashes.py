"""A crash after the S3 and catalog calls of an erasure run, then a rerun: the same end result as a run that did not
crash (no byte of the fan anywhere, every other row kept, the audit's counts), and the request completed once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from curator.erasure_requests import AUDIT_PREFIX, REQUESTS_PREFIX, AuditRecord
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from sandbox.server import MotoProcess
from tests.curator.conftest import CuratedLake, latest_state, new_lake, state_of
from tests.curator.erasure_lake import ERASED, PlantedLake, find_bytes, normalized, plant
from tests.curator.test_crashes import Crash, CrashPlan, Instrumented, file_writes_reporting, instrumented

__all__ = ["instrumented"]  # the crash harness's fixture, shared with the curation crash tests

#: Crash points are shared out among this many tests.
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


def assert_erased(planted: PlantedLake, request: Any, expected: dict[str, int], where: str) -> None:
    lake = planted.lake
    assert find_bytes(planted, ERASED) == [], where
    changes = lake.table(CHANGES_TABLE).scan().to_arrow()
    wanted = sorted(row for row in normalized(planted.everything) if row[2] != ERASED)
    assert sorted(normalized(changes)) == wanted, f"a change is lost or duplicated after {where}"
    others = planted.everything.filter(pa.compute.not_equal(planted.everything["fan_id"], ERASED))
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == latest_state(others), where
    assert lake.keys(REQUESTS_PREFIX) == [], where
    assert lake.keys(AUDIT_PREFIX) == [request.audit_key], where
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert dict(audit.rows_removed) == expected, where


@pytest.fixture(scope="module")
def counted(
    aws_server: MotoProcess, session_clients: tuple[Any, Any], session_catalog: Any, instrumented: Instrumented
) -> tuple[list[str], dict[str, int]]:
    """The changing calls of an erasure when nothing crashes, and the audit's counts then."""
    planted = planted_lake(new_lake(aws_server, session_clients, session_catalog))
    instrumented.plan = plan = CrashPlan()
    with file_writes_reporting(instrumented):
        crashed, request = crash_then_rerun(planted, instrumented)
    instrumented.plan = CrashPlan()
    assert crashed is None
    audit = AuditRecord.from_json(planted.body(planted.lake.bucket, request.audit_key), request.audit_key)
    assert_erased(planted, request, dict(audit.rows_removed), "nowhere")
    return list(plan.calls), dict(audit.rows_removed)


def crash_points(calls: list[str]) -> list[int]:
    """After every catalog call (each commit: before it, the files written are unreferenced; after it, the tables
    have moved on), after the first call (the tally), after the first object written and the first deleted once
    the tables are done (rewrites of raw objects, snapshots, quarantine and on-failure records), and after the last
    call (the request deleted). The calls left out are files of a commit not yet made (a crash after them leaves
    what a crash before the commit leaves) and more of the same conditional deletes and rewrites."""
    last_commit = max(index for index, call in enumerate(calls) if call.startswith("glue "))
    after_tables = calls[last_commit + 1 :]
    points = {1, len(calls)}
    points.update(index + 1 for index, call in enumerate(calls) if call.startswith("glue "))
    if "s3 DeleteObject" in after_tables:  # an unreferenced table file
        points.add(last_commit + 2 + after_tables.index("s3 DeleteObject"))
    if "s3 PutObject" in after_tables:  # the first object rewritten, then the first old object deleted
        first_put = last_commit + 1 + after_tables.index("s3 PutObject")
        points.add(first_put + 1)
        if "s3 DeleteObject" in calls[first_put:]:
            points.add(first_put + 1 + calls[first_put:].index("s3 DeleteObject"))
    return sorted(points)


@pytest.fixture
def crash_plan(instrumented: Instrumented) -> Iterator[CrashPlan]:
    instrumented.plan = CrashPlan()
    with file_writes_reporting(instrumented):
        yield instrumented.plan
    instrumented.plan = CrashPlan()


def test_an_erasure_makes_every_kind_of_changing_call(counted: tuple[list[str], dict[str, int]]):
    calls, rows = counted
    for expected in (
        "s3 PutObject",
        "s3 DeleteObject",
        "glue UpdateTable",
        f"s3 put {CHANGES_TABLE} data file",
        f"s3 put {CHANGES_TABLE} manifest list",
        f"s3 put {REGISTRATIONS_TABLE} metadata",
    ):
        assert expected in calls, (expected, calls)
    assert all(count > 0 for count in rows.values()), rows
    assert len(crash_points(calls)) >= 12, crash_points(calls)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_after_any_call_of_an_erasure_then_a_rerun_ends_the_same(
    part: int,
    lake: CuratedLake,
    instrumented: Instrumented,
    crash_plan: CrashPlan,
    counted: tuple[list[str], dict[str, int]],
):
    calls, rows = counted
    points = crash_points(calls)[part::PARTS]
    assert len(points) > 0
    for at in points:
        crash_plan.at, crash_plan.calls = at, []
        planted = planted_lake(lake.with_fresh_names())
        crashed, request = crash_then_rerun(planted, instrumented)
        assert crashed == calls[at - 1]
        assert_erased(planted, request, rows, f"call {at} ({crashed})")
