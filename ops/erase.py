"""File an erasure request for fans of a stack, say what it would remove, or list the stack's requests.

    python -m ops.erase qa1 --fans fans.txt             # file the request; the curator carries it out next run
    python -m ops.erase qa1 --fans fans.txt --dry-run   # rows of those fans per place, read only; nothing changes
    python -m ops.erase qa1 --status                    # pending and completed requests, and the overdue ones

The fans file holds one fan id per line (blank lines and ``#`` comments skipped). Everything is checked before
anything is read or written: the stack (a stack file that validates), the fans file, the stack's outputs and the
account of the credentials (``ops.outputs.bind_stack``, as every ops command). Filing writes one object,
``erasure/requests/<id>.json`` in the stack's data bucket, never over an existing one (``If-None-Match: *``); the
curator function, the lake's only writer, carries out every pending request at the start of its next run (``make
compact STACK=<stack>`` runs it now), writes the audit record and then deletes the request.

The command acts as the stack's CI role, as the other ops commands do (in CI its job's credentials; on the local
AWS, ``AWS_ENDPOINT_URL`` on 127.0.0.1, the local CI role assumed with the administrator's key). That role may only
file requests and read audit records under ``erasure/``, plus the reads the dry run needs; only the curator's role
rewrites or deletes anything naming a fan.
Exit status: 0 done; 1 an AWS call failed, or (``--status``) a request is pending past the deadline or its audit
record cannot be read; 2 a mistake
in the arguments, the stack, its stack file or the fans file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ops.cli import CommandParser, stack_file_problem, stack_name, unreachable, user_error
from ops.outputs import BoundStack, OutputsError, StackOutputs, bind_stack

__all__ = ["OPERATOR_ROLE", "main", "parse_args"]

PROG = "erase"
OPERATOR_ROLE = "ci"  # sandbox.roles.ROLES: the role ops commands act as
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def parse_args(argv: Sequence[str] | None = None) -> Any:
    parser = CommandParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("stack", type=stack_name, help="the stack (dev1, qa1, preprod1, prod1)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fans", type=Path, help="file of fan ids to erase, one per line")
    mode.add_argument("--status", action="store_true", help="list the stack's requests and their state")
    parser.add_argument("--dry-run", action="store_true", help="count the fans' rows per place; change nothing")
    parser.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or Pulumi)")
    args = parser.parse_args(argv)
    if args.status and args.dry_run:
        parser.error("--dry-run goes with --fans (--status only reads)")
    return args


def _read_fans(path: Path) -> tuple[str, ...]:
    from curator.erasure_requests import parse_fan_ids  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise _UserError(f"cannot read the fans file {str(path)!r}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _UserError(f"the fans file {str(path)!r} is not UTF-8 text (one fan id per line)") from None
    return parse_fan_ids(text.splitlines(), str(path))


class _UserError(Exception):
    """A mistake of the caller's: one line, exit status 2."""


@dataclass(frozen=True)
class _Acting:
    """The session the command acts with, how to name it, and its credentials for pyiceberg (None: the chain's)."""

    session: Any
    endpoint_url: str | None
    name: str
    credentials: dict[str, str] | None = None


def _acting(stack: str, outputs: StackOutputs) -> _Acting:
    import boto3  # noqa: PLC0415

    from sandbox.command_roles import local_endpoint  # noqa: PLC0415

    region = os.environ.get("AWS_REGION") or outputs.region
    endpoint = local_endpoint()
    if endpoint is None:
        return _Acting(boto3.Session(region_name=region), None, "the caller's credentials (the CI role in CI)")
    from sandbox.command_roles import assume_local_role  # noqa: PLC0415 - the local AWS only

    roles = assume_local_role(OPERATOR_ROLE, stack, outputs)
    return _Acting(
        roles.session(OPERATOR_ROLE),
        endpoint,
        f"the local CI role {roles.role_names[OPERATOR_ROLE]}",
        dict(roles.credentials[OPERATOR_ROLE]),
    )


def _table_rows(acting: _Acting, region: str, database: str) -> Callable[[str, set[str]], int | None]:
    """Rows of the fans in one curated table, by a pyiceberg scan filtered on ``fan_id``; None: no table yet."""
    from curator.catalog import glue_catalog  # noqa: PLC0415 - pyiceberg: only the dry run pays its import

    creds = acting.credentials or {}
    catalog = glue_catalog(
        region,
        endpoint_url=acting.endpoint_url,
        access_key_id=creds.get("AccessKeyId"),
        secret_access_key=creds.get("SecretAccessKey"),
        session_token=creds.get("SessionToken"),
    )

    def rows(table: str, fans: set[str]) -> int | None:
        from pyiceberg.exceptions import NoSuchTableError  # noqa: PLC0415
        from pyiceberg.expressions import In  # noqa: PLC0415

        from curator.commits import predicate  # noqa: PLC0415 - pyiceberg's predicates, typed loosely

        try:
            loaded = catalog.load_table((database, table))
        except NoSuchTableError:
            return None
        scan = loaded.scan(row_filter=predicate(In, "fan_id", sorted(fans)), selected_fields=("fan_id",))
        return int(scan.to_arrow().num_rows)

    return rows


