"""Every command bound to one stack: outputs of another stack or account are refused, naming both, before any AWS
call that changes something; mutating commands say where they act first and have a dry run."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from ops import capacity, replay, rollback, smoke
from tests.ops.conftest import FUNCTION, REGION, outputs_values

OTHER_ACCOUNT = "210987654321"


def _file(tmp_path: Path, **overrides: str) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs_values(**overrides)))
    return path


def _other_account(tmp_path: Path) -> Path:
    values = {key: value.replace("123456789012", OTHER_ACCOUNT) for key, value in outputs_values().items()}
    path = tmp_path / "outputs-other-account.json"
    path.write_text(json.dumps(values))
    return path


def _alias() -> str:
    return boto3.client("lambda", region_name=REGION).get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"]


COMMANDS = {
    "rollback": lambda stack, path: rollback.main([stack, "--outputs-file", str(path), "--to", "1"]),
    "smoke": lambda stack, path: smoke.main([stack, "--outputs-file", str(path)]),
    "capacity": lambda stack, path: capacity.main([stack, "--records-per-second", "5000", "--outputs-file", str(path)]),
    "replay": lambda stack, path: replay.main(["quarantine", stack, "--outputs-file", str(path), "--dry-run"]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_outputs_of_another_stack_are_refused_naming_both(published_function, tmp_path, capsys, command):
    """qa1's outputs exported, prod1 asked for: refused, and qa1's alias is untouched."""
    path = _file(tmp_path)  # stack_name qa1

    assert COMMANDS[command]("prod1", path) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "belong to stack 'qa1', not 'prod1'" in err
    assert _alias() == published_function[-1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_outputs_of_another_account_are_refused_naming_both(published_function, tmp_path, capsys, command):
    path = _other_account(tmp_path)

    assert COMMANDS[command]("qa1", path) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"in account {OTHER_ACCOUNT}, but the AWS credentials are for account 123456789012" in err
    assert _alias() == published_function[-1]


def test_rollback_prints_account_stack_and_alias_before_acting(published_function, outputs_file, capsys):
    earlier = published_function[0]

    assert rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", earlier]) == 0

    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"account 123456789012, stack qa1, region us-east-1: alias {FUNCTION}:live -> version {earlier}"
    assert _alias() == earlier


def test_rollback_dry_run_changes_nothing(published_function, outputs_file, capsys):
    newest, earlier = published_function[-1], published_function[0]

    assert rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", earlier, "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert f"dry run: would point {FUNCTION}:live from version {newest} to {earlier}" in out
    assert _alias() == newest


def test_rollback_dry_run_still_refuses_an_unpublished_version(published_function, outputs_file, capsys):
    assert rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", "99", "--dry-run"]) == 2
    assert "version '99'" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["0", "-3", "v41", "latest-1"])
def test_rollback_refuses_a_version_that_is_not_a_number(published_function, outputs_file, capsys, version):
    with pytest.raises(SystemExit) as exit_info:
        rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", version])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"python -m ops.rollback: error: --to {version!r}: expected a published version number (1, 2, ...)\n"
    assert _alias() == published_function[-1]


@pytest.mark.parametrize("command", ["rollback", "smoke", "capacity"])
def test_an_unknown_stack_is_one_line(command, capsys):
    argv = {"rollback": ["qa2"], "smoke": ["qa2"], "capacity": ["qa2", "--on-demand", "--records-per-second", "1"]}
    main = {"rollback": rollback.main, "smoke": smoke.main, "capacity": capacity.main}[command]

    with pytest.raises(SystemExit) as exit_info:
        main(argv[command])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"python -m ops.{command}: error: argument stack: unknown stack 'qa2' (stacks: dev1, preprod1, prod1, qa1)\n"
    )
