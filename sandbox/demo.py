"""``make demo``: the whole pipeline on the embedded local AWS, with query results and a summary.

    python -m sandbox.demo [--events 3000] [--before N] [--seed 7] [--stack dev1] [--keep]

Starts the local AWS with the stack's resources and bootstraps the lake as the runbook does: writes part of the
changes (``--before``, a third by default) before the event source mapping exists, so they are only in the table;
starts the mapping AT_TIMESTAMP T - lead; exports the table at T and back-fills the snapshot (``make backfill``'s
checks and code), and publishes that snapshot on the local stack (as ``pulumi config set
dmd-pipeline:snapshotExportId`` / ``snapshotExportTime`` publish one), so the curator seeds ``registrations``
from it. Then writes most of the rest of the realistic demand changes (and a few poison items), shows
them flowing (table -> bridge -> Kinesis -> mapping -> handler -> S3; the first batch on each shard is delivered
twice), waits until every change is accounted for, runs the workgroup's named queries on the Parquet through
DuckDB, runs the curator (``make compact``'s local path), writes the last fifth of the changes and runs it again.
It reads the curated tables as the CI role (pyiceberg scans into DuckDB): each change once against the raw rows,
``registrations`` as of the first run against now (time travel); checks that the lake's current state (snapshot
plus changes) and ``registrations`` (a table scan) each equal a scan of the DynamoDB table, every item and every
attribute, and that ``current_registrations`` lists as many registrations; erases one fan (a request filed as
``make erase`` files it, then a third curator run) and searches every object of the stack for its id, and prints a
summary. Output fits 80 columns; on a terminal the long steps show progress from their start. Everything it starts
it stops, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import ClientError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from components.catalog import NamedQuerySpec
from components.settings import SettingsError
from ops.backfill import BackfillError, BackfillReport, run_export
from ops.cli import CommandParser, integer_at_least, number_above, number_at_least, stack_name, user_error
from ops.compact import CURATOR_ROLE, CompactError, curator_environment, describe_result, local_invoker
from sandbox.athena_duckdb import TimeTravelError
from sandbox.bridge import StreamBridge
from sandbox.changes import Change
from sandbox.curated import (
    CHANGES_TABLE,
    REGISTRATIONS_TABLE,
    CuratedTables,
    keyed_state,
    local_catalog,
)
from sandbox.erasure_demo import ErasureFigures, erase_one_fan
from sandbox.erasure_demo import describe as describe_erasure
from sandbox.lake import Lake, LakeCounts
from sandbox.local_aws import DEFAULT_STACK, LocalAws, local_aws, patched_environment
from sandbox.mapping import Function
from sandbox.models import share_loaded_models
from sandbox.roles import ROLES, PolicyDeniedError, UnknownStatementError
from sandbox.runner import LocalPipeline, PolicyDeniedInPipelineError
from sandbox.table_state import StateComparison, compare_states, lake_state, table_state
from sandbox.workload import TableWriter, workload

__all__ = ["BootstrapFigures", "DemoResult", "main", "run_demo"]

_WRITE_CHUNK = 200
BACKFILL_ROLE = "backfill"
CI_ROLE = "ci"
_SHOWN_ROWS = 8
_CELL_WIDTH = 18
_PIPE_WIDTH = 80  # output piped (CI logs): the width of a terminal the demo is written for
_CELL_EXTRA = 3  # a column of a boxed table: one space either side and its border


@dataclass(frozen=True)
class DemoResult:
    """The demo's accounting: what went in, what came out, and how fast."""

    items_written: int
    changes_streamed: int
    counts: LakeCounts
    failed: int
    seconds: float
    curation: CurationFigures | None = None
    bootstrap: BootstrapFigures | None = None
    redelivered: int = 0  # records the demo had delivered twice (their first invocation failed after writing)
    erasure: ErasureFigures | None = None  # one fan erased after the curated tables were read

    @property
    def accounted(self) -> bool:
        """Every change streamed is a change in the raw layer, a quarantined record or a reported failure, each
        exactly once; ``registration_changes`` holds each of them once and ``registrations`` (seeded from the
        backfill snapshot) equals a scan of the table; and the bootstrap (when there was one) is complete, with the
        lake's current state equal to the table."""
        landed = self.counts.distinct_changes + self.counts.quarantined + self.failed
        curated = self.curation is None or (
            self.curation.each_change_once(self.counts.distinct_changes) and self.curation.state_agrees
        )
        bootstrapped = self.bootstrap is None or self.bootstrap.complete
        return self.items_written == self.changes_streamed == landed and curated and bootstrapped

    @property
    def records_per_second(self) -> float:
        return self.changes_streamed / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class StateFigures:
    """A few figures of one read of ``registrations``."""

    registrations: int
    events: int
    tickets: int  # the sum of ``quantity``


@dataclass
class CurationFigures:
    """The two curator runs, the curated tables after them, and ``registrations`` as of the first run."""

    first: dict[str, Any]  # each run's CurationResult.summary()
    second: dict[str, Any]
    raw: LakeCounts  # the raw layer after both runs (duplicates included)
    changes_rows: int
    distinct_changes: int
    data_files: int
    registrations: pa.Table
    as_of_first: StateFigures
    now: StateFigures
    first_snapshot: int | None
    seeded_from: str | None = None  # the export id registrations' snapshot summary names as its seed
    state: StateComparison | None = None  # registrations (a table scan) against a scan of the DynamoDB table

    def each_change_once(self, distinct_raw_changes: int) -> bool:
        """``registration_changes`` holds every change of the raw layer, each once."""
        return self.changes_rows == self.distinct_changes == distinct_raw_changes

    @property
    def state_agrees(self) -> bool:
        return self.state is not None and self.state.equal


