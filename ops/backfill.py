"""Back-fill the lake's snapshot table from a point-in-time export of the stack's table.

    python -m ops.backfill dev1 [--workers 2] [--outputs-file PATH] [--timeout 600] [--verbose]
    python -m ops.backfill dev1 --export-arn ARN     # the same export again: files already done add nothing

Against the local AWS (``AWS_ENDPOINT_URL`` on 127.0.0.1, e.g. ``make demo ARGS=--keep``): checks the cutover
(``ops.backfill_checks``: the streaming destination ACTIVE since T - 5 min, T in the point-in-time recovery
window, the mapping reading from T - 5 min; ``--lead-seconds`` shortens the 5 minutes, locally only), requests
the export (``ExportTableToPointInTime`` into the stack's bucket under
``demand/exports/<request time>/``), waits for it, lists its data files, runs ``pipeline.backfill.handler``
once per data file in a process pool with the backfill function's environment, then checks every file's
rows + quarantined against its item count and the export's total, and prints the counts. moto writes no
``manifest-files.json`` and runs no Step Functions, so the item count of a file is its number of lines here.

Against a deployed stack (no local endpoint): the same checks and export, then it reads the export's
``manifest-files.json`` (each data file's ``itemCount``), starts the stack's backfill state machine (output
``backfill_state_machine_arn``: a Step Functions Distributed Map invoking the backfill function once per data
file), follows its map run with a progress bar, and checks every file's counts object (rows + quarantined)
against its ``itemCount`` and the files' total against the export's ``ItemCount``. Exit status: 0 counts match,
1 the backfill is incomplete or failed, 2 a usage error or a refused precondition (one line on stderr).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from curator.exports import EXPORT_DATA_FILE, REQUEST_TIME_FORMAT
from ops.backfill_checks import DEFAULT_LEAD, check_cutover
from ops.cli import (
    USER_ERROR,
    CommandParser,
    integer_at_least,
    number_above,
    number_at_least,
    stack_file_problem,
    stack_name,
    unreachable,
)
from ops.outputs import BoundStack, OutputsError, StackOutputs, bind_stack

__all__ = [
    "EXPORTS_PREFIX",
    "BackfillError",
    "BackfillReport",
    "FileOutcome",
    "PreconditionError",
    "backfill_environment",
    "check_counts",
    "check_export_kind",
    "count_lines",
    "dry_run",
    "export_arn_text",
    "export_data_files",
    "find_export",
    "local_item_counts",
    "main",
    "manifest_item_counts",
    "quarantine_problem",
    "run_deployed",
    "run_export",
]

EXPORTS_PREFIX = "demand/exports/"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
#: An export's folder is named by its request time: the curator reads it back to expire the export.
_STAMP = REQUEST_TIME_FORMAT
# the refusals a shorter lead would lift: the destination or the mapping is younger than the lead
_LEAD_REFUSAL = re.compile(r"is less than \d+ min after|, after T - ")


BACKFILL_ROLE = "backfill"  # sandbox.roles.ROLES: the role the backfill function's code acts as


class BackfillError(RuntimeError):
    """A step that cannot go on (the export failed or timed out); the message names what and why."""


class PreconditionError(BackfillError):
    """Refused before anything was requested (point-in-time recovery off, an ambiguous export prefix)."""


@dataclass
class FileOutcome:
    """One data file: the items it holds, and what the handler reported (or why it failed)."""

    data_key: str
    expected: int
    result: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def accounted(self) -> int:
        """Rows + quarantined the handler reported (0 when it failed)."""
        if self.result is None:
            return 0
        return int(self.result["rows"]) + int(self.result["quarantined"])


@dataclass
class BackfillReport:
    """The whole backfill: the export, each file's outcome, and the problems the count check found."""

    export_arn: str
    export_id: str
    export_time: str
    item_count: int | None
    files: list[FileOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        done = [outcome.result for outcome in self.files if outcome.result is not None]
        return {
            "data files": len(self.files),
            "items": sum(outcome.expected for outcome in self.files),
            "rows": sum(int(result["rows"]) for result in done),
            "quarantined": sum(int(result["quarantined"]) for result in done),
            "already done": sum(1 for result in done if result.get("already_done")),
        }


# -- pure parts: environment, counts ----------------------------------------------------------------------------
def backfill_environment(outputs: StackOutputs, stack: str, *, log_level: str = "WARNING") -> dict[str, str]:
    """The backfill function's environment for a stack (contract C3)."""
    from components.settings import settings_from_stack_file  # noqa: PLC0415 - only a backfill needs them
    from pipeline.snapshot import DEFAULT_SNAPSHOT_PREFIX  # noqa: PLC0415

    return {
        "OUTPUT_BUCKET": outputs.bucket_name,
        "SNAPSHOT_PREFIX": DEFAULT_SNAPSHOT_PREFIX,
        "QUARANTINE_PREFIX": outputs.quarantine_prefix,
        "SOURCE_TABLE_NAME": outputs.table_name,
        "LOG_LEVEL": log_level,
        "POWERTOOLS_SERVICE_NAME": settings_from_stack_file(stack).naming.physical("demand-backfill"),
        "POWERTOOLS_METRICS_NAMESPACE": "DmdPipeline",
    }


def count_lines(stream: Any) -> int:
    """Lines of a gzip text file read from ``stream`` (a last line without a newline counts too)."""
    decompressed = gzip.GzipFile(fileobj=stream, mode="rb")
    count = 0
    last = b"\n"
    while block := decompressed.read(1 << 20):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def manifest_item_counts(lines: Iterable[str]) -> dict[str, int]:
    """``manifest-files.json`` (JSON Lines of ``itemCount``, ``dataFileS3Key``...) -> item count per data key."""
    counts: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            counts[str(entry["dataFileS3Key"])] = int(entry["itemCount"])
        except (ValueError, KeyError, TypeError) as error:
            raise BackfillError(
                f"manifest-files.json line {number} is not a manifest entry ({error}): {line[:80]!r}"
            ) from None
    return counts


def check_counts(outcomes: Sequence[FileOutcome], item_count: int | None) -> list[str]:
    """What does not add up: a failed file, a file whose rows + quarantined differ from its items, a total below
    the export's item count (a data file missing from the listing). Empty when the backfill is complete."""
    problems = []
    for outcome in outcomes:
        if outcome.error is not None:
            problems.append(f"{outcome.data_key}: failed: {outcome.error}")
        elif outcome.accounted != outcome.expected:
            problems.append(f"{outcome.data_key}: {outcome.expected} items but {outcome.accounted} rows + quarantined")
    listed = sum(outcome.expected for outcome in outcomes)
    if item_count is not None and listed != item_count:
        problems.append(
            f"the export holds {item_count} items but its data files hold {listed}: "
            f"{'a data file is missing' if listed < item_count else 'unexpected lines'}"
        )
    return problems


# -- the local AWS ------------------------------------------------------------------------------------------------
def _is_local() -> bool:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return any(host in endpoint for host in _LOCAL_HOSTS)


def _check_point_in_time_recovery(dynamodb: Any, table: str) -> None:
    description = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    status = description.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    if status != "ENABLED":
        raise PreconditionError(
            f"point-in-time recovery is {status or 'not set'} on table {table}: the export needs it "
            f"(aws dynamodb update-continuous-backups --table-name {table} "
            "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true)"
        )


def _checks(session: Any, outputs: StackOutputs, *, local: bool, lead: timedelta) -> datetime:
    """The cutover checks (``ops.backfill_checks``), before any export is requested: one line per failure.
    Returns the export time T they checked (a deployed export is requested with ``ExportTime`` = T)."""
    problems, export_time = check_cutover(session, outputs, local=local, lead=lead)
    if problems:
        raise PreconditionError("\n".join(problems))
    return export_time


#: The only export a snapshot can come from: every item of the table, in the format the handler decodes.
SNAPSHOT_EXPORT_TYPE = "FULL_EXPORT"
SNAPSHOT_EXPORT_FORMAT = "DYNAMODB_JSON"
#: Above this share of quarantined lines the run does not recommend publishing (--max-quarantined-percent).
DEFAULT_MAX_QUARANTINED_PERCENT = 0.1


def check_export_kind(export: Mapping[str, Any]) -> None:
    """Refuse an export a snapshot cannot come from: an incremental export holds only the changed items (publishing
    it would drop every unchanged one), an ION export's every line would be quarantined while the counts "match".

    DescribeExport reports ``ExportType`` and ``ExportFormat``; an absent value is the API's default (FULL_EXPORT,
    DYNAMODB_JSON), which older responses and the local AWS leave out.
    """
    kind = export.get("ExportType") or SNAPSHOT_EXPORT_TYPE
    export_format = export.get("ExportFormat") or SNAPSHOT_EXPORT_FORMAT
    if (kind, export_format) != (SNAPSHOT_EXPORT_TYPE, SNAPSHOT_EXPORT_FORMAT):
        raise PreconditionError(
            f"--export-arn {export.get('ExportArn')!r} is a {kind} in {export_format}: a snapshot needs a "
            f"{SNAPSHOT_EXPORT_TYPE} in {SNAPSHOT_EXPORT_FORMAT} (run make backfill without --export-arn for one)"
        )


def quarantine_problem(totals: Mapping[str, int], max_percent: float) -> str | None:
    """Why the snapshot should not be published although the counts match: too many lines quarantined, or None."""
    items, quarantined = totals["items"], totals["quarantined"]
    if not items or quarantined * 100 <= max_percent * items:
        return None
    return (
        f"{quarantined:,} of {items:,} items quarantined ({100 * quarantined / items:.3f} %), above "
        f"--max-quarantined-percent {max_percent:g}: the snapshot would lack them; read the quarantine, fix, re-run"
    )


def _request_export(
    dynamodb: Any,
    outputs: StackOutputs,
    timeout: float,
    export_arn: str | None = None,
    export_time: datetime | None = None,
) -> tuple[dict[str, Any], str, datetime]:
    """Request the export (or take ``export_arn``'s) and wait for it; returns its description, its S3 prefix and
    its time (the request time, which names the prefix, when the service reports no ExportTime: moto)."""
    table_arn = dynamodb.describe_table(TableName=outputs.table_name)["Table"]["TableArn"]
    if export_arn is None:
        requested = datetime.now(UTC)
        # one prefix per request: the files under it are this export's
        prefix = f"{EXPORTS_PREFIX}{requested:{_STAMP}}"
        at = {} if export_time is None else {"ExportTime": export_time}  # the T the cutover checks checked
        export = dynamodb.export_table_to_point_in_time(
            TableArn=table_arn, S3Bucket=outputs.bucket_name, S3Prefix=prefix, ExportFormat="DYNAMODB_JSON", **at
        )["ExportDescription"]
    else:
        export = find_export(dynamodb, table_arn, export_arn)
        check_export_kind(export)
        prefix = str(export.get("S3Prefix") or "")
        if export.get("S3Bucket") != outputs.bucket_name or not prefix.startswith(EXPORTS_PREFIX):
            raise PreconditionError(
                f"--export-arn {export_arn!r} exported to s3://{export.get('S3Bucket')}/{prefix}, not to "
                f"s3://{outputs.bucket_name}/{EXPORTS_PREFIX}: not an export of this stack's backfill"
            )
        try:
            requested = datetime.strptime(prefix.removeprefix(EXPORTS_PREFIX), _STAMP).replace(tzinfo=UTC)
        except ValueError:
            requested = datetime.now(UTC)
    deadline = time.monotonic() + timeout
    while export["ExportStatus"] == "IN_PROGRESS":
        if time.monotonic() > deadline:
            raise BackfillError(f"export {export['ExportArn']} still IN_PROGRESS after {timeout:.0f} s")
        time.sleep(0.5)
        export = dynamodb.describe_export(ExportArn=export["ExportArn"])["ExportDescription"]
    if export["ExportStatus"] != "COMPLETED":
        raise BackfillError(
            f"export {export['ExportArn']} {export['ExportStatus']}: "
            f"{export.get('FailureCode')} {export.get('FailureMessage')}"
        )
    return export, prefix, requested


def export_arn_text(arn: str) -> str:
    """An export ARN as AWS spells it: moto names its exports ``table/<the table's whole ARN>/import/<id>``, which
    printed the ARN twice over; the id at its end is what finds the export again (``find_export``)."""
    if "/arn:aws" not in arn:
        return arn
    table = arn.split("/arn:aws", 1)[1].split(":table/", 1)[1].split("/", 1)[0]
    return f"{arn.split(':table/', 1)[0]}:table/{table}/export/{arn.rsplit('/', 1)[-1]}"


def find_export(dynamodb: Any, table_arn: str, export_arn: str) -> dict[str, Any]:
    """The description of one of the table's exports, found by the id at the end of ``export_arn``; one line
    naming the fix when the table has no such export (never the service's error page)."""
    export_id = export_arn.rstrip("/").rsplit("/", 1)[-1]
    arns: list[str] = []
    request: dict[str, Any] = {"TableArn": table_arn}
    while True:
        page = dynamodb.list_exports(**request)
        arns.extend(str(item["ExportArn"]) for item in page.get("ExportSummaries", []))
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    matches = [arn for arn in arns if arn.rsplit("/", 1)[-1] == export_id]
    if not export_id or not matches:
        raise PreconditionError(
            f"--export-arn {export_arn!r}: table {table_arn.rsplit('/', 1)[-1]} has no export {export_id!r} "
            f"({len(arns)} exports; pass the ARN a backfill printed, or leave --export-arn out to export anew)"
        )
    description: dict[str, Any] = dynamodb.describe_export(ExportArn=matches[0])["ExportDescription"]
    return description


def check_export_kept(s3: Any, bucket: str, prefix: str, export_arn: str) -> None:
    """Refuse, in one line, a re-run of an export whose files are gone: the curator purges an export
    ``exportRetentionDays`` after its request once its snapshot holds all of it (``curator.exports``)."""
    if s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", MaxKeys=1).get("KeyCount", 0) == 0:
        raise PreconditionError(
            f"--export-arn {export_arn!r}: nothing is left under s3://{bucket}/{prefix}/ (the curator purges an "
            "export exportRetentionDays after its request once its snapshot holds it): leave --export-arn out to "
            "export anew"
        )


def export_data_files(s3: Any, bucket: str, prefix: str) -> tuple[str, list[str]]:
    """The export id and the data file keys under an export's S3 prefix (exactly one export expected there)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/AWSDynamoDB/"):
        keys.extend(item["Key"] for item in page.get("Contents", []) if EXPORT_DATA_FILE.search(item["Key"]))
    export_ids = sorted({match["export_id"] for key in keys if (match := EXPORT_DATA_FILE.search(key))})
    if len(export_ids) > 1:
        raise PreconditionError(
            f"s3://{bucket}/{prefix}/ holds several exports ({', '.join(export_ids)}): expected one"
        )
    return (export_ids[0] if export_ids else ""), sorted(keys)


_worker_handler: list[Any] = []


def _start_worker(environment: Mapping[str, str], quiet: bool) -> None:
    """Process pool initializer: the backfill function's environment, then its cold start."""
    os.environ.update(environment)
    if quiet:  # the handler's JSON log lines and EMF metrics go to stdout, as in Lambda
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
    from pipeline.backfill import handler  # noqa: PLC0415 - imported in the worker, after its environment is set

    _worker_handler.append(handler)


def _invoke(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _worker_handler[0](event, None)
    return result


def run_export(
    outputs: StackOutputs,
    stack: str,
    *,
    workers: int = 2,
    timeout: float = 600.0,
    quiet: bool = True,
    session: Any = None,
    export_arn: str | None = None,
    lead: timedelta = DEFAULT_LEAD,
    function_credentials: Mapping[str, str] | None = None,
) -> BackfillReport:
    """The local backfill: export, list, run the handler per data file in a process pool, check the counts.

    ``function_credentials``: the ``AWS_*`` credential variables the handler gets (its role's, as Lambda gives
    them); by default it inherits this process's."""
    session = session or boto3.Session(region_name=os.environ.get("AWS_REGION") or outputs.region)
    dynamodb, s3 = session.client("dynamodb"), session.client("s3")
    if export_arn is None:
        _checks(session, outputs, local=True, lead=lead)
    else:  # an export requested (and checked) before: only what reading it again needs
        _check_point_in_time_recovery(dynamodb, outputs.table_name)
    started = time.monotonic()
    export, prefix, requested = _request_export(dynamodb, outputs, timeout, export_arn)
    if export_arn is not None:
        check_export_kept(s3, outputs.bucket_name, prefix, export_arn)
    elapsed = time.monotonic() - started
    print(f"export {export_arn_text(export['ExportArn'])}: {export['ExportStatus']} after {elapsed:.1f} s")
    exported_at = export.get("ExportTime") or requested  # moto reports no ExportTime: the request time stands in
    export_time = exported_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    export_id, keys = export_data_files(s3, outputs.bucket_name, prefix)
    item_count = export.get("ItemCount")
    report = BackfillReport(
        export_arn_text(export["ExportArn"]), export_id, export_time, None if item_count is None else int(item_count)
    )
    expected = local_item_counts(s3, outputs, keys, export_time)
    print(f"{len(keys)} data files under s3://{outputs.bucket_name}/{prefix}/: the handler runs in {workers} processes")
    report.files = run_files(
        outputs, stack, expected, export_time, workers=workers, quiet=quiet, credentials=function_credentials
    )
    report.problems = check_counts(report.files, report.item_count)
    return report


def local_item_counts(s3: Any, outputs: StackOutputs, keys: Sequence[str], export_time: str) -> dict[str, int]:
    """Each data file's item count where moto writes no manifest: a file already done keeps the count its counts
    object recorded when it was read (an erasure since may have rewritten the file without the erased fans' lines,
    in place, as the manifest's ``itemCount`` stays on a deployed stack); any other file's lines are counted."""
    from pipeline.export import ExportFile  # noqa: PLC0415 - only a backfill needs them
    from pipeline.snapshot import DEFAULT_SNAPSHOT_PREFIX, SnapshotSettings, counts_key  # noqa: PLC0415

    settings = SnapshotSettings(
        output_bucket=outputs.bucket_name,
        source_table_name=outputs.table_name,
        snapshot_prefix=DEFAULT_SNAPSHOT_PREFIX,
        quarantine_prefix=outputs.quarantine_prefix,
    )
    counts: dict[str, int] = {}
    for key in keys:
        event = _event(outputs.bucket_name, key, export_time, 0)
        done = _file_counts(s3, outputs.bucket_name, counts_key(settings, ExportFile.from_event(event)))
        if done is not None:
            counts[key] = int(done["items"])
        else:
            counts[key] = count_lines(s3.get_object(Bucket=outputs.bucket_name, Key=key)["Body"])
    return counts


def _event(bucket: str, key: str, export_time: str, item_count: int) -> dict[str, Any]:
    """The backfill function's event for one data file, as the Distributed Map builds it from a manifest entry."""
    return {"export_bucket": bucket, "data_key": key, "export_time": export_time, "item_count": item_count}


def run_files(
    outputs: StackOutputs,
    stack: str,
    expected: Mapping[str, int],
    export_time: str,
    *,
    workers: int = 2,
    quiet: bool = True,
    credentials: Mapping[str, str] | None = None,
) -> list[FileOutcome]:
    """Run the backfill handler on each data file (key -> its item count) in a process pool."""
    outcomes = {key: FileOutcome(key, count) for key, count in expected.items()}
    if not outcomes:
        return []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: a cold start, no forked state
    # The AWS_* variables come with the inherited environment, unless the function's own are given.
    environment = {**backfill_environment(outputs, stack), **(credentials or {})}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(outcomes))),
        mp_context=context,
        initializer=_start_worker,
        initargs=(environment, quiet),
    ) as pool:
        futures = {
            pool.submit(_invoke, _event(outputs.bucket_name, key, export_time, outcomes[key].expected)): key
            for key in outcomes
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            outcome = outcomes[futures[future]]
            try:
                outcome.result = future.result()
            except Exception as error:
                outcome.error = f"{type(error).__name__}: {error}"
            state = "failed" if outcome.error else f"{outcome.accounted:,} of {outcome.expected:,} items"
            print(f"[{done}/{len(outcomes)}] {outcome.data_key.rsplit('/', 1)[-1]}: {state}", flush=True)
    return list(outcomes.values())


# -- a deployed stack: the Step Functions Distributed Map ----------------------------------------------------------
_RUNNING = "RUNNING"


def manifest_files_key(export: Mapping[str, Any]) -> str:
    """``.../AWSDynamoDB/<export id>/manifest-files.json`` from the export's ``ExportManifest`` (the summary's key)."""
    summary = str(export.get("ExportManifest") or "")
    if not summary.endswith("/manifest-summary.json") or "/AWSDynamoDB/" not in summary:
        raise BackfillError(f"export {export.get('ExportArn')} reports no manifest (ExportManifest {summary!r})")
    return summary.removesuffix("manifest-summary.json") + "manifest-files.json"


def _export_time_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _map_run_counts(sfn: Any, execution_arn: str) -> dict[str, int] | None:
    """The map run's item counts (``succeeded``, ``failed``, ``total``...), once Step Functions has started it."""
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if not runs:
        return None
    counts: dict[str, int] = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])["itemCounts"]
    return counts


