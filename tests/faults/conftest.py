"""Helpers of the fault suite: a tagged set written through the shared local pipeline, and its accounting."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.changes import Change
from sandbox.targets import LocalTarget
from sandbox.workload import tagged_changes


@dataclass(frozen=True)
class Accounting:
    """Where a tagged set's changes ended: rows (and distinct changes), quarantine lines, discarded records."""

    rows: int
    distinct: int
    quarantined: int
    failed: int

    @property
    def total(self) -> int:
        return self.distinct + self.quarantined + self.failed


class FaultRun:
    """One fault test's tagged set on the session's local pipeline (tests of a worker run one at a time)."""

    def __init__(self, target: LocalTarget) -> None:
        self.target = target
        self.tag = f"fault{uuid.uuid4().hex[:10]}"
        self.changes: list[Change] = []
        self._forwarded = target.pipeline.bridge.forwarded
        self._discarded = target.pipeline.mapping.stats.records_discarded

    def make(self, count: int, seed: int = 1) -> list[Change]:
        return tagged_changes(self.tag, count, seed=seed)

    def write(self, changes: list[Change]) -> None:
        self.target.write(changes)
        self.changes.extend(changes)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the pipeline has streamed and settled every change written so far."""
        self.target.pipeline.wait_for_changes(self._forwarded + len(self.changes), timeout=timeout)

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"{self.tag}: {what} within {timeout:.0f} s", pytrace=False)
            time.sleep(0.1)

    @property
    def failed(self) -> int:
        return self.target.pipeline.mapping.stats.records_discarded - self._discarded

    def accounting(self, *, failed: int | None = None) -> Accounting:
        lake = self.target.lake
        events = lake.events()
        change_ids = [
            change_id
            for change_id, event_id in zip(
                events.column("change_id").to_pylist(), events.column("event_id").to_pylist(), strict=True
            )
            if event_id == self.tag
        ]
        quarantined = [line for line in lake.quarantined() if self.tag in _payload(line)]
        return Accounting(
            rows=len(change_ids),
            distinct=len(set(change_ids)),
            quarantined=len(quarantined),
            failed=self.failed if failed is None else failed,
        )


def _payload(line: dict[str, Any]) -> str:
    import base64  # noqa: PLC0415

    return base64.b64decode(line.get("data") or "").decode("utf-8", "replace")


@pytest.fixture
def run(local_target: LocalTarget) -> FaultRun:
    return FaultRun(local_target)
