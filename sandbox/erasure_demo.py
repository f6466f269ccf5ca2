"""The demo's erasure of one fan: file a request as ``make erase`` does, run the curator, search every object.

The request is filed as the local CI role (the role ``make erase`` acts as), then one curator run (``make compact``'s
local path) carries it out at its start, and every object version of the stack's data bucket and failure bucket
(both versioned: a delete leaves the old bytes as a noncurrent version) is searched for the fan id's bytes: Parquet
read column by column (``extra_attributes`` included), gzip and JSON decoded (a Kinesis record's base64 ``data``
too), Avro (Iceberg manifests) record by record, anything else as it is.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from curator.erasure_requests import ErasureRequest
from ops.erasure_status import RequestState, list_requests

__all__ = ["ErasureFigures", "erase_one_fan", "objects_naming"]

_GZIP = b"\x1f\x8b"
_PARQUET = b"PAR1"
_AVRO = b"Obj\x01"


@dataclass(frozen=True)
class ErasureFigures:
    """The erased fan, its request's state after the run, and the objects that still hold the fan's id."""

    fan_id: str
    request_id: str
    state: RequestState | None
    found: list[str]
    searched: int


def _base64_texts(value: Any) -> Iterator[bytes]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                try:
                    yield base64.b64decode(item, validate=True)
                except (binascii.Error, ValueError):
                    continue
            else:
                yield from _base64_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _base64_texts(item)
    elif isinstance(value, str) and value.startswith("{"):
        try:
            yield from _base64_texts(json.loads(value))
        except ValueError:
            return


def _json_texts(body: bytes) -> Iterator[bytes]:
    for line in body.splitlines() or [body]:
        try:
            yield from _base64_texts(json.loads(line))
        except (ValueError, UnicodeDecodeError):
            continue


def decoded_forms(body: bytes) -> list[bytes]:
    """Every form of an object's bytes the fan's id could hide in."""
    forms = [body]
    if body[:2] == _GZIP:
        body = gzip.decompress(body)
        forms.append(body)
    if body[:4] == _PARQUET:
        import pyarrow.parquet as pq  # noqa: PLC0415

        table = pq.read_table(io.BytesIO(body))
        for name in table.column_names:  # column by column: a compressed page hides its strings from a byte search
            forms.append(json.dumps(table.column(name).to_pylist(), default=str).encode())
    elif body[:4] == _AVRO:
        import fastavro  # noqa: PLC0415

        forms.extend(repr(record).encode() for record in fastavro.reader(io.BytesIO(body)))
    else:
        forms.extend(_json_texts(body))
    return forms


def objects_naming(s3: Any, buckets: list[str], needle: str) -> tuple[list[str], int]:
    """``s3://bucket/key`` of every object version, current or noncurrent (then ``?versionId=<id>`` is added),
    whose bytes, in any decoded form, hold ``needle``; and how many versions were read."""
    found, searched = [], 0
    wanted = needle.encode()
    for bucket in buckets:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for item in page.get("Versions", []):
                response = s3.get_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
                body = bytes(response["Body"].read())
                searched += 1
                if any(wanted in form for form in decoded_forms(body)):
                    old = "" if item["IsLatest"] else f"?versionId={item['VersionId']}"
                    found.append(f"s3://{bucket}/{item['Key']}{old}")
    return found, searched


def erase_one_fan(
    ci_s3: Any,
    admin_s3: Any,
    *,
    bucket: str,
    failure_bucket: str,
    fan_id: str,
    curate: Callable[[], object],
    searching: Callable[[], AbstractContextManager[object]] = nullcontext,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ErasureFigures:
    """File a request for ``fan_id`` as the CI role (``ci_s3``), run ``curate`` once, then search every object (as
    the administrator, ``admin_s3``: the CI role may read neither requests nor every prefix)."""
    request = ErasureRequest.new((fan_id,), now=clock())
    ci_s3.put_object(
        Bucket=bucket, Key=request.key, Body=request.to_json(), ContentType="application/json", IfNoneMatch="*"
    )
    curate()
    states = {state.request_id: state for state in list_requests(admin_s3, bucket)}
    # The request itself names the fan until the curator deletes it: it is searched like every other object.
    with searching():
        found, searched = objects_naming(admin_s3, [bucket, failure_bucket], fan_id)
    return ErasureFigures(fan_id, request.request_id, states.get(request.request_id), found, searched)


def _place(where: str, failure_bucket: str) -> str:
    bucket, _, key = where.removeprefix("s3://").partition("/")
    if bucket == failure_bucket:
        return "the failure bucket"
    return "/".join(key.split("/")[:2]) + "/"


def describe(figures: ErasureFigures, failure_bucket: str) -> list[str]:
    """The demo's lines for the erasure (each under 80 columns): the request's state and the search's result."""
    state = figures.state
    lines = [
        f"erasure of fan {figures.fan_id}",
        f"  request {figures.request_id} filed as the CI role (make erase)",
    ]
    if state is None or state.pending:
        lines.append("  after curator run 3: still pending (this curator does not erase yet)")
    else:
        assert state.audit is not None
        lines.append(f"  after curator run 3: completed, {sum(state.audit.rows_removed.values()):,} rows removed")
        lines.extend(f"    {place:<22} {rows:>7,} rows" for place, rows in state.audit.rows_removed.items())
    lines.append(f"  searched {figures.searched:,} objects for its id (Parquet by column, gzip, JSON, Avro):")
    if not figures.found:
        lines.append("  found nowhere")
        return lines
    counts: dict[str, int] = {}
    for where in figures.found:
        place = _place(where, failure_bucket)
        counts[place] = counts.get(place, 0) + 1
    lines.append(f"  found in {len(figures.found):,} objects:")
    lines.extend(f"    {place:<40} {count:>5,}" for place, count in sorted(counts.items()))
    return lines
