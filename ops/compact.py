"""Run one curation of a stack now: the deployed curator function, or the curator's handler against the local AWS.

    python -m ops.compact qa1             # one run, as the schedule's: raw objects -> the curated tables
    python -m ops.compact qa1 --dry-run   # what would be curated, and by which function; nothing changes

Against a deployed stack this invokes the stack's curator function (output ``curator_function_name``)
synchronously: the function's own role reads the raw objects, commits the tables and deletes what a committed
snapshot covers, never the operator's credentials. When ``AWS_ENDPOINT_URL`` points at the local AWS
(``make demo ARGS=--keep`` prints it), it runs ``curator.handler.handler`` in this process with the stack's
curator settings, against that local AWS only, acting as the local curator role (assumed with the administrator's
key, as Lambda gives the function its role). Stack outputs come from ``ops.outputs.bind_stack``
(``$STACK_OUTPUTS_FILE`` or the Pulumi CLI).
Exit status: 0 done (a commit conflict is reported: nothing changed, the next run retries), 1 the run failed
(unreadable raw objects, left in place), 2 a wrong argument or stack.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from ops.cli import stack_file_problem, stack_name
from ops.outputs import OutputsError, StackOutputs, bind_stack

if TYPE_CHECKING:
    from components.settings import Settings

__all__ = [
    "CURATOR_ROLE",
    "LOCAL_ERASURE_SALT",
    "CompactError",
    "curator_environment",
    "deployed_invoker",
    "describe_result",
    "local_invoker",
    "main",
    "parse_args",
]

Invoker = Callable[[dict[str, Any]], Mapping[str, Any]]
PROG = "compact"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
CURATOR_ROLE = "curator"  # sandbox.roles.ROLES
LOCAL_ERASURE_SALT = "local-aws-erasure-salt"  # the in-process curator's ERASURE_SALT (ERASURE_SALT overrides it)
_HANDLER_MODULE = "curator.handler"
# A synchronous invocation waits for the function: up to Lambda's 15-minute limit, and is never retried by the SDK
# (a second, concurrent run would wait: the function's reserved concurrency is 1).
_INVOKE_READ_TIMEOUT = 16 * 60


class CompactError(RuntimeError):
    """The curation could not be run or failed; the message says why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit 2, not argparse's usage block."""
        self.exit(2, f"{PROG}: {message} (see python -m ops.compact --help)\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m ops.compact", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", type=stack_name, help="stack to curate (dev1, qa1, preprod1, prod1)")
    parser.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or Pulumi)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be curated, and by which function")
    return parser.parse_args(argv)


