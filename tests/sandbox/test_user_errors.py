"""One way to fail on user input: each mistake below once ended in a traceback (or was accepted); now it is one
line on stderr naming the bad value and what would be valid, exit status 2, refused alike by the demo, make plan
and the Pulumi program. A lost local server ends the demo with one line, with or without --keep."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import pytest

import components.settings
from components.settings import SettingsError
from ops import capacity, plan, program
from sandbox import demo
from sandbox.local_aws import DEFAULT_STACK, local_aws
from sandbox.server import MotoProcess

ROOT = Path(__file__).resolve().parents[2]


def _one_line(text: str) -> str:
    assert "Traceback" not in text
    assert text.count("\n") == 1, text
    return text.strip()


def _demo_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    return _one_line(capsys.readouterr().err)


def test_demo_unknown_stack(capsys):
    err = _demo_refuses(["--stack", "qa2"], capsys)
    assert err == (
        "python -m sandbox.demo: error: argument --stack: unknown stack 'qa2' (stacks: dev1, preprod1, prod1, qa1)"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--shards", "0"], "argument --shards: expected an integer >= 1, got '0'"),
        (["--poison", "-1"], "argument --poison: expected an integer >= 0, got '-1'"),
        (["--events", "10", "--poison", "11"], "argument --poison: expected at most --events (10), got 11"),
        (["--timeout", "nan"], "argument --timeout: expected a finite number > 0, got 'nan'"),
    ],
)
def test_demo_bad_numbers(capsys, argv, expected):
    assert _demo_refuses(argv, capsys) == f"python -m sandbox.demo: error: {expected}"


# -- stack files: the demo, make plan and the program refuse them alike ------------------------------------------
BROKEN = {
    "typo'd key": ("  dmd-pipeline:batchSze: 100\n", "unknown config key dmd-pipeline:batchSze"),
    "wrong type": ("  dmd-pipeline:batchSize: lots\n", "dmd-pipeline:batchSize must be an integer, got 'lots'"),
    "misspelled namespace": (
        "  dmd-pipline:batchSize: 100\n",
        "unknown config namespace in dmd-pipline:batchSize (did you mean dmd-pipeline:?)",
    ),
    "unknown region": (None, "aws:region must be an AWS region such as us-east-1"),
    "YAML syntax error": ("  dmd-pipeline:batchSize: [100\n", "Pulumi.dev1.yaml: line "),
}


def _project(tmp_path: Path, case: str) -> Path:
    """A copy of the project's Pulumi.yaml and a broken Pulumi.dev1.yaml."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    text = (ROOT / "Pulumi.dev1.yaml").read_text(encoding="utf-8")
    extra, _ = BROKEN[case]
    if extra is None:
        assert "aws:region: us-east-1" in text
        text = text.replace("aws:region: us-east-1", "aws:region: us-east-9")
    else:
        assert "\nconfig:\n" in text
        text = text.replace("\nconfig:\n", "\nconfig:\n" + extra, 1)
    (tmp_path / "Pulumi.dev1.yaml").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_demo_refuses_a_broken_stack_file_in_one_line(tmp_path, monkeypatch, capsys, case):
    monkeypatch.setattr(components.settings, "PROJECT_ROOT", _project(tmp_path, case))

    assert demo.main(["--stack", "dev1"]) == 2

    err = _one_line(capsys.readouterr().err)
    assert err.startswith("python -m sandbox.demo: error: Pulumi.dev1.yaml")
    assert BROKEN[case][1] in err


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_plan_refuses_a_broken_stack_file_in_one_line(tmp_path, monkeypatch, capsys, case):
    root = _project(tmp_path, case)
    monkeypatch.setattr(plan, "run_program", lambda stack: program.run_program(stack, root=root))

    assert plan.main(["dev1"]) == 2

    err = _one_line(capsys.readouterr().err)
    assert BROKEN[case][1] in err


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("dmd-pipline:batchSize", "100", "unknown config namespace in dmd-pipline:batchSize"),
        ("aws:region", "us-east-9", "aws:region must be an AWS region such as us-east-1"),
    ],
)
def test_the_program_itself_refuses(key, value, expected):
    config = program.stack_config("dev1")
    config[key] = value

    with pytest.raises(SettingsError, match=expected):
        program.run_program("dev1", config=config)


