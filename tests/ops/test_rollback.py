"""Rollback points the live alias at an earlier published version, and refuses what it cannot honour."""

from __future__ import annotations

import boto3
import pytest

from ops import rollback
from tests.ops.conftest import FUNCTION, REGION


def _alias() -> str:
    return boto3.client("lambda", region_name=REGION).get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"]


def test_lists_published_versions_and_the_alias_target(published_function, outputs_file, capsys):
    assert rollback.main(["qa1", "--outputs-file", str(outputs_file)]) == 0

    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.strip() and line.split()[0].isdigit()]
    assert listed == published_function
    assert f"{published_function[-1]}" in out.split("<- live")[0].splitlines()[-1]
    assert f"{FUNCTION}:live -> version {published_function[-1]}" in out


def test_points_the_alias_at_an_earlier_version_and_prints_before_and_after(published_function, outputs_file, capsys):
    newest, earlier = published_function[-1], published_function[0]

    assert rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", earlier]) == 0

    assert _alias() == earlier
    out = capsys.readouterr().out
    assert f"before: {FUNCTION}:live -> version {newest}" in out
    assert f"after:  {FUNCTION}:live -> version {earlier}" in out


@pytest.mark.parametrize("version", ["$LATEST", "$latest"])
def test_refuses_latest(published_function, outputs_file, capsys, version):
    assert rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", version]) == 2

    assert "refusing $LATEST" in capsys.readouterr().err
    assert _alias() == published_function[-1]


def test_refuses_a_version_that_was_never_published(published_function, outputs_file, capsys):
    assert rollback.main(["qa1", "--outputs-file", str(outputs_file), "--to", "99"]) == 2

    err = capsys.readouterr().err
    assert "version '99'" in err
    assert f"published: {', '.join(published_function)}" in err
    assert _alias() == published_function[-1]


def test_pointing_at_the_current_version_changes_nothing(published_function):
    client = boto3.client("lambda", region_name=REGION)

    change = rollback.point_alias(client, FUNCTION, "live", published_function[-1])

    assert change == rollback.AliasChange("live", published_function[-1], published_function[-1])


def test_missing_alias_is_named(published_function):
    client = boto3.client("lambda", region_name=REGION)

    with pytest.raises(rollback.RollbackError, match="alias 'blue'"):
        rollback.point_alias(client, FUNCTION, "blue", published_function[0])
