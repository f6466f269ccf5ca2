"""A crash after the S3 and catalog calls of an erasure run, then a rerun: the same end result as a run that did not
crash (no byte of the fan anywhere, every other row kept, the audit's counts), and the request completed once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

from curator.erasure_requests import AUDIT_PREFIX, REQUESTS_PREFIX, AuditRecord
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from sandbox.server import MotoProcess
from tests.curator.conftest import CuratedLake, latest_state, new_lake, state_of
from tests.curator.erasure_lake import ERASED, PlantedLake, find_bytes, normalized, plant
from tests.curator.lake_copy import LakeCopy
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


@dataclass
class Erasure:
    """The lake planted once per module (and its copy, restored before each crash point), the changing calls of
    its erasure when nothing crashes, and the audit's counts then."""

    planted: PlantedLake
    copy: LakeCopy
    calls: list[str]
    rows: dict[str, int]


@pytest.fixture(scope="module")
def counted(
    aws_server: MotoProcess, session_clients: tuple[Any, Any], session_catalog: Any, instrumented: Instrumented
) -> Erasure:
    """Plant the lake, copy it, and carry out the request once without a crash, counting its changing calls."""
    planted = planted_lake(new_lake(aws_server, session_clients, session_catalog))
    lake = planted.lake
    copy = LakeCopy.save(lake.s3, lake.glue, (lake.bucket, planted.failure_bucket), lake.database, lake.clock)
    instrumented.plan = plan = CrashPlan()
    with file_writes_reporting(instrumented):
        crashed, request = crash_then_rerun(planted, instrumented)
    instrumented.plan = CrashPlan()
    assert crashed is None
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert_erased(planted, request, dict(audit.rows_removed), "nowhere")
    return Erasure(planted, copy, list(plan.calls), dict(audit.rows_removed))


def crash_points(calls: list[str]) -> list[int]:
    """Every changing call: a crash after any of them, then a rerun, must end as the run without a crash."""
    return list(range(1, len(calls) + 1))


@pytest.fixture
def crash_plan(instrumented: Instrumented) -> Iterator[CrashPlan]:
    instrumented.plan = CrashPlan()
    with file_writes_reporting(instrumented):
        yield instrumented.plan
    instrumented.plan = CrashPlan()


def test_an_erasure_makes_every_kind_of_changing_call(counted: Erasure):
    for expected in (
        "s3 PutObject",
        "s3 DeleteObject",
        "glue UpdateTable",
        f"s3 put {CHANGES_TABLE} data file",
        f"s3 put {CHANGES_TABLE} manifest list",
        f"s3 put {REGISTRATIONS_TABLE} metadata",
    ):
        assert expected in counted.calls, (expected, counted.calls)
    assert all(count > 0 for count in counted.rows.values()), counted.rows
    assert len(counted.calls) >= 60, counted.calls


def test_a_restored_lake_is_the_planted_one_to_the_curator(counted: Erasure, instrumented: Instrumented):
    """The erasure run on the restored copy makes the same changing calls, in the same order, and ends the same."""
    planted, copy = counted.planted, counted.copy
    erased = {location: planted.body(*location) for location in planted.objects()}
    copy.restore()
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


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_after_any_call_of_an_erasure_then_a_rerun_ends_the_same(
    part: int, instrumented: Instrumented, crash_plan: CrashPlan, counted: Erasure
):
    """Crash points ``part + 1``, ``part + 1 + PARTS``, ...: together the parts crash after every call."""
    points = crash_points(counted.calls)[part::PARTS]
    assert len(points) > 0
    planted = counted.planted
    for at in points:
        counted.copy.restore()
        crash_plan.at, crash_plan.calls = at, []
        crashed, request = crash_then_rerun(planted, instrumented)
        assert crashed == counted.calls[at - 1]
        assert_erased(planted, request, counted.rows, f"call {at} ({crashed})")