def follow_execution(
    sfn: Any, execution_arn: str, files: int, *, poll_seconds: float = 5.0, timeout: float = 86_400.0
) -> dict[str, Any]:
    """Poll the execution until it ends, showing the map run's finished data files as a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task("data files", total=files)
        while True:
            execution: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            counts = _map_run_counts(sfn, execution_arn)
            if counts is not None:
                done = int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))
                progress.update(task, completed=done, description=f"data files ({counts.get('failed', 0)} failed)")
            if execution["status"] != _RUNNING:
                return execution
            if time.monotonic() > deadline:
                raise BackfillError(f"execution {execution_arn} still RUNNING after {timeout:.0f} s")
            time.sleep(poll_seconds)


def _file_counts(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    counts: dict[str, Any] = json.loads(body)
    return counts


def run_deployed(
    outputs: StackOutputs,
    *,
    timeout: float = 600.0,
    session: Any = None,
    export_arn: str | None = None,
    poll_seconds: float = 5.0,
) -> BackfillReport:
    """The deployed backfill: export, read its manifest, run the state machine, check every file's counts."""
    from pipeline.export import ExportFile  # noqa: PLC0415 - only a backfill needs them
    from pipeline.snapshot import DEFAULT_SNAPSHOT_PREFIX, SnapshotSettings, counts_key  # noqa: PLC0415

    session = session or boto3.Session(region_name=outputs.region)
    dynamodb, s3, sfn = session.client("dynamodb"), session.client("s3"), session.client("stepfunctions")
    checked: datetime | None = None
    if export_arn is None:  # the cutover checks (ops.backfill_checks) at the query's lead; the export is at their T
        checked = _checks(session, outputs, local=False, lead=DEFAULT_LEAD)
    else:  # an export requested (and checked) before: only what reading it again needs
        _check_point_in_time_recovery(dynamodb, outputs.table_name)
    started = time.monotonic()
    export, prefix, requested = _request_export(dynamodb, outputs, timeout, export_arn, export_time=checked)
    if export_arn is not None:
        check_export_kept(s3, outputs.bucket_name, prefix, export_arn)
    elapsed = time.monotonic() - started
    print(f"export {export_arn_text(export['ExportArn'])}: {export['ExportStatus']} after {elapsed:.1f} s")
    export_time = _export_time_text(export.get("ExportTime") or requested)
    manifest_key = manifest_files_key(export)
    manifest = s3.get_object(Bucket=outputs.bucket_name, Key=manifest_key)["Body"].read().decode("utf-8")
    expected = manifest_item_counts(manifest.splitlines())
    export_id = manifest_key.split("/AWSDynamoDB/", 1)[1].split("/", 1)[0]
    item_count = export.get("ItemCount")
    report = BackfillReport(
        export_arn_text(export["ExportArn"]), export_id, export_time, None if item_count is None else int(item_count)
    )
    execution_input = {
        "export_bucket": outputs.bucket_name,
        "export_time": export_time,
        "manifest_files_key": manifest_key,
    }
    # Execution names are unique per state machine for 90 days: the export id and the start time.
    name = f"{export_id}-{datetime.now(UTC):%Y%m%dT%H%M%S}"[:80]
    execution_arn = sfn.start_execution(
        stateMachineArn=outputs.backfill_state_machine_arn, name=name, input=json.dumps(execution_input)
    )["executionArn"]
    print(f"{len(expected)} data files in {manifest_key}: execution {execution_arn}")
    execution = follow_execution(sfn, execution_arn, len(expected), poll_seconds=poll_seconds)
    if execution["status"] != "SUCCEEDED":
        cause = execution.get("error") or execution.get("cause") or ""
        report.problems.append(f"execution {execution_arn} {execution['status']} {cause}".rstrip())
    settings = SnapshotSettings(
        output_bucket=outputs.bucket_name,
        source_table_name=outputs.table_name,
        snapshot_prefix=DEFAULT_SNAPSHOT_PREFIX,
        quarantine_prefix=outputs.quarantine_prefix,
    )
    for key, count in sorted(expected.items()):
        outcome = FileOutcome(key, count)
        event = _event(outputs.bucket_name, key, export_time, count)
        counts = _file_counts(s3, outputs.bucket_name, counts_key(settings, ExportFile.from_event(event)))
        if counts is None:
            outcome.error = "no counts object: the file was not back-filled"
        else:
            outcome.result = {**counts, "data_key": key}
        report.files.append(outcome)
    report.problems.extend(check_counts(report.files, report.item_count))
    return report


