"""Snapshot plus changes on the local AWS, end to end: the current state equals a scan of the table.

The real path throughout: items written before the mapping exists (only in the table), the bridge, the mapping
AT_TIMESTAMP T - lead, ``make backfill``'s cutover checks and moto's point-in-time export, the backfill handler,
the stream handler, and the lake reader running the current-state query in DuckDB. The edge cases of issue 10:
an item changed at the export instant (inside the lead: in the snapshot and a change row), one removed just
before T, one removed after T, one deleted long before T; and one changed and one inserted after T.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ops.backfill import BackfillReport, run_export
from sandbox.changes import Change, DemandGenerator, item_key
from sandbox.lake import Lake
from sandbox.local_aws import LocalAws, local_aws
from sandbox.table_state import compare_states, lake_state, table_state
from sandbox.workload import TableWriter

# one worker runs the whole module, so its module fixture runs once (make unit: --dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bootstrap")]

LEAD = timedelta(seconds=2)
Key = tuple[str, str]


def _key(item: dict[str, Any]) -> Key:
    return item["pk"].removeprefix("EVENT#"), item["sk"].removeprefix("FAN#")


def _modified(item: dict[str, Any], status: str) -> Change:
    new = dict(item, status=status, updated_at=datetime.now(UTC).isoformat(timespec="milliseconds")[:23] + "Z")
    return Change("MODIFY", item_key(new), new, item, datetime.now(UTC))


def _removed(item: dict[str, Any]) -> Change:
    return Change("REMOVE", item_key(item), None, item, datetime.now(UTC))


def _inserted(item: dict[str, Any]) -> Change:
    return Change("INSERT", item_key(item), item, None, datetime.now(UTC))


class Bootstrap:
    """The run, once for the module: what was written when, the backfill's report, the lake afterwards."""

    def __init__(self, aws: LocalAws) -> None:
        generator = DemandGenerator(seed=11, start=datetime.now(UTC))
        writer = TableWriter(aws.client("dynamodb"), aws.outputs.table_name)
        now = datetime.now(UTC)
        self.cases: dict[str, dict[str, Any]] = {
            name: generator.new_item(now)
            for name in (
                "deleted long before T",
                "changed at the export instant",
                "removed just before T",
                "removed after T",
                "changed after T",
                "inserted after T",
            )
        }
        bridge = aws.bridge()
        # before the mapping: only in the table (and in the stream, before the mapping's starting position)
        writer.apply(generator.changes(300))
        for name in ("deleted long before T", "changed at the export instant", "removed just before T"):
            writer.apply([_inserted(self.cases[name])])
        for name in ("removed after T", "changed after T"):
            writer.apply([_inserted(self.cases[name])])
        writer.apply([_removed(self.cases["deleted long before T"])])
        while bridge.forwarded < writer.written:
            bridge.pump()
        self.unread = bridge.forwarded
        time.sleep(0.01)
        self.mapping_start = datetime.now(UTC)
        config = aws.mapping_config(
            starting_position="AT_TIMESTAMP",
            starting_position_timestamp=self.mapping_start,
            batching_window_seconds=0.3,
        )
        with aws.pipeline(config=config, bridge=bridge) as pipe:
            time.sleep(0.3)
            streamed = writer.apply(generator.changes(100))
            time.sleep(max(0.0, (self.mapping_start + LEAD - datetime.now(UTC)).total_seconds()) + 0.05)
            # right before the export, so inside the lead however long the export takes to start: in the snapshot
            # and a change row
            streamed += writer.apply([_modified(self.cases["changed at the export instant"], "SELECTED")])
            streamed += writer.apply([_removed(self.cases["removed just before T"])])
            self.report: BackfillReport = run_export(aws.outputs, aws.settings.stack, workers=1, lead=LEAD)
            # after T
            streamed += writer.apply([_removed(self.cases["removed after T"])])
            streamed += writer.apply([_modified(self.cases["changed after T"], "WAITLISTED")])
            streamed += writer.apply([_inserted(self.cases["inserted after T"])])
            streamed += writer.apply(generator.changes(300))
            pipe.wait_for_changes(streamed, timeout=120, unread=self.unread)
            self.streamed = streamed
            self.settled = pipe.settled
        self.export_time = datetime.fromisoformat(self.report.export_time.replace("Z", "+00:00"))
        # The lead of this run: the mapping reads from T - lead, as in the runbook's cutover. The export starts
        # LEAD after the mapping at the earliest and later on a loaded machine; the query looks back as far as
        # the mapping read, so the changes inside the lead are the same however late the export starts.
        self.lead = self.export_time - self.mapping_start
        self.lake = Lake(aws.outputs, s3=aws.client("s3"), filesystem=aws.filesystem())
        self.current = self.lake.current_state(self.report.export_id, self.export_time, lead=self.lead)
        self.table = table_state(aws.client("dynamodb"), aws.outputs.table_name)


