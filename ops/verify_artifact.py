"""Check that a stack's live alias runs this pipeline's build: CodeSha256 of the alias's version vs dist/function.zip.

    python -m ops.verify_artifact qa1                          # dist/function.zip against qa1's live alias
    python -m ops.verify_artifact qa1 --artifact build/function.zip

Another pipeline may deploy the same stack between this pipeline's deploy and its tests; tests that pass then
would promote an artifact they never ran. The e2e and smoke jobs run this first and stop when the alias runs
anything else. Lambda reports ``CodeSha256`` as base64 of the SHA-256 of the deployment package.
Exit status 0 when they match, 1 when they differ, 2 when the artifact or the stack cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ops.outputs import OutputsError, StackOutputs, load_outputs

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

__all__ = ["DeployedCode", "code_sha256", "deployed_code", "main"]

DEFAULT_ARTIFACT = Path("dist/function.zip")


@dataclass(frozen=True)
class DeployedCode:
    """What the live alias runs: its version and that version's CodeSha256."""

    alias_arn: str
    version: str
    code_sha256: str


def code_sha256(path: Path) -> str:
    """Lambda's CodeSha256 of a deployment package: base64(sha256(file bytes))."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii")


def deployed_code(client: LambdaClient, outputs: StackOutputs) -> DeployedCode:
    """The version the stack's alias points at, and that version's code hash (not $LATEST's)."""
    alias = client.get_alias(FunctionName=outputs.function_name, Name=outputs.function_alias_name)
    version = alias["FunctionVersion"]
    configuration = client.get_function_configuration(FunctionName=outputs.function_name, Qualifier=version)
    return DeployedCode(alias["AliasArn"], version, configuration["CodeSha256"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.verify_artifact", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack whose live alias to check (outputs from $STACK_OUTPUTS_FILE or Pulumi)")
    parser.add_argument(
        "--artifact", type=Path, default=DEFAULT_ARTIFACT, help=f"the built package (default {DEFAULT_ARTIFACT})"
    )
    args = parser.parse_args(argv)
    if not args.artifact.is_file():
        print(f"verify_artifact: no artifact at {args.artifact} (the build job's dist/)", file=sys.stderr)
        return 2
    expected = code_sha256(args.artifact)
    try:
        outputs = load_outputs(args.stack)
        client = boto3.client("lambda", region_name=outputs.region)
        deployed = deployed_code(client, outputs)
    except OutputsError as error:
        print(f"verify_artifact: {error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:
        print(f"verify_artifact: cannot read the alias of stack {args.stack!r}: {error}", file=sys.stderr)
        return 2
    if deployed.code_sha256 != expected:
        print(
            f"MISMATCH {deployed.alias_arn} -> version {deployed.version} runs CodeSha256 {deployed.code_sha256}, "
            f"but {args.artifact} of this pipeline is {expected}: another deploy reached {args.stack} since this "
            "pipeline's; re-run this pipeline's deploy job, then these tests"
        )
        return 1
    print(f"OK {deployed.alias_arn} -> version {deployed.version} runs {args.artifact} (CodeSha256 {expected})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