@dataclass(frozen=True)
class BootstrapFigures:
    """The items written before the mapping, their export and snapshot, and the lake's state against the table."""

    written_before: int
    lead_seconds: float
    report: BackfillReport
    changed_after: dict[str, int]  # snapshot items modified / removed after the export
    state: StateComparison | None = None

    @property
    def complete(self) -> bool:
        """The backfill's counts add up and the lake's current state equals the table."""
        return not self.report.problems and self.state is not None and self.state.equal


def ci_lake(aws: LocalAws) -> Lake:
    """The lake as CI reads it (the named queries' and the checks' reads act as the CI role when IAM is enforced)."""
    role = CI_ROLE if aws.roles else None
    return Lake(
        aws.outputs,
        s3=aws.client("s3", role=role),
        filesystem=aws.filesystem(role),
        catalog=local_catalog(aws, role),
    )


def _chunks(changes: Iterator[Change], size: int) -> Iterator[list[Change]]:
    while chunk := list(islice(changes, size)):
        yield chunk


def _settings_line(aws: LocalAws, pipe: LocalPipeline) -> str:
    config = pipe.mapping.config
    return (
        f"stack [bold]{aws.settings.stack}[/] · table {aws.outputs.table_name} · stream {aws.outputs.stream_name} "
        f"({len(pipe.mapping.shard_ids)} shards) · batch size {config.batch_size}, "
        f"window {config.batching_window_seconds:g} s, retries {config.max_retry_attempts}, "
        f"max record age {config.max_record_age_seconds} s, bisect on error, ReportBatchItemFailures"
    )


