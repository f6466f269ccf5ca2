"""A crash at the old-version purges of an erasure run (versioned buckets), then a rerun: no version of the fan left,
no other row lost, the request completed once with the same counts as a run that did not crash.

The crash points: the first and the last purge of each place (each table's location, raw objects, snapshots,
quarantine, failed batches) and the request's own purge. The erasure's other calls are the crash tests' of
``test_erasure_crashes.py``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from curator.erasure_requests import AUDIT_PREFIX, REQUESTS_PREFIX, AuditRecord
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from sandbox.server import MotoProcess
from tests.curator.conftest import CuratedLake, latest_state, new_lake, state_of
from tests.curator.erasure_lake import ERASED, PlantedLake, find_bytes, normalized, plant
from tests.curator.test_crashes import Crash, CrashPlan, Instrumented, file_writes_reporting, instrumented

__all__ = ["instrumented"]  # the crash harness's fixture

PARTS = 2


def _planted(lake: CuratedLake) -> PlantedLake:
    failure_bucket = f"{lake.bucket}-failures"
    lake.s3.create_bucket(Bucket=failure_bucket)
    return plant(lake, failure_bucket)


def _place(bucket: str, key: str) -> str:
    for marker in (f"/{CHANGES_TABLE}/", f"/{REGISTRATIONS_TABLE}/"):
        if marker in key:
            return marker.strip("/")
    if key.startswith(REQUESTS_PREFIX):
        return "request"
    return bucket.rsplit("-", 1)[-1] if bucket.endswith("-failures") else key.split("/")[1]


@pytest.fixture(scope="module")
def deletes(instrumented: Instrumented) -> list[tuple[str, bool]]:
    """(place, whether a version purge) of every armed ``DeleteObject``, in order, as the plan counts them."""
    recorded: list[tuple[str, bool]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        if instrumented.plan.armed:
            recorded.append((_place(params["Bucket"], params["Key"]), "VersionId" in params))

    instrumented.s3.meta.events.register(
        "provide-client-params.s3.DeleteObject", record, unique_id="erasure-version-crashes"
    )
    return recorded


def _run(planted: PlantedLake, instrumented: Instrumented) -> tuple[str | None, Any]:
    """File the request, run with the plan armed for the erasure step only, then rerun."""
    request = planted.file_request(ERASED)
    plan = instrumented.plan

    def checkpoint(step: str) -> None:
        if step == "erasure ready":
            plan.armed = True
        if step == "erasure done":
            plan.armed = False

    curator = planted.curator(catalog=instrumented.catalog, s3=instrumented.s3, checkpoint=checkpoint)
    crashed: str | None = None
    try:
        curator.run()
    except Crash as crash:
        crashed = str(crash)
    plan.armed = False
    planted.curator().run()
    return crashed, request


def _assert_erased(planted: PlantedLake, request: Any, rows: dict[str, int], where: str) -> None:
    lake = planted.lake
    assert find_bytes(planted, ERASED) == [], where  # every version, current or not
    wanted = sorted(row for row in normalized(planted.everything) if row[2] != ERASED)
    assert sorted(normalized(lake.table(CHANGES_TABLE).scan().to_arrow())) == wanted, where
    others = planted.everything.filter(pa.compute.not_equal(planted.everything["fan_id"], ERASED))
    assert state_of(lake.table(REGISTRATIONS_TABLE).scan().to_arrow()) == latest_state(others), where
    assert lake.keys(REQUESTS_PREFIX) == [], where
    assert planted.version_ids(lake.bucket, request.key) == {}, where
    assert lake.keys(AUDIT_PREFIX) == [request.audit_key], where
    audit = AuditRecord.from_json(planted.body(lake.bucket, request.audit_key), request.audit_key)
    assert dict(audit.rows_removed) == rows, where


@pytest.fixture(scope="module")
def counted(
    aws_server: MotoProcess,
    session_clients: tuple[Any, Any],
    session_catalog: Any,
    instrumented: Instrumented,
    deletes: list[tuple[str, bool]],
) -> tuple[list[int], dict[str, int]]:
    """The crash points (call numbers) of an erasure that does not crash, and its audit's counts."""
    planted = _planted(new_lake(aws_server, session_clients, session_catalog))
    instrumented.plan = plan = CrashPlan()
    deletes.clear()
    with file_writes_reporting(instrumented):
        crashed, request = _run(planted, instrumented)
    instrumented.plan = CrashPlan()
    assert crashed is None
    audit = AuditRecord.from_json(planted.body(planted.lake.bucket, request.audit_key), request.audit_key)
    rows = dict(audit.rows_removed)
    _assert_erased(planted, request, rows, "nowhere")
    delete_calls = [index for index, call in enumerate(plan.calls) if call == "s3 DeleteObject"]
    assert len(delete_calls) == len(deletes), "every DeleteObject the plan counted is recorded"
    purges = [(index, place) for index, (place, purge) in zip(delete_calls, deletes, strict=True) if purge]
    points: set[int] = set()
    for place in {place for _, place in purges}:
        at = [index + 1 for index, where in purges if where == place]
        points.update({at[0], at[-1]})
    return sorted(points), rows


def test_an_erasure_purges_old_versions_in_every_place(counted: tuple[list[int], dict[str, int]]):
    points, rows = counted
    assert all(count > 0 for count in rows.values()), rows
    assert len(points) >= 10, points  # two per place, but the single snapshot, failed batch and request


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
def test_a_crash_at_an_old_version_purge_then_a_rerun_ends_the_same(
    part: int,
    lake: CuratedLake,
    instrumented: Instrumented,
    counted: tuple[list[int], dict[str, int]],
):
    points, rows = counted
    for at in points[part::PARTS]:
        instrumented.plan = CrashPlan(at=at)
        with file_writes_reporting(instrumented):
            planted = _planted(lake.with_fresh_names())
            crashed, request = _run(planted, instrumented)
        instrumented.plan = CrashPlan()
        assert crashed == "s3 DeleteObject", at
        _assert_erased(planted, request, rows, f"call {at}")
