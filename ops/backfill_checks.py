"""The cutover checks ``make backfill`` runs before it requests an export: snapshot plus changes must add up.

The lake's current state is the snapshot exported at T plus the change rows from T - 5 min on (the lead,
``components.current_state.DEFAULT_LEAD``). That holds only when, before the export is requested:

- the table's streaming destination to the stack's stream is ACTIVE, since a time A with T >= A + lead (every
  change from T - lead on is in the stream);
- point-in-time recovery is on and T lies in its window (EarliestRestorableDateTime..LatestRestorableDateTime
  of DescribeContinuousBackups): the export needs it;
- the stream function's event source mapping exists, is enabled and reads from T - lead or earlier:
  AT_TIMESTAMP with a timestamp <= T - lead (the runbook's cutover), TRIM_HORIZON, or LATEST when it was
  created (last modified) by T - lead.

Each failed check is one line naming the fix; ``make backfill`` prints them and exits 2 before any export is
requested. The facts come from AWS on a deployed stack (DescribeKinesisStreamingDestination and CloudTrail's
EnableKinesisStreamingDestination event for A, DescribeContinuousBackups, ListEventSourceMappings) and, on the
local AWS, from what the sandbox's bridge and mapping recorded (``sandbox.standins``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from components.current_state import DEFAULT_LEAD
from ops.outputs import StackOutputs

__all__ = ["DEFAULT_LEAD", "CutoverFacts", "check_cutover", "cutover_problems", "deployed_facts", "local_facts"]

_RUNNING_MAPPING = ("Enabled", "Enabling", "Creating", "Updating")
_CLOUDTRAIL_DAYS = 90  # how far back CloudTrail's event history reaches


@dataclass(frozen=True)
class CutoverFacts:
    """What the checks need to know about a stack's table, stream and mapping, however they were learnt."""

    table: str
    stream_arn: str
    function: str
    destination_status: str | None  # None: no streaming destination to the stack's stream
    destination_active_since: datetime | None  # A; None: unknown
    pitr_status: str | None
    earliest_restorable: datetime | None
    latest_restorable: datetime | None
    mapping_state: str | None  # None: no event source mapping from the stream to the function
    starting_position: str | None = None
    starting_position_timestamp: datetime | None = None
    mapping_created: datetime | None = None  # when it was created (deployed: LastModified, an upper bound)
    destination_via: str = "the table's Kinesis streaming destination"
    active_since_unknown_fix: str = "look up when it became ACTIVE (CloudTrail EnableKinesisStreamingDestination)"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _lead_text(lead: timedelta) -> str:
    seconds = lead.total_seconds()
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def cutover_problems(facts: CutoverFacts, export_time: datetime, lead: timedelta = DEFAULT_LEAD) -> list[str]:
    """One line per failed check for an export at ``export_time`` (T), each naming the fix; empty when all pass."""
    if export_time.tzinfo is None:
        raise ValueError(f"export_time {export_time.isoformat()} has no time zone")
    return [
        *_destination_problems(facts, export_time, lead),
        *_pitr_problems(facts, export_time),
        *_mapping_problems(facts, export_time, lead),
    ]


def _destination_problems(facts: CutoverFacts, t: datetime, lead: timedelta) -> list[str]:
    """The streaming destination, ACTIVE since A <= T - lead."""
    since, lead_text = t - lead, _lead_text(lead)
    problems: list[str] = []
    if facts.destination_status != "ACTIVE":
        state = facts.destination_status or "missing"
        problems.append(
            f"streaming destination of table {facts.table} to {facts.stream_arn} is {state} ({facts.destination_via}):"
            f" enable it (aws dynamodb enable-kinesis-streaming-destination --table-name {facts.table} "
            f"--stream-arn {facts.stream_arn}) and export no earlier than {lead_text} after it is ACTIVE"
        )
    elif facts.destination_active_since is None:
        problems.append(
            f"the time the streaming destination of table {facts.table} became ACTIVE is unknown: "
            f"{facts.active_since_unknown_fix}"
        )
    elif facts.destination_active_since > since:
        problems.append(
            f"export time T {_iso(t)} is less than {lead_text} after the streaming destination became ACTIVE at "
            f"{_iso(facts.destination_active_since)}: run again at {_iso(facts.destination_active_since + lead)} "
            "or later, so that every change from T - the lead on is in the stream"
        )
    return problems


