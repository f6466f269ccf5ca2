"""The operations docs stay true: the environments table matches the stack files and the pipeline."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from components.settings import settings_from_stack_file
from tests.ops import gitlab_ci
from tests.shell import outside_make_and_venv

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _table(path: Path, first_header: str) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)))
    return rows


@pytest.fixture(scope="module")
def environments() -> dict[str, dict[str, str]]:
    return {row["Stack"]: row for row in _table(DOCS / "environments.md", "Stack")}


@pytest.mark.parametrize("stack", ["qa1", "dev1", "preprod1", "prod1"])
def test_environment_row_matches_the_stack_file(environments, stack):
    row = environments[stack]
    settings = settings_from_stack_file(stack)

    assert row["Account"] == settings.account_tag
    assert row["AWS profile"] == settings.profile
    assert row["Region"] == settings.region
    assert row["DynamoDB table"] == settings.table_name
    assert row["S3 bucket"] == settings.bucket_id
    if settings.stream_name is None:
        assert row["Kinesis stream"].startswith("created by the stack")
    else:
        assert row["Kinesis stream"] == settings.stream_name


@pytest.mark.parametrize("stack", ["qa1", "dev1", "preprod1", "prod1"])
def test_environment_row_matches_the_pipeline(environments, stack):
    row = environments[stack]
    jobs = gitlab_ci.jobs(gitlab_ci.load())

    assert row["Deploy runner tags"].split() == jobs[f"deploy-{stack}"]["tags"]
    test_job = f"e2e-test-{stack}" if stack != "prod1" else "smoke-prod1"
    assert row["Test runner tags"].split() == jobs[test_job]["tags"]


def test_environment_rows_are_in_pipeline_order(environments):
    assert list(environments) == ["qa1", "dev1", "preprod1", "prod1"]


def test_runbook_documents_every_ops_command_and_make_target():
    runbook = (DOCS / "runbook.md").read_text(encoding="utf-8")
    commands = {"ops.rollback", "ops.smoke", "ops.capacity", "ops.replay", "ops.outputs", "ops.compact", "ops.erase"}
    targets = {
        "make rollback",
        "make smoke",
        "make capacity",
        "make plan",
        "make package",
        "make compact",
        "make erase",
        "make erase-status",
    }

    assert {command for command in commands if f"python -m {command}" not in runbook} <= {"ops.outputs"}
    assert {target for target in targets if target not in runbook} == set()


def test_mermaid_blocks_use_plain_node_ids():
    """GitLab renders Mermaid; ids with dashes or reserved words break it, labels carry the names."""
    for path in DOCS.glob("*.md"):
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```mermaid\n(.*?)```", text, flags=re.S):
            for line in block.splitlines()[1:]:
                for node_id in re.findall(r"(?:^|-->|-\.->|---)\s*([A-Za-z0-9_-]+)(?=[\[\({]|\s|$)", line.strip()):
                    assert "-" not in node_id, f"{path.name}: {line.strip()}"
                    assert node_id not in ("end", "graph"), f"{path.name}: {line.strip()}"


# -- every command the README and the runbook show: run here, or marked as needing AWS -----------------------------
_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:make [a-z]|python -m |\.venv/bin/python -m )")
# Run by this test (without AWS; what needs a stack's AWS resources runs against the local AWS elsewhere).
RUN = {
    "make plan STACK=qa1": 0,
    "make plan STACK=prod1": 0,
    'make capacity STACK=prod1 ARGS="--records-per-second 40000 --on-demand"': 0,
    'make capacity STACK=prod1 ARGS="--records-per-second 40000 --shards 8"': 0,
    ".venv/bin/python -m sandbox.demo --help": 0,
}
# Commands that run without AWS but not from this test, and where they run instead.
RUN_ELSEWHERE = {
    'make demo ARGS="--drop-statement processor:WriteEventsAndQuarantine"': "tests/sandbox/test_iam_enforced.py",
    "make test": "what CI runs: this suite",
    "make unit PYTEST_ARGS=tests/pipeline": "a subset of this suite",
    "make e2e": "make test (tests/e2e on the local AWS)",
    "make integration": "make test (tests/integration on the local AWS)",
    "make faults": "make test (tests/faults)",
    "make bench": "the bench job; tests/bench",
    "make package": "tests/infra/test_package.py (function.zip; the layer needs the package index)",
    "make clean": "removes caches other tests use",
    # make demo runs `python -m sandbox.demo $(ARGS)`: the module runs that demo, with its defaults, once in process
    "make demo": "tests/sandbox/test_demo_output.py (the defaults, then every command of the --keep banner)",
    'make demo ARGS="--keep"': "tests/sandbox/test_demo_output.py runs the banner's commands; test_user_errors.py",
    "make demo ARGS=--keep": "tests/sandbox/test_demo_output.py runs the banner's commands; test_user_errors.py",
    "make backfill STACK=dev1": "tests/ops/test_backfill.py (against the local AWS)",
    "make preflight STACK=dev1 ARGS=--local": "tests/sandbox/test_demo_output.py (the demo's banner, as pasted)",
    "python -m bench --json | python -m ops.capacity prod1 --bench-results - --peak-records 5000000 "
    "--peak-minutes 10 --on-demand": "tests/ops/test_capacity.py reads the bench figures",
}
# Commands that need a deployed stack, run here against the local AWS holding that stack (exit status expected
# there: the local AWS publishes no Lambda metrics, creates no alarms and has no Lambda function; make passes the
# command's own status through: smoke's 1 is a failed check, rollback's 2 a refusal).
RUN_LOCAL = {
    'make replay STACK=qa1 ARGS="quarantine --dry-run"': 0,
    # the example day holds nothing on a fresh local AWS: an empty prefix is refused (a typo'd day would be too)
    "python -m ops.replay quarantine prod1 --prefix demand/quarantine/dt=2026-11-29/ --dry-run": 2,
    "make smoke STACK=qa1": 1,
    "make rollback STACK=prod1": 2,
}


def _shown_commands() -> list[tuple[str, str, str]]:
    """(file, command, the line it is on) for each command in backticks or in a fenced block."""
    found: list[tuple[str, str, str]] = []
    for path in (ROOT / "README.md", DOCS / "runbook.md"):
        fenced = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                fenced = not fenced
                continue
            candidates = [line.split("  #", 1)[0].strip()] if fenced else re.findall(r"`([^`]+)`", line)
            found.extend((path.name, command, line) for command in candidates if _COMMAND.match(command))
    return found


def test_every_command_shown_is_run_here_run_elsewhere_or_marked_as_needing_aws():
    unclassified = []
    for name, command, line in _shown_commands():
        if command in RUN or command in RUN_ELSEWHERE or re.fullmatch(r"(make [a-z-]+|python -m [a-z._]+)", command):
            continue  # run, or a bare mention of a command in prose
        if "needs AWS" not in line:
            unclassified.append(f"{name}: {command}")
    assert unclassified == []


def test_the_commands_said_to_run_here_are_shown():
    shown = {command for _, command, _ in _shown_commands()}
    assert set(RUN) | set(RUN_ELSEWHERE) | set(RUN_LOCAL) <= shown


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUN))
def test_shown_command_runs_without_aws(command):

    import shlex  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("AWS_") and key != "STACK_OUTPUTS_FILE"
    }
    environment |= {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    environment = outside_make_and_venv(environment)
    words = shlex.split(command)
    words = [sys.executable, *words[1:]] if words[0] == ".venv/bin/python" else words
    done = subprocess.run(words, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == RUN[command], done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if command.startswith("make capacity"):
        assert "sustained" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUN_LOCAL))
def test_shown_command_needing_aws_runs_against_the_local_aws(command):

    import shlex  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from sandbox.local_aws import local_aws  # noqa: PLC0415

    words = shlex.split(command)
    stack = (
        next(word.split("=", 1)[1] for word in words if word.startswith("STACK=")) if words[0] == "make" else words[4]
    )
    words = [sys.executable, *words[1:]] if words[0] == "python" else words
    with local_aws(stack) as aws:
        # the local endpoint, fake credentials, the outputs file of `stack`
        environment = outside_make_and_venv(dict(os.environ))
        done = subprocess.run(
            words, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False
        )
        assert aws.outputs.stack_name == stack
    assert done.returncode == RUN_LOCAL[command], done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    if "replay" in command and RUN_LOCAL[command] == 0:
        assert "dry run: would replay 0 records from 0 sources; nothing changed" in done.stdout
    if "replay" in command and RUN_LOCAL[command] == 2:
        [line] = done.stderr.splitlines()
        assert "--prefix 'demand/quarantine/dt=2026-11-29/' holds no quarantine objects" in line
    if "smoke" in command:
        assert "FAILED: invocations" in done.stdout
    if "rollback" in command:
        assert "alias 'live' of prd3292-prod1-" in done.stderr


def test_make_without_stack_stops_with_one_line_for_stack_bound_targets():
    import subprocess  # noqa: PLC0415

    for target in ("rollback", "smoke", "capacity", "replay"):
        done = subprocess.run(
            ["make", "--no-print-directory", target, "STACK="],
            cwd=ROOT,
            env=outside_make_and_venv(dict(os.environ)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, target
        [line] = done.stderr.strip().splitlines()
        assert re.fullmatch(
            rf"Makefile:\d+: \*\*\* STACK is required: make {target} STACK=<dev1\|qa1\|preprod1\|prod1>\.  Stop\.", line
        ), line


_NUMBERS = {"four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def test_the_runbook_counts_the_alarms_the_program_declares():
    """The alarm count comes from the program (its golden plans); smoke checks the stream alarms of ops.smoke."""
    from ops.smoke import ALARM_ROLES  # noqa: PLC0415

    declared = {
        stack: (ROOT / "tests" / "infra" / "golden" / f"{stack}.txt")
        .read_text(encoding="utf-8")
        .count("aws:cloudwatch/metricAlarm:MetricAlarm ")
        for stack in ("dev1", "qa1", "preprod1", "prod1")
    }
    runbook = (DOCS / "runbook.md").read_text(encoding="utf-8")
    said = re.search(r"^(\w+) CloudWatch alarms per stack: (\w+) on the stream", runbook, re.MULTILINE)
    assert said is not None
    total, stream = (_NUMBERS[word.lower()] for word in said.groups())
    section = runbook.split("## Read the alarms", 1)[1].split("\n## ", 1)[0]
    alarm_rows = [line for line in section.splitlines() if line.startswith("| `")]

    assert set(declared.values()) == {total}, declared
    assert stream == len(ALARM_ROLES)
    assert len(alarm_rows) == total
    assert f"| alarms | the stack's {_spelled(len(ALARM_ROLES))} stream alarms" in runbook
    assert not re.search(r"\b(four|Seven) alarms\b", runbook)


def _spelled(number: int) -> str:
    return next(word for word, value in _NUMBERS.items() if value == number)
