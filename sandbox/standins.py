"""What the local AWS's stand-ins for the streaming destination and the event source mapping record about themselves.

moto has neither a Kinesis streaming destination nor a running Kinesis event source mapping: the sandbox's bridge
and mapping stand in for them, in the process that runs them. So that another process (``make backfill``'s cutover
checks) can see when the bridge became active and where the mapping starts reading, as it would see them in AWS
(DescribeKinesisStreamingDestination, ListEventSourceMappings), both are recorded as tags of the local Kinesis
stream, times in epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["LocalStandIns", "read_standins", "record_destination", "record_mapping"]

_PREFIX = "dmd-sandbox-"
ACTIVE_SINCE = f"{_PREFIX}destination-active-since-ms"
POSITION = f"{_PREFIX}mapping-starting-position"
POSITION_TIME = f"{_PREFIX}mapping-starting-timestamp-ms"
CREATED = f"{_PREFIX}mapping-created-ms"
UUID = f"{_PREFIX}mapping-uuid"


@dataclass(frozen=True)
class LocalStandIns:
    """The bridge's activation time and the mapping's starting position, as recorded on the local stream."""

    destination_active_since: datetime | None
    mapping_uuid: str | None
    starting_position: str | None
    starting_position_timestamp: datetime | None
    mapping_created: datetime | None


def _millis(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def _tags(kinesis: Any, stream_name: str) -> dict[str, str]:
    tags = kinesis.list_tags_for_stream(StreamName=stream_name).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags}


def record_destination(kinesis: Any, stream_name: str, when: datetime) -> None:
    """The bridge to ``stream_name`` is active from ``when`` on (kept when a bridge was active before)."""
    if ACTIVE_SINCE not in _tags(kinesis, stream_name):
        kinesis.add_tags_to_stream(StreamName=stream_name, Tags={ACTIVE_SINCE: _millis(when)})


def record_mapping(
    kinesis: Any, stream_name: str, *, uuid: str, position: str, timestamp: datetime | None, created: datetime
) -> None:
    """A mapping reading ``stream_name`` from ``position`` (``timestamp`` with AT_TIMESTAMP) exists from ``created``."""
    tags = {UUID: uuid, POSITION: position, CREATED: _millis(created)}
    if timestamp is not None:
        tags[POSITION_TIME] = _millis(timestamp)
    elif POSITION_TIME in _tags(kinesis, stream_name):
        kinesis.remove_tags_from_stream(StreamName=stream_name, TagKeys=[POSITION_TIME])
    kinesis.add_tags_to_stream(StreamName=stream_name, Tags=tags)


def read_standins(kinesis: Any, stream_name: str) -> LocalStandIns:
    """What the stand-ins recorded on ``stream_name`` (``None`` for what was never recorded)."""
    tags = _tags(kinesis, stream_name)
    return LocalStandIns(
        destination_active_since=_moment(tags.get(ACTIVE_SINCE)),
        mapping_uuid=tags.get(UUID),
        starting_position=tags.get(POSITION),
        starting_position_timestamp=_moment(tags.get(POSITION_TIME)),
        mapping_created=_moment(tags.get(CREATED)),
    )