def _pitr_problems(facts: CutoverFacts, t: datetime) -> list[str]:
    """Point-in-time recovery on, T inside its window."""
    problems: list[str] = []
    if facts.pitr_status != "ENABLED":
        problems.append(
            f"point-in-time recovery is {facts.pitr_status or 'not set'} on table {facts.table}: the export needs "
            f"it (aws dynamodb update-continuous-backups --table-name {facts.table} "
            "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true)"
        )
    elif facts.earliest_restorable is None or facts.latest_restorable is None:
        problems.append(
            f"table {facts.table} reports no point-in-time recovery window: run again once "
            "DescribeContinuousBackups shows EarliestRestorableDateTime and LatestRestorableDateTime"
        )
    elif not facts.earliest_restorable <= t <= facts.latest_restorable:
        problems.append(
            f"export time T {_iso(t)} is outside the point-in-time recovery window of table {facts.table} "
            f"({_iso(facts.earliest_restorable)}..{_iso(facts.latest_restorable)}): choose a T inside it"
        )
    return problems


def _mapping_problems(facts: CutoverFacts, t: datetime, lead: timedelta) -> list[str]:
    """The mapping exists, runs and reads from T - lead or earlier."""
    since, lead_text = t - lead, _lead_text(lead)
    problems: list[str] = []
    at_timestamp = (
        f"deploy the stack with dmd-pipeline:streamStartingPosition AT_TIMESTAMP and "
        f"dmd-pipeline:streamStartTimestamp {_iso(since)} (T - {lead_text}) before the export"
    )
    if facts.mapping_state is None:
        problems.append(f"no event source mapping from {facts.stream_arn} to {facts.function}: {at_timestamp}")
        return problems
    if facts.mapping_state not in _RUNNING_MAPPING:
        problems.append(
            f"the event source mapping to {facts.function} is {facts.mapping_state}: enable it "
            "(aws lambda update-event-source-mapping --uuid <UUID> --enabled) before the export"
        )
    position = facts.starting_position
    if position == "AT_TIMESTAMP":
        start = facts.starting_position_timestamp
        if start is None or start > since:
            problems.append(
                f"the event source mapping starts AT_TIMESTAMP {_iso(start) if start else '(no timestamp)'}, after "
                f"T - {lead_text} = {_iso(since)}, from which every change must be a change row: "
                f"{at_timestamp}, or export later"
            )
    elif position == "LATEST":
        created = facts.mapping_created
        if created is None or created > since:
            problems.append(
                f"the event source mapping starts at LATEST, from its creation "
                f"{_iso(created) if created else '(time unknown)'}, after T - {lead_text} = {_iso(since)}: "
                f"{at_timestamp}"
            )
    elif position != "TRIM_HORIZON":
        problems.append(f"the event source mapping's starting position is {position or 'unknown'}: {at_timestamp}")
    return problems


def _pitr(dynamodb: Any, table: str) -> tuple[str | None, datetime | None, datetime | None]:
    description = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    pitr = description.get("PointInTimeRecoveryDescription", {})
    return (
        pitr.get("PointInTimeRecoveryStatus"),
        _as_utc(pitr.get("EarliestRestorableDateTime")),
        _as_utc(pitr.get("LatestRestorableDateTime")),
    )


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def local_facts(session: Any, outputs: StackOutputs, *, now: datetime | None = None) -> CutoverFacts:
    """The facts on the local AWS: the bridge and mapping as the sandbox recorded them on the stream.

    moto freezes LatestRestorableDateTime at the moment recovery was turned on; locally the table can be
    exported as it is now, so the window ends now.
    """
    from sandbox.standins import read_standins  # noqa: PLC0415 - only the local AWS has stand-ins

    now = now or datetime.now(UTC)
    dynamodb, kinesis = session.client("dynamodb"), session.client("kinesis")
    standins = read_standins(kinesis, outputs.stream_name)
    status, earliest, latest = _pitr(dynamodb, outputs.table_name)
    return CutoverFacts(
        table=outputs.table_name,
        stream_arn=outputs.stream_arn,
        function=outputs.function_name,
        destination_status="ACTIVE" if standins.destination_active_since is not None else None,
        destination_active_since=standins.destination_active_since,
        destination_via="the sandbox bridge; start the local pipeline: make demo ARGS=--keep",
        pitr_status=status,
        earliest_restorable=earliest,
        latest_restorable=max(latest, now) if latest is not None else None,
        mapping_state="Enabled" if standins.starting_position is not None else None,
        starting_position=standins.starting_position,
        starting_position_timestamp=standins.starting_position_timestamp,
        mapping_created=standins.mapping_created,
    )


