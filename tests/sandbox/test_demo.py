"""What ``make demo ARGS="--keep"`` prints to paste: the commands work as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from sandbox import demo
from sandbox.local_aws import local_aws
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


def test_keep_prints_commands_that_run_as_pasted(monkeypatch: pytest.MonkeyPatch):
    with local_aws("dev1") as aws:
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


def test_keep_prints_a_preflight_that_passes_as_pasted(monkeypatch: pytest.MonkeyPatch):
    with local_aws("dev1") as aws:
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
    assert "result: 0 failed, 0 warning(s), 7 passed" in done.stdout
    assert "via the sandbox bridge" in done.stdout
