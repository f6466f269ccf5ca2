"""Re-drive records through the handler after a fix: quarantined records, or the batches Lambda discarded.

    python -m ops.replay quarantine qa1 --prefix demand/quarantine/dt=2026-11-29/   # every object under it
    python -m ops.replay quarantine qa1 --key demand/quarantine/dt=2026-11-29/ab12cd34-shardId-...jsonl.gz
    python -m ops.replay failures qa1                   # on-failure objects in the stack's failure bucket
    python -m ops.replay failures qa1 --key aws/lambda/<mapping uuid>/shardId-.../2026/11/29/...
    python -m ops.replay failures qa1 --message-file record.json   # one saved on-failure record (kept as it is)

Sources. A quarantine object's lines carry each record's original payload, shard and sequence number. An
on-failure object (Lambda's S3 on-failure destination, key ``aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/...``)
holds the whole invocation event in ``payload``, so a replay does not depend on the stream's retention.

The events go to the function: ``--via lambda`` invokes the stack's ``live`` alias (the deployed fix; the default
for a deployed stack), ``--via in-process`` calls ``pipeline.handler.handler`` here with the stack's function
environment (the default when ``AWS_ENDPOINT_URL`` points at the local AWS). Handler logs go to a file
(``--log-file``) unless ``--verbose``. On the local AWS the handler acts as the local processor role (assumed with
the administrator's key, as Lambda gives the function its role) and a call that role may not make stops the replay
with one line naming role, action and resource; the replay's own reads and removals of its sources stay with the
operator's credentials.

Never loses a record: nothing is deleted before the records are durable again. For each source, the function is
invoked first; then every record is looked up where the handler writes it: a Parquet row (the object's
``sequence_number`` column is read back) or a quarantine line (with its reason). The source is removed only when
each of its records has a durable copy somewhere else; a quarantine object that still holds records quarantined
again (the handler's write-once key can be the source's own) is kept. Killed at any moment, or with S3 failing,
every record is still in its source, a row or a quarantine object; running the replay again finishes the job.

Before invoking, each source's records are looked up once: a record that is a row already (an earlier run wrote
it) is not sent again. The report says, per source and in total, the rows this run wrote, the rows found already
written, the records quarantined again (by reason) and the records still failing, with why; a progress bar on
stderr (a terminal only) is drawn before the first invocation. The exit status is 0 only when every record is a
row and every source was removed, 1 otherwise, 2 for a mistake (nothing was changed): a broken stack file, an
object that does not exist, a ``--prefix`` that holds nothing. A backfill's quarantine objects (``snapshots/``
under the quarantine prefix: lines of an export data file, not stream records) are skipped and counted, and
refused when named. ``--dry-run`` reads and checks the sources and says what would be replayed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ops.cli import CommandParser, integer_at_least, stack_file_problem, stack_name, unreachable, user_error
from ops.outputs import BoundStack, OutputsError, StackOutputs, bind_stack
from sandbox.changes import KinesisEntry, lambda_event

if TYPE_CHECKING:
    from sandbox.roles import RoleSessions

__all__ = [
    "FAILURE_PREFIX",
    "Invoker",
    "ReplayError",
    "ReplayReport",
    "RoleDeniedError",
    "Source",
    "SourceOutcome",
    "failure_object_source",
    "failure_sources",
    "in_process_invoker",
    "lambda_invoker",
    "locate",
    "main",
    "progress_console",
    "quarantine_entries",
    "quarantine_keys",
    "quarantine_source",
    "quarantine_sources",
    "replay_failures",
    "replay_quarantine",
    "replay_sources",
]

Invoker = Callable[[dict[str, Any]], Mapping[str, Any]]
Step = Callable[[str, str], None]
Advance = Callable[[int], None]  # called with the number of records just handled (a progress bar's advance)
DEFAULT_BATCH = 500
FAILURE_PREFIX = "aws/lambda/"  # where Lambda's S3 on-failure destination writes
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
PROG = "python -m ops.replay"
PROCESSOR_ROLE = "processor"  # sandbox.roles.ROLES


class ReplayError(RuntimeError):
    """A replay cannot start: a wrong argument or a source that cannot be read (nothing was changed)."""


class RoleDeniedError(RuntimeError):
    """The function's role may not make a call its code made (the local AWS); names role, action and resource."""


