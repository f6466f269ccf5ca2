"""Erasure requests and their audit records: the contract between the operator's command and the curator.

An operator files a request (``make erase``); the curator, the lake's only writer, carries out every pending request
at the start of its next run, writes the audit record, and only then deletes the request, the one object that names
the fans in clear. The audit keeps no fan id: only each id's HMAC-SHA-256 under the stack's salt, so a later request
for the same fan can be matched to it without the record identifying anyone.

Both live in the stack's data bucket beside the lake, not under the raw layout's root, so no rule or grant on the
raw prefixes reaches them:

    erasure/requests/<request_id>.json   {"request_id", "filed_at", "fan_ids": [...]}
    erasure/audit/<request_id>.json      {"request_id", "filed_at", "completed_at", "fan_id_hmacs": [...],
                                          "rows_removed": {place: n}, "snapshots": {table: {"before", "after"}},
                                          "versions_purged": {place: n}}

``versions_purged`` counts the noncurrent object versions (copies a delete left in a versioned bucket) purged per
place by the run that carried the request out, with every other request of that run; records written before it
existed have none.

    request = ErasureRequest.new(parse_fan_ids(path.read_text().splitlines(), str(path)), now=clock())
    s3.put_object(Bucket=bucket, Key=request.key, Body=request.to_json(), IfNoneMatch="*")
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.exceptions import PipelineError

__all__ = [
    "AUDIT_PREFIX",
    "ERASURE_PREFIX",
    "MAX_FANS_PER_REQUEST",
    "PLACES",
    "PROGRESS_PREFIX",
    "REQUESTS_PREFIX",
    "AuditRecord",
    "ErasureRequest",
    "ErasureRequestError",
    "fan_id_hmac",
    "parse_fan_ids",
    "request_id_of_key",
]

ERASURE_PREFIX = "erasure/"
REQUESTS_PREFIX = f"{ERASURE_PREFIX}requests/"
AUDIT_PREFIX = f"{ERASURE_PREFIX}audit/"
#: Where a request's tally and the erasure's look are kept while requests are carried out (counts, paths and
#: snapshot ids only, never a fan id).
PROGRESS_PREFIX = f"{ERASURE_PREFIX}progress/"
#: Every place the lake keeps a fan's rows, in the order an erasure run visits them; an audit counts rows per place.
PLACES = (
    "registration_changes",  # the curated change log (Iceberg)
    "registrations",  # the curated current state (Iceberg)
    "raw_events",  # raw landing objects not yet curated
    "snapshots",  # backfill snapshot objects
    "quarantine",  # quarantine lines, stream and snapshot
    "failures",  # the failure bucket's on-failure records
    "exports",  # the DynamoDB export data files the backfill read
)
#: A request's fans are held in memory by every erasure run: large lists are split into several requests.
MAX_FANS_PER_REQUEST = 100_000
# A fan id as the stream handler takes it from the sort key ``FAN#<fan_id>``: printable, no whitespace.
_FAN_ID = re.compile(r"^[!-~]{1,256}$")
_REQUEST_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class ErasureRequestError(PipelineError):
    """A request, a fan id or an audit record is malformed; the message names the value and where it came from."""


def parse_fan_ids(lines: Iterable[str], source: str) -> tuple[str, ...]:
    """The fan ids of ``lines`` (one per line; blank lines and ``#`` comments skipped), first occurrence kept.

    Raises ``ErasureRequestError`` naming ``source``, the line number and the value for an id that is not one
    printable word, and when there is no id at all or more than ``MAX_FANS_PER_REQUEST``.
    """
    seen: dict[str, None] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("FAN#"):
            raise ErasureRequestError(f"{source}:{number}: {text!r} is a sort key; give the fan id without 'FAN#'")
        if not _FAN_ID.match(text):
            raise ErasureRequestError(
                f"{source}:{number}: {text!r} is not a fan id (one word of printable ASCII, at most 256 characters)"
            )
        seen.setdefault(text, None)
    if not seen:
        raise ErasureRequestError(f"{source}: no fan id (one per line)")
    if len(seen) > MAX_FANS_PER_REQUEST:
        raise ErasureRequestError(
            f"{source}: {len(seen):,} fan ids; a request takes at most {MAX_FANS_PER_REQUEST:,}: split the file"
        )
    return tuple(seen)


def fan_id_hmac(salt: str, fan_id: str) -> str:
    """The audit's stand-in for ``fan_id``: HMAC-SHA-256 keyed with the stack's salt, as hex."""
    if not salt:
        raise ErasureRequestError("the stack's erasure salt is empty")
    return hmac.new(salt.encode(), fan_id.encode(), hashlib.sha256).hexdigest()


def _instant(value: Any, what: str, where: str) -> datetime:
    if not isinstance(value, str):
        raise ErasureRequestError(f"{where}: {what} {value!r} is not an ISO-8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ErasureRequestError(f"{where}: {what} {value!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise ErasureRequestError(f"{where}: {what} {value!r} has no time zone")
    return moment.astimezone(UTC)


def _document(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ErasureRequestError(f"{where}: not JSON ({error})") from None
    if not isinstance(document, dict):
        raise ErasureRequestError(f"{where}: a JSON object was expected, got {type(document).__name__}")
    return document


def request_id_of_key(key: str) -> str:
    """The request id of a request or audit object's key; ``ErasureRequestError`` for any other key."""
    for prefix in (REQUESTS_PREFIX, AUDIT_PREFIX):
        if key.startswith(prefix) and key.endswith(".json"):
            request_id = key[len(prefix) : -len(".json")]
            if _REQUEST_ID.match(request_id):
                return request_id
    raise ErasureRequestError(f"{key!r} is not an erasure request or audit key ({REQUESTS_PREFIX}<id>.json)")


@dataclass(frozen=True)
class ErasureRequest:
    """One filed request: its id (filing time plus a random suffix, so ids sort by filing), when, and the fans."""

    request_id: str
    filed_at: datetime
    fan_ids: tuple[str, ...]

    @classmethod
    def new(cls, fan_ids: tuple[str, ...], now: datetime, token: str | None = None) -> ErasureRequest:
        """A request filed at ``now`` (``token``: 8 hex digits, random unless given)."""
        suffix = token if token is not None else secrets.token_hex(4)
        moment = now.astimezone(UTC)
        return cls(f"{moment:%Y%m%dT%H%M%SZ}-{suffix}", moment, fan_ids)

    def __post_init__(self) -> None:
        if not _REQUEST_ID.match(self.request_id):
            raise ErasureRequestError(f"request id {self.request_id!r} is not <yyyymmddThhmmssZ>-<8 hex digits>")
        if not self.fan_ids:
            raise ErasureRequestError(f"request {self.request_id} names no fan")

    @property
    def key(self) -> str:
        """Where the request is filed in the stack's data bucket."""
        return f"{REQUESTS_PREFIX}{self.request_id}.json"

    @property
    def audit_key(self) -> str:
        """Where its audit record goes once carried out."""
        return f"{AUDIT_PREFIX}{self.request_id}.json"

    def to_json(self) -> bytes:
        return json.dumps(
            {"request_id": self.request_id, "filed_at": self.filed_at.isoformat(), "fan_ids": list(self.fan_ids)},
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> ErasureRequest:
        """The request stored at ``key``; ``ErasureRequestError`` naming the key and the bad value."""
        document = _document(data, key)
        fan_ids = document.get("fan_ids")
        if not isinstance(fan_ids, list) or not all(isinstance(fan, str) for fan in fan_ids):
            raise ErasureRequestError(f"{key}: fan_ids must be a list of strings, got {fan_ids!r:.80}")
        request = cls(
            request_id=str(document.get("request_id")),
            filed_at=_instant(document.get("filed_at"), "filed_at", key),
            fan_ids=parse_fan_ids(fan_ids, key),
        )
        if request.key != key:
            raise ErasureRequestError(f"{key}: holds request {request.request_id!r}, whose key is {request.key!r}")
        return request


@dataclass(frozen=True)
class AuditRecord:
    """What one carried-out request removed: rows per place (``PLACES``) and each table's snapshot before and after."""

    request_id: str
    filed_at: datetime
    completed_at: datetime
    fan_id_hmacs: tuple[str, ...]
    rows_removed: Mapping[str, int] = field(default_factory=dict)
    snapshots: Mapping[str, Mapping[str, int | None]] = field(default_factory=dict)
    versions_purged: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted((set(self.rows_removed) | set(self.versions_purged)) - set(PLACES))
        if unknown:
            raise ErasureRequestError(f"audit {self.request_id}: unknown place(s) {unknown}; places are {PLACES}")

    @classmethod
    def of(
        cls,
        request: ErasureRequest,
        salt: str,
        completed_at: datetime,
        rows_removed: Mapping[str, int],
        snapshots: Mapping[str, Mapping[str, int | None]],
        *,
        versions_purged: Mapping[str, int] | None = None,
    ) -> AuditRecord:
        return cls(
            request_id=request.request_id,
            filed_at=request.filed_at,
            completed_at=completed_at.astimezone(UTC),
            fan_id_hmacs=tuple(fan_id_hmac(salt, fan) for fan in request.fan_ids),
            rows_removed=dict(rows_removed),
            snapshots={table: dict(ids) for table, ids in snapshots.items()},
            versions_purged=dict(versions_purged or {}),
        )

    @property
    def key(self) -> str:
        return f"{AUDIT_PREFIX}{self.request_id}.json"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "request_id": self.request_id,
                "filed_at": self.filed_at.isoformat(),
                "completed_at": self.completed_at.isoformat(),
                "fan_id_hmacs": list(self.fan_id_hmacs),
                "rows_removed": dict(self.rows_removed),
                "snapshots": {table: dict(ids) for table, ids in self.snapshots.items()},
                "versions_purged": dict(self.versions_purged),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> AuditRecord:
        """The audit record stored at ``key``; ``ErasureRequestError`` naming the key and the bad value."""
        document = _document(data, key)
        rows = document.get("rows_removed", {})
        if not isinstance(rows, dict) or not all(isinstance(n, int) and n >= 0 for n in rows.values()):
            raise ErasureRequestError(f"{key}: rows_removed must map places to counts, got {rows!r:.80}")
        hmacs = document.get("fan_id_hmacs")
        if not isinstance(hmacs, list) or not all(isinstance(h, str) and len(h) == 64 for h in hmacs):
            raise ErasureRequestError(f"{key}: fan_id_hmacs must be a list of 64-digit hex strings")
        versions = document.get("versions_purged", {})
        if not isinstance(versions, dict) or not all(isinstance(n, int) and n >= 0 for n in versions.values()):
            raise ErasureRequestError(f"{key}: versions_purged must map places to counts, got {versions!r:.80}")
        snapshots = document.get("snapshots", {})
        if not isinstance(snapshots, dict):
            raise ErasureRequestError(f"{key}: snapshots must map tables to their ids, got {snapshots!r:.80}")
        return cls(
            request_id=str(document.get("request_id")),
            filed_at=_instant(document.get("filed_at"), "filed_at", key),
            completed_at=_instant(document.get("completed_at"), "completed_at", key),
            fan_id_hmacs=tuple(hmacs),
            rows_removed=rows,
            snapshots=snapshots,
            versions_purged=versions,
        )
