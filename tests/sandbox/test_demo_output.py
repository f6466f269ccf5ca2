"""What `make demo` prints, on an 80-column log: the bootstrap against the table, a compaction with duplicates and
several objects to merge, why current_registrations counts fewer than the current state, and progress on the long
steps. The demo runs once for the module; each test reads its result and its output."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from rich.console import Console

from sandbox import demo

pytestmark = pytest.mark.slow

WIDTH = 80


@dataclass(frozen=True)
class Run:
    result: demo.DemoResult
    text: str
    steps: list[tuple[str, str]]  # each long step's description, and the output printed before it began


@pytest.fixture(scope="module")
def run() -> Run:
    steps: list[tuple[str, str]] = []
    working = demo._working

    @contextlib.contextmanager
    def recorded(console: Console, description: str) -> Iterator[Callable[[str], None]]:
        steps.append((description, console.export_text(clear=False)))
        with working(console, description) as describe:
            yield describe

    console = Console(file=io.StringIO(), width=WIDTH, record=True, force_terminal=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "_working", recorded)
        result = demo.run_demo(
            demo.parse_args(["--events", "900", "--poison", "4", "--seed", "3", "--batching-window", "0.3"]), console
        )
    return Run(result, console.export_text(), steps)


def _rows(text: str) -> dict[str, list[str]]:
    """The two- and three-column boxed rows (summary, compaction): label -> values."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if line.startswith("│") and len(cells) in (2, 3) and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def _number(text: str) -> int:
    return int(text.replace(",", ""))


# -- the bootstrap: snapshot + changes, compared with the table ---------------------------------------------------
def test_the_demo_bootstraps_the_lake_and_its_current_state_equals_the_table(run: Run) -> None:
    result, text = run.result, run.text
    bootstrap = result.bootstrap
    assert bootstrap is not None
    assert bootstrap.written_before == 300  # a third of the changes, before the mapping exists
    assert result.items_written == result.changes_streamed == 600  # the rest, streamed
    totals = bootstrap.report.totals()
    assert bootstrap.report.problems == []
    assert totals["items"] == bootstrap.report.item_count == totals["rows"] + totals["quarantined"]
    assert bootstrap.changed_after["MODIFY"] > 0  # snapshot items modified after T...
    assert bootstrap.changed_after["REMOVE"] > 0  # ...and removed
    state = bootstrap.state
    assert state is not None
    assert state.equal
    assert state.refused == 4  # the poison items: in the table, refused by the contract, never rows
    assert state.lake_registrations == state.table_items - state.refused
    landed = result.counts.distinct_changes + result.counts.quarantined + result.failed
    assert landed == result.changes_streamed  # every streamed change once, after compaction too
    assert result.compaction is not None
    assert result.compaction.same_changes
    assert result.accounted
    summary = {label: values[0] for label, values in _rows(text).items() if len(values) == 1}
    assert summary["written before the mapping"] == "300"
    assert summary["snapshot items at T (mapping T - 1 s)"] == (
        f"{totals['items']:,}: {totals['rows']:,} rows, {totals['quarantined']:,} quarantined"
    )
    assert summary["snapshot items changed after T"] == (
        f"{bootstrap.changed_after['MODIFY']:,} modified, {bootstrap.changed_after['REMOVE']:,} removed"
    )
    assert summary["items in the table"] == f"{state.table_items:,} (4 refused by the contract)"
    assert summary["registrations in the current state"] == f"{state.lake_registrations:,}"
    assert summary["current state = table scan"] == "equal"
    assert summary["changes streamed"] == "600"
    assert summary["records delivered twice"] == f"{result.redelivered:,}"
    assert f"current state = table: {state.lake_registrations:,} registrations, equal" in text
    assert "rows + quarantined + failed = 600: every change accounted for" in text


# -- 80 columns -----------------------------------------------------------------------------------------------------
def test_every_line_fits_80_columns(run: Run) -> None:
    lines = run.text.splitlines()
    assert len(lines) > 100
    assert [line for line in lines if len(line) > WIDTH] == []


def test_each_shown_row_of_a_query_table_is_one_line(run: Run) -> None:
    tables = re.findall(r"┡[━╇]+┩\n(.*?)\n└[─┴]+┘\n([^\n]*)", run.text, flags=re.DOTALL)
    assert len(tables) == 5  # the three named queries, the compaction and the current state
    for body, caption in tables:
        rows = body.splitlines()
        shown = re.match(r"(\d+) of ([\d,]+) rows", caption)
        assert len(rows) == (int(shown.group(1)) if shown else len(rows))
        assert all(line.startswith("│") and line.split("│")[1].strip() for line in rows), "no continuation lines"
    current_state = run.text.split("current state: snapshot", 1)[1]
    assert "8 of " in current_state
    assert "not shown: price_levels, channel" in current_state  # the columns that did not fit are named


