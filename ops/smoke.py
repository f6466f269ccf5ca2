"""The post-deployment checklist, executable: is the deployed stack processing changes right now?

    python -m ops.smoke qa1                       # last 15 minutes
    python -m ops.smoke prod1 --minutes 30 --junitxml reports/junit-smoke-prod1.xml

Checks (each independent; one failing does not hide the others):
  invocations   the ``live`` alias was invoked at least ``--min-invocations`` times in the window
  errors        at most ``--max-errors`` function errors in the window
  iterator age  the oldest unprocessed record stayed under the IteratorAge alarm's threshold (read from CloudWatch)
  alarms        none of the stack's alarms is in ALARM
  new objects   at least one object was written under the events prefix in the last hour
  athena        a query over the last two days of partitions succeeds in the stack's workgroup
Exit status 0 when all pass, 1 when any fails (a table names what failed), 2 when the stack cannot be read.

CI runs it as the stack's CI role (``.gitlab-ci.yml``). On the local AWS (``AWS_ENDPOINT_URL`` on 127.0.0.1) it
assumes the local CI role with the administrator's key, as CI's OIDC exchange would: a call that role may not
make fails its check naming role, action and resource.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ops.cli import CommandParser, integer_at_least, number_above, stack_name
from ops.outputs import OutputsError, StackOutputs, bind_stack

if TYPE_CHECKING:
    from mypy_boto3_athena import AthenaClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_s3 import S3Client

__all__ = [
    "CheckResult",
    "SmokeClients",
    "check_alarms",
    "check_athena",
    "check_errors",
    "check_invocations",
    "check_iterator_age",
    "check_new_objects",
    "junit_xml",
    "render_table",
    "run_checks",
    "stack_alarm_names",
]

NAMESPACE = "AWS/Lambda"
ATHENA_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class CheckResult:
    """One line of the checklist."""

    name: str
    expected: str
    observed: str
    passed: bool


@dataclass(frozen=True)
class SmokeClients:
    """The AWS clients the checks use (boto3 clients, or fakes in tests)."""

    cloudwatch: CloudWatchClient
    s3: S3Client
    athena: AthenaClient

    @classmethod
    def for_region(cls, region: str) -> SmokeClients:
        """Clients in the stack's region (boto3 honours AWS_ENDPOINT_URL for the embedded local AWS)."""
        return cls(
            cloudwatch=boto3.client("cloudwatch", region_name=region),
            s3=boto3.client("s3", region_name=region),
            athena=boto3.client("athena", region_name=region),
        )

    @classmethod
    def acting_as(cls, session: boto3.Session) -> SmokeClients:
        """Clients of ``session`` (a role's), in its region."""
        return cls(
            cloudwatch=session.client("cloudwatch"),
            s3=session.client("s3"),
            athena=session.client("athena"),
        )


def _alias_dimensions(outputs: StackOutputs) -> list[Any]:
    # The mapping invokes the alias; Lambda publishes per-alias metrics under FunctionName + Resource.
    return [
        {"Name": "FunctionName", "Value": outputs.function_name},
        {"Name": "Resource", "Value": f"{outputs.function_name}:{outputs.function_alias_name}"},
    ]


