"""Golden plans: the program's declared resources per stack must match tests/infra/golden/<stack>.txt.

After an intended infrastructure change, regenerate and review the diff:
    python -m ops.plan all --write-golden      (or: make plan STACK=all ARGS=--write-golden)
"""

from __future__ import annotations

import pytest

from ops.plan import _diff, golden_path, main, render
from ops.program import run_program, stack_config
from tests.infra.conftest import STACKS, program_run

REGENERATE = "python -m ops.plan all --write-golden"


@pytest.mark.parametrize("stack", STACKS)
def test_program_matches_its_golden_plan(stack: str) -> None:
    assert golden_path(stack).exists(), f"no golden plan for {stack}: run {REGENERATE}"
    expected = golden_path(stack).read_text(encoding="utf-8")
    actual = render(program_run(stack))
    assert actual == expected, (
        f"the {stack} plan changed; if intended, run `{REGENERATE}` and review the diff:\n"
        + _diff(stack, expected, actual)
    )


def test_a_config_change_shows_in_the_plan_diff() -> None:
    config = {**stack_config("qa1"), "dmd-pipeline:batchSize": "250"}
    changed = render(run_program("qa1", config=config))
    diff = _diff("qa1", golden_path("qa1").read_text(encoding="utf-8"), changed)
    assert "-      batchSize: 10000" in diff
    assert "+      batchSize: 250" in diff


def test_plan_command_prints_every_resource(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prod1"]) == 0
    printed = capsys.readouterr().out
    run = program_run("prod1")
    custom = [resource for resource in run.declared if resource.custom]
    assert len(custom) >= 25
    for resource in custom:
        assert f"{resource.type}  {resource.name}" in printed
    assert "aws:kinesis/stream:Stream  stream-stream" in printed
    assert "outputs:" in printed


def test_plan_check_passes_against_the_golden_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev1", "--check"]) == 0
    assert "dev1: plan matches" in capsys.readouterr().out
