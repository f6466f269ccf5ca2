"""Re-drive records through the handler after a fix: quarantined records, or a discarded batch's sequence range.

    python -m ops.replay quarantine qa1 --prefix demand/quarantine/dt=2026-11-29/   # every object under it
    python -m ops.replay quarantine qa1 --key demand/quarantine/dt=2026-11-29/ab12cd34-shardId-...jsonl.gz
    python -m ops.replay failures qa1                      # discarded batches waiting in the failure bucket
    python -m ops.replay failures qa1 --message-file msg.json   # one on-failure record saved to a file

Quarantined records are rebuilt into Kinesis events from each line's ``data`` (the original payload), shard
and sequence number. A discarded batch in the failure bucket holds its invocation event (``payload``), whose
records are replayed as they were; an on-failure record without one (saved from an SQS or SNS destination) names
a shard and a sequence range, read back from Kinesis (within the stream's retention). Either way the events go to
the function:

- ``--via lambda`` (the default for a deployed stack): invoke the stack's ``live`` alias, i.e. the fixed code
  once it is deployed;
- ``--via in-process`` (the default when ``AWS_ENDPOINT_URL`` points at the local AWS): call
  ``pipeline.handler.handler`` here, with the stack's function environment.

Object keys are deterministic, so a replayed record lands once; one that is still bad is quarantined again.
A replayed quarantine object is copied to ``--backup-dir``, deleted, replayed, and put back if any of its records
fails; a failure-bucket object is deleted only after all its records were handled (the bucket is versioned, so
the deleted object stays a few days as a noncurrent version). ``--dry-run`` shows what would be replayed and
changes nothing. Stack outputs come from ``ops.outputs.load_outputs`` (``$STACK_OUTPUTS_FILE`` or the Pulumi CLI).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from ops.outputs import OutputsError, StackOutputs, load_outputs
from sandbox.changes import KinesisEntry, lambda_event

__all__ = [
    "Invoker",
    "ReplayError",
    "ReplayReport",
    "in_process_invoker",
    "lambda_invoker",
    "main",
    "payload_entries",
    "quarantine_entries",
    "range_entries",
    "replay_failure_messages",
    "replay_quarantine",
]

Invoker = Callable[[dict[str, Any]], Mapping[str, Any]]
DEFAULT_BATCH = 500
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


class ReplayError(RuntimeError):
    """A replay could not be completed; the message names what was left as it was."""


@dataclass
class ReplayReport:
    """What a replay did."""

    records: int = 0
    invocations: int = 0
    sources_done: list[str] = field(default_factory=list)
    sources_failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.records} records replayed in {self.invocations} invocations; "
            f"{len(self.sources_done)} sources done, {len(self.sources_failed)} failed"
        )


# -- invoking the function --------------------------------------------------------------------------------------
def lambda_invoker(function_arn: str, client: Any) -> Invoker:
    """Invoke the deployed function (its alias ARN) synchronously; an unhandled error raises ``ReplayError``."""

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        response = client.invoke(FunctionName=function_arn, InvocationType="RequestResponse", Payload=json.dumps(event))
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise ReplayError(f"{function_arn} failed: {payload.get('errorMessage', payload)}")
        return payload if isinstance(payload, Mapping) else {}

    return invoke


def in_process_invoker(outputs: StackOutputs, stack: str) -> Invoker:
    """Call ``pipeline.handler.handler`` in this process with the stack's function environment."""
    from components.function_environment import lambda_environment  # noqa: PLC0415 - only this mode needs them
    from components.naming import prefixes  # noqa: PLC0415
    from components.settings import settings_from_stack_file  # noqa: PLC0415
    from sandbox.local_aws import patched_environment  # noqa: PLC0415
    from sandbox.mapping import LocalLambdaContext  # noqa: PLC0415
    from sandbox.runner import default_function  # noqa: PLC0415

    layout = prefixes()
    environment = lambda_environment(settings_from_stack_file(stack), outputs.bucket_name, layout)
    environment.update(OUTPUT_PREFIX=outputs.events_prefix, QUARANTINE_PREFIX=outputs.quarantine_prefix)

    functions: list[Any] = []

    def invoke(event: dict[str, Any]) -> Mapping[str, Any]:
        with patched_environment(environment):
            if not functions:  # one cold start, in the stack's environment
                functions.append(default_function())
            context = LocalLambdaContext(outputs.function_name, outputs.function_alias_arn)
            response = functions[0](event, context)
        return response if isinstance(response, Mapping) else {}

    return invoke


def _events(entries: Sequence[KinesisEntry], shard_id: str, stream_arn: str, region: str) -> Iterator[dict[str, Any]]:
    ordered = sorted(entries, key=lambda entry: int(entry.sequence_number))
    for start in range(0, len(ordered), DEFAULT_BATCH):
        yield lambda_event(
            ordered[start : start + DEFAULT_BATCH], shard_id=shard_id, stream_arn=stream_arn, region=region
        )


