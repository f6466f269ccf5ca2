"""What the curator's crash tests share: a plan that counts a run's changing calls (S3, Glue and the table files
pyiceberg writes and deletes) and raises ``Crash`` right after one of them, and a run that copies the lake right
after each changing call instead (``copied_after_each_call``), so a crash point can restore its copy in place and
rerun: what a process killed right after that call leaves, since nothing after it happened in that process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.io.pyarrow import PyArrowFile, PyArrowFileIO

from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from sandbox.server import MotoProcess
from tests.curator.conftest import new_catalog
from tests.curator.lake_copy import LakeCopy

__all__ = [
    "CopiedRun",
    "Crash",
    "CrashPlan",
    "Instrumented",
    "copied_after_each_call",
    "copies_differ_by_their_calls",
    "crash_plan",
    "file_writes_reporting",
    "instrumented",
    "kind_of",
    "two_events",
]


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
class CopyingPlan(CrashPlan):
    """Counts the changing calls like ``CrashPlan``, and copies the lake (``save``, given the copy before) right
    after each one, one call's tick at a time: a run's threads may tick together."""

    save: Callable[[LakeCopy | None], LakeCopy] | None = None
    copies: list[LakeCopy] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self, name: str) -> None:
        with self._lock:
            armed = self.armed
            super().tick(name)
            if armed and self.save is not None:
                self.copies.append(self.save(self.copies[-1] if self.copies else None))


@dataclass
class Instrumented:
    """A catalog and an S3 client whose changing calls report to ``plan`` (built once per module: a catalog
    costs a quarter of a second), and the plan of the test in progress."""

    catalog: Any
    s3: Any
    plan: CrashPlan = field(default_factory=CrashPlan)


def instrumented_clients(endpoint_url: str) -> Instrumented:
    catalog = new_catalog(endpoint_url)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    result = Instrumented(catalog, s3)
    s3.meta.events.register("after-call.s3", lambda **kw: tick_if_changing(result.plan, "s3", kw))
    catalog.glue.meta.events.register("after-call.glue", lambda **kw: tick_if_changing(result.plan, "glue", kw))
    return result


@pytest.fixture(scope="module")
def instrumented(aws_server: MotoProcess) -> Instrumented:
    return instrumented_clients(aws_server.endpoint_url)


@pytest.fixture
def crash_plan(instrumented: Instrumented) -> Iterator[CrashPlan]:
    """The plan of the test in progress: it counts (and, with ``at`` set, crashes) while armed."""
    instrumented.plan = CrashPlan()
    with file_writes_reporting(instrumented):
        yield instrumented.plan
    instrumented.plan = CrashPlan()


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


def two_events(rows: pa.Table) -> pa.Table:
    """``rows`` with their events folded into two (a key's changes stay together): fewer files, fewer calls."""
    folded = pc.if_else(pc.less(rows.column("event_id"), "vvU"), "event-a", "event-b")
    index = rows.schema.get_field_index("event_id")
    return rows.set_column(index, rows.schema.field(index), folded)


#: How long a table file write waits for the one in progress before it goes ahead anyway (a thread writing two
#: files at once would otherwise wait for itself); the copies' test then finds the two in one copy.
_WRITE_WAIT_SECONDS = 10.0


@contextmanager
def one_file_write_at_a_time() -> Iterator[None]:
    """Table files are written one at a time, each reported before the next starts (pyiceberg writes a snapshot's
    manifests in parallel), so the copy after one file holds no file written after it. Applied over
    ``file_writes_reporting``."""
    lock = threading.Lock()
    reporting_create = PyArrowFile.create

    class Releasing:
        def __init__(self, stream: Any, locked: bool) -> None:
            self._stream, self._locked = stream, locked

        def __getattr__(self, name: str) -> Any:
            return getattr(self._stream, name)

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

        def close(self) -> None:
            try:
                self._stream.close()
            finally:
                if self._locked:
                    self._locked = False
                    lock.release()

    def create(self: PyArrowFile, overwrite: bool = False) -> Any:
        locked = lock.acquire(timeout=_WRITE_WAIT_SECONDS)
        try:
            return Releasing(reporting_create(self, overwrite=overwrite), locked)
        except BaseException:
            if locked:
                lock.release()
            raise

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PyArrowFile, "create", create)
        yield


@dataclass
class CopiedRun:
    """A run's changing calls, and a copy of the lake right after each (``after[n - 1]`` after call ``n``)."""

    calls: list[str]
    after: list[LakeCopy]


def copied_after_each_call(
    instrumented: Instrumented, save: Callable[[LakeCopy | None], LakeCopy], run: Callable[[CrashPlan], None]
) -> CopiedRun:
    """Call ``run`` (which arms the plan it is given where its counted calls start) with a plan that copies the
    lake after each changing call; table files are written one at a time meanwhile."""
    instrumented.plan = plan = CopyingPlan(save=save)
    try:
        with file_writes_reporting(instrumented), one_file_write_at_a_time():
            run(plan)
    finally:
        instrumented.plan = CrashPlan()
    return CopiedRun(list(plan.calls), plan.copies)


def live_keys(copy: LakeCopy) -> set[tuple[str, str]]:
    """(bucket, key) of each object whose current version is not a delete marker (pyarrow's folder markers, which
    it writes when it deletes a folder's last file, left out)."""
    return {
        (bucket, key)
        for bucket, keys in copy.objects.items()
        for key, versions in keys.items()
        if versions[-1].body is not None and not key.endswith("/")
    }


def stored_versions(copy: LakeCopy) -> int:
    """Versions and delete markers of every key."""
    return sum(len(versions) for keys in copy.objects.values() for versions in keys.values())


def copies_differ_by_their_calls(
    first: LakeCopy, run: CopiedRun, outside: frozenset[tuple[str, str]] = frozenset()
) -> None:
    """Each copy differs from the one before (``first`` before the first call) by exactly its call: a put adds a
    key (or, overwriting one in place, a version), a delete removes one, a purge removes one version or marker, an
    ``UpdateTable`` changes one table's metadata location and no object. ``outside``: keys added between ``first``
    and the run (not by a call)."""
    copies = [first, *run.after]
    for at, call in enumerate(run.calls, start=1):
        before, after = copies[at - 1], copies[at]
        added, removed = live_keys(after) - live_keys(before) - outside, live_keys(before) - live_keys(after)
        if call.startswith(("s3 PutObject", "s3 put")):
            if not added and call == "s3 PutObject":  # an object overwritten in place: one more version
                assert stored_versions(after) == stored_versions(before) + 1, (at, call)
            else:
                assert len(added) == 1, (at, call, added)
            assert not removed, (at, call, removed)
            assert before.tables == after.tables, (at, call)
        elif call == "s3 DeleteObject version":  # an old version (no live key) or a key's only version
            assert not added, (at, call, added)
            assert len(removed) <= 1, (at, call, removed)
            assert stored_versions(after) == stored_versions(before) - 1, (at, call)
            assert before.tables == after.tables, (at, call)
        elif call.startswith(("s3 DeleteObject", "s3 delete")):
            assert (len(added), len(removed)) == (0, 1), (at, call, added, removed)
            assert before.tables == after.tables, (at, call)
        else:
            assert call == "glue UpdateTable", (at, call)
            assert (added, removed) == (set(), set()), (at, call)
            locations = [
                {name: table["Parameters"]["metadata_location"] for name, table in copy.tables.items()}
                for copy in (before, after)
            ]
            assert len(set(locations[0].items()) ^ set(locations[1].items())) == 2, (at, call)