# -- capacity ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--peak-minutes", "0"], "argument --peak-minutes: expected a finite number > 0, got '0'"),
        (["--peak-minutes", "nan"], "argument --peak-minutes: expected a finite number > 0, got 'nan'"),
        (["--overhead-ms", "-150"], "argument --overhead-ms: expected a finite number >= 0, got '-150'"),
        (["--records-per-second", "0"], "argument --records-per-second: expected a finite number > 0, got '0'"),
        (["--shards", "0"], "argument --shards: expected an integer >= 1, got '0'"),
    ],
)
def test_capacity_refuses_bad_numbers(capsys, argv, expected):
    base = ["prod1", "--on-demand"] if "--shards" in argv else ["prod1", "--shards", "4"]
    if "--records-per-second" not in argv:
        base += ["--records-per-second", "40000"]
    with pytest.raises(SystemExit) as exit_info:
        capacity.main(base + argv)
    assert exit_info.value.code == 2
    assert _one_line(capsys.readouterr().err) == f"python -m ops.capacity: error: {expected}"


# -- a lost local server -----------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def _demo_process(stderr: IO[str], *argv: str) -> subprocess.Popen[str]:
    """The demo in a child process; stderr goes to a file, so a chatty demo can never block on a full pipe."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox.demo", *argv],
        cwd=ROOT,
        env=env | {"COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _wait_for_line(process: subprocess.Popen[str], text: str) -> list[str]:
    """Read the demo's output until a line holds ``text`` (the test's timeout bounds the wait)."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"the demo ended without a line with {text!r}: {''.join(lines)[-2000:]}")


LOST = "the local AWS server stopped (killed by signal 9); the demo cannot go on: run make demo again"


@pytest.mark.slow
def test_a_lost_local_server_ends_the_demo_with_one_line(tmp_path):
    # The server is killed as soon as it is up, while the demo writes the first of 10,000 changes (many seconds of
    # work): the kill lands mid-run however loaded the machine is, with no sleep to race.
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as stderr:
        process = _demo_process(stderr, "--events", "30000", "--timeout", "600")
        try:
            shown = _wait_for_line(process, "local AWS on")
            [server] = [
                pid for pid in _children(process.pid) if "sandbox.server" in Path(f"/proc/{pid}/cmdline").read_text()
            ]
            os.kill(server, signal.SIGKILL)
            out, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        stderr.seek(0)
        err = stderr.read()
    out = "".join(shown) + out
    assert process.returncode == 1
    assert "Traceback" not in out + err
    assert err.strip() == ""
    assert out.strip().splitlines()[-1] == LOST


class _KillsTheServer:
    """The kept demo's wait for Ctrl-C: the server dies during its first half second."""

    def __init__(self, server: MotoProcess) -> None:
        self.server, self.waits = server, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        if self.waits > 1:
            raise AssertionError("the kept demo went on waiting after its server died")
        os.kill(self.server.pid, signal.SIGKILL)
        os.waitid(os.P_PID, self.server.pid, os.WEXITED | os.WNOWAIT)  # dead; left for its poll() to reap
        return False


def test_a_lost_local_server_ends_the_kept_demo_with_one_line(monkeypatch, capsys):
    """Past its steps, ``--keep`` waits for Ctrl-C beside the server; the server dying ends that wait in one line.
    The steps themselves are the demo's (the test above kills the server during them); here only the wait runs."""
    waits: list[_KillsTheServer] = []

    def kept_only(args, console):
        with local_aws(DEFAULT_STACK, shards=1) as aws:
            waits.append(_KillsTheServer(aws.server))
            monkeypatch.setattr(demo, "threading", SimpleNamespace(Event=lambda: waits[-1]))
            demo._keep(console, aws)
        raise AssertionError("the wait ended without the server lost")

    monkeypatch.setattr(demo, "run_demo", kept_only)
    monkeypatch.setenv("COLUMNS", "200")

    assert demo.main(["--keep"]) == 1

    out, err = capsys.readouterr()
    assert err == ""
    assert "Traceback" not in out
    assert "local AWS left running" in out
    assert out.strip().splitlines()[-1] == LOST
    assert [wait.waits for wait in waits] == [1]
