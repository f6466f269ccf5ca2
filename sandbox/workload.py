"""Writing demand changes into the table: realistic ones from ``DemandGenerator``, and poison items.

A poison item is one the table accepts but the record contract rejects; the handler must quarantine it with a
reason naming the field, never drop it and never block the shard.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sandbox.changes import Change, DemandGenerator, item_key, to_dynamodb_json

__all__ = ["POISON_KINDS", "TableWriter", "poison_change", "tagged_changes", "workload"]

_BATCH_WRITE_LIMIT = 25

# kind -> (field the reason must name, how the item is spoiled)
POISON_KINDS: dict[str, str] = {
    "unknown_status": "status",
    "bad_timestamp": "created_at",
    "quantity_as_text": "quantity",
    "missing_market": "market_id",
}


def poison_change(kind: str, *, event_id: str, fan_id: str | None = None, now: datetime | None = None) -> Change:
    """An INSERT of an item that violates the record contract in the way ``kind`` names."""
    now = now or datetime.now(UTC)
    item: dict[str, Any] = {
        "pk": f"EVENT#{event_id}",
        "sk": f"FAN#{fan_id or uuid.uuid4()}",
        "market_id": Decimal(27),
        "status": "REGISTERED",
        "quantity": Decimal(2),
        "created_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if kind == "unknown_status":
        item["status"] = "MAYBE"
    elif kind == "bad_timestamp":
        item["created_at"] = "yesterday at noon"
    elif kind == "quantity_as_text":
        item["quantity"] = "two"
    elif kind == "missing_market":
        del item["market_id"]
    else:
        raise ValueError(f"unknown poison kind {kind!r}; expected one of {', '.join(POISON_KINDS)}")
    return Change("INSERT", item_key(item), item, None, now)


def workload(count: int, *, seed: int, poison: int = 4) -> Iterator[Change]:
    """``count`` changes: the generator's mix, with ``poison`` poison items spread through it."""
    rng = random.Random(seed)
    kinds = list(POISON_KINDS)
    slots = set(rng.sample(range(count), k=min(poison, count)))
    # Registrations created over the last few minutes, so created_at reads like the change times the table gives.
    start = datetime.now(UTC) - timedelta(minutes=5)
    realistic = DemandGenerator(seed=seed, start=start).changes(count - len(slots))
    for position in range(count):
        if position in slots:
            kind = kinds[len(slots) % len(kinds)]
            slots.discard(position)
            yield poison_change(kind, event_id=f"poison{rng.randrange(10**6):06d}", now=datetime.now(UTC))
        else:
            yield next(realistic)


@dataclass
class TableWriter:
    """Applies changes to the table in order: puts and deletes, batched 25 at a time when keys do not repeat."""

    client: Any
    table_name: str
    written: int = 0

    def _flush(self, requests: list[dict[str, Any]]) -> None:
        pending = {self.table_name: requests}
        while pending:
            response = self.client.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
        self.written += len(requests)
        requests.clear()

    def apply(self, changes: Iterable[Change]) -> int:
        """Write every change; return how many table writes were made."""
        requests: list[dict[str, Any]] = []
        keys: set[tuple[str, str]] = set()
        before = self.written
        for change in changes:
            key = (str(change.keys["pk"]), str(change.keys["sk"]))
            if key in keys or len(requests) == _BATCH_WRITE_LIMIT:
                self._flush(requests)
                keys.clear()
            keys.add(key)
            if change.event_name == "REMOVE":
                requests.append({"DeleteRequest": {"Key": to_dynamodb_json(change.keys)}})
            else:
                assert change.new_image is not None
                requests.append({"PutRequest": {"Item": to_dynamodb_json(change.new_image)}})
        if requests:
            self._flush(requests)
        return self.written - before


def tagged_changes(event_id: str, count: int, *, seed: int = 1, now: datetime | None = None) -> list[Change]:
    """``count`` valid changes of fans of one event (``pk`` = ``EVENT#<event_id>``): inserts, updates, removals.

    The event id tags the set, so a suite can find exactly its own rows in a shared table and lake.
    """
    rng = random.Random(seed)
    moment = now or datetime.now(UTC)
    live: dict[str, dict[str, Any]] = {}
    changes: list[Change] = []
    for number in range(count):
        stamp = (moment + timedelta(milliseconds=number)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        roll = rng.random()
        if roll < 0.6 or len(live) < 3:
            fan = f"fan{number:05d}-{rng.randrange(16**6):06x}"
            item: dict[str, Any] = {
                "pk": f"EVENT#{event_id}",
                "sk": f"FAN#{fan}",
                "market_id": Decimal(rng.choice((1, 27, 101))),
                "status": "REGISTERED",
                "quantity": Decimal(rng.randint(1, 8)),
                "created_at": stamp,
                "channel": rng.choice(("web", "ios")),
            }
            live[fan] = item
            changes.append(Change("INSERT", item_key(item), item, None, moment))
        elif roll < 0.9:
            fan = rng.choice(sorted(live))
            old = live[fan]
            new = dict(old, status=rng.choice(("SELECTED", "WAITLISTED", "CANCELLED")), updated_at=stamp)
            live[fan] = new
            changes.append(Change("MODIFY", item_key(new), new, old, moment))
        else:
            fan = rng.choice(sorted(live))
            old = live.pop(fan)
            changes.append(Change("REMOVE", item_key(old), None, old, moment))
    return changes