def _datapoints(
    cloudwatch: CloudWatchClient,
    metric: str,
    *,
    statistic: str,
    dimensions: list[Any],
    since: datetime,
    until: datetime,
) -> list[float]:
    period = 60 * max(1, int((until - since).total_seconds() // 60 // 1440) + 1)  # at most 1,440 points
    response = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=since,
        EndTime=until,
        Period=period,
        Statistics=[statistic],  # type: ignore[list-item]
    )
    return [float(point[statistic]) for point in response["Datapoints"]]  # type: ignore[literal-required]


def _alias_total(
    cloudwatch: CloudWatchClient, outputs: StackOutputs, metric: str, since: datetime, until: datetime
) -> tuple[float, int]:
    """Sum of an alias metric over the window, and the window in whole minutes."""
    points = _datapoints(
        cloudwatch, metric, statistic="Sum", dimensions=_alias_dimensions(outputs), since=since, until=until
    )
    return sum(points), round((until - since).total_seconds() / 60)


def check_invocations(
    cloudwatch: CloudWatchClient, outputs: StackOutputs, since: datetime, until: datetime, minimum: int
) -> CheckResult:
    """The alias was invoked (the mapping is delivering records)."""
    total, minutes = _alias_total(cloudwatch, outputs, "Invocations", since, until)
    return CheckResult("invocations", f">= {minimum} in {minutes} min", f"{total:.0f}", passed=total >= minimum)


def check_errors(
    cloudwatch: CloudWatchClient, outputs: StackOutputs, since: datetime, until: datetime, maximum: int
) -> CheckResult:
    """The function did not fail more than allowed."""
    total, minutes = _alias_total(cloudwatch, outputs, "Errors", since, until)
    return CheckResult("errors", f"<= {maximum} in {minutes} min", f"{total:.0f}", passed=total <= maximum)


def check_iterator_age(
    cloudwatch: CloudWatchClient, outputs: StackOutputs, since: datetime, until: datetime
) -> CheckResult:
    """The oldest unprocessed record stayed under the threshold of the stack's IteratorAge alarm (milliseconds)."""
    alarms = cloudwatch.describe_alarms(AlarmNames=[outputs.iterator_age_alarm_name])["MetricAlarms"]
    if not alarms:
        return CheckResult("iterator age", f"alarm {outputs.iterator_age_alarm_name} exists", "not found", False)
    threshold = float(alarms[0]["Threshold"])
    # The alarm's own dimensions: the check reads exactly the series the alarm watches.
    ages = _datapoints(
        cloudwatch, "IteratorAge", statistic="Maximum", dimensions=alarms[0]["Dimensions"], since=since, until=until
    )
    if not ages:
        return CheckResult("iterator age", f"< {threshold:.0f} ms", "no data (no batch read)", passed=True)
    oldest = max(ages)
    return CheckResult("iterator age", f"< {threshold:.0f} ms", f"{oldest:.0f} ms", passed=oldest < threshold)


ALARM_ROLES = (
    "iterator-age",
    "errors",
    "throttles",
    "failed-batches",
    "stalled-mapping",
    "quarantine-rate",
)  # components.alarms: <prefix>-<role>


def stack_alarm_names(outputs: StackOutputs) -> list[str]:
    """The stack's six stream alarms, named like its IteratorAge alarm (``<prefix>-iterator-age``).

    Named explicitly rather than listed by prefix: the CI role may describe exactly these alarms and no others.
    """
    name = outputs.iterator_age_alarm_name
    if not name.endswith(ALARM_ROLES[0]):
        return [name]
    base = name[: -len(ALARM_ROLES[0])]
    return [base + role for role in ALARM_ROLES]


def check_alarms(cloudwatch: CloudWatchClient, outputs: StackOutputs) -> CheckResult:
    """The stack's alarms (IteratorAge, Errors, Throttles, discarded batches) exist and none is firing."""
    expected = stack_alarm_names(outputs)
    found = {
        alarm["AlarmName"]: alarm["StateValue"]
        for alarm in cloudwatch.describe_alarms(AlarmNames=expected)["MetricAlarms"]
    }
    missing = [name for name in expected if name not in found]
    firing = sorted(name for name, state in found.items() if state == "ALARM")
    if missing:
        return CheckResult("alarms", f"{len(expected)} alarms, none in ALARM", "missing: " + ", ".join(missing), False)
    if firing:
        return CheckResult("alarms", "none in ALARM", "in ALARM: " + ", ".join(firing), False)
    return CheckResult("alarms", "none in ALARM", f"{len(found)} alarms, none in ALARM", True)


def _hour_prefix(events_prefix: str, moment: datetime) -> str:
    # The handler's Hive layout (pipeline.writer.partition_prefix): <events prefix>dt=YYYY-MM-DD/hour=HH/
    moment = moment.astimezone(UTC)
    return f"{events_prefix}dt={moment:%Y-%m-%d}/hour={moment:%H}/"


def check_new_objects(s3: S3Client, outputs: StackOutputs, now: datetime, window: timedelta) -> CheckResult:
    """Parquet objects keep arriving: at least one written under the events prefix within ``window``.

    Lists only the hour partitions the window covers (the handler partitions by change time, which is at
    most minutes behind write time when the stack is healthy), never the whole prefix.
    """
    since = now - window
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours: list[str] = []
    while hour <= now:
        hours.append(_hour_prefix(outputs.events_prefix, hour))
        hour += timedelta(hours=1)
    newest: datetime | None = None
    count = 0
    for prefix in hours:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outputs.bucket_name, Prefix=prefix):
            for item in page.get("Contents", []):
                modified = item["LastModified"]
                if modified >= since:
                    count += 1
                    newest = modified if newest is None or modified > newest else newest
    minutes = round(window.total_seconds() / 60)
    expected = f">= 1 under {outputs.events_prefix} in {minutes} min"
    if newest is None:
        return CheckResult("new objects", expected, "none", False)
    return CheckResult("new objects", expected, f"{count}, newest {newest.astimezone(UTC):%H:%M:%S} UTC", True)