_COLUMNS = (TextColumn("{task.description:<28}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn())


@contextlib.contextmanager
def _working(console: Console, description: str) -> Iterator[Callable[[str], None]]:
    """A spinner with ``description`` and the seconds elapsed, drawn as the block starts (not at the first refresh)
    and gone when it ends; on a console that is not a terminal it draws nothing. Yields a function that replaces
    the description."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log gets the step's result lines only
    )
    task = progress.add_task(description, total=None)

    def describe(text: str) -> None:
        progress.update(task, description=text)

    with progress:  # starts with a refresh: the line is on the terminal before the step's work begins
        yield describe


class InjectedRedeliveryError(TimeoutError):
    """The demo's stand-in for a Lambda timeout after the function's object was written."""


class RedeliverFirstBatches:
    """The function, except that its first invocation on each shard fails after the function returned.

    In AWS a function that times out (or crashes) after its Parquet object is written is invoked again with the
    same records: the raw layer then holds them twice, and ``registration_changes`` once. The demo makes that
    happen once per shard, so its curator runs have duplicates and several objects per shard and hour to merge
    (the mapping bisects the failed batch and delivers both halves again)."""

    def __init__(self, function: Function) -> None:
        self.function = function
        self.failed_shards: set[str] = set()
        self.redelivered = 0  # records whose first delivery was written and then failed

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        response = self.function(event, context)
        records = event.get("Records") or []
        shard = str(records[0]["eventID"]).split(":", 1)[0] if records else ""
        if shard and shard not in self.failed_shards and not (response or {}).get("batchItemFailures"):
            self.failed_shards.add(shard)
            self.redelivered += len(records)
            raise InjectedRedeliveryError(f"{shard}: {len(records)} records written, then the invocation failed")
        return response


class _NotInjected(logging.Filter):
    """Drops the mapping's warning about an injected failure: the demo explains those itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(isinstance(arg, InjectedRedeliveryError) for arg in record.args or ())


def _key(change: Change) -> tuple[str, str]:
    return str(change.keys["pk"]), str(change.keys["sk"])


def _before_mapping(
    console: Console, aws: LocalAws, bridge: StreamBridge, changes: list[Change], timeout: float
) -> tuple[int, set[tuple[str, str]]]:
    """Write ``changes`` before any mapping exists (the bridge streams them, nothing reads them); return the writes
    and the keys live after them."""
    writer = TableWriter(aws.client("dynamodb"), aws.outputs.table_name)
    with Progress(*_COLUMNS, console=console, transient=False) as progress:
        task = progress.add_task("written before the mapping", total=len(changes))
        for chunk in _chunks(iter(changes), _WRITE_CHUNK):
            writer.apply(chunk)
            bridge.pump()
            progress.update(task, completed=writer.written)
    deadline = time.monotonic() + timeout
    while bridge.forwarded < writer.written:  # in the stream before the mapping's starting position
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bridge streamed {bridge.forwarded} of {writer.written} changes in {timeout:.0f} s")
        if not bridge.pump():
            time.sleep(0.05)
    live: set[tuple[str, str]] = set()
    for change in changes:
        if change.event_name == "REMOVE":
            live.discard(_key(change))
        else:
            live.add(_key(change))
    return writer.written, live


class _FollowedOutput(io.StringIO):
    """Captured output whose latest line is shown as it is written (``show``), cut to ``width``."""

    def __init__(self, show: Callable[[str], None], width: int) -> None:
        super().__init__()
        self._show = show
        self._width = width

    def write(self, text: str) -> int:
        written = super().write(text)
        lines = [line.strip() for line in self.getvalue().splitlines() if line.strip()]
        if lines:
            line = lines[-1]
            self._show(line if len(line) <= self._width else line[: self._width - 1] + "…")
        return written


def _backfill(console: Console, aws: LocalAws, lead: timedelta, verbose: bool) -> BackfillReport:
    """``make backfill``'s local path: the cutover checks, the export at T, the handler per data file, the counts."""
    console.print("checking the cutover, exporting the table at T, back-filling the snapshot (make backfill's code)")
    with _working(console, "exporting the table at T") as describe:
        capture = _FollowedOutput(describe, max(console.width - 20, 20))
        with contextlib.redirect_stdout(capture):  # its lines, indented below
            # The operator's part (checks, export) as the administrator; the function's as the backfill role.
            report = run_export(
                aws.outputs,
                aws.settings.stack,
                workers=1,
                quiet=not verbose,
                lead=lead,
                session=aws.session(),
                function_credentials=aws.credentials(BACKFILL_ROLE) if aws.roles else None,
            )
    for line in capture.getvalue().splitlines():
        console.print(f"  {line}", highlight=False)
    totals = report.totals()
    console.print(
        f"snapshot {report.export_id} at T = {report.export_time}: {totals['items']:,} items exported, "
        f"{totals['rows']:,} rows + {totals['quarantined']:,} quarantined"
        + ("" if not report.problems else f"; [red]{'; '.join(report.problems)}[/]"),
        highlight=False,
    )
    console.print()
    return report


def _publish(console: Console, aws: LocalAws, report: BackfillReport) -> None:
    """Publish the backfill's snapshot on the local stack, as ``pulumi config set dmd-pipeline:snapshotExportId``
    and ``snapshotExportTime`` publish one on a deployed stack: the curator's environment names it from now on, so
    its next run seeds ``registrations`` from it. A snapshot whose counts do not add up is not published."""
    if report.problems:
        console.print(f"[red]snapshot {report.export_id} not published: its backfill is not complete[/]")
        console.print()
        return
    aws.settings = replace(aws.settings, snapshot_export_id=report.export_id, snapshot_export_time=report.export_time)
    console.print(
        f"published snapshot {report.export_id} (T = {report.export_time}) on the local stack, as pulumi config set "
        "dmd-pipeline:snapshotExportId and snapshotExportTime do: the curator's next run seeds registrations from it",
        highlight=False,
    )
    console.print()


def _flow(
    console: Console, aws: LocalAws, pipe: LocalPipeline, changes: list[Change], args: argparse.Namespace
) -> tuple[int, float, RedeliverFirstBatches]:
    """Write the changes while showing them flow; wait until every one is settled. Return (written, seconds, the
    function with its injected redeliveries)."""
    writer = TableWriter(aws.client("dynamodb"), aws.outputs.table_name)
    unread = pipe.bridge.forwarded  # streamed before the mapping's starting position: never read
    function = RedeliverFirstBatches(pipe.handler)
    console.print(
        "the first batch on each shard is written, then its invocation fails (as after a Lambda timeout): "
        "the mapping delivers those records again, so the raw layer holds duplicates for the curator",
        highlight=False,
    )
    with pipe.using(function=function), Progress(*_COLUMNS, console=console, transient=False) as progress:
        written_task = progress.add_task("written to the table", total=len(changes))
        streamed_task = progress.add_task("streamed to Kinesis", total=len(changes))
        settled_task = progress.add_task("handled by the function", total=len(changes))

        def show() -> None:
            progress.update(written_task, completed=writer.written)
            progress.update(streamed_task, completed=pipe.bridge.forwarded - unread)
            progress.update(settled_task, completed=pipe.settled)

        started = time.monotonic()
        for chunk in _chunks(iter(changes), _WRITE_CHUNK):
            writer.apply(chunk)
            show()
        pipe.wait_for_changes(writer.written, timeout=args.timeout, progress=show, unread=unread)
        seconds = time.monotonic() - started
    console.print(
        f"{function.redelivered:,} records delivered twice: {len(function.failed_shards)} invocations failed "
        "after writing, and the mapping bisected each batch and delivered both halves again",
        highlight=False,
    )
    console.print()
    return writer.written, seconds, function


def _changed_after(changes: list[Change], snapshot_keys: set[tuple[str, str]]) -> dict[str, int]:
    """How many changes after the export modified or removed an item the snapshot holds."""
    counts = {"MODIFY": 0, "REMOVE": 0}
    live = set(snapshot_keys)
    for change in changes:
        key = _key(change)
        if key in live and change.event_name in counts:
            counts[change.event_name] += 1
        if change.event_name == "REMOVE":
            live.discard(key)
    return counts


def _current_state(
    console: Console,
    aws: LocalAws,
    lake: Lake,
    report: BackfillReport,
    lead: timedelta,
    *,
    curation: CurationFigures | None = None,
) -> StateComparison:
    """The lake's current state (snapshot + changes, the current-state query in DuckDB) against a scan of the table;
    ``registrations`` (a table scan) against the same scan (``curation.state``); and ``current_registrations``, the
    named query that reads ``registrations``, against the current state's count."""
    export_time = datetime.fromisoformat(report.export_time.replace("Z", "+00:00"))
    with _working(console, "current state: snapshot + changes, then a scan of the table"):
        connection = lake.connect()
        current = lake.current_state(report.export_id, export_time, lead=lead, connection=connection)
        [named] = [query for query in lake.named_queries() if query.name == "current_registrations"]
        listed = lake.query(named.sql, connection).num_rows
        unchanged_keys = lake.unchanged_snapshot_keys(report.export_id, connection)
        table = table_state(aws.client("dynamodb"), aws.outputs.table_name)
        comparison = compare_states(table, lake_state(current))
        seeded_items = 0
        if curation is not None:
            registrations = keyed_state(curation.registrations)
            curation.state = compare_states(table, registrations)
            seeded_items = len(unchanged_keys & set(registrations))
    console.print(
        _arrow_table(f"current state: snapshot {report.export_id} + changes from T - lead", current, console.width)
    )
    verdict = "[green]equal[/]" if comparison.equal else f"[red]{comparison.mismatches} mismatches[/]"
    console.print(
        f"the lake's current state against a scan of the table: {comparison.table_items:,} items in the table "
        f"({comparison.refused} refused by the record contract, in quarantine), {comparison.lake_registrations:,} "
        f"registrations in the lake's current state, every attribute compared: {verdict}",
        highlight=False,
    )
    for line in comparison.describe():
        console.print(f"  [red]{line}[/]", highlight=False)
    if curation is not None and curation.state is not None:
        _print_registrations(console, curation.state)
        console.print(
            _seed_line(
                listed=listed,
                current=current.num_rows,
                seeded_items=seeded_items,
                unchanged=len(unchanged_keys),
                seeded_from=curation.seeded_from,
                published=report.export_id,
            ),
            highlight=False,
        )
    console.print()
    return comparison


def _print_registrations(console: Console, state: StateComparison) -> None:
    """``registrations`` (a table scan) against a scan of the DynamoDB table, in a few lines."""
    verdict = "[green]equal[/]" if state.equal else f"[red]{state.mismatches:,} mismatches[/]"
    console.print(
        f"registrations (a table scan) against the same scan of the table: {state.table_items:,} items in the table "
        f"({state.refused} refused by the record contract), {state.lake_registrations:,} rows in registrations, "
        f"every attribute compared: {verdict}",
        highlight=False,
    )
    for line in state.describe(held_by="registrations"):
        console.print(f"  [red]{line}[/]", highlight=False)


def _seed_line(
    *, listed: int, current: int, seeded_items: int, unchanged: int, seeded_from: str | None, published: str
) -> str:
    """The line that says ``current_registrations`` (a read of ``registrations``) lists the current state, snapshot
    items no change touched since T included, because the curator seeded ``registrations`` from the snapshot."""
    seed = (
        f"seeded from snapshot {seeded_from}"
        if seeded_from == published
        else f"[red]seeded from {seeded_from or 'no snapshot'}, not from snapshot {published}[/]"
    )
    held = f"all {unchanged:,}" if seeded_items == unchanged else f"[red]{seeded_items:,} of the {unchanged:,}[/]"
    count = f"{listed:,}" if listed == current else f"[red]{listed:,}, not the current state's {current:,}[/]"
    return (
        f"current_registrations (a read of registrations) lists {count} registrations: registrations is {seed}, "
        f"so it holds {held} snapshot items no change touched since T"
    )


def _cell(value: Any) -> str:
    """A short rendering: timestamps to the millisecond, lists joined, long ids cut."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    text = str(value)
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"


def _fitting_columns(names: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """The leading columns (indexes) whose cells fit on one line of ``width`` characters, at least the first."""
    chosen: list[int] = []
    used = 1  # the table's left border
    for index, name in enumerate(names):
        needed = max([len(name)] + [len(row[index]) for row in rows]) + _CELL_EXTRA
        if chosen and used + needed > width:
            break
        chosen.append(index)
        used += needed
    return chosen


def _arrow_table(title: str, result: pa.Table, width: int, limit: int = _SHOWN_ROWS) -> Table:
    """The first ``limit`` rows, one line each: the leading columns that fit ``width``; the caption names the rest."""
    names = result.column_names
    rows = [[_cell(value) for value in row.values()] for row in result.slice(0, limit).to_pylist()]
    shown = _fitting_columns(names, rows, width)
    table = Table(title=title, title_justify="left", header_style="bold")
    for index in shown:
        table.add_column(names[index], no_wrap=True)
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    notes = [f"{min(limit, result.num_rows)} of {result.num_rows:,} rows"] if result.num_rows > limit else []
    if len(shown) < len(names):
        notes.append("not shown: " + ", ".join(names[len(shown) :]))
    if notes:
        table.caption = "; ".join(notes)
        table.caption_justify = "left"
    return table


def _quarantine(console: Console, lake: Lake) -> None:
    """The quarantined records (each once, however often it was delivered), as records: reasons are long."""
    lines = lake.quarantined_records()
    console.print(f"[bold]quarantined records ({len(lines)})[/]", highlight=False)
    for line in lines[:_SHOWN_ROWS]:
        console.print(f"  {line.get('shard_id')} #{line.get('sequence_number')}: {line.get('reason')}", highlight=False)
    console.print()


def _queries(console: Console, lake: Lake) -> None:
    with _working(console, "running the workgroup's named queries in DuckDB"):
        connection = lake.connect()
        results: list[tuple[NamedQuerySpec, pa.Table | str]] = []
        for query in lake.named_queries():
            try:
                results.append((query, lake.query(query.sql, connection)))
            except TimeTravelError as error:  # the tables are minutes old: no snapshot as far back as it asks
                results.append((query, f"{error} (the tables are minutes old; the time-travel read above shows one)"))
    for query, result in results:
        if isinstance(result, str):
            console.print(f"{query.name}: {result}", highlight=False)
        else:
            console.print(_arrow_table(f"{query.name}: {query.description}", result, console.width))
        console.print()


def _curate(console: Console, aws: LocalAws, label: str) -> dict[str, Any]:
    """One curator run, as ``make compact`` runs it locally: the handler in-process as the local curator role."""
    credentials = aws.credentials(CURATOR_ROLE) if aws.roles else {}
    environment = curator_environment(aws.outputs, aws.settings.stack, aws.settings)  # the published snapshot too
    invoke = local_invoker({**environment, **credentials})
    with _working(console, f"curator {label}: raw objects -> the curated tables"):
        summary = dict(invoke({}))
    for line in describe_result(summary, label):
        console.print(line, highlight=False)
    console.print()
    return summary


def _later_changes(
    console: Console, aws: LocalAws, pipe: LocalPipeline, changes: list[Change], *, streamed_so_far: int, timeout: float
) -> int:
    """Write ``changes`` after the first curator run and wait until they are settled; return how many."""
    writer = TableWriter(aws.client("dynamodb"), aws.outputs.table_name)
    unread = pipe.bridge.forwarded - streamed_so_far  # streamed before the mapping's starting position
    with Progress(*_COLUMNS, console=console, transient=False) as progress:
        task = progress.add_task("written after curator run 1", total=len(changes))
        for chunk in _chunks(iter(changes), _WRITE_CHUNK):
            writer.apply(chunk)
            progress.update(task, completed=writer.written)
        pipe.wait_for_changes(streamed_so_far + writer.written, timeout=timeout, unread=unread)
    console.print()
    return writer.written


def _state_figures(connection: Any, rows: pa.Table) -> StateFigures:
    """Registrations, events and tickets of a ``registrations`` read, counted in DuckDB."""
    connection.register("state_read", rows)
    [(registrations, events, tickets)] = connection.execute(
        "SELECT count(*), count(DISTINCT event_id), coalesce(sum(quantity), 0) FROM state_read"
    ).fetchall()
    connection.unregister("state_read")
    return StateFigures(int(registrations), int(events), int(tickets))


def _curated(
    console: Console, aws: LocalAws, raw: LakeCounts, first: dict[str, Any], second: dict[str, Any]
) -> CurationFigures:
    """The curated tables after both runs (as the CI role reads them: pyiceberg scans into DuckDB), and
    ``registrations`` as of the first run's snapshot against now."""
    role = CI_ROLE if aws.roles else None
    with _working(console, "reading the curated tables (pyiceberg scans into DuckDB)"):
        tables = CuratedTables(local_catalog(aws, role), aws.outputs.athena_database_name)
        changes = tables.read(CHANGES_TABLE)
        registrations = tables.read(REGISTRATIONS_TABLE)
        connection = duckdb.connect()
        connection.register("registration_changes", changes)
        [(distinct,)] = connection.execute("SELECT count(DISTINCT change_id) FROM registration_changes").fetchall()
        data_files = tables.data_files(CHANGES_TABLE)
        first_snapshot = first.get("registrations_snapshot")
        past = tables.read(REGISTRATIONS_TABLE, int(first_snapshot)) if first_snapshot else registrations.slice(0, 0)
        as_of, now = _state_figures(connection, past), _state_figures(connection, registrations)
        committed = {item.snapshot_id: item.committed_at for item in tables.snapshots(REGISTRATIONS_TABLE)}
        seeded_from = tables.seeded_from()
    figures = CurationFigures(
        first=first,
        second=second,
        raw=raw,
        changes_rows=changes.num_rows,
        distinct_changes=int(distinct),
        data_files=data_files,
        registrations=registrations,
        as_of_first=as_of,
        now=now,
        first_snapshot=int(first_snapshot) if first_snapshot else None,
        seeded_from=seeded_from,
    )
    table = Table(title="curated tables (each change once)", title_justify="left")
    for name, justify in (("", "left"), ("raw layer", "right"), ("registration_changes", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_row("Parquet files", f"{raw.parquet_objects:,}", f"{data_files:,}")
    table.add_row("rows", f"{raw.rows:,}", f"{figures.changes_rows:,}")
    table.add_row("distinct changes", f"{raw.distinct_changes:,}", f"{figures.distinct_changes:,}")
    table.add_row("duplicate rows", f"{raw.duplicate_rows:,}", f"{figures.changes_rows - figures.distinct_changes:,}")
    console.print(table)
    console.print(
        f"registrations: {registrations.num_rows:,} rows, one per live (event_id, fan_id), with its last change",
        highlight=False,
    )
    console.print()
    moment = committed.get(figures.first_snapshot) if figures.first_snapshot else None
    travel = Table(title="time travel: registrations", title_justify="left")
    for name, justify in (("", "left"), ("as of run 1", "right"), ("now", "right")):
        travel.add_column(name, justify=justify)  # type: ignore[arg-type]
    travel.add_row("registrations", f"{as_of.registrations:,}", f"{now.registrations:,}")
    travel.add_row("events", f"{as_of.events:,}", f"{now.events:,}")
    travel.add_row("tickets requested", f"{as_of.tickets:,}", f"{now.tickets:,}")
    console.print(travel)
    if moment is not None:
        at = f"{moment:%Y-%m-%d %H:%M:%S.%f}"[:-3]
        console.print(
            f"as of run 1: snapshot {figures.first_snapshot}, committed {at} UTC; in Athena: "
            f"FOR TIMESTAMP AS OF TIMESTAMP '{at} UTC' after the table name",
            highlight=False,
        )
    console.print()
    return figures


def _erase(
    console: Console, aws: LocalAws, curation: CurationFigures | None, snapshot_keys: set[tuple[str, str]]
) -> ErasureFigures | None:
    """Erase one fan of ``registrations`` as an operator would (``make erase``, then the curator's next run), and
    search every object of the stack for its id. The fan has rows in both the export (and its snapshot) and the
    stream when one does, so the search covers every place."""
    changed = _changed_since_the_snapshot(curation.registrations, curation.seeded_from) if curation else None
    if changed is None or changed.num_rows == 0:
        return None
    streamed = set(changed.column("fan_id").to_pylist())
    exported = {sk.removeprefix("FAN#") for _, sk in snapshot_keys}
    fan = min(streamed & exported or streamed)
    figures = erase_one_fan(
        aws.client("s3", role=CI_ROLE if aws.roles else None),
        aws.client("s3"),
        bucket=aws.outputs.bucket_name,
        failure_bucket=aws.outputs.failure_bucket_name,
        fan_id=fan,
        curate=lambda: _curate(console, aws, "run 3"),
        searching=lambda: _working(console, "searching every object of the stack for the erased fan's id"),
    )
    for line in describe_erasure(figures, aws.outputs.failure_bucket_name):
        console.print(line, highlight=False)
    console.print()
    return figures


def _changed_since_the_snapshot(registrations: pa.Table, seeded_from: str | None) -> pa.Table:
    """The rows of ``registrations`` a change since the mapping wrote, not the seed's snapshot items (their
    ``shard_id`` is the export id): the fan the demo erases has rows in every layer the curator writes, as before
    the seed. (A snapshot item's id is also in the DynamoDB export's data file under ``demand/exports/``, which
    erasure does not rewrite.)"""
    if seeded_from is None:
        return registrations
    return registrations.filter(pc.invert(pc.fill_null(pc.equal(registrations.column("shard_id"), seeded_from), False)))


def _summary(console: Console, result: DemoResult) -> None:
    table = Table(title="Summary", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    counts = result.counts
    for label, value in (
        *_bootstrap_rows(result.bootstrap),
        ("items written", f"{result.items_written:,}"),
        ("changes streamed", f"{result.changes_streamed:,}"),
        ("rows in Parquet", f"{counts.rows:,}"),
        ("distinct changes in Parquet", f"{counts.distinct_changes:,}"),
        ("quarantined", f"{counts.quarantined:,}"),
        ("failed (kept in the failure bucket)", f"{result.failed:,}"),
        ("duplicate rows", f"{counts.duplicate_rows:,}"),
        ("records delivered twice", f"{result.redelivered:,}"),
        *_curation_rows(result.curation),
        ("objects", f"{counts.objects:,} ({counts.parquet_objects} Parquet, {counts.quarantine_objects} quarantine)"),
        ("seconds", f"{result.seconds:.1f}"),
        ("records per second", f"{result.records_per_second:,.0f}"),
    ):
        table.add_row(label, value)
    console.print(table)
    if result.bootstrap is not None and result.bootstrap.state is not None:
        state = result.bootstrap.state
        console.print(
            f"current state = table: {state.lake_registrations:,} registrations, "
            + ("[green]equal[/]" if state.equal else f"[red]{state.mismatches} mismatches[/]")
        )
    if result.curation is not None and result.curation.state is not None:
        state = result.curation.state
        console.print(
            f"registrations = table: {state.lake_registrations:,} rows, "
            + ("[green]equal[/]" if state.equal else f"[red]{state.mismatches} mismatches[/]")
        )
    verdict = "[green]every change accounted for[/]" if result.accounted else "[red]changes unaccounted for[/]"
    console.print(
        f"distinct changes + quarantined + failed = {counts.distinct_changes + counts.quarantined + result.failed:,}: "
        + verdict
    )


def _curation_rows(curation: CurationFigures | None) -> list[tuple[str, str]]:
    if curation is None:
        return []
    rows = [
        ("rows in registration_changes", f"{curation.changes_rows:,}"),
        ("rows in registrations", f"{curation.registrations.num_rows:,}"),
    ]
    if curation.state is not None:
        state = curation.state
        rows.append(("registrations = table scan", "equal" if state.equal else f"{state.mismatches:,} mismatches"))
    return rows


def _bootstrap_rows(bootstrap: BootstrapFigures | None) -> list[tuple[str, str]]:
    if bootstrap is None:
        return []
    totals = bootstrap.report.totals()
    rows = [
        ("written before the mapping", f"{bootstrap.written_before:,}"),
        (
            f"snapshot items at T (mapping T - {bootstrap.lead_seconds:g} s)",
            f"{totals['items']:,}: {totals['rows']:,} rows, {totals['quarantined']:,} quarantined",
        ),
        (
            "snapshot items changed after T",
            f"{bootstrap.changed_after['MODIFY']:,} modified, {bootstrap.changed_after['REMOVE']:,} removed",
        ),
    ]
    if bootstrap.state is not None:
        state = bootstrap.state
        rows += [
            ("items in the table", f"{state.table_items:,} ({state.refused} refused by the contract)"),
            ("registrations in the current state", f"{state.lake_registrations:,}"),
            ("current state = table scan", "equal" if state.equal else f"{state.mismatches:,} mismatches"),
        ]
    return rows


def _keep(console: Console, aws: LocalAws) -> None:
    outputs = aws.outputs
    endpoint = aws.endpoint_url
    host = endpoint.split("://", 1)[1]
    # AWS_DEFAULT_REGION as well: AWS CLI v1 (and older boto3) do not read AWS_REGION. IAM is enforced: the
    # commands act as the local administrator (the fake key "testing" is refused).
    admin = aws.credentials()
    key_id, secret = admin["AWS_ACCESS_KEY_ID"], admin["AWS_SECRET_ACCESS_KEY"]
    creds = (
        f"AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} AWS_REGION={aws.region} "
        f"AWS_DEFAULT_REGION={aws.region}"
    )
    bucket = outputs.bucket_name
    console.rule("local AWS left running (Ctrl-C stops it)")
    console.print(f"endpoint       {endpoint}")
    console.print(f"stack outputs  {aws.outputs_file}   (export STACK_OUTPUTS_FILE={aws.outputs_file})")
    console.print("the pipeline keeps running: items you write to the table land in S3 within seconds\n")
    console.print("[bold]aws CLI[/]", highlight=False)
    for command in (
        f"aws --endpoint-url {endpoint} dynamodb scan --table-name {outputs.table_name} --max-items 3",
        f"aws --endpoint-url {endpoint} s3 ls s3://{bucket}/{outputs.events_prefix} --recursive",
        f"aws --endpoint-url {endpoint} s3 ls s3://{bucket}/{outputs.quarantine_prefix} --recursive",
        f"aws --endpoint-url {endpoint} athena list-named-queries --work-group {outputs.athena_workgroup_name}",
        f"aws --endpoint-url {endpoint} s3 ls s3://{outputs.failure_bucket_name}/ --recursive",
    ):
        console.print(f"  {creds} {command}", highlight=False, soft_wrap=True)
    console.print("\n[bold]duckdb CLI[/] (its httpfs extension reads the local S3)", highlight=False)
    parquet = f"s3://{bucket}/{outputs.events_prefix}*/*/*.parquet"
    settings = (
        f"SET s3_endpoint='{host}'; SET s3_use_ssl=false; SET s3_url_style='path'; SET s3_region='{aws.region}'; "
        f"SET s3_access_key_id='{key_id}'; SET s3_secret_access_key='{secret}';"
    )
    select = "SELECT op, status, count(*) FROM read_parquet('{}', hive_partitioning=true) GROUP BY ALL ORDER BY ALL;"
    duckdb_sql = f"{settings} {select.format(parquet)}"
    console.print(f'  duckdb -c "{duckdb_sql}"', highlight=False, soft_wrap=True)
    console.print("\n[bold]preflight[/] (the bridge stands in for the table's streaming destination)", highlight=False)
    console.print(
        f"  {creds} AWS_ENDPOINT_URL={endpoint} make preflight STACK={aws.settings.stack} ARGS=--local",
        highlight=False,
        soft_wrap=True,
    )
    console.print("\n[bold]curator[/] (one run now, as the local curator role)", highlight=False)
    console.print(
        f"  STACK_OUTPUTS_FILE={aws.outputs_file} {creds} AWS_ENDPOINT_URL={endpoint} "
        f"make compact STACK={aws.settings.stack}",
        highlight=False,
        soft_wrap=True,
    )
    console.print("\n[bold]replay[/]", highlight=False)
    console.print(
        f"  STACK_OUTPUTS_FILE={aws.outputs_file} {creds} AWS_ENDPOINT_URL={endpoint} "
        f".venv/bin/python -m ops.replay quarantine {aws.settings.stack} --dry-run",
        highlight=False,
        soft_wrap=True,
    )
    until_interrupted = threading.Event()  # nothing sets it: Ctrl-C ends the wait
    while not until_interrupted.wait(0.5):
        if not aws.server.alive():
            raise LocalServerLostError(aws.server.exit_status())


class LocalServerLostError(RuntimeError):
    """The local AWS server stopped while the demo was using it."""

    def __init__(self, status: int | None) -> None:
        how = f"killed by signal {-status}" if status is not None and status < 0 else f"exit status {status}"
        super().__init__(f"the local AWS server stopped ({how}); the demo cannot go on: run make demo again")


class _WhileServerUp(logging.Filter):
    """Drops the pipeline thread's tracebacks once the server is gone: the demo reports that in one line."""

    def __init__(self, aws: LocalAws) -> None:
        super().__init__()
        self._aws = aws

    def filter(self, record: logging.LogRecord) -> bool:
        return self._aws.server.alive()


def run_demo(args: argparse.Namespace, console: Console) -> DemoResult:
    """Run the demo; return its accounting (raises on timeout, ``LocalServerLostError`` when the server dies)."""
    quiet = {} if args.verbose else {"LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    outputs_file = Path(args.outputs_file) if args.outputs_file else None
    lead = timedelta(seconds=args.lead)
    changes = list(workload(args.events, seed=args.seed, poison=args.poison))
    before = args.events // 3 if args.before is None else args.before
    with contextlib.ExitStack() as exits:
        with _working(console, "starting the local AWS and creating the stack's resources"):
            aws = exits.enter_context(local_aws(args.stack, outputs_file=outputs_file, shards=args.shards))
            exits.enter_context(patched_environment(quiet))
            for role, sid in args.drop_statement:  # what happens when the program drops a statement a role needs
                assert aws.roles is not None
                exits.enter_context(aws.roles.without_statement(role, sid))
            exits.enter_context(_filtered(_WhileServerUp(aws)))
            exits.enter_context(_filtered(_NotInjected()))
            bridge = aws.bridge()  # the streaming destination's stand-in: ACTIVE from now on (A)
        console.print(f"local AWS on {aws.endpoint_url}")
        try:
            written_before, snapshot_keys = _before_mapping(console, aws, bridge, changes[:before], args.timeout)
            time.sleep(0.01)  # the mapping's starting position is after every change streamed so far
            overrides: dict[str, Any] = {
                "starting_position": "AT_TIMESTAMP",
                "starting_position_timestamp": datetime.now(UTC),  # T - lead
            }
            if args.batching_window is not None:
                overrides["batching_window_seconds"] = args.batching_window
            pipe = exits.enter_context(aws.pipeline(config=aws.mapping_config(**overrides), bridge=bridge))
            console.print(_settings_line(aws, pipe), highlight=False)
            console.print(
                f"mapping created AT_TIMESTAMP {overrides['starting_position_timestamp']:%H:%M:%S.%f} = T - "
                f"{args.lead:g} s (the runbook's 5 minutes, shortened); the export at T follows",
                highlight=False,
            )
            time.sleep(args.lead)  # T >= the mapping's starting position + lead
            report = _backfill(console, aws, lead, args.verbose)
            _publish(console, aws, report)
            later = before + (len(changes) - before) * 4 // 5  # the last fifth: after the first curator run
            written, seconds, function = _flow(console, aws, pipe, changes[before:later], args)
            first = _curate(console, aws, "run 1")
            written += _later_changes(
                console, aws, pipe, changes[later:], streamed_so_far=written, timeout=args.timeout
            )
            second = _curate(console, aws, "run 2")
            lake = ci_lake(aws)
            with _working(console, "reading the lake"):
                counts = lake.counts()
            _queries(console, lake)
            _quarantine(console, lake)
            curation = _curated(console, aws, counts, first, second)
            bootstrap = BootstrapFigures(
                written_before,
                args.lead,
                report,
                _changed_after(changes[before:], snapshot_keys),
                _current_state(console, aws, lake, report, lead, curation=curation),
            )
            erasure = _erase(console, aws, curation, snapshot_keys)
            result = DemoResult(
                written,
                pipe.bridge.forwarded - written_before,
                counts,
                pipe.mapping.stats.records_discarded,
                seconds,
                curation,
                bootstrap,
                function.redelivered,
                erasure,
            )
            _summary(console, result)
            if args.keep:
                _keep(console, aws)
        except Exception as error:
            if not aws.server.alive():  # whatever failed, the cause is the lost server
                raise LocalServerLostError(aws.server.exit_status()) from error
            raise
    return result


@contextlib.contextmanager
def _filtered(rule: logging.Filter) -> Iterator[None]:
    """Apply ``rule`` to the sandbox's pipeline loggers (and the last-resort handler) for the block."""
    loggers = [logging.getLogger(name) for name in ("sandbox.runner", "sandbox.mapping", "sandbox.bridge")]
    for logger in loggers:
        logger.addFilter(rule)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(rule)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m sandbox.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=integer_at_least(1), default=3000, help="demand changes to write (default 3000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the workload (default 7)")
    parser.add_argument(
        "--poison", type=integer_at_least(0), default=4, help="poison items among the changes (default 4)"
    )
    parser.add_argument(
        "--before",
        type=integer_at_least(0),
        default=None,
        help="changes written before the mapping exists, exported and back-filled (default a third of --events)",
    )
    parser.add_argument(
        "--lead",
        type=number_at_least(0),
        default=1.0,
        help="seconds between the mapping's AT_TIMESTAMP and the export time T (default 1; 300 on AWS)",
    )
    parser.add_argument(
        "--stack", type=stack_name, default=DEFAULT_STACK, help=f"stack whose settings to use (default {DEFAULT_STACK})"
    )
    parser.add_argument(
        "--shards", type=integer_at_least(1), default=3, help="Kinesis shards of the local stream (default 3)"
    )
    parser.add_argument(
        "--batching-window",
        type=number_at_least(0),
        default=None,
        help="override the stack's batching window (seconds)",
    )
    parser.add_argument(
        "--timeout", type=number_above(0), default=90.0, help="seconds to wait for the changes to settle"
    )
    parser.add_argument("--outputs-file", help="write the local stack outputs JSON here (default: a temp file)")
    parser.add_argument("--keep", action="store_true", help="leave the local AWS running until Ctrl-C")
    parser.add_argument(
        "--drop-statement",
        type=_role_statement,
        action="append",
        default=[],
        metavar="ROLE:SID",
        help=f"run with statement SID removed from a role's policy (roles: {', '.join(ROLES)}); repeatable",
    )
    parser.add_argument("--verbose", action="store_true", help="show the handler's log lines and metrics")
    parser.add_argument("--debug", action="store_true", help="tracebacks for configuration errors")
    args = parser.parse_args(argv)
    if args.poison > args.events:
        parser.error(f"argument --poison: expected at most --events ({args.events}), got {args.poison}")
    if args.before is not None and args.before > args.events:
        parser.error(f"argument --before: expected at most --events ({args.events}), got {args.before}")
    return args


def _role_statement(text: str) -> tuple[str, str]:
    role, _, sid = text.partition(":")
    if role not in ROLES or not sid:
        raise argparse.ArgumentTypeError(f"expected ROLE:SID with ROLE one of {', '.join(ROLES)}, got {text!r}")
    return role, sid


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    share_loaded_models()  # dozens of clients, one parse of botocore's models
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated demo cleans up like an interrupted one
    console = Console(file=sys.stdout)  # bound now: the backfill step captures sys.stdout while its spinner turns
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=_PIPE_WIDTH)
    try:
        result = run_demo(args, console)
    except (SettingsError, UnknownStatementError) as error:  # the stack file, or a --drop-statement not in the role
        if args.debug:
            raise
        return user_error("python -m sandbox.demo", str(error))
    except (LocalServerLostError, PolicyDeniedError, PolicyDeniedInPipelineError) as error:
        # the server died, or a role lacks what its code calls (the message names role, action and resource)
        console.print(f"[red]{error}[/]", highlight=False, soft_wrap=True)  # one line, for whoever greps the log
        return 1
    except (ClientError, CompactError, OSError) as error:  # the functions' own clients, pyarrow's reads
        if "AccessDenied" not in str(error) and "ACCESS_DENIED" not in str(error):
            raise
        console.print(f"[red]IAM denied: {error}[/]", highlight=False)
        return 1
    except BackfillError as error:  # a cutover check failed, or the export did
        for line in str(error).splitlines():
            console.print(f"[red]backfill: {line}[/]", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("\ninterrupted: the local AWS and the pipeline are stopped")
        return 130
    return 0 if result.accounted else 1


if __name__ == "__main__":
    sys.exit(main())
