"""TEST_ENV picks the target; a named target that cannot be reached fails with what is missing, never skips."""

from __future__ import annotations

import json

import pytest

from ops.outputs import StackOutputs
from sandbox.targets import TargetUnavailableError, deployed_target, selected_environment


@pytest.mark.parametrize(("value", "expected"), [("", "local"), ("local", "local"), ("qa1", "qa1"), ("dev1", "dev1")])
def test_test_env_selects_the_target(monkeypatch: pytest.MonkeyPatch, value: str, expected: str):
    monkeypatch.setenv("TEST_ENV", value)
    assert selected_environment() == expected


@pytest.mark.parametrize("value", ["prod1", "staging"])
def test_other_targets_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv("TEST_ENV", value)
    with pytest.raises(TargetUnavailableError, match=rf"TEST_ENV='{value}' is not a test target.*dev1, qa1, preprod1"):
        selected_environment()


def test_missing_outputs_name_the_stack_and_the_remedy(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(tmp_path / "absent.json"))
    with pytest.raises(
        TargetUnavailableError, match=r"TEST_ENV=qa1: cannot read the stack's outputs.*STACK_OUTPUTS_FILE"
    ):
        deployed_target("qa1")


def test_unreachable_aws_names_the_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path):
    outputs = {key: f"value-{key}" for key in StackOutputs.output_keys()}
    outputs["function_alias_arn"] = "arn:aws:lambda:us-east-1:111111111111:function:f:live"
    outputs["region"] = "us-east-1"
    outputs["stack_name"] = "qa1"
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    monkeypatch.setenv("STACK_OUTPUTS_FILE", str(path))
    # A closed port on the loopback: no request leaves the machine.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(
        TargetUnavailableError, match=r"TEST_ENV=qa1: AWS is not reachable with the current credentials"
    ):
        deployed_target("qa1")