def _dry_run(bound: BoundStack, acting: _Acting, fans: tuple[str, ...]) -> int:
    from components.naming import prefixes  # noqa: PLC0415
    from curator.erasure_requests import PLACES  # noqa: PLC0415
    from ops.erasure_scan import scan_places  # noqa: PLC0415

    outputs = bound.outputs
    settings = _settings(bound.stack)
    counts = scan_places(
        acting.session.client("s3"),
        bucket=outputs.bucket_name,
        events_prefix=outputs.events_prefix,
        snapshot_prefix=prefixes().snapshots,
        quarantine_prefix=outputs.quarantine_prefix,
        failure_bucket=outputs.failure_bucket_name,
        fans=fans,
        table_rows=_table_rows(acting, outputs.region, outputs.athena_database_name),
        tables=PLACES[:2],
        tables_prefix=prefixes().curated,
        exports_prefix=prefixes().exports,
    )
    print(f"dry run: stack {bound.stack}, {len(fans):,} fans, acting as {acting.name}; rows the erasure would remove:")
    for count in counts:
        print(count.line())
    total = sum(count.rows for count in counts)
    versions = sum(count.old_versions for count in counts)
    print(
        f"total {total:,} rows, and {versions:,} old versions to purge; nothing changed (file it: drop --dry-run;"
        " the curator removes them at the start of"
        f" its next run, every {settings.curation_interval_minutes} minutes)"
    )
    return 0


def _settings(stack: str) -> Any:
    from components.settings import settings_from_stack_file  # noqa: PLC0415

    return settings_from_stack_file(stack)


def _file(bound: BoundStack, acting: _Acting, fans: tuple[str, ...], now: datetime) -> int:
    from curator.erasure_requests import ErasureRequest  # noqa: PLC0415

    outputs = bound.outputs
    settings = _settings(bound.stack)
    request = ErasureRequest.new(fans, now=now)
    where = f"s3://{outputs.bucket_name}/{request.key}"
    print(bound.describe(f"file an erasure request for {len(fans):,} fans at {where}"))
    print(f"acting as {acting.name}")
    acting.session.client("s3").put_object(
        Bucket=outputs.bucket_name,
        Key=request.key,
        Body=request.to_json(),
        ContentType="application/json",
        IfNoneMatch="*",  # a request is written once: never over another (ids carry a random suffix)
    )
    due = request.filed_at + timedelta(days=settings.erasure_deadline_days)
    print(f"filed erasure request {request.request_id}")
    print(
        f"the curator carries it out at the start of its next run (every {settings.curation_interval_minutes}"
        f" minutes); to run it now: make compact STACK={bound.stack}"
    )
    print(
        f"check it: make erase-status STACK={bound.stack} (deadline {settings.erasure_deadline_days} days:"
        f" {due:%Y-%m-%d %H:%M}Z)"
    )
    return 0


def _status(bound: BoundStack, acting: _Acting, now: datetime) -> int:
    from ops.erasure_status import describe_requests, list_requests  # noqa: PLC0415

    deadline = _settings(bound.stack).erasure_deadline_days
    states = list_requests(acting.session.client("s3"), bound.outputs.bucket_name)
    for line in describe_requests(states, now, deadline):
        print(line)
    return 1 if any(state.needs_attention(now, deadline) for state in states) else 0


def main(argv: Sequence[str] | None = None, clock: Clock = _utc_now) -> int:
    from curator.erasure_requests import ErasureRequestError  # noqa: PLC0415

    args = parse_args(argv)
    try:
        problem = stack_file_problem(args.stack)  # before anything: the deadline and interval come from it
        if problem is not None:
            raise _UserError(problem)
        fans = () if args.status else _read_fans(args.fans)
        bound = bind_stack(args.stack, outputs_file=args.outputs_file)
    except (_UserError, ErasureRequestError, OutputsError) as error:
        return user_error(PROG, str(error))
    try:
        acting = _acting(args.stack, bound.outputs)
        if args.status:
            return _status(bound, acting, clock())
        if args.dry_run:
            return _dry_run(bound, acting, fans)
        return _file(bound, acting, fans, clock())
    except (ClientError, BotoCoreError) as error:
        down = unreachable(error, os.environ.get("AWS_ENDPOINT_URL"))
        print(f"{PROG}: {down or f'AWS call failed: {error}'}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