def _enabled_at(cloudtrail: Any, table: str, stream_arn: str, now: datetime) -> datetime | None:
    """The latest EnableKinesisStreamingDestination request for ``table`` -> ``stream_arn`` in CloudTrail's
    event history (90 days), or None."""
    found: list[datetime] = []
    paginator = cloudtrail.get_paginator("lookup_events")
    for page in paginator.paginate(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "EnableKinesisStreamingDestination"}],
        StartTime=now - timedelta(days=_CLOUDTRAIL_DAYS),
        EndTime=now,
    ):
        for event in page.get("Events", []):
            parameters = json.loads(event.get("CloudTrailEvent") or "{}").get("requestParameters") or {}
            table_named = str(parameters.get("tableName", "")).split("/")[-1]  # a name or an ARN
            if parameters.get("streamArn") == stream_arn and table_named == table:
                found.append(_as_utc(event["EventTime"]) or now)
    return max(found, default=None)


def deployed_facts(session: Any, outputs: StackOutputs, *, now: datetime | None = None) -> CutoverFacts:
    """The facts on a deployed stack, from AWS.

    A is the time of the last EnableKinesisStreamingDestination request in CloudTrail's event history; with no
    such request in its 90 days and the destination ACTIVE, it has been ACTIVE for longer than that.
    """
    now = now or datetime.now(UTC)
    dynamodb = session.client("dynamodb")
    table, stream_arn = outputs.table_name, outputs.stream_arn
    destinations = dynamodb.describe_kinesis_streaming_destination(TableName=table).get(
        "KinesisDataStreamDestinations", []
    )
    mine = [item for item in destinations if item.get("StreamArn") == stream_arn]
    status = "ACTIVE" if any(item.get("DestinationStatus") == "ACTIVE" for item in mine) else None
    if status is None and mine:
        status = str(mine[-1].get("DestinationStatus"))
    active_since = None
    if status == "ACTIVE":
        active_since = _enabled_at(session.client("cloudtrail"), table, stream_arn, now) or (
            now - timedelta(days=_CLOUDTRAIL_DAYS)
        )
    pitr_status, earliest, latest = _pitr(dynamodb, table)
    mappings = session.client("lambda").list_event_source_mappings(
        EventSourceArn=stream_arn, FunctionName=outputs.function_alias_arn
    )["EventSourceMappings"]
    mapping = mappings[0] if mappings else None
    return CutoverFacts(
        table=table,
        stream_arn=stream_arn,
        function=outputs.function_alias_arn,
        destination_status=status,
        destination_active_since=active_since,
        pitr_status=pitr_status,
        earliest_restorable=earliest,
        latest_restorable=latest,
        mapping_state=None if mapping is None else str(mapping.get("State")),
        starting_position=None if mapping is None else mapping.get("StartingPosition"),
        starting_position_timestamp=None if mapping is None else _as_utc(mapping.get("StartingPositionTimestamp")),
        mapping_created=None if mapping is None else _as_utc(mapping.get("LastModified")),
    )


def check_cutover(
    session: Any,
    outputs: StackOutputs,
    *,
    local: bool,
    lead: timedelta = DEFAULT_LEAD,
    export_time: datetime | None = None,
) -> tuple[list[str], datetime]:
    """Gather the facts (local AWS or deployed) and check an export at ``export_time``; return the problems and T.

    T defaults to now on the local AWS (moto exports the table as it is at the request) and, on a deployed stack,
    to the table's LatestRestorableDateTime (AWS keeps it about 5 minutes behind now): the deployed export must
    then be requested with ``ExportTime`` = T.
    """
    now = datetime.now(UTC)
    facts = local_facts(session, outputs, now=now) if local else deployed_facts(session, outputs, now=now)
    chosen = export_time or (now if local else (facts.latest_restorable or now))
    return cutover_problems(facts, chosen, lead), chosen