# -- command line -------------------------------------------------------------------------------------------------
PROG = "python -m ops.backfill"


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage between 0 and 100")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "stack", type=stack_name, help="stack whose table and bucket to use (dev1, qa1, preprod1, prod1)"
    )
    parser.add_argument("--workers", type=integer_at_least(1), default=2, help="data files handled at once (default 2)")
    parser.add_argument(
        "--timeout", type=number_above(0), default=600.0, help="seconds to wait for the export (default 600)"
    )
    parser.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or Pulumi)")
    parser.add_argument("--export-arn", help="back-fill this completed export again instead of requesting one")
    parser.add_argument(
        "--dry-run", action="store_true", help="run the checks and say what would be done; change nothing"
    )
    parser.add_argument("--verbose", action="store_true", help="show the handler's log lines and EMF metrics")
    parser.add_argument(
        "--max-quarantined-percent",
        type=_percent,
        default=DEFAULT_MAX_QUARANTINED_PERCENT,
        help=f"publish only if at most this share of lines was quarantined (default {DEFAULT_MAX_QUARANTINED_PERCENT})",
    )
    parser.add_argument(
        "--lead-seconds",
        type=number_at_least(0),
        default=None,
        help="the local AWS only: the lead of the cutover checks in seconds (default 300, the query's 5 min)",
    )
    args = parser.parse_args(argv)
    if args.lead_seconds is not None and args.lead_seconds > DEFAULT_LEAD.total_seconds():
        parser.error(f"--lead-seconds {args.lead_seconds:g} must be between 0 and {DEFAULT_LEAD.total_seconds():g}")
    if args.lead_seconds is not None and not _is_local():
        parser.error("--lead-seconds is for the local AWS only: a deployed stack's lead is the query's 5 minutes")
    return args


