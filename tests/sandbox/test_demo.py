"""What `make demo` shows: the bootstrap (snapshot + changes against the table) in the summary, and the commands
`make demo ARGS="--keep"` prints to paste, which work as printed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sandbox import demo
from sandbox.local_aws import LocalAws, local_aws
from sandbox.table_state import TableState, compare_states
from tests.ops.conftest import outside_project_venv

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class _NoWait:
    def wait(self, timeout: float | None = None) -> bool:
        return True


def _printed_lines(monkeypatch: pytest.MonkeyPatch, aws: object) -> list[str]:
    monkeypatch.setattr(demo.threading, "Event", _NoWait)  # _keep waits for Ctrl-C
    console = Console(record=True, width=1000)
    demo._keep(console, aws)  # type: ignore[arg-type]
    return [line.strip() for line in console.export_text().splitlines()]


@pytest.fixture(scope="module")
def kept() -> Iterator[LocalAws]:
    """One local AWS for the commands --keep prints (they only read it: a dry-run replay, the preflight)."""
    with local_aws("dev1") as aws:
        yield aws


def test_keep_prints_commands_that_run_as_pasted(monkeypatch: pytest.MonkeyPatch, kept: LocalAws):
    with contextlib.nullcontext(kept) as aws:
        lines = _printed_lines(monkeypatch, aws)
        aws_cli = [line for line in lines if " aws --endpoint-url " in line]
        assert len(aws_cli) == 5
        # AWS CLI v1 reads only AWS_DEFAULT_REGION, v2 and boto3 also AWS_REGION: both are set.
        assert all("AWS_DEFAULT_REGION=us-east-1" in line and "AWS_REGION=us-east-1" in line for line in aws_cli)

        [replay] = [line for line in lines if "-m ops.replay" in line]
        words = shlex.split(replay)
        assignments = dict(word.split("=", 1) for word in words if "=" in word and not word.startswith("-"))
        command = [word for word in words if word.split("=", 1)[0] not in assignments]
        assert command[:3] == [".venv/bin/python", "-m", "ops.replay"], "the project's environment, not any python"
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AWS_") and name != "STACK_OUTPUTS_FILE"
        }
        done = subprocess.run(
            [sys.executable, *command[1:]],  # this interpreter is the project's environment
            cwd=ROOT,
            env=outside_project_venv(environment | assignments),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "dry run: would replay 0 records from 0 sources; nothing changed" in done.stdout


def test_keep_prints_a_preflight_that_passes_as_pasted(monkeypatch: pytest.MonkeyPatch, kept: LocalAws):
    with contextlib.nullcontext(kept) as aws:
        lines = _printed_lines(monkeypatch, aws)
        [preflight] = [line for line in lines if "make preflight" in line]
        words = shlex.split(preflight)
        first = next(index for index, word in enumerate(words) if "=" not in word)
        assignments = dict(word.split("=", 1) for word in words[:first])  # the leading VAR=value words
        command = words[first:]
        assert command == ["make", "preflight", "STACK=dev1", "ARGS=--local"]
        assert assignments["AWS_ENDPOINT_URL"] == aws.endpoint_url
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AWS_") and name != "STACK_OUTPUTS_FILE"
        }
        done = subprocess.run(
            [*command[:1], "--no-print-directory", *command[1:]],
            cwd=ROOT,
            env=outside_project_venv(environment | assignments),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    # the one warning: the committed stack file has no encryptedkey yet (a deployed preflight fails on it)
    assert "result: 0 failed, 1 warning(s), 8 passed" in done.stdout
    assert "encryptedkey" in done.stdout
    assert "via the sandbox bridge" in done.stdout


def test_keep_prints_a_curator_run_that_works_as_pasted(monkeypatch: pytest.MonkeyPatch, kept: LocalAws):
    with contextlib.nullcontext(kept) as aws:
        lines = _printed_lines(monkeypatch, aws)
        [compact] = [line for line in lines if "make compact" in line]
        words = shlex.split(compact)
        first = next(index for index, word in enumerate(words) if "=" not in word)
        assignments = dict(word.split("=", 1) for word in words[:first])
        command = words[first:]
        assert command == ["make", "compact", "STACK=dev1"]
        assert assignments["STACK_OUTPUTS_FILE"] == str(aws.outputs_file)
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AWS_") and name != "STACK_OUTPUTS_FILE"
        }
        done = subprocess.run(
            [*command[:1], "--no-print-directory", *command[1:]],
            cwd=ROOT,
            env=outside_project_venv(environment | assignments),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[1].startswith("acting as the local curator role ")
    assert out[3] == "  raw objects read 0 (0 rows); changes added 0; hours written 0"  # nothing written yet


# -- the bootstrap: snapshot + changes, compared with the table (the whole run: tests/sandbox/test_demo_output.py)
def test_a_difference_between_the_lake_and_the_table_is_named():
    row = {"event_id": "e1", "fan_id": "f1", "status": "SELECTED", "quantity": 2}
    table = table_state_of({("e1", "f1"): row, ("e1", "f2"): dict(row, fan_id="f2")})
    lake = {("e1", "f1"): dict(row, status="REGISTERED"), ("e9", "f9"): dict(row, event_id="e9", fan_id="f9")}
    comparison = compare_states(table, lake)
    assert not comparison.equal
    assert comparison.mismatches == 3
    assert comparison.missing == [("e1", "f2")]
    assert comparison.unexpected == [("e9", "f9")]
    assert comparison.different == {("e1", "f1"): ["status"]}
    assert comparison.describe() == [
        "live in the table, not in the lake: ('e1', 'f2')",
        "in the lake, not live in the table: ('e9', 'f9')",
        "('e1', 'f1') differs in status",
    ]


def table_state_of(rows: dict[tuple[str, str], dict[str, Any]]) -> TableState:
    return TableState(items=len(rows), rows=rows, refused=0)


def test_a_mismatch_or_an_incomplete_backfill_fails_the_demo():
    from ops.backfill import BackfillReport  # noqa: PLC0415
    from sandbox.lake import LakeCounts  # noqa: PLC0415
    from sandbox.table_state import StateComparison  # noqa: PLC0415

    counts = LakeCounts(rows=10, distinct_changes=10, quarantined=0, parquet_objects=1, quarantine_objects=0)
    report = BackfillReport("arn", "export-1", "2026-11-30T14:00:00.000Z", 5)
    equal = StateComparison(table_items=12, refused=0, lake_registrations=12)

    def result(state: StateComparison, problems: list[str]) -> demo.DemoResult:
        bootstrap = demo.BootstrapFigures(5, 1.0, dataclasses.replace(report, problems=problems), {}, state)
        return demo.DemoResult(10, 10, counts, 0, 1.0, None, bootstrap)

    assert result(equal, []).accounted
    assert not result(dataclasses.replace(equal, missing=[("e1", "f1")]), []).accounted
    assert not result(equal, ["a data file is missing"]).accounted
