"""The tagged set of changes the end-to-end suite writes once per target, and waits for."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from sandbox.changes import Change, item_key
from sandbox.targets import Target, quarantined_records, recent_days
from sandbox.workload import poison_change


@dataclass(frozen=True)
class TaggedSet:
    """Changes under one event id (the tag), and a poison item under another."""

    tag: str
    changes: list[Change]
    poison: Change

    @property
    def poison_event(self) -> str:
        return str(self.poison.keys["pk"]).removeprefix("EVENT#")

    def partition_filter(self) -> str:
        days = ", ".join(f"'{day}'" for day in recent_days())
        return f"event_id = '{self.tag}' AND dt IN ({days})"


def _item(tag: str, fan: str, moment: datetime, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": f"EVENT#{tag}",
        "sk": f"FAN#{fan}",
        "market_id": Decimal(27),
        "status": "REGISTERED",
        "quantity": Decimal(2),
        "created_at": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    item.update(extra)
    return item


def scenario(tag: str) -> list[Change]:
    """Insert, modify, remove: a registration selected, one cancelled by removal, one updated twice, one rich."""
    now = datetime.now(UTC)
    later = (now + timedelta(seconds=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    selected = _item(tag, "alice", now)
    removed = _item(tag, "bob", now, quantity=Decimal(4))
    twice = _item(tag, "carol", now, market_id=Decimal(101))
    rich = _item(
        tag,
        "dave",
        now,
        price_levels=["PL1", "VIP"],
        channel="ios",
        presale_code="PRESALE123",
        attributes={"locale": "fr-FR"},
        marketing={"opt_in": True},
    )
    selected2 = dict(selected, status="SELECTED", updated_at=later)
    twice2 = dict(twice, status="WAITLISTED", updated_at=later)
    twice3 = dict(twice2, status="SELECTED", quantity=Decimal(3))
    return [
        Change("INSERT", item_key(selected), selected, None, now),
        Change("INSERT", item_key(removed), removed, None, now),
        Change("INSERT", item_key(twice), twice, None, now),
        Change("INSERT", item_key(rich), rich, None, now),
        Change("MODIFY", item_key(selected2), selected2, selected, now),
        Change("REMOVE", item_key(removed), None, removed, now),
        Change("MODIFY", item_key(twice2), twice2, twice, now),
        Change("MODIFY", item_key(twice3), twice3, twice2, now),
    ]


@pytest.fixture(scope="module")
def tagged(target: Target) -> TaggedSet:
    """Write the tagged set and a poison item; wait until all of it has landed (or fail with what is missing)."""
    tag = f"e2e{uuid.uuid4().hex[:12]}"
    written = TaggedSet(tag, scenario(tag), poison_change("unknown_status", event_id=f"{tag}poison", fan_id="eve"))
    target.write(written.changes)
    target.write([written.poison])
    source = f'"{target.outputs.athena_database_name}"."{target.outputs.glue_table_name}"'
    count_sql = f"SELECT count(DISTINCT change_id) AS changes FROM {source} WHERE {written.partition_filter()}"  # noqa: S608
    deadline = time.monotonic() + target.settle_timeout
    landed, quarantined = 0, 0
    while time.monotonic() < deadline:
        landed = int(target.query(count_sql)[0]["changes"] or 0)
        quarantined = len(quarantined_records(target, written.poison_event))
        if landed >= len(written.changes) and quarantined:
            return written
        time.sleep(target.poll_seconds)
    pytest.fail(
        f"{target.name}: after {target.settle_timeout:.0f} s, {landed}/{len(written.changes)} changes of {tag} are in "
        f"Parquet and {quarantined} poison records in quarantine",
        pytrace=False,
    )