def is_local_endpoint() -> bool:
    """True when boto3 is pointed at the local AWS (the only case the handler runs here)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return any(f"//{host}" in endpoint for host in _LOCAL_HOSTS)


def deployed_invoker(function_name: str, client: Any) -> Invoker:
    """Invoke the deployed curator function synchronously; a function error raises ``CompactError``."""

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        response = client.invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(event)
        )
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            message = payload.get("errorMessage", payload) if isinstance(payload, Mapping) else payload
            raise CompactError(f"{function_name} failed: {message}")
        return payload if isinstance(payload, Mapping) else {}

    return invoke


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    import boto3  # noqa: PLC0415

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    # boto3's default session keeps the credentials it first resolved: the function's own must be read afresh.
    boto3.DEFAULT_SESSION = None
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = None
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def curator_environment(outputs: StackOutputs, stack: str, settings: Settings | None = None) -> dict[str, str]:
    """The curator function's environment for ``stack``, as the program sets it (the stack file's time travel,
    grace and published snapshot), with the outputs' bucket, raw prefix, Glue database and failure bucket, a local
    erasure salt, and quieter logs for a terminal. ``settings``: the stack's settings when the caller holds newer
    ones than its stack file (the demo's local stack, once it has published its own backfill snapshot)."""
    from components.function_environment import curator_environment as program_environment  # noqa: PLC0415
    from components.function_environment import curator_erasure_environment  # noqa: PLC0415
    from components.naming import prefixes  # noqa: PLC0415 - only the local mode needs these
    from components.settings import settings_from_stack_file  # noqa: PLC0415

    if settings is None:
        settings = settings_from_stack_file(stack)
    environment = program_environment(settings, outputs.bucket_name, prefixes(), outputs.athena_database_name)
    environment.update(
        curator_erasure_environment(outputs.failure_bucket_name, prefixes(), settings.erasure_rows_per_run)
    )
    environment.update(
        # The local AWS has no secrets: a fixed salt (the deployed function gets the stack's erasureSalt).
        ERASURE_SALT=os.environ.get("ERASURE_SALT") or LOCAL_ERASURE_SALT,
        OUTPUT_PREFIX=outputs.events_prefix,
        LOG_LEVEL="WARNING",  # the command prints the result; the handler's own line would repeat it
        POWERTOOLS_METRICS_DISABLED="true",  # no CloudWatch here: EMF lines would only clutter the output
    )
    return environment


def local_invoker(environment: Mapping[str, str]) -> Invoker:
    """Call ``curator.handler.handler`` here, freshly imported, with ``environment`` (the local AWS only)."""

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        if not is_local_endpoint():
            raise CompactError("the in-process curator only runs against the local AWS (AWS_ENDPOINT_URL)")
        # A cold start of its own, as Lambda gives each execution environment: settings are read afresh and no
        # catalog or client of an earlier run is reused. The module stays imported under its name too.
        importlib.import_module(_HANDLER_MODULE)
        spec = importlib.util.find_spec(_HANDLER_MODULE)
        if spec is None or spec.loader is None:
            raise CompactError(f"{_HANDLER_MODULE} is not importable")
        with _environment(environment):
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            try:
                result = module.handler(event, None)
            except module.CurationFailedError as error:
                raise CompactError(str(error)) from error
            except (ClientError, BotoCoreError, OSError) as error:  # as Lambda would report the function's error
                raise CompactError(f"the curator failed: {' '.join(str(error).split())}") from error
        return result if isinstance(result, Mapping) else {}

    return invoke


def _lambda_client(region: str) -> Any:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(read_timeout=_INVOKE_READ_TIMEOUT, connect_timeout=10, retries={"max_attempts": 1})
    return boto3.Session(region_name=region).client("lambda", config=config)


def _snapshot(value: Any) -> str:
    return str(value) if value is not None else "none (nothing new)"


def describe_result(summary: Mapping[str, Any], where: str) -> list[str]:
    """A few lines for a run's ``CurationResult.summary()``: what was read, added, committed and deleted."""
    hours = list(summary.get("hours_written") or [])
    shown = ", ".join(hours[:4]) + (f" and {len(hours) - 4} more" if len(hours) > 4 else "")
    lines = [
        f"curated {where} in {float(summary.get('seconds') or 0):.1f} s",
        f"  raw objects read {summary.get('raw_objects_read', 0):,} ({summary.get('rows_read', 0):,} rows); "
        f"changes added {summary.get('changes_added', 0):,}; hours written {len(hours)}"
        + (f": {shown}" if hours else ""),
        f"  snapshots: registration_changes {_snapshot(summary.get('changes_snapshot'))}, registrations "
        f"{_snapshot(summary.get('registrations_snapshot'))} ({summary.get('state_changes_applied', 0):,} changes "
        "applied)",
        f"  raw deleted {summary.get('raw_deleted', 0):,}, waiting for the grace period "
        f"{summary.get('raw_pending_deletion', 0):,}",
    ]
    conflict = summary.get("conflict")
    if conflict:
        lines.append(f"  conflict: {conflict}; nothing changed, the next run retries")
    unreadable = list(summary.get("unreadable") or [])
    if unreadable:
        lines.append(f"  unreadable raw objects (left in place): {', '.join(unreadable)}")
    return lines


def _local_role(stack: str, outputs: StackOutputs) -> tuple[dict[str, str], str]:
    """The local curator role's ``AWS_*`` variables (what Lambda gives the function) and how to name it."""
    from sandbox.command_roles import assume_local_role  # noqa: PLC0415 - the local AWS only

    roles = assume_local_role(CURATOR_ROLE, stack, outputs)
    return roles.environment(CURATOR_ROLE), f"the local curator role {roles.role_names[CURATOR_ROLE]}"


class _UserError(Exception):
    """A mistake of the caller's (stack, outputs, settings): one line, exit status 2."""


@dataclass(frozen=True)
class _Run:
    """How this command runs the curator for the stack: where, as whom, and the call."""

    where: str
    invoke: Invoker | None  # None: a dry run (nothing to call)
    acting_as: str | None = None


def _local_run(args: argparse.Namespace, outputs: StackOutputs) -> _Run:
    try:
        environment = curator_environment(outputs, args.stack)
    except Exception as error:  # an unknown stack file, a settings error: nothing was touched
        raise _UserError(f"cannot read the settings of stack {args.stack!r}: {error}") from error
    where = f"in-process on the local AWS ({os.environ['AWS_ENDPOINT_URL']})"
    if args.dry_run:
        return _Run(where, None)
    try:
        credentials, acting_as = _local_role(args.stack, outputs)
    except (ClientError, BotoCoreError) as error:
        raise CompactError(f"cannot act as the local curator role of {args.stack}: {error}") from error
    return _Run(where, local_invoker({**environment, **credentials}), acting_as)


def _deployed_run(args: argparse.Namespace, outputs: StackOutputs) -> _Run:
    function_name = outputs.curator_function_name
    if args.dry_run:
        return _Run(f"by {function_name}", None)
    client = _lambda_client(os.environ.get("AWS_REGION") or outputs.region)
    return _Run(f"by {function_name}", deployed_invoker(function_name, client))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        problem = stack_file_problem(args.stack)  # checked before anything, deployed stacks too
        if problem is not None:
            raise OutputsError(problem)
        bound = bind_stack(args.stack, outputs_file=args.outputs_file)
        outputs = bound.outputs
        run = _local_run(args, outputs) if is_local_endpoint() else _deployed_run(args, outputs)
    except (OutputsError, _UserError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except CompactError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    source = f"s3://{outputs.bucket_name}/{outputs.events_prefix}"
    tables = f"registration_changes and registrations of Glue database {outputs.athena_database_name}"
    if run.invoke is None:
        print(
            f"dry run: would curate the raw objects under {source} that no committed snapshot covers into {tables}, "
            f"{run.where}; nothing changed"
        )
        return 0
    print(bound.describe(f"curate {source} into {tables} {run.where}"))
    if run.acting_as:
        print(f"acting as {run.acting_as}")
    try:
        summary = run.invoke({})
    except CompactError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    for line in describe_result(summary, run.where):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