# -- what a replay did ------------------------------------------------------------------------------------------
@dataclass
class SourceOutcome:
    """What a replay did with one source's records."""

    label: str
    records: int = 0
    written: int = 0  # rows this run wrote (not a row before it invoked the function, a row after)
    already: int = 0  # rows found before invoking: written by an earlier run, not driven again
    quarantined: Counter[str] = field(default_factory=Counter)  # reason kind -> records quarantined again
    failing: Counter[str] = field(default_factory=Counter)  # why -> records neither a row nor quarantined again

    def line(self) -> str:
        reasons = ", ".join(f"{kind} {count}" for kind, count in sorted(self.quarantined.items()))
        failing = "; ".join(f"{count} {why}" for why, count in self.failing.most_common())
        return (
            f"{self.records} records: {self.written} rows written by this run, {self.already} already written, "
            f"{sum(self.quarantined.values())} quarantined again{f' ({reasons})' if reasons else ''}, "
            f"{sum(self.failing.values())} still failing{f' ({failing})' if failing else ''}"
        )


@dataclass
class ReplayReport:
    """What a replay did, record by record and source by source."""

    dry_run: bool = False
    records: int = 0
    written: int = 0  # rows this run wrote
    already: int = 0  # rows an earlier run wrote (found before invoking, not driven again)
    quarantined: Counter[str] = field(default_factory=Counter)  # reason kind -> records quarantined again
    failed: dict[str, str] = field(default_factory=dict)  # "<shard>:<sequence>" -> why it is still failing
    invocations: int = 0
    sources: list[str] = field(default_factory=list)
    outcomes: list[SourceOutcome] = field(default_factory=list)  # one per source replayed
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "<source>: why it was kept"
    skipped: list[str] = field(default_factory=list)  # objects under the prefix that are not stream records

    @property
    def rows(self) -> int:
        """Records that are rows now: written by this run or found already written."""
        return self.written + self.already

    @property
    def ok(self) -> bool:
        """Every record is a row and every source is gone."""
        return not self.dry_run and self.rows == self.records and not self.kept

    def line(self) -> str:
        if self.dry_run:
            return f"dry run: would replay {self.records} records from {len(self.sources)} sources; nothing changed"
        reasons = ", ".join(f"{kind} {count}" for kind, count in sorted(self.quarantined.items()))
        return (
            f"{self.records} records: {self.written} rows written by this run, {self.already} already written, "
            f"{sum(self.quarantined.values())} quarantined again{f' ({reasons})' if reasons else ''}, "
            f"{len(self.failed)} still failing; {self.invocations} invocations; "
            f"sources: {len(self.removed)} removed, {len(self.kept)} kept"
        )


@dataclass(frozen=True)
class Source:
    """Records to replay and how to remove where they came from once each has a durable copy elsewhere."""

    label: str
    groups: Mapping[tuple[str, str], Sequence[KinesisEntry]]  # (stream ARN, shard id) -> records
    remove: Callable[[], None] | None  # None: nothing to remove (a local file)
    quarantine_key: str | None = None  # the source is this quarantine object (it may hold records quarantined again)

    @property
    def records(self) -> int:
        return sum(len(entries) for entries in self.groups.values())


# -- invoking the function --------------------------------------------------------------------------------------
def lambda_invoker(function_arn: str, client: Any, log_file: Path | None = None) -> Invoker:
    """Invoke the deployed function (its alias ARN) synchronously; an unhandled error raises ``ReplayError``."""

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        response = client.invoke(
            FunctionName=function_arn, InvocationType="RequestResponse", Payload=json.dumps(event), LogType="Tail"
        )
        if log_file is not None and response.get("LogResult"):
            with log_file.open("a", encoding="utf-8") as handle:
                handle.write(base64.b64decode(response["LogResult"]).decode("utf-8", "replace"))
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise ReplayError(f"{function_arn} failed: {payload.get('errorMessage', payload)}")
        return payload if isinstance(payload, Mapping) else {}

    return invoke