def athena_query(outputs: StackOutputs, now: datetime) -> str:
    """A cheap query: partitions of today and yesterday only (projection prunes the rest)."""
    yesterday = (now.astimezone(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    return (
        f'SELECT count(*) AS records FROM "{outputs.athena_database_name}"."{outputs.glue_table_name}" '  # noqa: S608
        f"WHERE dt >= '{yesterday}'"  # names come from the stack's own outputs, the date is formatted here
    )


def check_athena(
    athena: AthenaClient,
    outputs: StackOutputs,
    now: datetime,
    *,
    timeout_seconds: float = 120.0,
    poll_seconds: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """A query over the recent partitions succeeds in the stack's workgroup (results where the workgroup says)."""
    expected = f"query SUCCEEDED in {outputs.athena_workgroup_name}"
    query_id = athena.start_query_execution(
        QueryString=athena_query(outputs, now),
        QueryExecutionContext={"Database": outputs.athena_database_name},
        WorkGroup=outputs.athena_workgroup_name,
    )["QueryExecutionId"]
    waited = 0.0
    while True:
        status = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
        state = status["State"]
        if state in ATHENA_DONE:
            break
        if waited >= timeout_seconds:
            athena.stop_query_execution(QueryExecutionId=query_id)
            return CheckResult("athena", expected, f"{state} after {waited:.0f} s (stopped)", False)
        sleep(poll_seconds)
        waited += poll_seconds
    if state != "SUCCEEDED":
        reason = status.get("StateChangeReason", "no reason given")
        return CheckResult("athena", expected, f"{state}: {reason}", False)
    return CheckResult("athena", expected, f"SUCCEEDED ({query_id})", True)


def _guarded(name: str, expected: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except (ClientError, BotoCoreError) as error:
        return CheckResult(name, expected, f"AWS error: {error}", False)


def run_checks(
    outputs: StackOutputs,
    clients: SmokeClients,
    *,
    now: datetime,
    minutes: int = 15,
    min_invocations: int = 1,
    max_errors: int = 0,
    objects_window: timedelta = timedelta(hours=1),
    athena_timeout_seconds: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """Every check, in checklist order."""
    since = now - timedelta(minutes=minutes)
    return [
        _guarded(
            "invocations",
            f">= {min_invocations}",
            lambda: check_invocations(clients.cloudwatch, outputs, since, now, min_invocations),
        ),
        _guarded(
            "errors", f"<= {max_errors}", lambda: check_errors(clients.cloudwatch, outputs, since, now, max_errors)
        ),
        _guarded(
            "iterator age",
            "under the alarm threshold",
            lambda: check_iterator_age(clients.cloudwatch, outputs, since, now),
        ),
        _guarded("alarms", "none in ALARM", lambda: check_alarms(clients.cloudwatch, outputs)),
        _guarded(
            "new objects", ">= 1 in the last hour", lambda: check_new_objects(clients.s3, outputs, now, objects_window)
        ),
        _guarded(
            "athena",
            "query SUCCEEDED",
            lambda: check_athena(clients.athena, outputs, now, timeout_seconds=athena_timeout_seconds, sleep=sleep),
        ),
    ]


def render_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table (fits CI logs): status, check, expected, observed."""
    rows = [("", "check", "expected", "observed")] + [
        ("ok" if result.passed else "FAIL", result.name, result.expected, result.observed) for result in results
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    failed = [result.name for result in results if not result.passed]
    lines.append("")
    lines.append(f"FAILED: {', '.join(failed)}" if failed else f"all {len(results)} checks passed")
    return "\n".join(lines)


def junit_xml(stack: str, results: Sequence[CheckResult]) -> str:
    """The checks as a JUnit report (one test case per check) for GitLab's test report."""
    failures = sum(not result.passed for result in results)
    suite = ElementTree.Element(
        "testsuite", name=f"smoke-{stack}", tests=str(len(results)), failures=str(failures), errors="0"
    )
    for result in results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"smoke.{stack}", name=result.name)
        if not result.passed:
            failure = ElementTree.SubElement(case, "failure", message=f"expected {result.expected}")
            failure.text = f"expected {result.expected}, observed {result.observed}"
    root = ElementTree.Element("testsuites")
    root.append(suite)
    return ElementTree.tostring(root, encoding="unicode")


def _clients(stack: str, outputs: StackOutputs) -> tuple[SmokeClients, str | None]:
    """The environment's credentials (CI's role on AWS); on the local AWS, the local CI role's, and its name."""
    from sandbox.command_roles import assume_local_role, local_endpoint  # noqa: PLC0415 - the local AWS only

    if local_endpoint() is None:
        return SmokeClients.for_region(outputs.region), None
    roles = assume_local_role("ci", stack, outputs)
    return SmokeClients.acting_as(roles.session("ci")), f"the local CI role {roles.role_names['ci']}"


def main(argv: Sequence[str] | None = None, *, now: datetime | None = None) -> int:
    """The command; ``now`` is the end of the windows checked (default: the clock, read once)."""
    parser = CommandParser(
        prog="python -m ops.smoke", description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("stack", type=stack_name, help="stack to check (dev1, qa1, preprod1, prod1)")
    parser.add_argument("--minutes", type=integer_at_least(1), default=15, help="metrics window (default 15)")
    parser.add_argument(
        "--min-invocations", type=integer_at_least(0), default=1, help="invocations expected in the window"
    )
    parser.add_argument("--max-errors", type=integer_at_least(0), default=0, help="errors tolerated in the window")
    parser.add_argument("--athena-timeout", type=number_above(0), default=120.0, help="seconds to wait for the query")
    parser.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or pulumi)")
    parser.add_argument("--junitxml", type=Path, help="also write a JUnit report here")
    parser.add_argument("--debug", action="store_true", help="a traceback with an error")
    args = parser.parse_args(argv)
    try:
        outputs = bind_stack(args.stack, outputs_file=args.outputs_file).outputs
    except OutputsError as error:
        if args.debug:
            traceback.print_exc()
        print(f"smoke: {error}", file=sys.stderr)
        return 2
    try:
        clients, acting_as = _clients(args.stack, outputs)
    except (ClientError, BotoCoreError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"smoke: cannot act as the local CI role of {args.stack}: {error}", file=sys.stderr)
        return 2
    if acting_as:
        print(f"acting as {acting_as}")
    results = run_checks(
        outputs,
        clients,
        now=now or datetime.now(UTC),
        minutes=args.minutes,
        min_invocations=args.min_invocations,
        max_errors=args.max_errors,
        athena_timeout_seconds=args.athena_timeout,
    )
    print(f"smoke check of {args.stack} ({outputs.function_name}:{outputs.function_alias_name}, {outputs.region})")
    print(render_table(results))
    if args.junitxml is not None:
        args.junitxml.parent.mkdir(parents=True, exist_ok=True)
        args.junitxml.write_text(junit_xml(args.stack, results), encoding="utf-8")
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
