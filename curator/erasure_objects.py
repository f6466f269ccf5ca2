"""Erasure in the lake's objects: raw landing objects, backfill snapshots, quarantine lines, on-failure records,
and the DynamoDB export data files the backfill read.

Every place is handled the same way, one object at a time: read it, find the fans' rows (Parquet: ``fan_id``;
JSON lines and Kinesis records: the fan id as a JSON string or after ``#`` in a key, e.g. ``"FAN#<id>"``), and if
there are any, write the rest under a new write-once name, and only once that object is durable delete the old
one with a conditional delete (``If-Match`` its ETag). An object with nothing else left is simply deleted. Each
function counts the rows it removed per fan; with ``dry_run`` it only counts.

Export data files are the exception: their names are in the export's manifest, which a re-run of the backfill reads,
so each is overwritten in place (a conditional ``PutObject`` on its ETag: the object exists at every moment, the old
bytes until the new ones are durable) and the old bytes are left to the version purge below.

New names are made from the old object's ETag, so a run that crashed after writing one finds it there on the
rerun (the write-once create reports it) and goes on to delete the old object; nothing is written twice.

Then each place's noncurrent versions (``curator.erasure_versions``), read with the same reader as its current
objects: the old versions of the objects just deleted and those deleted before the request are purged when they
hold one of the fans.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.erasure_versions import Holds, VersionPurge, purge_versions
from curator.exports import EXPORT_DATA_FILE
from curator.raw import LedgerEntry, is_raw_key, parse_object_name, raw_objects
from curator.store import ObjectGoneError, ObjectStore, StoredObject
from pipeline.writer import encode_parquet, encode_quarantine, sequence_digest

__all__ = [
    "FAILURE_PREFIX",
    "FanMatcher",
    "ObjectErasure",
    "erase_exports",
    "erase_failures",
    "erase_quarantine",
    "erase_raw",
    "erase_snapshots",
]

#: Where Lambda's S3 on-failure destination writes (``ops.replay.FAILURE_PREFIX``).
FAILURE_PREFIX = "aws/lambda/"
_DELIMITERS = frozenset('#"')
#: What follows a '"' or '#' up to the next '"' (none of either inside): where a fan may be named.
_PIECE = re.compile(rb'(?<=[#"])[^#"]*(?=")')
#: An export's data file (``<prefix><request time>/AWSDynamoDB/<export id>/data/<name>.json.gz``, moto's
#: ``<uuid>.gz``), as ``ops.backfill`` lists them; the manifests beside them hold counts and checksums only.


@dataclass
class ObjectErasure:
    """What erasure did (or, in a dry run, would do) in one place: rows removed per fan, objects touched."""

    rows: Counter[str] = field(default_factory=Counter)
    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    #: (key, ETag) of each object deleted: its old version holds a fan, so it is purged without reading it again.
    replaced: set[tuple[str, str]] = field(default_factory=set)
    #: The place's noncurrent versions holding a fan, purged, and the delete markers left without a version.
    versions: VersionPurge = field(default_factory=VersionPurge)

    def purge_versions(
        self, store: ObjectStore, prefix: str, holds: Holds, keep: Callable[[str], bool], *, dry_run: bool
    ) -> None:
        """The place's noncurrent versions, once its current objects are done (see ``curator.erasure_versions``)."""
        self.versions = purge_versions(store, prefix, holds=holds, keep=keep, known=self.replaced, dry_run=dry_run)
        self.unreadable.extend(self.versions.unreadable)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class FanMatcher:
    """Which of the fans a text (a JSON line, a Kinesis record's data) names: as a JSON string ``"<id>"`` or at
    the end of a key's value, ``#<id>"`` (``"FAN#<id>"``), so one id is never matched inside a longer one."""

    def __init__(self, fans: Collection[str]) -> None:
        self.patterns = [
            (fan, (b'"' + escaped + b'"', b"#" + escaped + b'"'))
            for fan in sorted(fans)
            for escaped in [json.dumps(fan)[1:-1].encode()]
        ]
        # An id without '#' or '"' is named exactly when it is a whole piece between a '"' or '#' and a '"': one set
        # lookup per piece, whatever the number of fans (an export data file has millions of lines). The rare id
        # holding either character is searched for as it is.
        self._plain = {patterns[0][1:-1]: fan for fan, patterns in self.patterns if not _DELIMITERS & set(fan)}
        self._others = [(fan, patterns) for fan, patterns in self.patterns if _DELIMITERS & set(fan)]

    def fans_in(self, data: bytes) -> list[str]:
        found = {self._plain[piece] for piece in _PIECE.findall(data) if piece in self._plain}
        found.update(fan for fan, patterns in self._others if any(pattern in data for pattern in patterns))
        return sorted(found)


