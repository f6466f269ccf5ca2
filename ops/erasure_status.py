"""The state of a stack's erasure requests: pending ones (``erasure/requests/``) and carried-out ones (their audit
records under ``erasure/audit/``), with their age against the stack's deadline.

A pending request is read by its key only (its id says when it was filed): the request itself names the fans in
clear, and the operator's role may not read it back. An audit record names no fan (HMACs only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from curator.erasure_requests import (
    AUDIT_PREFIX,
    PLACES,
    REQUESTS_PREFIX,
    AuditRecord,
    ErasureRequestError,
    request_id_of_key,
)

__all__ = ["RequestState", "describe_requests", "filed_at", "list_requests"]


def filed_at(request_id: str) -> datetime:
    """When a request was filed, from its id (``<yyyymmddThhmmssZ>-<8 hex digits>``)."""
    return datetime.strptime(request_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class RequestState:
    """One request: pending (no audit yet) or completed (its audit record)."""

    request_id: str
    filed_at: datetime
    audit: AuditRecord | None = None
    problem: str = ""  # an audit record that could not be read: named, not hidden
    fans: int | None = None  # how many fans a completed request named (its audit's HMACs)

    @property
    def pending(self) -> bool:
        """No audit record yet (an unreadable one is neither pending nor complete: ``problem`` says why)."""
        return self.audit is None and not self.problem

    def age(self, now: datetime) -> timedelta:
        end = self.audit.completed_at if self.audit is not None else now
        return end - self.filed_at

    def overdue(self, now: datetime, deadline_days: int) -> bool:
        """Pending for longer than the deadline (the alarm's condition)."""
        return self.pending and self.age(now) >= timedelta(days=deadline_days)

    def needs_attention(self, now: datetime, deadline_days: int) -> bool:
        """Overdue, or its audit record cannot be read (``make erase-status`` then exits 1)."""
        return bool(self.problem) or self.overdue(now, deadline_days)


def _keys(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield str(item["Key"])


def list_requests(s3: Any, bucket: str) -> list[RequestState]:
    """Every request of the bucket, oldest first: completed ones from their audit records, pending ones from the
    requests still filed (a request with an audit record is complete, even before the curator deleted it)."""
    states: dict[str, RequestState] = {}
    for key in _keys(s3, bucket, AUDIT_PREFIX):
        try:
            request_id = request_id_of_key(key)
        except ErasureRequestError:
            continue  # not an audit record (a stray object): not a request
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            audit = AuditRecord.from_json(body, key)
        except ErasureRequestError as error:
            states[request_id] = RequestState(request_id, filed_at(request_id), problem=str(error))
            continue
        states[request_id] = RequestState(request_id, audit.filed_at, audit, fans=len(audit.fan_id_hmacs))
    for key in _keys(s3, bucket, REQUESTS_PREFIX):
        try:
            request_id = request_id_of_key(key)
        except ErasureRequestError:
            continue
        states.setdefault(request_id, RequestState(request_id, filed_at(request_id)))
    return sorted(states.values(), key=lambda state: (state.filed_at, state.request_id))


def _age(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d {hours % 24:02d}h"


def _rows(audit: AuditRecord) -> str:
    return ", ".join(f"{place} {audit.rows_removed.get(place, 0):,}" for place in PLACES)


def _snapshots(audit: AuditRecord) -> str:
    return "; ".join(
        f"{table} {ids.get('before')} -> {ids.get('after')}" for table, ids in sorted(audit.snapshots.items())
    )


def describe_requests(states: list[RequestState], now: datetime, deadline_days: int) -> list[str]:
    """Lines for ``make erase-status``: one per request, its places and snapshots indented below a completed one."""
    if not states:
        return ["no erasure request filed"]
    pending = [state for state in states if state.pending]
    overdue = [state for state in pending if state.overdue(now, deadline_days)]
    unreadable = [state for state in states if state.problem]
    completed = len(states) - len(pending) - len(unreadable)
    lines = [
        f"{len(states)} requests: {completed} completed, {len(pending)} pending"
        f" ({len(overdue)} older than the {deadline_days}-day deadline)"
        + (f", {len(unreadable)} with an unreadable audit record" if unreadable else "")
    ]
    for state in states:
        filed = f"filed {state.filed_at:%Y-%m-%d %H:%M}Z"
        if state.problem:
            lines.append(f"UNREADABLE {state.request_id}  {filed}  {state.problem}")
        elif state.audit is None:
            due = state.filed_at + timedelta(days=deadline_days)
            flag = "OVERDUE" if state.overdue(now, deadline_days) else "pending"
            lines.append(f"{flag:<10} {state.request_id}  {filed}  age {_age(state.age(now))}  due {due:%Y-%m-%d}")
        else:
            audit = state.audit
            lines.append(
                f"completed  {state.request_id}  {filed}  completed {audit.completed_at:%Y-%m-%d %H:%M}Z"
                f"  took {_age(state.age(now))}  fans {state.fans}"
            )
            lines.append(f"           rows removed: {_rows(audit)}")
            if audit.versions_purged:  # records written before old versions were purged have none
                purged = ", ".join(f"{place} {audit.versions_purged.get(place, 0):,}" for place in PLACES)
                lines.append(f"           old versions purged: {purged}")
            if audit.snapshots:
                lines.append(f"           snapshots: {_snapshots(audit)}")
    return lines
