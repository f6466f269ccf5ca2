"""Run compaction of a stack's hours now: the deployed compaction function, or the handler against the local AWS.

    python -m ops.compact qa1 --hour 2026-03-31T23 [--hour ...] [--delete-grace-minutes 0]
    python -m ops.compact qa1                # what the schedule does: every due hour of the lookback window

Against a deployed stack this invokes the stack's compaction function (output ``curator_function_name``)
synchronously: the function's own role lists, reads, writes and deletes, never the operator's credentials.
When ``AWS_ENDPOINT_URL`` points at the local AWS (``make demo ARGS=--keep`` prints it), it runs
``pipeline.compaction.handler`` in this process with the stack's function settings, against that local S3 only,
acting as the local compaction role (assumed with the administrator's key, as Lambda gives the function its role).
Stack outputs come from ``ops.outputs.bind_stack`` (``$STACK_OUTPUTS_FILE`` or the Pulumi CLI).
Exit status: 0 done, 1 some shard-hours failed (nothing of theirs was deleted), 2 a wrong argument or stack.
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
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from ops.cli import stack_file_problem, stack_name
from ops.outputs import OutputsError, StackOutputs, bind_stack
from pipeline.compactor import format_hour, parse_hour

__all__ = ["CompactError", "build_event", "deployed_invoker", "local_invoker", "main", "parse_args"]

Invoker = Callable[[dict[str, Any]], Mapping[str, Any]]
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
COMPACTION_ROLE = "curator"  # sandbox.roles.ROLES: the one role that may consume raw objects
# A synchronous invocation waits for the function: up to Lambda's 15-minute limit, and is never retried by the SDK
# (a second, concurrent compaction would be safe, but only wasteful).
_INVOKE_READ_TIMEOUT = 16 * 60


class CompactError(RuntimeError):
    """The compaction could not be run or failed; the message says why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit 2, not argparse's usage block."""
        self.exit(2, f"compact: {message} (see python -m ops.compact --help)\n")


