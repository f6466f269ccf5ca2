"""Every mutating command reads the stack file before it changes anything: a broken one is one line, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import pytest

from components import settings as settings_module
from ops import compact, erase, rollback
from tests.ops.conftest import FUNCTION, REGION

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_qa1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qa1's stack file with a typo'd key, as the project root the settings are read from."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    text = (ROOT / "Pulumi.qa1.yaml").read_text(encoding="utf-8")
    (tmp_path / "Pulumi.qa1.yaml").write_text(text + "  dmd-pipeline:batchSze: 100\n", encoding="utf-8")
    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_rollback_with_a_broken_stack_file_leaves_the_alias(
    broken_qa1: None, published_function: list[str], outputs_file: Path, capsys: pytest.CaptureFixture[str]
):
    status = rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", published_function[0]])

    assert status == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("rollback: Pulumi.qa1.yaml: unknown config key dmd-pipeline:batchSze")
    assert line.endswith("(fix Pulumi.qa1.yaml, then run the command again)")
    alias = boto3.client("lambda", region_name=REGION).get_alias(FunctionName=FUNCTION, Name="live")
    assert alias["FunctionVersion"] == published_function[-1]


def test_compact_with_a_broken_stack_file_invokes_nothing(
    broken_qa1: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    def no_lambda(region: str) -> object:
        raise AssertionError("nothing may be invoked")

    monkeypatch.setattr(compact, "_lambda_client", no_lambda)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    assert compact.main(["qa1"]) == 2

    line = _one_line(capsys.readouterr().err)
    assert line.startswith("compact: Pulumi.qa1.yaml: unknown config key dmd-pipeline:batchSze")


def test_erase_with_a_broken_stack_file_files_nothing(
    broken_qa1: None, aws: None, outputs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="prd3292.qa1.us-east-1.demand-capture.tmaws")
    fans = tmp_path / "fans.txt"
    fans.write_text("fan-1\n")

    assert erase.main(["qa1", "--fans", str(fans), "--outputs-file", str(outputs_file)]) == 2

    line = _one_line(capsys.readouterr().err)
    assert line.startswith("erase: error: Pulumi.qa1.yaml: unknown config key dmd-pipeline:batchSze")
    assert line.endswith("(fix Pulumi.qa1.yaml, then run the command again)")
    assert s3.list_objects_v2(Bucket="prd3292.qa1.us-east-1.demand-capture.tmaws")["KeyCount"] == 0
