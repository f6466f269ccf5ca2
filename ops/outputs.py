"""A deployed stack's outputs: the one way ops commands and the test suites find what to talk to.

Outputs are bound to one stack: ``load_outputs(stack)`` refuses a file whose ``stack_name`` output names another
stack (a stale ``STACK_OUTPUTS_FILE``), and ``bind_stack`` also refuses credentials of an account other than the
one the outputs' ARNs name (preprod1 and prod1 share an account, so the stack name is checked first).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "OUTPUTS_FILE_VARIABLE",
    "BoundStack",
    "OutputsError",
    "StackOutputs",
    "bind_stack",
    "caller_account",
    "load_outputs",
]

OUTPUTS_FILE_VARIABLE = "STACK_OUTPUTS_FILE"
_ARN_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")
# Outputs some stacks export and others do not yet (the on-failure bucket comes with the lake-layout change).
_ARN_OUTPUTS = ("ci_iam_role_arn", "stream_arn", "function_alias_arn", "backfill_state_machine_arn")


class OutputsError(RuntimeError):
    """The stack's outputs could not be read, lack a key, or belong to another stack or account."""


@dataclass(frozen=True)
class StackOutputs:
    """The outputs every stack exports (the replaced system's three first)."""

    athena_database_name: str
    athena_workgroup_name: str
    ci_iam_role_arn: str
    stream_arn: str
    stream_name: str
    table_name: str
    function_name: str
    function_alias_name: str
    function_alias_arn: str
    bucket_name: str
    events_prefix: str
    quarantine_prefix: str
    athena_results_prefix: str
    failure_bucket_name: str
    glue_table_name: str
    log_group_name: str
    iterator_age_alarm_name: str
    region: str
    function_alias_version: str  # the version the live alias runs: what promotion compares
    function_code_sha256: str  # Lambda's CodeSha256 of that code: base64 SHA-256 of the deployed function.zip
    athena_results_bucket_name: str
    curator_function_name: str
    curator_log_group_name: str
    backfill_state_machine_arn: str  # the Step Functions state machine make backfill starts
    stack_name: str

    @classmethod
    def output_keys(cls) -> tuple[str, ...]:
        """The output keys every stack exports, in declaration order."""
        return tuple(item.name for item in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str) -> StackOutputs:
        """Build from a mapping of outputs, naming every missing key and where it was looked for."""
        missing = [key for key in cls.output_keys() if values.get(key) in (None, "")]
        if missing:
            raise OutputsError(f"{source}: missing stack output(s) {', '.join(missing)}")
        outputs = cls(**{key: str(values[key]) for key in cls.output_keys()})
        accounts = outputs.arn_accounts()
        if len(set(accounts.values())) > 1:
            named = ", ".join(f"{key} in {account}" for key, account in accounts.items())
            raise OutputsError(f"{source}: the outputs name more than one account ({named})")
        return outputs

    def arn_accounts(self) -> dict[str, str]:
        """Output -> the account id its ARN names (outputs that are not ARNs are left out)."""
        found = {key: _ARN_ACCOUNT.match(getattr(self, key)) for key in _ARN_OUTPUTS}
        return {key: match.group(1) for key, match in found.items() if match}

    @property
    def account_id(self) -> str | None:
        """The AWS account the stack's resources live in (from the ARNs in the outputs)."""
        accounts = list(self.arn_accounts().values())
        return accounts[0] if accounts else None

    def as_dict(self) -> dict[str, str]:
        """The outputs as a plain mapping, as `pulumi stack output --json` prints them."""
        return {key: getattr(self, key) for key in self.output_keys()}


def _read(stack: str, outputs_file: str | None, cwd: Path | None) -> tuple[dict[str, Any], str]:
    path = outputs_file or os.environ.get(OUTPUTS_FILE_VARIABLE)
    if path:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise OutputsError(f"cannot read stack outputs of {stack!r} from {path}: {error}") from error
        if not isinstance(values, dict):
            raise OutputsError(f"cannot read stack outputs of {stack!r} from {path}: not a JSON object")
        return values, str(path)
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise OutputsError(
            f"cannot read stack outputs of {stack!r}: no Pulumi CLI on PATH and {OUTPUTS_FILE_VARIABLE} is not set"
        )
    result = subprocess.run(
        [pulumi, "stack", "output", "--json", "--stack", stack],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )
    if result.returncode != 0:
        raise OutputsError(f"pulumi stack output --stack {stack} failed: {result.stderr.strip() or result.stdout}")
    return json.loads(result.stdout), f"pulumi stack {stack}"


def load_outputs(stack: str, *, outputs_file: str | None = None, cwd: Path | None = None) -> StackOutputs:
    """Read ``stack``'s outputs from a JSON file (argument or $STACK_OUTPUTS_FILE) or from the Pulumi CLI.

    Refuses outputs that say they belong to another stack, or that do not say which stack they belong to.
    """
    values, source = _read(stack, outputs_file, cwd)
    owner = values.get("stack_name")
    if owner in (None, ""):
        raise OutputsError(
            f"{source}: the outputs do not say which stack they belong to (no stack_name output); "
            f"refusing to act on {stack!r} with them (re-export them after a deploy of this version)"
        )
    if str(owner) != stack:
        raise OutputsError(f"{source}: the outputs belong to stack {owner!r}, not {stack!r}; refusing to act")
    return StackOutputs.from_mapping(values, source=source)


def caller_account(region: str) -> str | None:
    """The account of the current AWS credentials (``sts get-caller-identity``), or None without credentials."""
    import boto3  # noqa: PLC0415 - only the commands that talk to AWS need it
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # noqa: PLC0415

    from ops.cli import unreachable  # noqa: PLC0415

    try:
        return str(boto3.client("sts", region_name=region).get_caller_identity()["Account"])
    except NoCredentialsError:
        return None
    except BotoCoreError as error:
        down = unreachable(error, os.environ.get("AWS_ENDPOINT_URL"))
        if down is None:
            raise OutputsError(f"cannot tell which account the AWS credentials belong to: {error}") from error
        raise OutputsError(down) from error
    except ClientError as error:
        raise OutputsError(f"cannot tell which account the AWS credentials belong to: {error}") from error


@dataclass(frozen=True)
class BoundStack:
    """A stack's outputs, checked against the stack asked for and the account of the credentials."""

    stack: str
    outputs: StackOutputs
    account: str | None  # None: the outputs name no account (checked as far as they allow)

    def describe(self, *resources: str) -> str:
        """One line for a mutating command to print before it acts: account, stack and what it touches."""
        touched = "; ".join(resources)
        return f"account {self.account or 'unknown'}, stack {self.stack}, region {self.outputs.region}: {touched}"


def bind_stack(
    stack: str, *, outputs_file: str | None = None, check_account: bool = True, cwd: Path | None = None
) -> BoundStack:
    """Load ``stack``'s outputs and, when credentials are available, refuse those of another account."""
    outputs = load_outputs(stack, outputs_file=outputs_file, cwd=cwd)
    account = outputs.account_id
    if check_account and account is not None:
        caller = caller_account(outputs.region)
        if caller is not None and caller != account:
            raise OutputsError(
                f"the outputs of stack {stack!r} are in account {account}, but the AWS credentials are for "
                f"account {caller}; refusing to act"
            )
    return BoundStack(stack, outputs, account)
