"""Stack outputs are read from a file or the Pulumi CLI, and a missing key is named."""

import json

import pytest

from ops.outputs import OUTPUTS_FILE_VARIABLE, OutputsError, StackOutputs, load_outputs


def _values() -> dict[str, str]:
    return {key: f"value-of-{key}" for key in StackOutputs.output_keys()}


def test_reads_outputs_file_named_by_environment(tmp_path, monkeypatch):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(_values() | {"something_else": 1}))
    monkeypatch.setenv(OUTPUTS_FILE_VARIABLE, str(path))

    outputs = load_outputs("qa1")

    assert outputs.athena_workgroup_name == "value-of-athena_workgroup_name"
    assert outputs.as_dict() == _values()


def test_missing_key_is_named(tmp_path):
    values = _values()
    del values["ci_iam_role_arn"]
    del values["stream_arn"]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(values))

    with pytest.raises(OutputsError, match=r"missing stack output\(s\) ci_iam_role_arn, stream_arn"):
        load_outputs("dev1", outputs_file=str(path))


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(OutputsError, match=r"cannot read stack outputs of 'dev1' from .*nope\.json"):
        load_outputs("dev1", outputs_file=str(tmp_path / "nope.json"))


def test_no_cli_and_no_file_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(OUTPUTS_FILE_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(OutputsError, match=r"no Pulumi CLI on PATH and STACK_OUTPUTS_FILE is not set"):
        load_outputs("preprod1")
