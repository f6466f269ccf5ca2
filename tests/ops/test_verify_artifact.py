"""The artifact check before e2e and smoke: the live alias's CodeSha256 against the built function.zip (moto)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import boto3
import pytest

from ops import verify_artifact
from ops.verify_artifact import code_sha256
from tests.ops.conftest import FUNCTION, REGION, lambda_zip


def _other_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        entry = zipfile.ZipInfo("pipeline/handler.py", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(entry, "def handler(event, context):\n    return {'other': True}\n")
    return buffer.getvalue()


@pytest.fixture
def two_builds(published_function: list[str], tmp_path: Path) -> dict[str, Path]:
    """Versions 1-3 run lambda_zip(); version 4 runs another build, and the alias points at version 4."""
    client = boto3.client("lambda", region_name=REGION)
    client.update_function_code(FunctionName=FUNCTION, ZipFile=_other_zip())
    newest = client.publish_version(FunctionName=FUNCTION, Description="build 4")["Version"]
    assert newest == "4"
    client.update_alias(FunctionName=FUNCTION, Name="live", FunctionVersion=newest)
    first, second = tmp_path / "first" / "function.zip", tmp_path / "second" / "function.zip"
    for path, body in ((first, lambda_zip()), (second, _other_zip())):
        path.parent.mkdir()
        path.write_bytes(body)
    return {"first": first, "second": second}


def test_code_sha256_is_base64_of_the_sha256_like_lambda(tmp_path: Path) -> None:
    path = tmp_path / "function.zip"
    path.write_bytes(b"abc")

    assert code_sha256(path) == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    assert code_sha256(path) == base64.b64encode(hashlib.sha256(b"abc").digest()).decode()


def test_passes_when_the_alias_runs_this_build(two_builds, outputs_file, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(outputs_file))

    status = verify_artifact.main(["qa1", "--artifact", str(two_builds["second"])])

    out = capsys.readouterr().out
    assert status == 0, out
    assert out.startswith(f"OK arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}:live -> version 4 runs ")
    assert code_sha256(two_builds["second"]) in out


def test_fails_when_another_build_is_live(two_builds, outputs_file, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(outputs_file))

    status = verify_artifact.main(["qa1", "--artifact", str(two_builds["first"])])

    out = capsys.readouterr().out
    assert status == 1
    assert f"MISMATCH arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}:live -> version 4" in out
    assert code_sha256(two_builds["second"]) in out
    assert code_sha256(two_builds["first"]) in out


def test_reads_the_aliased_version_not_latest(two_builds, outputs_file, monkeypatch, capsys) -> None:
    """After a rollback the alias runs version 1 while $LATEST is the newer build: the alias is what counts."""
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(outputs_file))
    boto3.client("lambda", region_name=REGION).update_alias(FunctionName=FUNCTION, Name="live", FunctionVersion="1")

    assert verify_artifact.main(["qa1", "--artifact", str(two_builds["second"])]) == 1
    assert "-> version 1 runs CodeSha256" in capsys.readouterr().out
    assert verify_artifact.main(["qa1", "--artifact", str(two_builds["first"])]) == 0


def test_missing_artifact_outputs_or_alias_exit_2(aws, outputs_file, tmp_path, monkeypatch, capsys) -> None:
    package = tmp_path / "function.zip"
    package.write_bytes(lambda_zip())

    assert verify_artifact.main(["qa1", "--artifact", str(tmp_path / "missing.zip")]) == 2
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(tmp_path / "no-outputs.json"))
    assert verify_artifact.main(["qa1", "--artifact", str(package)]) == 2
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(outputs_file))
    assert verify_artifact.main(["qa1", "--artifact", str(package)]) == 2  # no function in this account

    errors = capsys.readouterr().err.splitlines()
    assert errors[0] == f"verify_artifact: no artifact at {tmp_path / 'missing.zip'} (the build job's dist/)"
    assert errors[1].startswith("verify_artifact: cannot read stack outputs of 'qa1'")
    assert errors[2].startswith("verify_artifact: cannot read the alias of stack 'qa1'")
    assert len(errors) == 3