def dry_run(
    outputs: StackOutputs, *, local: bool, lead: timedelta, export_arn: str | None = None, session: Any = None
) -> str:
    """The checks a backfill makes before it requests anything, and one line saying what it would do."""
    from pipeline.snapshot import DEFAULT_SNAPSHOT_PREFIX  # noqa: PLC0415 - only a backfill needs it

    session = session or boto3.Session(region_name=os.environ.get("AWS_REGION") or outputs.region)
    dynamodb = session.client("dynamodb")
    target = f"s3://{outputs.bucket_name}/{DEFAULT_SNAPSHOT_PREFIX}"
    if export_arn is None:
        export_time = _checks(session, outputs, local=local, lead=lead)
        return (
            f"dry run: the cutover checks pass; would export table {outputs.table_name} at "
            f"{_export_time_text(export_time)} into s3://{outputs.bucket_name}/{EXPORTS_PREFIX} and back-fill "
            f"{target}; nothing changed"
        )
    _check_point_in_time_recovery(dynamodb, outputs.table_name)
    table_arn = dynamodb.describe_table(TableName=outputs.table_name)["Table"]["TableArn"]
    export = find_export(dynamodb, table_arn, export_arn)
    check_export_kind(export)
    return (
        f"dry run: would back-fill export {export_arn_text(export['ExportArn'])} ({export['ExportStatus']}, "
        f"{export.get('ItemCount', 'unknown')} items) into {target}; nothing changed"
    )