def _hour(text: str) -> str:
    try:
        return format_hour(parse_hour(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _grace(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of minutes, 0 or more")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m ops.compact", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", type=stack_name, help="stack whose hours to compact (dev1, qa1, preprod1, prod1)")
    parser.add_argument(
        "--hour", action="append", type=_hour, default=[], help="an hour to compact, YYYY-MM-DDTHH UTC (repeatable)"
    )
    parser.add_argument(
        "--delete-grace-minutes",
        type=_grace,
        default=None,
        help="delete the compacted inputs after this many minutes (default: the function's setting; 0: at once)",
    )
    parser.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or Pulumi)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be compacted, and by which function")
    return parser.parse_args(argv)


def build_event(hours: Sequence[str], delete_grace_minutes: int | None) -> dict[str, Any]:
    """The compaction function's event: explicit hours, or the scheduled selection when there are none."""
    event: dict[str, Any] = {"hours": list(hours)} if hours else {}
    if delete_grace_minutes is not None:
        event["delete_grace_minutes"] = delete_grace_minutes
    return event


def is_local_endpoint() -> bool:
    """True when boto3 is pointed at the local AWS (the only case the handler runs here)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return any(f"//{host}" in endpoint for host in _LOCAL_HOSTS)


def deployed_invoker(function_name: str, client: Any) -> Invoker:
    """Invoke the deployed compaction function synchronously; a function error raises ``CompactError``."""

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


def compaction_environment(outputs: StackOutputs, stack: str) -> dict[str, str]:
    """The curator function's environment for ``stack``, as the program sets it (the stack file's time travel and
    grace), with the outputs' bucket, prefix and Glue database, and quieter logs for a terminal."""
    from components.function_environment import curator_environment  # noqa: PLC0415
    from components.naming import prefixes  # noqa: PLC0415 - only the local mode needs these
    from components.settings import settings_from_stack_file  # noqa: PLC0415

    settings = settings_from_stack_file(stack)
    environment = curator_environment(settings, outputs.bucket_name, prefixes(), outputs.athena_database_name)
    environment.update(
        OUTPUT_PREFIX=outputs.events_prefix,
        LOG_LEVEL="WARNING",  # the command prints the summary; the handler's own line would repeat it
        POWERTOOLS_METRICS_DISABLED="true",  # no CloudWatch here: EMF lines would only clutter the output
    )
    return environment


def local_invoker(environment: Mapping[str, str]) -> Invoker:
    """Call ``pipeline.compaction.handler`` here, freshly imported, with ``environment`` (the local AWS only)."""

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        if not is_local_endpoint():
            raise CompactError("the in-process compaction only runs against the local AWS (AWS_ENDPOINT_URL)")
        # A cold start of its own, as Lambda gives each execution environment: settings are read afresh. The
        # module stays imported under its name too (its dataclasses resolve their annotations through it).
        importlib.import_module("pipeline.compaction")
        spec = importlib.util.find_spec("pipeline.compaction")
        if spec is None or spec.loader is None:
            raise CompactError("pipeline.compaction is not importable")
        with _environment(environment):
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            try:
                result = module.handler(event, None)
            except module.CompactionFailedError as error:
                raise CompactError(str(error)) from error
        return result if isinstance(result, Mapping) else {}

    return invoke


def _lambda_client(region: str) -> Any:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(read_timeout=_INVOKE_READ_TIMEOUT, connect_timeout=10, retries={"max_attempts": 1})
    return boto3.Session(region_name=region).client("lambda", config=config)


def _report(summary: Mapping[str, Any], where: str) -> None:
    hours = summary.get("hours") or []
    print(f"compacted {len(hours)} hour(s) {where}: {', '.join(hours) or 'none due'}")
    print(
        f"  objects {summary.get('objects_in', 0)} in -> {summary.get('objects_out', 0)} out; "
        f"rows {summary.get('rows_in', 0):,} in -> {summary.get('rows_out', 0):,} out "
        f"({summary.get('duplicates_removed', 0):,} duplicates removed)"
    )
    print(
        f"  inputs deleted {summary.get('objects_deleted', 0)}, waiting for the grace period "
        f"{summary.get('objects_pending_deletion', 0)}; conflicts {summary.get('conflicts', 0)}"
    )
    if summary.get("deferred_hours"):
        print(f"  left for the next run (time ran short): {', '.join(summary['deferred_hours'])}")


def _local_role(stack: str, outputs: StackOutputs) -> tuple[dict[str, str], str]:
    """The local compaction role's ``AWS_*`` variables (what Lambda gives the function) and how to name it."""
    from sandbox.command_roles import assume_local_role  # noqa: PLC0415 - the local AWS only

    roles = assume_local_role(COMPACTION_ROLE, stack, outputs)
    return roles.environment(COMPACTION_ROLE), f"the local compaction role {roles.role_names[COMPACTION_ROLE]}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        problem = stack_file_problem(args.stack)  # checked before anything, deployed stacks too
        if problem is not None:
            raise OutputsError(problem)
        bound = bind_stack(args.stack, outputs_file=args.outputs_file)
    except OutputsError as error:
        print(f"compact: {error}", file=sys.stderr)
        return 2
    outputs = bound.outputs
    event = build_event(args.hour, args.delete_grace_minutes)
    acting_as = None
    if is_local_endpoint():
        try:
            environment = compaction_environment(outputs, args.stack)
        except Exception as error:  # an unknown stack file, a settings error: nothing was touched
            print(f"compact: cannot read the settings of stack {args.stack!r}: {error}", file=sys.stderr)
            return 2
        try:
            credentials, acting_as = _local_role(args.stack, outputs)
        except (ClientError, BotoCoreError) as error:
            print(f"compact: cannot act as the local compaction role of {args.stack}: {error}", file=sys.stderr)
            return 1
        invoke = local_invoker({**environment, **credentials})
        where = f"in-process on the local AWS ({os.environ['AWS_ENDPOINT_URL']})"
    else:
        function_name = outputs.curator_function_name
        invoke = deployed_invoker(function_name, _lambda_client(os.environ.get("AWS_REGION") or outputs.region))
        where = f"by {function_name}"
    hours = ", ".join(args.hour) or "every hour the schedule would pick"
    if args.dry_run:
        print(f"dry run: would compact {hours} {where} with the event {json.dumps(event)}; nothing changed")
        return 0
    print(bound.describe(f"compact {hours} under s3://{outputs.bucket_name}/{outputs.events_prefix} {where}"))
    if acting_as:
        print(f"acting as {acting_as}")
    try:
        summary = invoke(event)
    except CompactError as error:
        print(f"compact: {error}", file=sys.stderr)
        return 1
    _report(summary, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
