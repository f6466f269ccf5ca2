"""Stack outputs are read from a file or the Pulumi CLI, a missing key is named, and outputs are bound to a stack."""

import json

import boto3
import pytest

from ops.outputs import OUTPUTS_FILE_VARIABLE, OutputsError, StackOutputs, bind_stack, load_outputs
from tests.ops.conftest import outputs_values


def _values(stack: str = "qa1") -> dict[str, str]:
    return {key: f"value-of-{key}" for key in StackOutputs.output_keys()} | {"stack_name": stack}


def test_reads_outputs_file_named_by_environment(tmp_path, monkeypatch):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(_values() | {"something_else": 1}))
    monkeypatch.setenv(OUTPUTS_FILE_VARIABLE, str(path))

    outputs = load_outputs("qa1")

    assert outputs.athena_workgroup_name == "value-of-athena_workgroup_name"
    assert outputs.as_dict() == _values()


def test_missing_key_is_named(tmp_path):
    values = _values("dev1")
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


def test_outputs_of_another_stack_are_refused_naming_both(tmp_path, monkeypatch):
    """A stale export of preprod1's outputs must not act on prod1 (same account, working credentials)."""
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(_values("preprod1")))
    monkeypatch.setenv(OUTPUTS_FILE_VARIABLE, str(path))

    with pytest.raises(OutputsError, match=r"belong to stack 'preprod1', not 'prod1'"):
        load_outputs("prod1")


def test_outputs_that_do_not_name_their_stack_are_refused(tmp_path):
    values = _values()
    del values["stack_name"]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(values))

    with pytest.raises(OutputsError, match=r"do not say which stack they belong to"):
        load_outputs("qa1", outputs_file=str(path))


def test_outputs_naming_two_accounts_are_refused(tmp_path):
    values = outputs_values(ci_iam_role_arn="arn:aws:iam::999999999999:role/prd3292-qa1-ci")
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(values))

    with pytest.raises(OutputsError, match=r"more than one account .*999999999999.*123456789012"):
        load_outputs("qa1", outputs_file=str(path))


def test_bind_stack_takes_the_account_from_the_arns(aws, outputs_file):
    bound = bind_stack("qa1", outputs_file=str(outputs_file))

    assert (bound.stack, bound.account) == ("qa1", "123456789012")
    assert bound.describe("alias live") == "account 123456789012, stack qa1, region us-east-1: alias live"


def test_bind_stack_refuses_credentials_of_another_account(aws, tmp_path):
    values = outputs_values()
    values = {key: value.replace("123456789012", "210987654321") for key, value in values.items()}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(values))
    assert boto3.client("sts").get_caller_identity()["Account"] == "123456789012"

    with pytest.raises(OutputsError, match=r"in account 210987654321, but the AWS credentials are for account 1234"):
        bind_stack("qa1", outputs_file=str(path))
