"""Realistic demand changes, and the wire formats they travel in to the handler.

Two formats matter, and both are built here only:
- the change record that "Kinesis Data Streams for DynamoDB" puts on the stream (``change_record``);
- the Lambda event that a Kinesis event source mapping delivers to the function (``lambda_event``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from boto3.dynamodb.types import TypeSerializer

__all__ = [
    "STATUSES",
    "Change",
    "DemandGenerator",
    "KinesisEntry",
    "change_record",
    "changes_event",
    "item_key",
    "kinesis_entries",
    "lambda_event",
    "to_dynamodb_json",
]

STATUSES = ("REGISTERED", "SELECTED", "WAITLISTED", "CANCELLED")
CHANNELS = ("web", "ios", "android", "partner")
PRICE_LEVELS = ("PL1", "PL2", "PL3", "PL4", "GA", "VIP")
Precision = Literal["MILLISECOND", "MICROSECOND"]
EventName = Literal["INSERT", "MODIFY", "REMOVE"]

_serializer = TypeSerializer()


def to_dynamodb_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """Plain Python item (numbers as Decimal) -> typed DynamoDB JSON."""
    return {name: _serializer.serialize(value) for name, value in item.items()}


def item_key(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item's primary key (pk, sk) as plain values."""
    return {"pk": item["pk"], "sk": item["sk"]}


@dataclass(frozen=True)
class Change:
    """One change to the demand table: what DynamoDB would record for a put, update or delete."""

    event_name: EventName
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    time: datetime


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _LiveItems:
    """The generator's live items in insertion order, with the n-th key found in O(log n).

    Picking ``rng.choice(list(live))`` copied every key on every change, which made a long workload quadratic
    (200,000 changes took minutes). ``key_at(rng.randrange(len(live)))`` draws the same random number and picks
    the same key (a key keeps its place when its item is replaced, as in a dict), so seeded workloads are unchanged.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._slot: dict[tuple[str, str], int] = {}
        self._keys: list[tuple[str, str] | None] = []  # by slot, in insertion order; None once removed
        self._tree: list[int] = [0]  # Fenwick tree over the slots (1-based): live keys per range

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: tuple[str, str]) -> dict[str, Any]:
        return self._items[key]

    def __setitem__(self, key: tuple[str, str], item: dict[str, Any]) -> None:
        if key not in self._items:
            self._slot[key] = len(self._keys)
            self._keys.append(key)
            index = len(self._tree)  # the new slot's 1-based position; its node covers (index - lowbit, index]
            self._tree.append(1 + self._prefix(index - 1) - self._prefix(index - (index & -index)))
        self._items[key] = item

    def pop(self, key: tuple[str, str]) -> dict[str, Any]:
        item = self._items.pop(key)
        slot = self._slot.pop(key)
        self._keys[slot] = None
        index = slot + 1
        while index < len(self._tree):
            self._tree[index] -= 1
            index += index & -index
        return item

    def key_at(self, position: int) -> tuple[str, str]:
        """The key at ``position`` (0-based) among the live keys in insertion order."""
        if not 0 <= position < len(self._items):
            raise IndexError(position)
        index, remaining = 0, position + 1
        step = 1 << (len(self._tree) - 1).bit_length()
        while step:
            probe = index + step
            if probe < len(self._tree) and self._tree[probe] < remaining:
                index = probe
                remaining -= self._tree[probe]
            step >>= 1
        key = self._keys[index]  # slot ``index`` is the 1-based position ``index + 1``
        assert key is not None
        return key

    def _prefix(self, index: int) -> int:
        total = 0
        while index > 0:
            total += self._tree[index]
            index -= index & -index
        return total


@dataclass
class DemandGenerator:
    """A seeded stream of registrations, status changes and cancellations for a handful of events."""

    seed: int = 7
    events: int = 12
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 23, 50, tzinfo=UTC))
    _rng: random.Random = field(init=False, repr=False)
    _live: _LiveItems = field(init=False, repr=False, default_factory=_LiveItems)
    _clock: datetime = field(init=False, repr=False)
    _event_ids: list[str] = field(init=False, repr=False)
    _fans: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._clock = self.start
        alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
        self._event_ids = ["vv" + "".join(self._rng.choices(alphabet, k=14)) for _ in range(self.events)]

    def _tick(self) -> datetime:
        self._clock += timedelta(microseconds=self._rng.randint(200, 90_000))
        return self._clock

    def new_item(self, now: datetime) -> dict[str, Any]:
        """A fresh registration; optional attributes are sometimes missing, as they are in the table."""
        rng = self._rng
        self._fans += 1
        event_id = rng.choice(self._event_ids)
        fan_id = f"{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        item: dict[str, Any] = {
            "pk": f"EVENT#{event_id}",
            "sk": f"FAN#{fan_id}",
            "market_id": Decimal(rng.choice((1, 2, 3, 7, 11, 27, 101))),
            "status": "REGISTERED",
            "quantity": Decimal(rng.randint(1, 8)),
            "created_at": _iso(now),
        }
        if rng.random() < 0.8:
            item["price_levels"] = rng.sample(PRICE_LEVELS, k=rng.randint(1, 3))
        if rng.random() < 0.9:
            item["channel"] = rng.choice(CHANNELS)
        if rng.random() < 0.3:
            item["presale_code"] = f"PRESALE{rng.randint(100, 999)}"
        if rng.random() < 0.6:
            item["attributes"] = {"locale": rng.choice(("en-US", "en-GB", "fr-FR", "es-MX")), "utm_source": "email"}
        if rng.random() < 0.15:  # an attribute the schema does not know yet, with nesting
            item["marketing"] = {"opt_in": rng.random() < 0.5, "source": {"campaign": "onsale", "wave": Decimal(2)}}
        return item

    def changes(self, count: int) -> Iterator[Change]:
        """``count`` changes: about 60% registrations, 30% status changes, 10% deletions."""
        rng = self._rng
        for _ in range(count):
            now = self._tick()
            roll = rng.random()
            if roll < 0.6 or len(self._live) < 5:
                item = self.new_item(now)
                self._live[(item["pk"], item["sk"])] = item
                yield Change("INSERT", item_key(item), item, None, now)
            elif roll < 0.9:
                key = self._live.key_at(rng.randrange(len(self._live)))
                old = self._live[key]
                new = dict(old, status=rng.choice(STATUSES[1:]), updated_at=_iso(now))
                self._live[key] = new
                yield Change("MODIFY", item_key(new), new, old, now)
            else:
                key = self._live.key_at(rng.randrange(len(self._live)))
                old = self._live.pop(key)
                yield Change("REMOVE", item_key(old), None, old, now)


def change_record(
    change: Change,
    *,
    table_name: str,
    region: str = "us-east-1",
    precision: Precision = "MILLISECOND",
    event_id: str | None = None,
) -> dict[str, Any]:
    """The JSON document that Kinesis Data Streams for DynamoDB puts on the stream for one change."""
    # exact integer arithmetic: a float timestamp can land a microsecond early, and the microsecond is the order
    epoch_us = (change.time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    approximate = epoch_us if precision == "MICROSECOND" else epoch_us // 1000
    body: dict[str, Any] = {"ApproximateCreationDateTime": approximate, "Keys": to_dynamodb_json(change.keys)}
    if change.new_image is not None:
        body["NewImage"] = to_dynamodb_json(change.new_image)
    if change.old_image is not None:
        body["OldImage"] = to_dynamodb_json(change.old_image)
    document = json.dumps(body, separators=(",", ":"))
    body["SizeBytes"] = len(document)
    # DynamoDB gives every stream record its own id. Derived from the whole change (its kind and images too), two
    # changes of one item in the same microsecond (an INSERT and a MODIFY) get two ids, not one.
    identity = f"{table_name}/{epoch_us}/{change.event_name}/{document}"
    return {
        "awsRegion": region,
        "eventID": event_id or str(uuid.uuid5(uuid.NAMESPACE_URL, identity)),
        "eventName": change.event_name,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": table_name,
        "dynamodb": body,
        "eventSource": "aws:dynamodb",
    }


def partition_key(keys: Mapping[str, Any]) -> str:
    """An opaque, stable partition key per item, as the DynamoDB streaming destination uses."""
    digest = hashlib.md5(json.dumps(keys, sort_keys=True, default=str).encode(), usedforsecurity=False)
    return digest.hexdigest().upper()


@dataclass(frozen=True)
class KinesisEntry:
    """One Kinesis record as an event source mapping reads it."""

    data: bytes
    partition_key: str
    sequence_number: str
    arrival: float


def lambda_event(
    entries: Sequence[KinesisEntry],
    *,
    shard_id: str,
    stream_arn: str,
    region: str = "us-east-1",
    function_role_arn: str = "arn:aws:iam::123456789012:role/dmd-pipeline-local",
) -> dict[str, Any]:
    """The Lambda event a Kinesis event source mapping delivers for one shard's batch."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": entry.partition_key,
                    "sequenceNumber": entry.sequence_number,
                    "data": base64.b64encode(entry.data).decode("ascii"),
                    "approximateArrivalTimestamp": entry.arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{entry.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": function_role_arn,
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            for entry in entries
        ]
    }