def _new_name(key: str, etag: str, suffix: str) -> str:
    """``key`` less ``suffix``, plus a digest of the old ETag: the rewrite's name, the same on every rerun."""
    stem = key.removesuffix(suffix)
    return f"{stem}-e{hashlib.sha256(etag.encode()).hexdigest()[:12]}{suffix}"


def _replace(
    store: ObjectStore, item: StoredObject, new_key: str | None, body: bytes | None, erasure: ObjectErasure
) -> None:
    """The rest (``body``) written at ``new_key`` first, then the old object deleted if it is still what was read."""
    if new_key is not None and body is not None:
        store.create(new_key, body)  # False: a crashed run wrote it already, from this very object
        erasure.rewritten.append(new_key)
    if store.delete(item.key, item.etag):
        erasure.deleted.append(item.key)
        erasure.replaced.add((item.key, item.etag))


def _get(store: ObjectStore, item: StoredObject, erasure: ObjectErasure) -> bytes | None:
    try:
        body, stored = store.get(item.key)
    except ObjectGoneError:
        return None
    if stored.etag != item.etag:
        return None  # replaced since listed: the next run reads the new one
    return body


def _fan_rows(rows: pa.Table, fans: pa.Array) -> tuple[pa.Array, Counter[str]]:
    """The mask of ``rows`` whose ``fan_id`` is one of ``fans``, and the count per fan."""
    mask = pc.fill_null(pc.is_in(rows.column("fan_id").cast(pa.string()), value_set=fans), False)
    hits = rows.column("fan_id").filter(mask).to_pylist()
    return mask, Counter(str(fan) for fan in hits)


def _parquet_holds(fans: pa.Array) -> Holds:
    """The reader of a Parquet version: whether its ``fan_id`` holds one of ``fans`` (None: not Parquet)."""

    def holds(body: bytes) -> bool | None:
        try:
            source = pq.ParquetFile(pa.BufferReader(body))
            if "fan_id" not in source.schema_arrow.names:
                return False  # no fan's row in it
            rows = source.read(columns=["fan_id"])
        except (pa.ArrowInvalid, OSError):
            return None
        return bool(_fan_rows(rows, fans)[1])

    return holds


def _parquet_holding(
    store: ObjectStore, item: StoredObject, fans: pa.Array, erasure: ObjectErasure
) -> tuple[pa.Table, pa.Array] | None:
    """The rows of Parquet object ``item`` and the mask of the fans' rows, counted in ``erasure``; None when it holds
    none of them, is gone or replaced since listed, or cannot be read (then named in ``erasure.unreadable``)."""
    body = _get(store, item, erasure)
    if body is None:
        return None
    try:
        rows = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowInvalid, OSError):
        erasure.unreadable.append(item.key)
        return None
    mask, counts = _fan_rows(rows, fans)
    if not counts:
        return None
    erasure.rows.update(counts)
    return rows, mask


def erase_raw(
    store: ObjectStore,
    prefix: str,
    ledger: Mapping[str, LedgerEntry],
    fans: Collection[str],
    *,
    dry_run: bool = False,
) -> ObjectErasure:
    """Raw landing objects holding the fans' rows. One a committed ledger covers (same ETag) is deleted: its rows
    are in the tables. Any other is rewritten without them under the name the stream handler gives the rows kept
    (``<tag>-<shard>-<first sequence>-<digest>.parquet``), so the curator picks it up as any raw object."""
    erasure = ObjectErasure()
    wanted = pa.array(sorted(fans), pa.string())
    for item in raw_objects(prefix, store.list(prefix)):
        found = _parquet_holding(store, item, wanted, erasure)
        if found is None or dry_run:
            continue
        rows, mask = found
        entry = ledger.get(item.key)
        kept = rows.filter(pc.invert(mask))
        if (entry is not None and entry.etag == item.etag) or kept.num_rows == 0:
            _replace(store, item, None, None, erasure)
            continue
        folder, _, name = item.key.rpartition("/")
        parsed = parse_object_name(name)
        if parsed is None:  # raw_objects lists only names it parses
            raise ValueError(f"{item.key!r} is not a raw object name")
        tag, shard, _ = parsed
        sequences = sorted((str(value) for value in kept.column("sequence_number").to_pylist()), key=int)
        new_key = f"{folder}/{tag}-{shard}-{sequences[0]}-{sequence_digest(sequences, ascending=True)}.parquet"
        _replace(store, item, new_key, encode_parquet(kept), erasure)
    erasure.purge_versions(store, prefix, _parquet_holds(wanted), lambda key: is_raw_key(prefix, key), dry_run=dry_run)
    return erasure