@contextlib.contextmanager
def _output_to(handle: Any) -> Iterator[None]:
    """Send stdout and stderr to ``handle`` (the streams, and file descriptors 1 and 2 for anything below them).

    The handler's logger binds the stream it is created with (on the first call, inside this block), so its lines
    keep going to the log file on later calls too.
    """
    if handle is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    try:
        with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            yield
    finally:
        handle.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def in_process_invoker(
    outputs: StackOutputs, stack: str, log_file: Path | None = None, acting_as: RoleSessions | None = None
) -> Invoker:
    """Call ``pipeline.handler.handler`` in this process with the stack's function environment.

    ``acting_as``: the local AWS's sessions holding the processor role; the handler then acts as that role, and
    an invocation during which the role was refused a call raises ``RoleDeniedError``.
    """
    from components.function_environment import lambda_environment  # noqa: PLC0415 - only this mode needs them
    from components.naming import prefixes  # noqa: PLC0415
    from components.settings import settings_from_stack_file  # noqa: PLC0415
    from sandbox.local_aws import patched_environment  # noqa: PLC0415
    from sandbox.mapping import LocalLambdaContext  # noqa: PLC0415
    from sandbox.runner import default_function  # noqa: PLC0415

    layout = prefixes()
    environment = lambda_environment(settings_from_stack_file(stack), outputs.bucket_name, layout)
    environment.update(OUTPUT_PREFIX=outputs.events_prefix, QUARANTINE_PREFIX=outputs.quarantine_prefix)
    s3 = None
    if acting_as is not None:  # as Lambda does: the role's credentials in the function's environment
        environment.update(acting_as.environment(PROCESSOR_ROLE))
        s3 = acting_as.session(PROCESSOR_ROLE).client("s3")  # its refusals are recorded, named

    functions: list[Any] = []
    handles: list[Any] = []

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        if log_file is not None and not handles:
            handles.append(log_file.open("a", encoding="utf-8"))  # open for the replay's life: the logger keeps it
        refused = len(acting_as.denials) if acting_as is not None else 0
        with patched_environment(environment), _output_to(handles[0] if handles else None):
            if not functions:  # one cold start, in the stack's environment
                functions.append(default_function(s3))
            context = LocalLambdaContext(outputs.function_name, outputs.function_alias_arn)
            response = functions[0](event, context)
        if acting_as is not None and len(acting_as.denials) > refused:
            # The handler turns a refused write into a retry; the role would be refused again on every one.
            raise RoleDeniedError(f"IAM denied: {acting_as.denials[refused].describe()}")
        return response if isinstance(response, Mapping) else {}

    return invoke


def _events(entries: Sequence[KinesisEntry], shard_id: str, stream_arn: str, region: str) -> Iterator[dict[str, Any]]:
    ordered = sorted(entries, key=lambda entry: int(entry.sequence_number))
    for start in range(0, len(ordered), DEFAULT_BATCH):
        yield lambda_event(
            ordered[start : start + DEFAULT_BATCH], shard_id=shard_id, stream_arn=stream_arn, region=region
        )


def _drive(
    groups: Mapping[tuple[str, str], Sequence[KinesisEntry]],
    invoke: Invoker,
    region: str,
    report: ReplayReport,
    advance: Advance,
) -> dict[str, str]:
    """Invoke per shard and batch; return the sequence numbers the function did not handle, with why."""
    failed: dict[str, str] = {}
    for (stream_arn, shard_id), entries in groups.items():
        for event in _events(entries, shard_id, stream_arn, region):
            report.invocations += 1
            sequences = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
            try:
                response = invoke(event)
            except RoleDeniedError:  # every invocation would be refused the same: stop, nothing is removed
                raise
            except Exception as error:  # the function failed: every record of the batch is still to do
                failed.update(dict.fromkeys(sequences, f"the invocation failed: {error}"))
                continue
            finally:
                advance(len(sequences))
            identifiers = [
                item.get("itemIdentifier") if isinstance(item, Mapping) else None
                for item in response.get("batchItemFailures") or []
            ]
            if not identifiers:
                continue
            # As Lambda does: everything from the lowest reported record on is not done; an unknown id fails all.
            known = [int(item) for item in identifiers if isinstance(item, str) and item in sequences]
            lowest = min(known) if len(known) == len(identifiers) else int(sequences[0])
            failed.update(
                {sequence: "reported failed by the function" for sequence in sequences if int(sequence) >= lowest}
            )
    return failed


# -- where the handler put each record --------------------------------------------------------------------------
def _stream_tag(stream_arn: str) -> str:
    return hashlib.sha256(stream_arn.encode("utf-8")).hexdigest()[:8]