@pytest.fixture(scope="module")
def run() -> Iterator[Bootstrap]:
    with local_aws("dev1") as aws:
        yield Bootstrap(aws)


def test_the_backfill_is_complete_and_the_checks_passed(run: Bootstrap):
    assert run.report.problems == []
    totals = run.report.totals()
    assert totals["items"] == run.report.item_count == totals["rows"] + totals["quarantined"]
    assert run.export_time >= run.mapping_start + LEAD  # the cutover's order: mapping at T - lead, then export
    assert run.settled == run.streamed  # the mapping read nothing written before its starting position


def test_current_state_equals_a_scan_of_the_table(run: Bootstrap):
    comparison = compare_states(run.table, lake_state(run.current))
    assert comparison.refused == 0
    assert comparison.missing == []
    assert comparison.unexpected == []
    assert comparison.different == {}
    assert comparison.lake_registrations == len(run.table.rows) == run.table.items
    assert comparison.equal


def test_each_edge_case_comes_out_right(run: Bootstrap):
    state = lake_state(run.current)
    snapshot = {
        (row["event_id"], row["fan_id"]): row
        for row in run.lake.snapshots().to_pylist()
        if row["export_id"] == run.report.export_id
    }
    changes = run.lake.events().to_pylist()
    changed_keys = {(row["event_id"], row["fan_id"]) for row in changes}
    cases = {name: _key(item) for name, item in run.cases.items()}

    deleted = cases["deleted long before T"]
    assert deleted not in state
    assert deleted not in snapshot
    assert deleted not in changed_keys

    instant = cases["changed at the export instant"]
    assert snapshot[instant]["status"] == "SELECTED"  # the snapshot holds the change...
    [row] = [row for row in changes if (row["event_id"], row["fan_id"]) == instant]
    assert row["op"] == "MODIFY"
    # ...and its change row is inside the lead: written after the mapping's start, before the export
    assert run.mapping_start + LEAD <= row["change_time"] <= run.export_time
    assert state[instant]["status"] == "SELECTED"

    removed_before = cases["removed just before T"]
    assert removed_before not in snapshot
    assert [row["op"] for row in changes if (row["event_id"], row["fan_id"]) == removed_before] == ["REMOVE"]
    assert removed_before not in state

    removed_after = cases["removed after T"]
    assert removed_after in snapshot  # a snapshot alone would still hold it
    assert removed_after not in state

    assert snapshot[cases["changed after T"]]["status"] == "REGISTERED"
    assert state[cases["changed after T"]]["status"] == "WAITLISTED"
    assert cases["inserted after T"] not in snapshot
    assert cases["inserted after T"] in state


def test_changes_before_the_mapping_are_only_in_the_table(run: Bootstrap):
    times = [row["change_time"] for row in run.lake.events().to_pylist()]
    assert len(times) == run.streamed
    assert min(times) >= run.mapping_start - timedelta(seconds=1)  # none of the 300 + 6 written before it