def erase_snapshots(store: ObjectStore, prefix: str, fans: Collection[str], *, dry_run: bool = False) -> ObjectErasure:
    """Backfill snapshot objects (``<prefix>export_id=<id>/<stem>.parquet``) holding the fans' rows: rewritten as
    ``<stem>-e<digest>.parquet`` with its own counts object (``_<stem>-e<digest>.counts.json``, written after it,
    as the backfill does), then the old object deleted. The old counts object stays: it tells a re-run of the
    backfill that the export's file is done, so the fans' rows are not back-filled again."""
    erasure = ObjectErasure()
    wanted = pa.array(sorted(fans), pa.string())
    listed = store.list(prefix)
    for item in sorted(listed, key=lambda entry: entry.key):
        folder = item.key.rpartition("/")[0]
        if not _is_snapshot_object(item.key):
            continue
        found = _parquet_holding(store, item, wanted, erasure)
        if found is None or dry_run:
            continue
        rows, mask = found
        kept = rows.filter(pc.invert(mask))
        if kept.num_rows == 0:
            _replace(store, item, None, None, erasure)
            continue
        new_key = _new_name(item.key, item.etag, ".parquet")
        new_stem = new_key.rpartition("/")[2].removesuffix(".parquet")
        store.create(new_key, encode_parquet(kept))
        erased = rows.num_rows - kept.num_rows
        done = {"items": kept.num_rows, "rows": kept.num_rows, "quarantined": 0, "erased_rows": erased}
        store.create(f"{folder}/_{new_stem}.counts.json", json.dumps(done, sort_keys=True).encode())
        _replace(store, item, new_key, None, erasure)
        erasure.rewritten.append(new_key)
    erasure.purge_versions(store, prefix, _parquet_holds(wanted), _is_snapshot_object, dry_run=dry_run)
    return erasure


def _is_snapshot_object(key: str) -> bool:
    """A backfill snapshot's Parquet object (not its ``_<stem>.counts.json``, which names no fan)."""
    name = key.rpartition("/")[2]
    return name.endswith(".parquet") and not name.startswith("_")


def _decoded(value: Any) -> bytes:
    """A base64 field's bytes (a Kinesis record's or an export line's data), or empty when it is not base64."""
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _line_fans(line: Mapping[str, Any], matcher: FanMatcher) -> list[str]:
    text = json.dumps(line, ensure_ascii=False, sort_keys=True).encode()
    return matcher.fans_in(text + b"\n" + _decoded(line.get("data")))


def erase_quarantine(store: ObjectStore, prefix: str, fans: Collection[str], *, dry_run: bool = False) -> ObjectErasure:
    """Quarantine objects (gzipped JSON lines: the stream's ``dt=<day>/`` and the snapshots' ``snapshots/``) whose
    lines (or their base64 ``data``) name one of the fans: rewritten without those lines, then the old deleted.
    Each line removed counts once, for every fan it names."""
    erasure = ObjectErasure()
    matcher = FanMatcher(fans)
    for item in sorted(store.list(prefix), key=lambda entry: entry.key):
        if not item.key.endswith(".jsonl.gz"):
            continue
        body = _get(store, item, erasure)
        if body is None:
            continue
        lines = _quarantine_lines(body)
        if lines is None:
            erasure.unreadable.append(item.key)
            continue
        kept, removed = _split(lines, lambda line: _line_fans(line, matcher))
        if not removed:
            continue
        erasure.rows.update(removed)
        if dry_run:
            continue
        new_key = _new_name(item.key, item.etag, ".jsonl.gz") if kept else None
        _replace(store, item, new_key, encode_quarantine(kept) if kept else None, erasure)

    def holds(body: bytes) -> bool | None:
        lines = _quarantine_lines(body)
        return None if lines is None else bool(_split(lines, lambda line: _line_fans(line, matcher))[1])

    erasure.purge_versions(store, prefix, holds, lambda key: key.endswith(".jsonl.gz"), dry_run=dry_run)
    return erasure


def _quarantine_lines(body: bytes) -> list[Any] | None:
    """The JSON lines of a gzipped quarantine object; None when it cannot be decoded."""
    try:
        return [json.loads(text) for text in gzip.decompress(body).decode("utf-8").splitlines() if text.strip()]
    except (OSError, EOFError, UnicodeDecodeError, ValueError):
        return None


def _split(items: Iterable[Any], fans_of: Callable[[Any], list[str]]) -> tuple[list[Any], Counter[str]]:
    kept: list[Any] = []
    removed: Counter[str] = Counter()
    for item in items:
        named = fans_of(item) if isinstance(item, Mapping) else []
        if named:
            removed.update(named)
        else:
            kept.append(item)
    return kept, removed


