"""make backfill as a command: everything checked before an export is requested, --dry-run, one-line mistakes,
and a local run that offers no command for a real stack (against the embedded local AWS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from components import settings as settings_module
from ops import backfill
from sandbox.changes import DemandGenerator
from sandbox.local_aws import LocalAws, local_aws
from sandbox.workload import TableWriter
from tests.ops.conftest import outside_project_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NO_LEAD = ["--lead-seconds", "0"]


@pytest.fixture(scope="module")
def local() -> Iterator[LocalAws]:
    with local_aws("dev1") as aws:
        TableWriter(aws.client("dynamodb"), aws.outputs.table_name).apply(DemandGenerator(seed=11).changes(40))
        # created now: the cutover checks' 5 minutes have not passed (what a user meets right after make demo)
        aws.pipeline(
            config=aws.mapping_config(starting_position="AT_TIMESTAMP", starting_position_timestamp=datetime.now(UTC))
        )
        yield aws


def _state(local: LocalAws) -> tuple[int, list[str]]:
    """The table's exports and every object in the stack's bucket: what a backfill would change."""
    dynamodb = local.client("dynamodb")
    table_arn = dynamodb.describe_table(TableName=local.outputs.table_name)["Table"]["TableArn"]
    exports = len(dynamodb.list_exports(TableArn=table_arn).get("ExportSummaries", []))
    s3 = local.client("s3")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=local.outputs.bucket_name):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return exports, sorted(keys)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_broken_stack_file_is_refused_before_the_export(
    local: LocalAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    stack_file = (ROOT / "Pulumi.dev1.yaml").read_text(encoding="utf-8")
    (tmp_path / "Pulumi.dev1.yaml").write_text(stack_file + "  dmd-pipeline:batchSze: 100\n", encoding="utf-8")
    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path)
    before = _state(local)

    assert backfill.main(["dev1", *NO_LEAD]) == 2

    line = _one_line(capsys.readouterr().err)
    assert "unknown config key dmd-pipeline:batchSze" in line
    assert "fix Pulumi.dev1.yaml" in line
    assert _state(local) == before  # no export requested, nothing written


def test_dry_run_checks_and_changes_nothing(local: LocalAws, capsys: pytest.CaptureFixture[str]):
    before = _state(local)

    assert backfill.main(["dev1", "--dry-run", *NO_LEAD]) == 0

    out = capsys.readouterr().out
    assert out.startswith("dry run: the cutover checks pass; would export table prd3292-dev1-")
    assert out.rstrip().endswith("nothing changed")
    assert _state(local) == before


def test_local_refusal_names_the_local_fix(local: LocalAws, capsys: pytest.CaptureFixture[str]):
    before = _state(local)

    assert backfill.main(["dev1"]) == 2  # the destination became ACTIVE seconds ago

    err = capsys.readouterr().err
    assert "less than 5 min after the streaming destination became ACTIVE" in err
    assert err.strip().splitlines()[-1] == (
        "backfill: on the local AWS the 5 minutes can be shortened: "
        "make backfill STACK=dev1 ARGS='--lead-seconds 0' (or wait the time named above)"
    )
    assert _state(local) == before


def test_a_local_run_prints_no_command_for_a_real_stack_and_arns_once(
    local: LocalAws, capsys: pytest.CaptureFixture[str]
):
    assert backfill.main(["dev1", *NO_LEAD]) == 0

    out = capsys.readouterr().out
    assert "pulumi config set" not in out
    assert "--stack" not in out
    assert "is the local lake's snapshot (nothing to publish" in out
    [export_line] = [line for line in out.splitlines() if line.startswith("export arn:")]
    arn = export_line.split()[1].rstrip(":")
    assert arn.count("arn:aws") == 1
    assert arn.startswith(f"arn:aws:dynamodb:us-east-1:123456789012:table/{local.outputs.table_name}/export/")

    # the ARN as printed finds the export again; its dry run changes nothing
    before = _state(local)
    assert backfill.main(["dev1", "--export-arn", arn, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(f"dry run: would back-fill export {arn} (COMPLETED, ")
    assert _state(local) == before


def test_a_nonexistent_export_arn_is_one_line(local: LocalAws, capsys: pytest.CaptureFixture[str]):
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/x/export/01234567890123-abcdefgh"

    assert backfill.main(["dev1", "--export-arn", arn]) == 2

    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"backfill: --export-arn {arn!r}: table prd3292-dev1-")
    assert "has no export '01234567890123-abcdefgh'" in line
    assert "<html" not in line


def test_outputs_of_another_account_are_refused_locally_too(
    local: LocalAws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    values: dict[str, Any] = json.loads(local.outputs_file.read_text(encoding="utf-8"))
    other = {key: value.replace(":123456789012:", ":999999999999:") for key, value in values.items()}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(other), encoding="utf-8")
    before = _state(local)

    assert backfill.main(["dev1", "--outputs-file", str(path), *NO_LEAD]) == 2

    line = _one_line(capsys.readouterr().err)
    assert "are in account 999999999999, but the AWS credentials are for account 123456789012" in line
    assert _state(local) == before


def test_an_unknown_stack_is_named_as_such(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        backfill.main(["prod2"])

    assert stopped.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.endswith("unknown stack 'prod2' (stacks: dev1, preprod1, prod1, qa1)")


def test_a_stopped_local_aws_is_one_line_naming_the_fix(capsys: pytest.CaptureFixture[str]):
    with local_aws("dev1") as aws:
        aws.server.stop()
        status = backfill.main(["dev1", *NO_LEAD])
        endpoint = aws.endpoint_url

    assert status == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (
        f"backfill: the local AWS at {endpoint} does not answer: start it "
        "(make demo ARGS=--keep) and use the endpoint it prints"
    )


# -- through make: the command's own exit status, and its own one line --------------------------------------------
def _make(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *words],
        cwd=ROOT,
        env=outside_project_venv(dict(os.environ)),  # inside local_aws: its endpoint, credentials and outputs file
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_make_backfill_exits_1_when_the_backfill_is_incomplete(local: LocalAws, capsys: pytest.CaptureFixture[str]):
    assert backfill.main(["dev1", *NO_LEAD]) == 0
    [export_line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export arn:")]
    arn = export_line.split()[1].rstrip(":")
    s3, bucket = local.client("s3"), local.outputs.bucket_name
    table_arn = local.client("dynamodb").describe_table(TableName=local.outputs.table_name)["Table"]["TableArn"]
    export = backfill.find_export(local.client("dynamodb"), table_arn, arn)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=export["S3Prefix"])["Contents"]
    [data_key] = [item["Key"] for item in listed if "/data/" in item["Key"]]
    # AWS writes the export's manifests beside its data files (moto writes none): they stay when a data file is lost
    s3.put_object(Bucket=bucket, Key=data_key.split("/data/", 1)[0] + "/manifest-summary.json", Body=b"{}")
    s3.delete_object(Bucket=bucket, Key=data_key)  # lost between the export and the backfill

    done = _make("backfill", "STACK=dev1", f"ARGS=--export-arn {arn}")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "backfill: INCOMPLETE: the counts do not add up" in done.stdout
    assert "a data file is missing" in done.stderr
    assert "make: ***" not in done.stderr


def test_make_backfill_of_an_unknown_stack_says_so(local: LocalAws):
    done = _make("backfill", "STACK=prod2")

    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "python -m ops.backfill: error: argument stack: unknown stack 'prod2' (stacks: dev1, preprod1, prod1, qa1)"
    )
    assert "cannot read stack outputs" not in done.stderr


def test_make_replay_without_args_names_what_to_give(local: LocalAws):
    done = _make("replay", "STACK=dev1")

    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "invalid choice" not in line
    assert re.fullmatch(
        r'Makefile:\d+: \*\*\* ARGS must start with what to replay: make replay STACK=dev1 ARGS="quarantine '
        r'--dry-run" \(quarantine or failures, then their options\)\.  Stop\.',
        line,
    ), line
