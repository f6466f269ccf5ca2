"""A deployed stack's outputs: the one way ops commands and the test suites find what to talk to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["OUTPUTS_FILE_VARIABLE", "OutputsError", "StackOutputs", "load_outputs"]

OUTPUTS_FILE_VARIABLE = "STACK_OUTPUTS_FILE"


class OutputsError(RuntimeError):
    """The stack's outputs could not be read, or lack a key."""


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
    compaction_function_name: str
    compaction_log_group_name: str

    @classmethod
    def output_keys(cls) -> tuple[str, ...]:
        """The output keys, in declaration order."""
        return tuple(field.name for field in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str) -> StackOutputs:
        """Build from a mapping of outputs, naming every missing key and where it was looked for."""
        missing = [key for key in cls.output_keys() if values.get(key) in (None, "")]
        if missing:
            raise OutputsError(f"{source}: missing stack output(s) {', '.join(missing)}")
        return cls(**{key: str(values[key]) for key in cls.output_keys()})

    def as_dict(self) -> dict[str, str]:
        """The outputs as a plain mapping, as `pulumi stack output --json` prints them."""
        return {key: getattr(self, key) for key in self.output_keys()}


def load_outputs(stack: str, *, outputs_file: str | None = None, cwd: Path | None = None) -> StackOutputs:
    """Read a stack's outputs from a JSON file (argument or $STACK_OUTPUTS_FILE) or from the Pulumi CLI."""
    path = outputs_file or os.environ.get(OUTPUTS_FILE_VARIABLE)
    if path:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise OutputsError(f"cannot read stack outputs of {stack!r} from {path}: {error}") from error
        return StackOutputs.from_mapping(values, source=path)
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
    return StackOutputs.from_mapping(json.loads(result.stdout), source=f"pulumi stack {stack}")
