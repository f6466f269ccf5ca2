"""The operations docs stay true: the environments table matches the stack files and the pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.settings import settings_from_stack_file
from tests.ops import gitlab_ci

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
    commands = {"ops.rollback", "ops.smoke", "ops.capacity", "ops.replay", "ops.outputs", "ops.compact"}
    targets = {"make rollback", "make smoke", "make capacity", "make plan", "make package", "make compact"}

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