# -- compaction -----------------------------------------------------------------------------------------------------
def test_the_compaction_merges_several_objects_and_removes_the_duplicates(run: Run) -> None:
    result = run.result
    figures = result.compaction
    assert figures is not None
    before, after = figures.before, result.counts
    assert result.redelivered >= 1  # records whose first delivery was written, then failed and was delivered again
    assert before.duplicate_rows >= 1
    assert after.duplicate_rows == 0
    assert before.parquet_objects > after.parquet_objects
    assert before.parquet_objects >= 3 * len(figures.summary["hours"])  # each shard's failed batch: 1 + 2 halves
    assert before.distinct_changes == after.distinct_changes
    assert figures.summary["duplicates_removed"] == before.duplicate_rows
    rows = _rows(run.text.split("compaction (delete_grace_minutes 0)", 1)[1].split("hours ", 1)[0])
    assert rows["Parquet objects"] == [f"{before.parquet_objects:,}", f"{after.parquet_objects:,}"]
    assert rows["rows"] == [f"{before.rows:,}", f"{after.rows:,}"]
    assert rows["duplicate rows"] == [f"{before.duplicate_rows:,}", "0"]
    flat = " ".join(run.text.split())
    assert f"{result.redelivered:,} records delivered twice: 3 invocations failed after writing" in flat


# -- why the change table's query and the current state count differently ------------------------------------------
def test_a_line_explains_why_current_registrations_counts_fewer_than_the_current_state(run: Run) -> None:
    flat = " ".join(run.text.split())  # the line wraps at 80 columns
    why = re.search(
        r"why ([\d,]+) and ([\d,]+): current_registrations reads the change rows only, .*? the current state adds "
        r"the ([\d,]+) snapshot items with no change since .*?: ([\d,]+) \+ ([\d,]+) = ([\d,]+)",
        flat,
    )
    assert why is not None, flat
    changed, current, unchanged, changed_again, unchanged_again, total = (_number(value) for value in why.groups())
    state = run.result.bootstrap.state if run.result.bootstrap else None
    assert state is not None
    assert (changed_again, unchanged_again) == (changed, unchanged)
    assert changed + unchanged == total == current == state.lake_registrations
    assert 0 < unchanged < current
    named = re.search(r"current_registrations: .*? \d+ of ([\d,]+) rows", flat)
    assert named is not None
    assert _number(named.group(1)) == changed  # the named query's own row count


# -- progress -------------------------------------------------------------------------------------------------------
def test_each_long_step_starts_its_progress_before_its_result_is_printed(run: Run) -> None:
    descriptions = [description for description, _ in run.steps]
    assert descriptions[0] == "starting the local AWS and creating the stack's resources"
    assert descriptions[1:] == [
        "exporting the table at T",
        "reading the lake",
        "running the workgroup's named queries in DuckDB",
        descriptions[4],
        "current state: snapshot + changes, then a scan of the table",
    ]
    assert descriptions[4].startswith("compacting 1 hour(s): ") or descriptions[4].startswith("compacting 2 hour(s)")
    printed_before = dict(run.steps)
    assert "items exported" not in printed_before["exporting the table at T"]
    assert "compaction (delete_grace_minutes 0)" not in printed_before[descriptions[4]]
    assert "why " not in printed_before["current state: snapshot + changes, then a scan of the table"]


def test_the_spinner_is_drawn_when_the_step_begins_and_only_on_a_terminal() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=WIDTH)
    with demo._working(terminal, "exporting the table at T") as describe:
        at_start = screen.getvalue()  # before any refresh of the spinner's thread could have run
        describe("[1/1] data file: 518 of 518 items")
    assert "exporting the table at T" in at_start
    assert "[1/1] data file: 518 of 518 items" in screen.getvalue()

    log = io.StringIO()
    with demo._working(Console(file=log, force_terminal=False, width=WIDTH), "exporting the table at T"):
        pass
    assert log.getvalue() == ""


def test_the_backfill_spinner_follows_its_latest_line() -> None:
    shown: list[str] = []
    output = demo._FollowedOutput(shown.append, 20)
    output.write("export arn:aws:dynamodb:us-east-1:123456789012:table/t/export/1: COMPLETED\n")
    output.write("  [1/1] a.gz: 5 of 5 items\n")
    assert shown == ["export arn:aws:dyna…", "[1/1] a.gz: 5 of 5 …"]
    assert output.getvalue().count("\n") == 2  # everything kept for printing afterwards