#: A realistic Kinesis sequence number (56 digits) to start a shard's batch at.
FIRST_SEQUENCE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898


def kinesis_entries(
    changes: Sequence[Change],
    *,
    table_name: str,
    precision: Precision = "MILLISECOND",
    first_sequence: int = FIRST_SEQUENCE,
    sequence_step: int = 1_000_003,
) -> list[KinesisEntry]:
    """The Kinesis records the streaming destination writes for ``changes``, one after the other in a shard."""
    return [
        KinesisEntry(
            data=json.dumps(change_record(change, table_name=table_name, precision=precision)).encode("utf-8"),
            partition_key=partition_key(change.keys),
            sequence_number=str(first_sequence + index * sequence_step),
            arrival=round(change.time.timestamp() + 0.25, 3),
        )
        for index, change in enumerate(changes)
    ]


def changes_event(
    changes: Sequence[Change],
    *,
    table_name: str = "demand",
    shard_id: str = "shardId-000000000000",
    stream_arn: str = "arn:aws:kinesis:us-east-1:123456789012:stream/demand-changes",
    precision: Precision = "MILLISECOND",
    first_sequence: int = FIRST_SEQUENCE,
    sequence_step: int = 1_000_003,
) -> dict[str, Any]:
    """``changes`` as one Lambda Kinesis event (one shard), in a single call."""
    entries = kinesis_entries(
        changes,
        table_name=table_name,
        precision=precision,
        first_sequence=first_sequence,
        sequence_step=sequence_step,
    )
    return lambda_event(entries, shard_id=shard_id, stream_arn=stream_arn)