def _print_report(report: BackfillReport) -> None:
    print(f"export {report.export_id} at {report.export_time}: {report.item_count} items")
    width = max((len(outcome.data_key) for outcome in report.files), default=8)
    print(f"{'data file':<{width}} {'items':>9} {'rows':>9} {'quarantined':>11}  status")
    for outcome in sorted(report.files, key=lambda outcome: outcome.data_key):
        result = outcome.result or {}
        status = "failed" if outcome.error else ("already done" if result.get("already_done") else "written")
        print(
            f"{outcome.data_key:<{width}} {outcome.expected:>9,} {int(result.get('rows', 0)):>9,} "
            f"{int(result.get('quarantined', 0)):>11,}  {status}"
        )
    totals = report.totals()
    print(
        f"{totals['data files']} data files, {totals['items']:,} items: {totals['rows']:,} rows + "
        f"{totals['quarantined']:,} quarantined ({totals['already done']} files already done)"
    )


def _refusal_lines(error: BackfillError, *, local: bool, lead_given: bool, stack: str) -> list[str]:
    """The refusal, one line per failed check; on the local AWS a lead refusal names the local fix."""
    lines = str(error).splitlines()
    if (
        local
        and not lead_given
        and isinstance(error, PreconditionError)
        and any(_LEAD_REFUSAL.search(line) for line in lines)
    ):
        lines.append(
            "on the local AWS the 5 minutes can be shortened: "
            f"make backfill STACK={stack} ARGS='--lead-seconds 0' (or wait the time named above)"
        )
    return lines