def erase_failures(store: ObjectStore, fans: Collection[str], *, dry_run: bool = False) -> ObjectErasure:
    """On-failure records of the failure bucket (Lambda's S3 destination: a JSON object whose ``payload`` holds the
    invocation event): each Kinesis record whose data names one of the fans is dropped from the payload, the rest
    kept as it was (so ``ops.replay failures`` re-drives them), under a new key; a record left without a Kinesis
    record is deleted."""
    erasure = ObjectErasure()
    matcher = FanMatcher(fans)
    for item in sorted(store.list(FAILURE_PREFIX), key=lambda entry: entry.key):
        body = _get(store, item, erasure)
        if body is None:
            continue
        parsed = _failure_record(body)
        if parsed is None:
            erasure.unreadable.append(item.key)
            continue
        document, payload, event, records = parsed
        kept, removed = _split(records, lambda record: _record_fans(record, matcher))
        if not removed:
            continue
        erasure.rows.update(removed)
        if dry_run:
            continue
        if not kept:
            _replace(store, item, None, None, erasure)
            continue
        event = {**event, "Records": kept}
        document = {**document, "payload": json.dumps(event) if isinstance(payload, str) else event}
        _replace(store, item, _new_name(item.key, item.etag, ""), json.dumps(document).encode(), erasure)

    def holds(body: bytes) -> bool | None:
        parsed = _failure_record(body)
        return None if parsed is None else bool(_split(parsed[3], lambda record: _record_fans(record, matcher))[1])

    erasure.purge_versions(store, FAILURE_PREFIX, holds, lambda key: True, dry_run=dry_run)
    return erasure


def _record_fans(record: Mapping[str, Any], matcher: FanMatcher) -> list[str]:
    return matcher.fans_in(_decoded(record.get("kinesis", {}).get("data")))


def _failure_record(body: bytes) -> tuple[dict[str, Any], Any, dict[str, Any], list[Any]] | None:
    """An on-failure record's document, its ``payload`` as stored, the invocation event and its Kinesis records;
    None when it is not one."""
    try:
        document = json.loads(body)
        payload = document["payload"]
        event = json.loads(payload) if isinstance(payload, str) else payload
        records = event["Records"]
        if not isinstance(records, list):
            raise TypeError("Records is not a list")
    except (ValueError, KeyError, TypeError):
        return None
    return document, payload, event, records


def is_export_data_file(key: str) -> bool:
    """A DynamoDB export's data file (gzip DynamoDB JSON, one ``{"Item": ...}`` per line), not its manifests."""
    return EXPORT_DATA_FILE.search(key) is not None


def _export_lines(body: bytes) -> list[bytes] | None:
    """The lines of a gzipped export data file, each with its line end as stored; None when it is not gzip."""
    try:
        text = gzip.decompress(body)
    except (OSError, EOFError):
        return None
    return text.splitlines(keepends=True)


def _split_lines(lines: Iterable[bytes], matcher: FanMatcher) -> tuple[list[bytes], Counter[str]]:
    """The lines naming none of the fans (bytes unchanged), and the lines removed, counted once per fan named."""
    kept: list[bytes] = []
    removed: Counter[str] = Counter()
    for line in lines:
        named = matcher.fans_in(line) if line.strip() else []
        if named:
            removed.update(named)
        else:
            kept.append(line)
    return kept, removed


def erase_exports(store: ObjectStore, prefix: str, fans: Collection[str], *, dry_run: bool = False) -> ObjectErasure:
    """DynamoDB export data files under ``prefix`` whose item lines name one of the fans (``"sk": {"S":
    "FAN#<id>"}``, or the id as any string value): each is overwritten IN PLACE without those lines (the other
    lines' bytes unchanged; a file left without a line becomes an empty gzip file), conditional on the ETag read.
    The name stays because the export's manifest lists it and a re-run of the backfill reads the manifest; the
    manifest itself holds counts and checksums, no item, and is left as it is. The old bytes, now a noncurrent
    version, are purged with the place's versions."""
    erasure = ObjectErasure()
    matcher = FanMatcher(fans)
    for item in sorted(store.list(prefix), key=lambda entry: entry.key):
        if not is_export_data_file(item.key):
            continue
        body = _get(store, item, erasure)
        if body is None:
            continue
        lines = _export_lines(body)
        if lines is None:
            erasure.unreadable.append(item.key)
            continue
        kept, removed = _split_lines(lines, matcher)
        if not removed:
            continue
        erasure.rows.update(removed)
        if dry_run:
            continue
        # mtime 0: the same lines give the same bytes, so a rerun's overwrite (if any) changes nothing.
        if store.overwrite(item.key, gzip.compress(b"".join(kept), mtime=0), item.etag):
            erasure.rewritten.append(item.key)
            erasure.replaced.add((item.key, item.etag))

    def holds(body: bytes) -> bool | None:
        lines = _export_lines(body)
        return None if lines is None else bool(_split_lines(lines, matcher)[1])

    erasure.purge_versions(store, prefix, holds, is_export_data_file, dry_run=dry_run)
    return erasure
