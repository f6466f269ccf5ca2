"""Roll the function back: point the ``live`` alias (what the stream mapping invokes) at an earlier published version.

    python -m ops.rollback qa1                 # list published versions and where the alias points
    python -m ops.rollback qa1 --to 41         # point the alias at version 41 (prints before and after)
    python -m ops.rollback qa1 --to 41 --dry-run   # what it would change, changing nothing

This is the fast lever (seconds, no deploy). The stack still declares the newer version, so the next
``pulumi up`` points the alias forward again: follow with a revert commit and a re-deploy (docs/runbook.md).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ops.cli import CommandParser, stack_file_problem, stack_name, unreachable
from ops.outputs import OutputsError, bind_stack

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

__all__ = [
    "AliasChange",
    "PublishedVersion",
    "RollbackError",
    "alias_target",
    "planned_change",
    "point_alias",
    "published_versions",
]

LATEST = "$LATEST"


class RollbackError(RuntimeError):
    """The requested rollback is not possible (unknown version, $LATEST, alias missing)."""


@dataclass(frozen=True)
class PublishedVersion:
    """One published (immutable) version of the function."""

    version: str
    last_modified: str
    code_sha256: str
    description: str


@dataclass(frozen=True)
class AliasChange:
    """Where the alias pointed before and after a rollback."""

    alias: str
    before: str
    after: str


def published_versions(client: LambdaClient, function_name: str) -> list[PublishedVersion]:
    """The function's published versions, oldest first ($LATEST is not a published version)."""
    versions: list[PublishedVersion] = []
    for page in client.get_paginator("list_versions_by_function").paginate(FunctionName=function_name):
        for item in page["Versions"]:
            if item["Version"] == LATEST:
                continue
            versions.append(
                PublishedVersion(
                    version=item["Version"],
                    last_modified=item.get("LastModified", ""),
                    code_sha256=item.get("CodeSha256", ""),
                    description=item.get("Description", ""),
                )
            )
    return sorted(versions, key=lambda version: int(version.version))


def alias_target(client: LambdaClient, function_name: str, alias: str) -> str:
    """The version the alias points at."""
    try:
        return client.get_alias(FunctionName=function_name, Name=alias)["FunctionVersion"]
    except client.exceptions.ResourceNotFoundException:
        raise RollbackError(f"alias {alias!r} of {function_name} does not exist") from None


def planned_change(client: LambdaClient, function_name: str, alias: str, version: str) -> AliasChange:
    """What ``point_alias`` would do, checked the same way, without changing anything."""
    if version.upper() == LATEST:
        raise RollbackError("refusing $LATEST: the alias must point at a published, immutable version")
    known = [item.version for item in published_versions(client, function_name)]
    if version not in known:
        listed = ", ".join(known) or "none"
        raise RollbackError(f"version {version!r} of {function_name} is not published (published: {listed})")
    return AliasChange(alias=alias, before=alias_target(client, function_name, alias), after=version)


def point_alias(client: LambdaClient, function_name: str, alias: str, version: str) -> AliasChange:
    """Point ``alias`` at published ``version`` (all traffic: any weighted routing is removed)."""
    before = planned_change(client, function_name, alias, version).before
    if before != version:
        client.update_alias(
            FunctionName=function_name,
            Name=alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
    after = alias_target(client, function_name, alias)
    return AliasChange(alias=alias, before=before, after=after)


def _print_versions(versions: list[PublishedVersion], current: str, alias: str) -> None:
    print(f"{'version':>8}  {'last modified':<30}  {'code sha256':<46}  description")
    for item in versions:
        marker = f"  <- {alias}" if item.version == current else ""
        print(f"{item.version:>8}  {item.last_modified:<30}  {item.code_sha256:<46}  {item.description}{marker}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(prog="python -m ops.rollback", description=__doc__.splitlines()[0])
    parser.add_argument("stack", type=stack_name, help="stack to act on (dev1, qa1, preprod1, prod1)")
    parser.add_argument("--to", dest="version", help="published version to point the alias at")
    parser.add_argument("--dry-run", action="store_true", help="show what --to would change; change nothing")
    parser.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or pulumi)")
    parser.add_argument("--debug", action="store_true", help="a traceback with an error")
    args = parser.parse_args(argv)
    version = args.version
    if version is not None and version.upper() != LATEST and not (version.isdigit() and int(version) >= 1):
        parser.error(f"--to {args.version!r}: expected a published version number (1, 2, ...)")
    try:
        problem = stack_file_problem(args.stack)  # a broken stack file is found before the alias moves
        if problem is not None:
            raise RollbackError(problem)
        bound = bind_stack(args.stack, outputs_file=args.outputs_file)
        outputs = bound.outputs
        client = boto3.client("lambda", region_name=outputs.region)
        function, alias = outputs.function_name, outputs.function_alias_name
        if args.version is None:
            current = alias_target(client, function, alias)
            _print_versions(published_versions(client, function), current, alias)
            print(f"\n{function}:{alias} -> version {current}")
            print(f"roll back with: python -m ops.rollback {args.stack} --to <version>")
            return 0
        print(bound.describe(f"alias {function}:{alias} -> version {args.version}"))
        if args.dry_run:
            change = planned_change(client, function, alias, args.version)
        else:
            change = point_alias(client, function, alias, args.version)
    except (OutputsError, RollbackError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"rollback: {error}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        down = unreachable(error, os.environ.get("AWS_ENDPOINT_URL"))
        print(f"rollback: {down or f'AWS call failed: {error}'}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"dry run: would point {function}:{change.alias} from version {change.before} to {change.after}")
        return 0
    print(f"before: {function}:{change.alias} -> version {change.before}")
    print(f"after:  {function}:{change.alias} -> version {change.after}")
    if change.before == change.after:
        print("nothing changed: the alias already pointed there")
    else:
        print("next: revert the faulty commit on main and let the pipeline re-deploy (pulumi up re-points the alias)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