def _local_function_role(stack: str, outputs: StackOutputs) -> tuple[dict[str, str], str]:
    """The local backfill role's ``AWS_*`` variables (what Lambda gives the function) and its name."""
    from sandbox.command_roles import assume_local_role  # noqa: PLC0415 - the local AWS only

    try:
        roles = assume_local_role(BACKFILL_ROLE, stack, outputs)
    except (ClientError, BotoCoreError) as error:
        raise BackfillError(f"cannot act as the local backfill role of {stack}: {error}") from None
    return roles.environment(BACKFILL_ROLE), roles.role_names[BACKFILL_ROLE]


def _run(args: argparse.Namespace, bound: BoundStack, local: bool) -> BackfillReport | str:
    lead = DEFAULT_LEAD if args.lead_seconds is None else timedelta(seconds=args.lead_seconds)
    outputs = bound.outputs
    if args.dry_run:
        return dry_run(outputs, local=local, lead=lead, export_arn=args.export_arn)
    what = f"export {args.export_arn}" if args.export_arn else f"a new export of table {outputs.table_name}"
    print(bound.describe(f"back-fill {what} into s3://{outputs.bucket_name}/demand/snapshots/"))
    if local:
        credentials, role_name = _local_function_role(args.stack, outputs)
        print(f"acting as the local backfill role {role_name} for the function's part (the export as the operator)")
        return run_export(
            outputs,
            args.stack,
            workers=args.workers,
            timeout=args.timeout,
            quiet=not args.verbose,
            export_arn=args.export_arn,
            lead=lead,
            function_credentials=credentials,
        )
    return run_deployed(outputs, timeout=args.timeout, export_arn=args.export_arn)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    local = _is_local()
    # Everything a backfill needs is checked before it requests anything: the stack file, the outputs of that
    # stack, and credentials of the account they name (the local AWS too: its outputs name moto's account).
    try:
        problem = stack_file_problem(args.stack)
        if problem is not None:
            raise OutputsError(problem)
        bound = bind_stack(args.stack, outputs_file=args.outputs_file)
    except OutputsError as error:
        print(f"backfill: {error}", file=sys.stderr)
        return USER_ERROR
    try:
        result = _run(args, bound, local)
    except BackfillError as error:
        for line in _refusal_lines(error, local=local, lead_given=args.lead_seconds is not None, stack=args.stack):
            print(f"backfill: {line}", file=sys.stderr)
        return USER_ERROR if isinstance(error, PreconditionError) else 1
    except ClientError as error:  # an AWS refusal (no such state machine, access denied): one line, not a traceback
        print(f"backfill: {args.stack}: {error}", file=sys.stderr)
        return 1
    except BotoCoreError as error:  # the local AWS stopped, no network: one line naming the fix
        down = unreachable(error, os.environ.get("AWS_ENDPOINT_URL"))
        print(f"backfill: {down or error}", file=sys.stderr)
        return 1
    if isinstance(result, str):
        print(result)
        return 0
    return _conclude(result, args.stack, local=local, max_quarantined_percent=args.max_quarantined_percent)