def _drive(
    groups: Mapping[tuple[str, str], Sequence[KinesisEntry]], invoke: Invoker, region: str, report: ReplayReport
) -> list[str]:
    """Invoke per shard and batch; return the failure messages (empty when every record was handled)."""
    problems: list[str] = []
    for (stream_arn, shard_id), entries in groups.items():
        for event in _events(entries, shard_id, stream_arn, region):
            report.invocations += 1
            try:
                response = invoke(event)
            except Exception as error:
                problems.append(f"{shard_id}: {error}")
                continue
            failures = response.get("batchItemFailures") or []
            if failures:
                problems.append(f"{shard_id}: the function reported failures from {failures[0].get('itemIdentifier')}")
            else:
                report.records += len(event["Records"])
    return problems


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


def _read_lines(body: bytes, key: str) -> list[dict[str, Any]]:
    text = gzip.decompress(body).decode("utf-8") if key.endswith(".gz") else body.decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _quarantine_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []) if ".jsonl" in item["Key"])
    return sorted(keys)


def replay_quarantine(
    outputs: StackOutputs,
    invoke: Invoker,
    *,
    s3: Any,
    keys: Sequence[str] = (),
    prefix: str | None = None,
    backup_dir: Path | None = None,
    dry_run: bool = False,
    region: str = "us-east-1",
) -> ReplayReport:
    """Re-drive the records of quarantine objects (``keys``, or all under ``prefix``) through ``invoke``."""
    bucket = outputs.bucket_name
    if prefix is not None and not prefix.startswith(outputs.quarantine_prefix):
        raise ReplayError(f"--prefix {prefix!r} is not under the quarantine prefix {outputs.quarantine_prefix!r}")
    selected = list(keys) or _quarantine_keys(s3, bucket, prefix or outputs.quarantine_prefix)
    report = ReplayReport()
    for key in selected:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        lines = _read_lines(body, key)
        if dry_run:
            report.records += len(lines)
            report.sources_done.append(key)
            continue
        if backup_dir is not None:
            backup = backup_dir / key
            backup.parent.mkdir(parents=True, exist_ok=True)
            backup.write_bytes(body)
        # Delete first: a record still bad is quarantined again, possibly under this very key.
        s3.delete_object(Bucket=bucket, Key=key)
        problems = _drive(quarantine_entries(lines), invoke, region, report)
        if problems:
            s3.put_object(Bucket=bucket, Key=key, Body=body)  # put back as it was: nothing is lost
            report.sources_failed.append(f"{key}: {'; '.join(problems)}")
        else:
            report.sources_done.append(key)
    return report


