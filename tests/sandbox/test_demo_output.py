"""What `make demo` prints, on an 80-column log: the bootstrap against the table, the snapshot it publishes for the
curator's seed, two curator runs over a raw layer with duplicates, the curated tables, a time-travel read,
registrations (a table scan) against a scan of the DynamoDB table, current_registrations listing the current state,
and progress on the long steps; then every command its ``--keep`` banner prints, run as printed on the kept local
AWS.

The demo runs once for the module, with its defaults (what `make demo` runs: ``python -m sandbox.demo``) and
``--keep``; each test reads its result and its output."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from sandbox import demo
from sandbox.local_aws import DEFAULT_STACK
from tests.shell import ROOT, outside_make_and_venv

# one worker runs the whole module, so its module fixture runs once (make unit: --dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo_output")]

WIDTH = 80
EVENTS = 3000  # the demo's default: a third written before the mapping exists, the rest streamed
BANNER_RULE = "local AWS left running"
# The banner's commands by their program and first words -> the exit status each has on the kept local AWS.
BANNER = {
    "aws dynamodb scan": 0,
    "aws s3 ls s3://{bucket}/demand/events/": 0,
    "aws s3 ls s3://{bucket}/demand/quarantine/": 0,  # the demo's poison records, and its snapshot quarantine
    "aws athena list-named-queries": 0,
    "aws s3 ls s3://{failures}/": 0,  # no batch discarded: an empty listing of the bucket
    "make preflight": 0,
    "make compact": 0,
    ".venv/bin/python -m ops.replay": 0,
}
# Printed by the banner, not run here, and why.
BANNER_NOT_RUN = {"duckdb": "the duckdb CLI and its httpfs extension are downloaded from the internet"}


@dataclass(frozen=True)
class Run:
    result: demo.DemoResult
    text: str  # what the demo printed before its --keep banner
    banner: str
    steps: list[tuple[str, str]]  # each long step's description, and the output printed before it began
    printed: list[str] = field(default_factory=list)  # the banner's command lines
    results: dict[str, tuple[int, str]] = field(default_factory=dict)  # _banner_key -> exit status, output


def _banner_key(words: list[str], bucket: str, failures: str) -> str:
    if words[0] == "aws":
        rest = [word for word in words[1:] if not word.startswith("--endpoint-url") and "://127.0.0.1" not in word]
        key = " ".join(rest[:3] if rest[:2] == ["s3", "ls"] else rest[:2])
        return "aws " + key.replace(bucket, "{bucket}").replace(failures, "{failures}")
    return " ".join(words[:2] if words[0] == "make" else words[:3])


def _split_assignments(line: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(line)
    first = next(index for index, word in enumerate(words) if not re.match(r"^[A-Z_]+=", word))
    return dict(word.split("=", 1) for word in words[:first]), words[first:]


class _RunTheBanner:
    """Stands in for the wait for Ctrl-C: runs every command the banner printed, then lets the demo end."""

    def __init__(self, console: Console, printed: list[str], results: dict[str, tuple[int, str]]) -> None:
        self.console, self.printed, self.results = console, printed, results

    def wait(self, timeout: float | None = None) -> bool:
        outputs = json.loads(Path(os.environ["STACK_OUTPUTS_FILE"]).read_text(encoding="utf-8"))
        bucket, failures = outputs["bucket_name"], outputs["failure_bucket_name"]
        assert outputs["stack_name"] == DEFAULT_STACK
        text = self.console.export_text(clear=False)
        lines = [line.strip() for line in text.split(BANNER_RULE, 1)[1].splitlines()]
        commands = [
            line
            for line in lines
            if re.match(r"^([A-Z_]+=\S+ )*(aws --|make [a-z]|duckdb -c|\.venv/bin/python -m)", line)
        ]
        self.printed.extend(commands)
        shell = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        shell = outside_make_and_venv({key: value for key, value in shell.items() if key != "STACK_OUTPUTS_FILE"})
        for line in commands:
            assignments, words = _split_assignments(line)
            if words[0] in BANNER_NOT_RUN or (words[0] == "aws" and shutil.which("aws") is None):
                continue
            run = [sys.executable, *words[1:]] if words[0] == ".venv/bin/python" else words
            done = subprocess.run(
                run, cwd=ROOT, env=shell | assignments, capture_output=True, text=True, timeout=240, check=False
            )
            self.results[_banner_key(words, bucket, failures)] = (done.returncode, done.stdout + done.stderr)
        return True


@pytest.fixture(scope="module")
def run() -> Run:
    steps: list[tuple[str, str]] = []
    printed: list[str] = []
    results: dict[str, tuple[int, str]] = {}
    working, keep = demo._working, demo._keep
    console = Console(file=io.StringIO(), width=WIDTH, record=True, force_terminal=False)

    @contextlib.contextmanager
    def recorded(console: Console, description: str) -> Iterator[Callable[[str], None]]:
        steps.append((description, console.export_text(clear=False)))
        with working(console, description) as describe:
            yield describe

    def kept(console: Console, aws: Any) -> None:
        with pytest.MonkeyPatch.context() as patch:  # only the banner's wait, not the threads the demo runs
            patch.setattr(demo, "threading", SimpleNamespace(Event=lambda: _RunTheBanner(console, printed, results)))
            keep(console, aws)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "_working", recorded)
        patch.setattr(demo, "_keep", kept)
        result = demo.run_demo(demo.parse_args(["--keep"]), console)
    text, rule, banner = console.export_text().partition(BANNER_RULE)
    assert rule, "the demo printed no --keep banner"
    return Run(result, text, rule + banner, steps, printed, results)


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
    assert bootstrap.written_before == EVENTS // 3  # a third of the changes, before the mapping exists
    assert result.items_written == result.changes_streamed == EVENTS - EVENTS // 3  # the rest, streamed
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
    assert landed == result.changes_streamed  # every streamed change once
    assert result.accounted
    summary = {label: values[0] for label, values in _rows(text).items() if len(values) == 1}
    assert summary["written before the mapping"] == f"{EVENTS // 3:,}"
    assert summary["snapshot items at T (mapping T - 1 s)"] == (
        f"{totals['items']:,}: {totals['rows']:,} rows, {totals['quarantined']:,} quarantined"
    )
    assert summary["snapshot items changed after T"] == (
        f"{bootstrap.changed_after['MODIFY']:,} modified, {bootstrap.changed_after['REMOVE']:,} removed"
    )
    assert summary["items in the table"] == f"{state.table_items:,} (4 refused by the contract)"
    assert summary["registrations in the current state"] == f"{state.lake_registrations:,}"
    assert summary["current state = table scan"] == "equal"
    assert summary["changes streamed"] == f"{EVENTS - EVENTS // 3:,}"
    assert summary["records delivered twice"] == f"{result.redelivered:,}"
    assert f"current state = table: {state.lake_registrations:,} registrations, equal" in text
    streamed = f"{EVENTS - EVENTS // 3:,}"
    assert f"distinct changes + quarantined + failed = {streamed}: every change accounted for" in " ".join(text.split())


# -- 80 columns -----------------------------------------------------------------------------------------------------
def test_every_line_fits_80_columns_but_the_banners_commands(run: Run) -> None:
    lines = run.text.splitlines()
    assert len(lines) > 100
    assert [line for line in lines if len(line) > WIDTH] == []
    # each command of the --keep banner is one line however long, so that it pastes as printed
    wide = [line.strip() for line in run.banner.splitlines() if len(line) > WIDTH]
    assert wide == run.printed


def test_each_shown_row_of_a_query_table_is_one_line(run: Run) -> None:
    tables = re.findall(r"┡[━╇]+┩\n((?:│[^\n]*\n)+)└[─┴]+┘\n([^\n]*)", run.text)
    # four named queries with rows (registrations_as_of is a line: the tables are minutes old, and
    # changes_not_yet_curated is empty after the second run), the curated tables, the time travel, the current state
    assert len(tables) == 7
    assert "registrations_as_of: " in run.text
    assert "has no snapshot as of" in run.text
    for body, caption in tables:
        rows = body.rstrip("\n").splitlines()
        shown = re.match(r"(\d+) of ([\d,]+) rows", caption)
        assert len(rows) == (int(shown.group(1)) if shown else len(rows))
        assert all(line.startswith("│") and line.split("│")[1].strip() for line in rows), "no continuation lines"
    current_state = run.text.split("current state: snapshot", 1)[1]
    assert "8 of " in current_state
    assert "not shown: price_levels, channel" in current_state  # the columns that did not fit are named


# -- curation -------------------------------------------------------------------------------------------------------
def test_two_curator_runs_are_reported_as_make_compact_reports_them(run: Run) -> None:
    curation = run.result.curation
    assert curation is not None
    first, second = curation.first, curation.second
    flat = " ".join(run.text.split())
    for label, summary in (("run 1", first), ("run 2", second)):
        assert summary["conflict"] is None
        assert summary["unreadable"] == []
        assert isinstance(summary["changes_snapshot"], int)
        assert isinstance(summary["registrations_snapshot"], int)
        assert (
            f"curated {label} in {summary['seconds']:.1f} s raw objects read {summary['raw_objects_read']:,} "
            f"({summary['rows_read']:,} rows); changes added {summary['changes_added']:,}"
        ) in flat
    raw = curation.raw
    # every raw object read once over the two runs, every distinct change added once
    assert first["raw_objects_read"] + second["raw_objects_read"] == raw.parquet_objects
    assert first["rows_read"] + second["rows_read"] == raw.rows
    assert first["changes_added"] + second["changes_added"] == raw.distinct_changes
    assert second["changes_added"] > 0  # the last fifth of the changes came after run 1
    assert first["raw_deleted"] == second["raw_deleted"] == 0  # the stack's grace period: 15 minutes


def test_the_curated_tables_hold_each_change_once_against_the_raw_layer_with_duplicates(run: Run) -> None:
    curation = run.result.curation
    assert curation is not None
    raw = curation.raw
    assert run.result.redelivered >= 1
    assert raw.duplicate_rows >= 1  # re-delivered records: in the raw layer twice
    assert curation.changes_rows == curation.distinct_changes == raw.distinct_changes
    rows = _rows(run.text.split("curated tables (each change once)", 1)[1].split("registrations: ", 1)[0])
    assert rows["Parquet files"] == [f"{raw.parquet_objects:,}", f"{curation.data_files:,}"]
    assert rows["rows"] == [f"{raw.rows:,}", f"{curation.changes_rows:,}"]
    assert rows["distinct changes"] == [f"{raw.distinct_changes:,}", f"{curation.distinct_changes:,}"]
    assert rows["duplicate rows"] == [f"{raw.duplicate_rows:,}", "0"]
    flat = " ".join(run.text.split())
    assert f"registrations: {curation.registrations.num_rows:,} rows, one per live (event_id, fan_id)" in flat
    assert f"{run.result.redelivered:,} records delivered twice: 3 invocations failed after writing" in flat


def test_time_travel_shows_registrations_as_of_the_first_run_against_now(run: Run) -> None:
    curation = run.result.curation
    assert curation is not None
    past, now = curation.as_of_first, curation.now
    assert curation.first_snapshot == curation.first["registrations_snapshot"]
    assert now.registrations == curation.registrations.num_rows
    assert now.tickets == sum(curation.registrations.column("quantity").to_pylist())
    assert past != now  # the last fifth of the changes moved the state
    section = run.text.split("time travel: registrations", 1)[1]
    rows = _rows(section.split("as of run 1: snapshot", 1)[0])
    assert rows["registrations"] == [f"{past.registrations:,}", f"{now.registrations:,}"]
    assert rows["events"] == [f"{past.events:,}", f"{now.events:,}"]
    assert rows["tickets requested"] == [f"{past.tickets:,}", f"{now.tickets:,}"]
    assert f"as of run 1: snapshot {curation.first_snapshot}, committed " in " ".join(section.split())


def test_the_demo_publishes_its_backfill_snapshot_and_the_curator_seeds_registrations_from_it(run: Run) -> None:
    curation, bootstrap = run.result.curation, run.result.bootstrap
    assert curation is not None
    assert bootstrap is not None
    export_id = bootstrap.report.export_id
    flat = " ".join(run.text.split())
    published = f"published snapshot {export_id} (T = {bootstrap.report.export_time}) on the local stack"
    assert published in flat
    assert flat.index(published) < flat.index("curated run 1 in ")  # published before the curator's first run
    assert curation.seeded_from == export_id  # registrations' snapshot summary names the seed


def test_registrations_read_by_a_table_scan_equals_a_scan_of_the_table(run: Run) -> None:
    curation, bootstrap = run.result.curation, run.result.bootstrap
    assert curation is not None
    assert bootstrap is not None
    lake = bootstrap.state
    state = curation.state
    assert lake is not None
    assert state is not None
    assert state.equal
    assert (state.missing, state.unexpected, state.different) == ([], [], {})
    assert state.table_items == lake.table_items  # the same scan of the table as the lake's current state's
    assert state.refused == 4
    assert state.lake_registrations == curation.registrations.num_rows == state.table_items - state.refused
    assert state.lake_registrations == lake.lake_registrations  # registrations = the current state, by count
    flat = " ".join(run.text.split())
    assert (
        f"registrations (a table scan) against the same scan of the table: {state.table_items:,} items in the table "
        f"(4 refused by the record contract), {state.lake_registrations:,} rows in registrations, every attribute "
        "compared: equal"
    ) in flat
    assert "not yet seeded" not in flat
    summary = {label: values[0] for label, values in _rows(run.text).items() if len(values) == 1}
    assert summary["rows in registration_changes"] == f"{curation.changes_rows:,}"
    assert summary["rows in registrations"] == f"{state.lake_registrations:,}"
    assert summary["registrations = table scan"] == "equal"
    assert f"registrations = table: {state.lake_registrations:,} rows, equal" in flat
    assert all(len(line) <= WIDTH for line in run.text.splitlines())


# -- current_registrations reads registrations, which holds the snapshot's items -----------------------------------
def test_current_registrations_lists_the_current_state_with_the_snapshot_items_no_change_touched(run: Run) -> None:
    bootstrap, curation = run.result.bootstrap, run.result.curation
    assert bootstrap is not None
    assert bootstrap.state is not None
    assert curation is not None
    flat = " ".join(run.text.split())  # the line wraps at 80 columns
    seed = re.search(
        r"current_registrations \(a read of registrations\) lists ([\d,]+) registrations: registrations is seeded "
        r"from snapshot (\S+), so it holds all ([\d,]+) snapshot items no change touched since T",
        flat,
    )
    assert seed is not None, flat
    listed, export_id, unchanged = _number(seed.group(1)), seed.group(2), _number(seed.group(3))
    assert export_id == bootstrap.report.export_id == curation.seeded_from
    assert listed == bootstrap.state.lake_registrations == curation.registrations.num_rows
    assert 0 < unchanged < listed
    named = re.search(r"current_registrations: .*? \d+ of ([\d,]+) rows", flat)
    assert named is not None
    assert _number(named.group(1)) == listed  # the named query's own row count


# -- progress -------------------------------------------------------------------------------------------------------
def test_each_long_step_starts_its_progress_before_its_result_is_printed(run: Run) -> None:
    descriptions = [description for description, _ in run.steps]
    assert descriptions[0] == "starting the local AWS and creating the stack's resources"
    assert descriptions[1:] == [
        "exporting the table at T",
        "curator run 1: raw objects -> the curated tables",
        "curator run 2: raw objects -> the curated tables",
        "reading the lake",
        "running the workgroup's named queries in DuckDB",
        "reading the curated tables (pyiceberg scans into DuckDB)",
        "current state: snapshot + changes, then a scan of the table",
        "curator run 3: raw objects -> the curated tables",
        "searching every object of the stack for the erased fan's id",
    ]
    printed_before = dict(run.steps)
    assert "items exported" not in printed_before["exporting the table at T"]
    assert "curated run 1" not in printed_before["curator run 1: raw objects -> the curated tables"]
    assert "curated tables (each change once)" not in printed_before[descriptions[6]]
    assert "current_registrations (a read" not in printed_before[descriptions[7]]
    assert "searched " not in printed_before[descriptions[-1]]


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


def test_the_demo_erases_a_fan_and_prints_the_search_of_every_object(run: Run) -> None:
    erasure = run.result.erasure
    assert erasure is not None
    assert (
        f"erasure of fan {erasure.fan_id}\n  request {erasure.request_id} filed as the CI role (make erase)" in run.text
    )
    assert erasure.searched > 20  # the raw, curated, snapshot, quarantine and erasure objects of the stack
    assert f"searched {erasure.searched:,} objects for its id" in run.text
    # the curator's next run carried the request out: its audit counts the rows, and no object names the fan
    state = erasure.state
    assert state is not None
    assert not state.pending
    assert state.audit is not None
    removed = sum(state.audit.rows_removed.values())
    assert removed > 0
    assert state.audit.rows_removed["registration_changes"] > 0
    # a fan with rows in both the stream and the export the backfill read (and its snapshot)
    assert state.audit.rows_removed["exports"] > 0
    assert state.audit.rows_removed["snapshots"] > 0
    assert f"  after curator run 3: completed, {removed:,} rows removed" in run.text
    assert erasure.found == []
    assert "  found nowhere" in run.text


# -- the --keep banner: every command runs as printed on the kept local AWS ------------------------------------------
def test_every_command_of_the_banner_runs_as_printed_after_the_demo(run: Run) -> None:
    printed, results = run.printed, run.results
    assert len(printed) == len(BANNER) + len(BANNER_NOT_RUN)
    expected = {key: status for key, status in BANNER.items() if shutil.which("aws") or not key.startswith("aws ")}
    assert {key: status for key, (status, _) in results.items()} == expected, results
    for key, (_, output) in results.items():
        assert "Traceback" not in output, key
    aws_cli = [line for line in printed if " aws --endpoint-url " in line]
    assert len(aws_cli) == 5
    # AWS CLI v1 reads only AWS_DEFAULT_REGION, v2 and boto3 also AWS_REGION: both are set.
    assert all("AWS_DEFAULT_REGION=us-east-1" in line and "AWS_REGION=us-east-1" in line for line in aws_cli)
    [preflight_line] = [line for line in printed if "make preflight" in line]
    assert preflight_line.endswith(" make preflight STACK=dev1 ARGS=--local")
    preflight = results["make preflight"][1]
    # the one warning: the committed stack file has no encryptedkey yet (a deployed preflight fails on it)
    assert "result: 0 failed, 1 warning(s), 8 passed" in preflight
    assert "encryptedkey" in preflight
    assert "via the sandbox bridge" in preflight
    [compact_line] = [line for line in printed if "make compact" in line]
    assert compact_line.endswith(" make compact STACK=dev1")
    assert "STACK_OUTPUTS_FILE=" in compact_line
    curated = results["make compact"][1]
    assert "acting as the local curator role " in curated
    assert "raw objects read 0 (0 rows); changes added 0" in curated  # the demo's second run curated everything
    replayed = results[".venv/bin/python -m ops.replay"][1]
    assert "skipped   1 backfill quarantine objects under demand/quarantine/snapshots/" in replayed
    assert "dry run: would replay " in replayed