def _change_hour(data: bytes) -> datetime | None:
    """The UTC hour of a record's change time (its Parquet partition), or None when the payload cannot say."""
    try:
        stamp = float(json.loads(data)["dynamodb"]["ApproximateCreationDateTime"])
    except (ValueError, TypeError, KeyError):
        return None
    seconds = stamp / 1_000_000 if stamp > 1e14 else stamp / 1000 if stamp > 1e11 else stamp  # micro, milli, s
    try:
        return datetime.fromtimestamp(seconds - seconds % 3600, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _starts_at(key: str, name_prefix: str, sequences: set[str]) -> bool:
    """Whether an object named ``<tag>-<shard id>-<first sequence>...`` starts at one of ``sequences``."""
    name = key.rsplit("/", 1)[-1]
    if not name.startswith(name_prefix):
        return False
    first = name[len(name_prefix) :].split("-", 1)[0].split(".", 1)[0]
    return first in sequences


def _read_lines(body: bytes, key: str) -> list[dict[str, Any]]:
    text = gzip.decompress(body).decode("utf-8") if key.endswith(".gz") else body.decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class Located:
    """Where the records of one shard are now: rows, and quarantine lines (key, kind) per sequence number."""

    rows: set[str] = field(default_factory=set)
    quarantine: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def locate(s3: Any, outputs: StackOutputs, stream_arn: str, shard_id: str, entries: Sequence[KinesisEntry]) -> Located:
    """Look the records up where the handler writes them: Parquet rows under their change-time hour, quarantine
    lines under their arrival day, in objects named after the stream, the shard and a first sequence number."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - only the replay reads Parquet back

    from pipeline.writer import partition_prefix, quarantine_partition_prefix  # noqa: PLC0415

    sequences = {entry.sequence_number for entry in entries}
    name_prefix = f"{_stream_tag(stream_arn)}-{shard_id}-"
    found = Located()
    hours = {hour for entry in entries if (hour := _change_hour(entry.data)) is not None}
    for prefix in sorted({partition_prefix(outputs.events_prefix, hour) for hour in hours}):
        for key in _keys(s3, outputs.bucket_name, prefix + name_prefix):
            if key.endswith(".parquet") and _starts_at(key, name_prefix, sequences):
                body = s3.get_object(Bucket=outputs.bucket_name, Key=key)["Body"].read()
                column = pq.read_table(io.BytesIO(body), columns=["sequence_number"]).column(0).to_pylist()
                found.rows.update(sequences.intersection(column))
    days = {datetime.fromtimestamp(entry.arrival, UTC) for entry in entries}
    for prefix in sorted({quarantine_partition_prefix(outputs.quarantine_prefix, day) for day in days}):
        for key in _keys(s3, outputs.bucket_name, prefix + name_prefix):
            if ".jsonl" in key and _starts_at(key, name_prefix, sequences):
                body = s3.get_object(Bucket=outputs.bucket_name, Key=key)["Body"].read()
                for line in _read_lines(body, key):
                    sequence = str(line.get("sequence_number"))
                    if sequence in sequences:
                        kind = str(line.get("error_kind") or "unknown")
                        found.quarantine.setdefault(sequence, []).append((key, kind))
    return found


# -- one source, start to end -----------------------------------------------------------------------------------
def _no_step(step: str, label: str) -> None:
    """Called between the steps of a source's replay (tests stop the replay there, as a kill would)."""


def _no_advance(records: int) -> None:
    """Called as records are handled (the command line shows a progress bar with it)."""


def _locate_all(
    s3: Any, outputs: StackOutputs, groups: Mapping[tuple[str, str], Sequence[KinesisEntry]]
) -> dict[tuple[str, str], Located]:
    return {(arn, shard): locate(s3, outputs, arn, shard, entries) for (arn, shard), entries in groups.items()}


def _replay_one(  # noqa: PLR0917 - private; one call site
    source: Source,
    invoke: Invoker,
    s3: Any,
    outputs: StackOutputs,
    report: ReplayReport,
    region: str,
    step: Step,
    advance: Advance,
) -> None:
    step("read", source.label)
    outcome = SourceOutcome(source.label, records=source.records)
    # Rows written by an earlier run (a replay killed before removal, or one whose read-back failed) are not
    # driven again, and are reported as found, not as written now.
    try:
        before: set[str] = set().union(*(found.rows for found in _locate_all(s3, outputs, source.groups).values()))
    except (ClientError, BotoCoreError):
        before = set()  # cannot tell: drive every record (the handler's keys make a second copy harmless)
    pending = {
        group: [entry for entry in entries if entry.sequence_number not in before]
        for group, entries in source.groups.items()
    }
    failed = _drive({group: entries for group, entries in pending.items() if entries}, invoke, region, report, advance)
    advance(len(before))
    step("invoked", source.label)
    located: dict[tuple[str, str], Located] = {}
    try:
        located = _locate_all(s3, outputs, source.groups)
    except (ClientError, BotoCoreError) as error:
        unverified = f"sent to the function, but could not be read back from S3 ({_short(error)}): run again"
        for driven in pending.values():
            failed.update(
                {entry.sequence_number: unverified for entry in driven if entry.sequence_number not in failed}
            )
    # Each record: a row (read back), quarantined again (a line read back), or still failing (and why).
    elsewhere: set[str] = set()  # records with a durable copy other than the source itself
    for (stream_arn, shard_id), entries in source.groups.items():
        where = located.get((stream_arn, shard_id), Located())
        for entry in entries:
            sequence = entry.sequence_number
            lines = where.quarantine.get(sequence, [])
            if sequence in before:
                outcome.already += 1
                elsewhere.add(sequence)
            elif sequence in where.rows:
                outcome.written += 1
                elsewhere.add(sequence)
            elif sequence not in failed and lines:
                outcome.quarantined[lines[-1][1]] += 1
                if any(key != source.quarantine_key for key, _ in lines):
                    elsewhere.add(sequence)
            else:
                why = failed.get(sequence, "the function reported it done, but it is neither a row nor quarantined")
                report.failed[f"{shard_id}:{sequence}"] = why
                outcome.failing[why] += 1
    report.written += outcome.written
    report.already += outcome.already
    report.quarantined.update(outcome.quarantined)
    report.outcomes.append(outcome)
    step("accounted", source.label)
    _remove_if_accounted(source, s3, outputs, elsewhere, report)
    step("removed", source.label)


def _short(error: BaseException) -> str:
    """An AWS error in a few words (its code, or the first line of its message)."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')} on {error.operation_name}"
    return str(error).splitlines()[0][:120]


def _remove_if_accounted(
    source: Source, s3: Any, outputs: StackOutputs, elsewhere: set[str], report: ReplayReport
) -> None:
    if source.remove is None:
        return
    if source.quarantine_key is not None:
        # What the object holds now (a handler that overwrites may have rewritten it with the records still bad).
        try:
            body = s3.get_object(Bucket=outputs.bucket_name, Key=source.quarantine_key)["Body"].read()
            held = {str(line.get("sequence_number")) for line in _read_lines(body, source.quarantine_key)}
        except (ClientError, BotoCoreError) as error:
            report.kept.append(f"{source.label}: could not be read again before removal ({error})")
            return
    else:
        held = {entry.sequence_number for entries in source.groups.values() for entry in entries}
    only_here = sorted(held - elsewhere, key=int)
    if only_here:
        report.kept.append(f"{source.label}: {len(only_here)} of its records have no other durable copy")
        return
    try:
        source.remove()
    except (ClientError, BotoCoreError) as error:
        report.kept.append(f"{source.label}: every record is accounted for, but removing it failed ({error})")
        return
    report.removed.append(source.label)


def replay_sources(
    sources: Iterable[Source],
    invoke: Invoker,
    *,
    s3: Any,
    outputs: StackOutputs,
    dry_run: bool = False,
    region: str = "us-east-1",
    step: Step = _no_step,
    advance: Advance = _no_advance,
) -> ReplayReport:
    """Replay each source and remove it once every one of its records has a durable copy elsewhere."""
    report = ReplayReport(dry_run=dry_run)
    for source in sources:
        report.sources.append(source.label)
        report.records += source.records
        if not dry_run:
            _replay_one(source, invoke, s3, outputs, report, region, step, advance)
    return report


# -- quarantined records ----------------------------------------------------------------------------------------
def quarantine_entries(lines: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[KinesisEntry]]:
    """Quarantine lines -> Kinesis entries grouped by (stream ARN, shard), as they were on the stream."""
    groups: dict[tuple[str, str], list[KinesisEntry]] = {}
    for line in lines:
        entry = KinesisEntry(
            data=base64.b64decode(line["data"]),
            partition_key=str(line.get("partition_key") or ""),
            sequence_number=str(line["sequence_number"]),
            arrival=float(line.get("approximate_arrival_timestamp") or datetime.now(UTC).timestamp()),
        )
        groups.setdefault((str(line["event_source_arn"]), str(line["shard_id"])), []).append(entry)
    return groups


def _get(s3: Any, bucket: str, key: str, what: str) -> bytes:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise ReplayError(f"{what} {key!r} does not exist in s3://{bucket}/") from None
        raise ReplayError(f"cannot read {what} s3://{bucket}/{key}: {error}") from None
    except BotoCoreError as error:
        raise ReplayError(f"cannot read {what} s3://{bucket}/{key}: {error}") from None


def _list(s3: Any, bucket: str, prefix: str) -> list[str]:
    try:
        return sorted(_keys(s3, bucket, prefix))
    except (ClientError, BotoCoreError) as error:
        raise ReplayError(f"cannot list s3://{bucket}/{prefix}: {error}") from None


SNAPSHOT_QUARANTINE = "snapshots/"  # under the quarantine prefix: a backfill's bad export lines, not stream records
_SNAPSHOT_ADVICE = (
    "lines of an export data file, not stream records: make replay does not re-drive them; fix their cause and "
    "back-fill a new export (docs/backfill.md)"
)


def _is_snapshot_quarantine(outputs: StackOutputs, key: str) -> bool:
    return key.startswith(outputs.quarantine_prefix + SNAPSHOT_QUARANTINE)


def quarantine_source(s3: Any, outputs: StackOutputs, key: str) -> Source:
    """One quarantine object as a source (read now: a missing or unreadable object is a ``ReplayError``)."""
    if not key.startswith(outputs.quarantine_prefix):
        raise ReplayError(f"--key {key!r} is not under the quarantine prefix {outputs.quarantine_prefix!r}")
    if _is_snapshot_quarantine(outputs, key):
        raise ReplayError(f"--key {key!r} is a backfill's quarantine object: {_SNAPSHOT_ADVICE}")
    body = _get(s3, outputs.bucket_name, key, "quarantine object")
    try:
        groups = quarantine_entries(_read_lines(body, key))
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise ReplayError(f"quarantine object {key!r} is not quarantine JSON Lines: {error}") from None
    return Source(
        label=key,
        groups=groups,
        remove=lambda: s3.delete_object(Bucket=outputs.bucket_name, Key=key),
        quarantine_key=key,
    )


def quarantine_keys(s3: Any, outputs: StackOutputs, prefix: str | None = None) -> tuple[list[str], list[str]]:
    """The stream quarantine objects under ``prefix`` (default: the whole quarantine prefix), and the objects
    there that are not stream records (a backfill's quarantine under ``snapshots/``), which are skipped.

    A ``prefix`` that was given and holds no stream quarantine object is a mistake (a typo, or the wrong day)."""
    if prefix is not None and not prefix.startswith(outputs.quarantine_prefix):
        raise ReplayError(f"--prefix {prefix!r} is not under the quarantine prefix {outputs.quarantine_prefix!r}")
    if prefix is not None and _is_snapshot_quarantine(outputs, prefix):
        raise ReplayError(f"--prefix {prefix!r} holds a backfill's quarantine objects: {_SNAPSHOT_ADVICE}")
    listed = _list(s3, outputs.bucket_name, prefix or outputs.quarantine_prefix)
    skipped = [key for key in listed if _is_snapshot_quarantine(outputs, key)]
    selected = [key for key in listed if ".jsonl" in key and not _is_snapshot_quarantine(outputs, key)]
    if prefix is not None and not selected:
        raise ReplayError(
            f"--prefix {prefix!r} holds no quarantine objects in s3://{outputs.bucket_name}/ "
            f"({len(listed)} objects there; days are {outputs.quarantine_prefix}dt=YYYY-MM-DD/: leave --prefix out "
            "to replay every day)"
        )
    return selected, skipped


def quarantine_sources(
    s3: Any, outputs: StackOutputs, keys: Sequence[str] = (), prefix: str | None = None
) -> list[Source]:
    """The quarantine objects to replay (``keys``, or all under ``prefix``), each read and checked now."""
    selected = list(keys) or quarantine_keys(s3, outputs, prefix)[0]
    return [quarantine_source(s3, outputs, key) for key in selected]  # all read before any is replayed


def replay_quarantine(
    outputs: StackOutputs,
    invoke: Invoker,
    *,
    s3: Any,
    keys: Sequence[str] = (),
    prefix: str | None = None,
    dry_run: bool = False,
    region: str = "us-east-1",
    step: Step = _no_step,
) -> ReplayReport:
    """Re-drive the records of quarantine objects (``keys``, or all under ``prefix``) through ``invoke``."""
    sources = quarantine_sources(s3, outputs, keys, prefix)
    return replay_sources(sources, invoke, s3=s3, outputs=outputs, dry_run=dry_run, region=region, step=step)


# -- batches Lambda discarded: its S3 on-failure destination ----------------------------------------------------
def _invocation_event(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The invocation event an on-failure record carries in ``payload`` (a JSON string, or the object itself)."""
    payload = record.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError as error:
            raise ReplayError(f"{where}: payload is not JSON ({error})") from None
    if not isinstance(payload, Mapping) or not isinstance(payload.get("Records"), list):
        raise ReplayError(
            f"{where}: no invocation event in payload (an S3 on-failure record of a Kinesis mapping has one; "
            "one from an SQS or SNS destination carries only the sequence range, which this command does not replay)"
        )
    return dict(payload)


def _payload_groups(event: Mapping[str, Any], where: str) -> dict[tuple[str, str], list[KinesisEntry]]:
    groups: dict[tuple[str, str], list[KinesisEntry]] = {}
    try:
        for record in event["Records"]:
            kinesis = record["kinesis"]
            entry = KinesisEntry(
                data=base64.b64decode(kinesis["data"]),
                partition_key=str(kinesis.get("partitionKey") or ""),
                sequence_number=str(kinesis["sequenceNumber"]),
                arrival=float(kinesis.get("approximateArrivalTimestamp") or 0.0),
            )
            shard_id = str(record["eventID"]).split(":", 1)[0]
            groups.setdefault((str(record["eventSourceARN"]), shard_id), []).append(entry)
    except (KeyError, TypeError, ValueError) as error:
        raise ReplayError(f"{where}: a record of the payload lacks {error}") from None
    return groups


def failure_object_source(s3: Any, bucket: str, key: str) -> Source:
    """One object of the S3 on-failure destination as a source (read and checked now)."""
    where = f"s3://{bucket}/{key}"
    body = _get(s3, bucket, key, "on-failure object")
    try:
        record = json.loads(body)
    except ValueError as error:
        raise ReplayError(f"{where}: not JSON ({error})") from None
    if not isinstance(record, Mapping):
        raise ReplayError(f"{where}: not an on-failure record (a JSON object)")
    groups = _payload_groups(_invocation_event(record, where), where)
    return Source(label=where, groups=groups, remove=lambda: s3.delete_object(Bucket=bucket, Key=key))


def failure_file_source(path: Path) -> Source:
    """A saved on-failure record (a local JSON file); the file is left as it is."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ReplayError(f"--message-file {str(path)!r}: {error.strerror or error}") from None
    except ValueError as error:
        raise ReplayError(f"--message-file {str(path)!r} is not JSON: {error}") from None
    if not isinstance(record, Mapping):
        raise ReplayError(f"--message-file {str(path)!r} is not an on-failure record (a JSON object)")
    return Source(label=str(path), groups=_payload_groups(_invocation_event(record, str(path)), str(path)), remove=None)


def failure_sources(
    s3: Any, bucket: str, keys: Sequence[str] = (), prefix: str = FAILURE_PREFIX, limit: int = 100
) -> list[Source]:
    """The on-failure objects to replay (``keys``, or up to ``limit`` under ``prefix``), each read and checked now."""
    selected = list(keys) or _list(s3, bucket, prefix)[:limit]
    if not keys and not selected and prefix != FAILURE_PREFIX:
        raise ReplayError(
            f"--prefix {prefix!r} holds no on-failure objects in s3://{bucket}/ (Lambda writes them under "
            f"{FAILURE_PREFIX}<mapping UUID>/<shard id>/YYYY/MM/DD/: leave --prefix out to replay them all)"
        )
    return [failure_object_source(s3, bucket, key) for key in selected]


def replay_failures(
    outputs: StackOutputs,
    invoke: Invoker,
    *,
    s3: Any,
    bucket: str,
    keys: Sequence[str] = (),
    prefix: str = FAILURE_PREFIX,
    limit: int = 100,
    dry_run: bool = False,
    region: str = "us-east-1",
    step: Step = _no_step,
) -> ReplayReport:
    """Re-drive the discarded batches in the on-failure bucket (``keys``, or up to ``limit`` under ``prefix``)."""
    sources = failure_sources(s3, bucket, keys, prefix, limit)
    return replay_sources(sources, invoke, s3=s3, outputs=outputs, dry_run=dry_run, region=region, step=step)


# -- command line -----------------------------------------------------------------------------------------------
def _default_via() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return "in-process" if any(host in endpoint for host in _LOCAL_HOSTS) else "lambda"


def parse_args(argv: Sequence[str] | None = None) -> Any:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{quarantine,failures}")
    quarantine = commands.add_parser("quarantine", help="re-drive quarantined records")
    failures = commands.add_parser("failures", help="re-drive the batches Lambda discarded (on-failure destination)")
    for command in (quarantine, failures):
        command.add_argument("stack", type=stack_name, help="stack to act on (dev1, qa1, preprod1, prod1)")
        command.add_argument("--via", choices=("lambda", "in-process"), default=None, help="how to run the handler")
        command.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
        command.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or Pulumi)")
        command.add_argument("--verbose", action="store_true", help="handler logs on the terminal, not in a file")
        command.add_argument("--log-file", type=Path, help="handler logs (default replay-<stack>-<time>.log)")
        command.add_argument("--debug", action="store_true", help="tracebacks for errors")
        command.add_argument("--key", action="append", default=[], help="an object key to replay (repeatable)")
    quarantine.add_argument("--prefix", help="every quarantine object under this prefix (default: all)")
    failures.add_argument("--prefix", default=FAILURE_PREFIX, help=f"on-failure objects under it ({FAILURE_PREFIX})")
    failures.add_argument("--bucket", help="on-failure bucket (default: the stack output failure_bucket_name)")
    failures.add_argument("--message-file", type=Path, help="one saved on-failure record (JSON with payload)")
    failures.add_argument("--max-messages", type=integer_at_least(1), default=100, help="at most this many sources")
    return parser.parse_args(argv)


def progress_console() -> Any:
    """Where the progress bar goes: stderr, so that stdout holds the report alone."""
    from rich.console import Console  # noqa: PLC0415 - only the command line shows progress

    return Console(stderr=True)


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Advance]:
    """A progress bar over the records to replay, shown before the first invocation (transient: gone at the end,
    and nothing at all when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    with Progress(
        TextColumn("replaying records"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("records", total=total)
        progress.refresh()  # drawn now, not at the first tick: the first invocation can take a while (cold start)
        yield lambda records: progress.advance(task, records)


def _local_processor_role(stack: str, outputs: StackOutputs) -> RoleSessions | None:
    """On the local AWS, the processor role assumed with the operator's (administrator's) key; else None."""
    from sandbox.command_roles import assume_local_role, local_endpoint  # noqa: PLC0415 - the local AWS only

    return assume_local_role(PROCESSOR_ROLE, stack, outputs) if local_endpoint() else None


def _run(args: Any, bound: BoundStack, log_file: Path | None) -> ReplayReport:
    outputs, stack = bound.outputs, bound.stack
    region = os.environ.get("AWS_REGION") or outputs.region
    session = boto3.Session(region_name=region)
    s3 = session.client("s3")
    via = args.via or _default_via()
    acting_as = _local_processor_role(stack, outputs) if via == "in-process" else None
    invoke = (
        in_process_invoker(outputs, stack, log_file, acting_as)
        if via == "in-process"
        else lambda_invoker(outputs.function_alias_arn, session.client("lambda"), log_file)
    )
    handler = "pipeline.handler in this process" if via == "in-process" else outputs.function_alias_arn
    if acting_as is not None:
        handler += f" as the local processor role {acting_as.role_names[PROCESSOR_ROLE]}"
    skipped: list[str] = []
    if args.command == "quarantine":
        keys = args.key
        if not keys:
            keys, skipped = quarantine_keys(s3, outputs, args.prefix)
        sources = [quarantine_source(s3, outputs, key) for key in keys]
        where = f"s3://{outputs.bucket_name}/{args.prefix or outputs.quarantine_prefix}"
    elif args.message_file is not None:
        sources = [failure_file_source(args.message_file)]
        where = str(args.message_file)
    else:
        bucket = args.bucket or outputs.failure_bucket_name
        sources = failure_sources(s3, bucket, args.key, args.prefix, args.max_messages)
        where = f"s3://{bucket}/{args.prefix}"
    if args.dry_run:
        report = replay_sources(sources, invoke, s3=s3, outputs=outputs, dry_run=True, region=region)
    else:
        print(bound.describe(f"{len(sources)} sources in {where} via {handler}"), flush=True)
        with _progress(sum(source.records for source in sources)) as advance:
            report = replay_sources(sources, invoke, s3=s3, outputs=outputs, region=region, advance=advance)
    report.skipped = skipped
    return report


def _print_report(report: ReplayReport, dry_run: bool) -> None:
    if report.skipped:
        print(
            f"skipped   {len(report.skipped)} backfill quarantine objects under "
            f"{report.skipped[0].rsplit('/export_id=', 1)[0]}/ ({_SNAPSHOT_ADVICE})"
        )
    outcomes = {outcome.label: outcome for outcome in report.outcomes}
    for source in report.sources:
        if dry_run:
            print(f"would replay  {source}")
        elif source in outcomes:
            state = "replayed " if source in report.removed else "kept     "
            print(f"{state} {source}: {outcomes[source].line()}")
    for kept in report.kept:
        print(f"kept      {kept}", file=sys.stderr)
    for record, why in list(report.failed.items())[:20]:
        print(f"failing   {record}: {why}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"failing   ... and {len(report.failed) - 20} more", file=sys.stderr)
    print(report.line())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_file = None
    if not args.verbose and not args.dry_run:
        log_file = args.log_file or Path(f"replay-{args.stack}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log")
    try:
        problem = stack_file_problem(args.stack)  # the handler runs with the stack's settings: checked first
        if problem is not None:
            raise ReplayError(problem)
        bound = bind_stack(args.stack, outputs_file=args.outputs_file)
        report = _run(args, bound, log_file)
    except (OutputsError, ReplayError) as error:  # found before anything was changed
        if args.debug:
            traceback.print_exc()
        return user_error(PROG, str(error))
    except RoleDeniedError as error:  # stopped before removing the source it was replaying
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: {error}; nothing of that source was removed", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as error:
        if args.debug:
            traceback.print_exc()
        down = unreachable(error, os.environ.get("AWS_ENDPOINT_URL"))
        print(f"{PROG}: {down or f'AWS call failed: {error}'}", file=sys.stderr)
        return 1
    _print_report(report, args.dry_run)
    if log_file is not None and log_file.exists():
        print(f"handler logs: {log_file}")
    return 0 if args.dry_run or report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