# -- a discarded batch's sequence range -------------------------------------------------------------------------
def range_entries(kinesis: Any, batch_info: Mapping[str, Any]) -> list[KinesisEntry]:
    """Read the records of an on-failure message's ``KinesisBatchInfo`` back from the stream."""
    start, end = int(batch_info["startSequenceNumber"]), int(batch_info["endSequenceNumber"])
    iterator = kinesis.get_shard_iterator(
        StreamName=str(batch_info["streamArn"]).rsplit("/", 1)[1],  # by name: moto's iterators lose the ARN
        ShardId=batch_info["shardId"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=batch_info["startSequenceNumber"],
    )["ShardIterator"]
    entries: list[KinesisEntry] = []
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        for record in response.get("Records", []):
            sequence = int(record["SequenceNumber"])
            if sequence > end:
                return entries
            if sequence >= start:
                arrival = record["ApproximateArrivalTimestamp"]
                entries.append(
                    KinesisEntry(
                        record["Data"],
                        record["PartitionKey"],
                        record["SequenceNumber"],
                        arrival.timestamp() if isinstance(arrival, datetime) else float(arrival),
                    )
                )
        if not response.get("Records") and not response.get("MillisBehindLatest"):
            break  # at the tip of the shard
        iterator = response.get("NextShardIterator")
    return entries


FAILURE_KEY_PREFIX = "aws/lambda/"


def _records_from_bucket(s3: Any, bucket: str, limit: int) -> Iterator[tuple[dict[str, Any], str | None]]:
    """On-failure records in the failure bucket (Lambda's ``aws/lambda/...`` objects), oldest key first."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=FAILURE_KEY_PREFIX):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    for key in sorted(keys)[:limit]:
        yield json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), key


def payload_entries(payload: Any) -> list[KinesisEntry]:
    """The records of an S3 on-failure record's ``payload`` (the invocation event, as an object or JSON text)."""
    event = json.loads(payload) if isinstance(payload, str | bytes) else payload
    entries = []
    for record in event["Records"]:
        kinesis = record["kinesis"]
        entries.append(
            KinesisEntry(
                data=base64.b64decode(kinesis["data"]),
                partition_key=str(kinesis.get("partitionKey") or ""),
                sequence_number=str(kinesis["sequenceNumber"]),
                arrival=float(kinesis.get("approximateArrivalTimestamp") or datetime.now(UTC).timestamp()),
            )
        )
    return entries


def replay_failure_messages(
    outputs: StackOutputs,
    invoke: Invoker,
    *,
    kinesis: Any,
    s3: Any,
    messages: Iterable[tuple[dict[str, Any], str | None]] | None = None,
    limit: int = 100,
    dry_run: bool = False,
    region: str = "us-east-1",
) -> ReplayReport:
    """Re-drive discarded batches: the failure bucket's objects (or ``messages``: (record, object key or None))."""
    bucket = outputs.failure_bucket_name
    source = messages if messages is not None else _records_from_bucket(s3, bucket, limit)
    report = ReplayReport()
    for body, key in source:
        info = body.get("KinesisBatchInfo")
        if not info:
            report.sources_failed.append(f"not a Kinesis on-failure record: {json.dumps(body)[:200]}")
            continue
        label = f"{info['shardId']} [{info['startSequenceNumber']}..{info['endSequenceNumber']}]"
        entries = payload_entries(body["payload"]) if body.get("payload") else range_entries(kinesis, info)
        if len(entries) != int(info.get("batchSize") or len(entries)):
            report.sources_failed.append(
                f"{label}: {len(entries)} of {info.get('batchSize')} records still on the stream"
            )
            continue
        if dry_run:
            report.records += len(entries)
            report.sources_done.append(label)
            continue
        problems = _drive({(str(info["streamArn"]), str(info["shardId"])): entries}, invoke, region, report)
        if problems:
            report.sources_failed.append(f"{label}: {'; '.join(problems)}")
            continue
        if key is not None:  # every record handled: the object has served its purpose
            s3.delete_object(Bucket=bucket, Key=key)
        report.sources_done.append(label)
    return report


# -- command line -----------------------------------------------------------------------------------------------
def _default_via() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return "in-process" if any(host in endpoint for host in _LOCAL_HOSTS) else "lambda"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.replay", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    quarantine = commands.add_parser("quarantine", help="re-drive quarantined records")
    failures = commands.add_parser("failures", help="re-drive the discarded batches in the failure bucket")
    for command in (quarantine, failures):
        command.add_argument("stack", help="stack whose outputs to use (dev1, qa1, preprod1, prod1)")
        command.add_argument("--via", choices=("lambda", "in-process"), default=None, help="how to run the handler")
        command.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
        command.add_argument("--outputs-file", help="stack outputs JSON (default: $STACK_OUTPUTS_FILE or Pulumi)")
    quarantine.add_argument("--key", action="append", default=[], help="a quarantine object key (repeatable)")
    quarantine.add_argument("--prefix", help="every quarantine object under this prefix (default: all)")
    quarantine.add_argument(
        "--backup-dir", default="replay-backup", help="copies of replayed objects (local dir, default replay-backup)"
    )
    failures.add_argument("--message-file", help="one on-failure record (JSON) instead of reading the bucket")
    failures.add_argument("--max-messages", type=int, default=100, help="at most this many failure-bucket objects")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        outputs = load_outputs(args.stack, outputs_file=args.outputs_file)
    except OutputsError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    region = os.environ.get("AWS_REGION") or outputs.region
    session = boto3.Session(region_name=region)
    via = args.via or _default_via()
    invoke = (
        in_process_invoker(outputs, args.stack)
        if via == "in-process"
        else lambda_invoker(outputs.function_alias_arn, session.client("lambda"))
    )
    try:
        if args.command == "quarantine":
            report = replay_quarantine(
                outputs,
                invoke,
                s3=session.client("s3"),
                keys=args.key,
                prefix=args.prefix,
                backup_dir=Path(args.backup_dir),
                dry_run=args.dry_run,
                region=region,
            )
        else:
            messages = None
            if args.message_file:
                messages = [(json.loads(Path(args.message_file).read_text(encoding="utf-8")), None)]
            report = replay_failure_messages(
                outputs,
                invoke,
                kinesis=session.client("kinesis"),
                s3=session.client("s3"),
                messages=messages,
                limit=args.max_messages,
                dry_run=args.dry_run,
                region=region,
            )
    except ReplayError as error:  # a wrong argument, found before anything was changed
        print(f"replay: {error}", file=sys.stderr)
        return 2
    done = "would replay" if args.dry_run else "replayed"
    for source in report.sources_done:
        print(f"{done}  {source}")
    for source in report.sources_failed:
        print(f"failed  {source}", file=sys.stderr)
    print(("dry run: " if args.dry_run else "") + report.line())
    return 1 if report.sources_failed else 0


if __name__ == "__main__":
    sys.exit(main())