def _conclude(report: BackfillReport, stack: str, *, local: bool, max_quarantined_percent: float) -> int:
    """Print the report and what to do next; the exit status (0 counts match, 1 incomplete)."""
    _print_report(report)
    for problem in report.problems:
        print(f"backfill: {problem}", file=sys.stderr)
    if report.problems:
        print("backfill: INCOMPLETE: the counts do not add up (see above); the snapshot must not be published")
        print(f"after a fix, finish this export: make backfill STACK={stack} ARGS='--export-arn {report.export_arn}'")
        return 1
    print("counts match: every item of the export is a row or quarantined")
    too_many = quarantine_problem(report.totals(), max_quarantined_percent)
    if too_many:
        print(f"backfill: {too_many}", file=sys.stderr)
        print("backfill: do not publish this snapshot: too many lines were quarantined (see above)")
        return 1
    if local:  # a local export id means nothing to a deployed stack: no command for one
        print(
            f"local AWS: export {report.export_id} at {report.export_time} is the local lake's snapshot "
            "(nothing to publish: a deployed stack's backfill prints its own pulumi config commands)"
        )
        return 0
    print(
        f"publish it: pulumi config set dmd-pipeline:snapshotExportId {report.export_id} --stack {stack} && "
        f"pulumi config set dmd-pipeline:snapshotExportTime {report.export_time} --stack {stack}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
