"""Erasure in the lake's objects, on an in-memory store: new names, old objects deleted only on their ETag, the rest
kept as it was, dry runs that only count, and the noncurrent versions of a versioned bucket purged when they hold a
fan (and kept when they do not)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.erasure import ErasureRun
from curator.erasure_objects import FanMatcher, erase_exports, erase_failures, erase_quarantine, erase_raw
from curator.raw import LedgerEntry
from curator.store import ObjectGoneError, ObjectVersion, StoredObject
from pipeline.writer import encode_parquet, encode_quarantine, partition_prefix, sequence_digest
from tests.curator.conftest import HOUR, PREFIX, generated_rows, object_name


@dataclass
class MemoryStore:
    """``ObjectStore`` in memory; ETags are the bodies' digests, as S3's are for single-part objects. Unversioned
    unless ``versioned``: then a delete keeps the old bytes as a noncurrent version under a delete marker, as S3
    does. ``objects`` holds the current bodies; ``older`` each key's earlier versions, newest first (None: a
    delete marker)."""

    objects: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    versioned: bool = False
    older: dict[str, list[tuple[str, bytes | None]]] = field(default_factory=dict)
    current_ids: dict[str, str] = field(default_factory=dict)
    next_id: int = 0

    def _new_id(self) -> str:
        self.next_id += 1
        return f"v{self.next_id}"

    def current_id(self, key: str) -> str:
        return self.current_ids.get(key, "null")

    def versions(self, prefix: str) -> list[ObjectVersion]:
        found = []
        for key in sorted({*self.objects, *self.older}):
            if not key.startswith(prefix):
                continue
            if key in self.objects:
                found.append(ObjectVersion(key, self.current_id(key), True, False, self.etag(key)))
            for index, (version_id, body) in enumerate(self.older.get(key, [])):
                latest = key not in self.objects and index == 0
                etag = f'"{hashlib.md5(body).hexdigest()}"' if body is not None else ""  # noqa: S324
                found.append(ObjectVersion(key, version_id, latest, body is None, etag))
        return found

    def get_version(self, key: str, version_id: str) -> bytes:
        self.calls.append(f"read {key} {version_id}")
        if key in self.objects and self.current_id(key) == version_id:
            return self.objects[key]
        for found, body in self.older.get(key, []):
            if found == version_id and body is not None:
                return body
        raise ObjectGoneError(f"{key}?versionId={version_id}")

    def purge(self, key: str, version_id: str) -> bool:
        self.calls.append(f"purge {key} {version_id}")
        if key in self.objects and self.current_id(key) == version_id:
            del self.objects[key]
            self.current_ids.pop(key, None)
            if self.older.get(key) and self.older[key][0][1] is not None:  # the version below becomes current
                self.current_ids[key], self.objects[key] = cast(tuple[str, bytes], self.older[key].pop(0))
            return True
        before = self.older.get(key, [])
        self.older[key] = [item for item in before if item[0] != version_id]
        if not self.older[key]:
            del self.older[key]
        return len(self.older.get(key, [])) != len(before)

    def etag(self, key: str) -> str:
        return f'"{hashlib.md5(self.objects[key]).hexdigest()}"'  # noqa: S324 - S3's ETag

    def list(self, prefix: str) -> list[StoredObject]:
        return [StoredObject(key, self.etag(key)) for key in sorted(self.objects) if key.startswith(prefix)]

    def get(self, key: str) -> tuple[bytes, StoredObject]:
        if key not in self.objects:
            raise ObjectGoneError(key)
        return self.objects[key], StoredObject(key, self.etag(key))

    def delete(self, key: str, etag: str) -> bool:
        self.calls.append(f"delete {key}")
        if key not in self.objects or self.etag(key) != etag:
            return False
        if self.versioned:
            versions = self.older.setdefault(key, [])
            versions.insert(0, (self.current_id(key), self.objects[key]))
            versions.insert(0, (self._new_id(), None))
            self.current_ids.pop(key, None)
        del self.objects[key]
        return True

    def overwrite(self, key: str, body: bytes, etag: str) -> bool:
        self.calls.append(f"overwrite {key}")
        if key not in self.objects or self.etag(key) != etag:
            return False
        if self.versioned:
            self.older.setdefault(key, []).insert(0, (self.current_id(key), self.objects[key]))
            self.current_ids[key] = self._new_id()
        self.objects[key] = body
        return True

    def create(self, key: str, body: bytes) -> bool:
        self.calls.append(f"create {key}")
        if key in self.objects:
            return False
        self.objects[key] = body
        if self.versioned:
            self.current_ids[key] = self._new_id()
        return True


def renamed(rows: pa.Table, fan: str, count: int) -> pa.Table:
    """``rows`` with the first ``count`` rows' fan renamed ``fan``."""
    index = rows.schema.get_field_index("fan_id")
    fans = [fan if position < count else value for position, value in enumerate(rows.column("fan_id").to_pylist())]
    return rows.set_column(index, rows.schema.field(index), pa.array(fans, rows.schema.field(index).type))


def test_a_fan_is_matched_as_a_whole_id_only():
    matcher = FanMatcher(["abc", 'q"x'])
    assert matcher.fans_in(b'{"sk": {"S": "FAN#abc"}}') == ["abc"]
    assert matcher.fans_in(b'{"fan_id": "abc"}') == ["abc"]
    assert matcher.fans_in(b'{"sk": {"S": "FAN#abcd"}, "x": "xabc"}') == []
    assert matcher.fans_in(b'{"fan_id": "q\\"x"}') == ['q"x']
    assert FanMatcher(["a#b"]).fans_in(b'{"sk": {"S": "FAN#a#b"}}') == ["a#b"]
    assert FanMatcher(["a#b"]).fans_in(b'{"sk": {"S": "FAN#xa#b"}}') == []


def test_the_matcher_finds_what_a_search_for_each_fans_two_patterns_finds():
    # The matcher looks ids up by piece; a plain search for '"<id>"' and '#<id>"' is the definition.
    generator = random.Random(7)
    alphabet = 'ab#"x:{} '
    fans = ["a", "ab", "b#a", "x", 'a"b', "ba"]
    matcher = FanMatcher(fans)
    for _ in range(3000):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 24))).encode()
        expected = [fan for fan, patterns in matcher.patterns if any(pattern in text for pattern in patterns)]
        assert matcher.fans_in(text) == expected, text


def test_an_uncurated_raw_object_is_rewritten_under_the_handlers_name_then_deleted():
    rows = renamed(generated_rows(8), "gone", 3)
    store = MemoryStore()
    key = partition_prefix(PREFIX, HOUR) + object_name(rows)
    store.objects[key] = encode_parquet(rows)
    old_etag = store.etag(key)

    assert erase_raw(store, PREFIX, {}, ["gone"], dry_run=True).rows == {"gone": 3}
    assert list(store.objects) == [key]  # a dry run changes nothing

    erasure = erase_raw(store, PREFIX, {}, ["gone"])

    kept = rows.filter(pc.not_equal(rows.column("fan_id"), "gone"))
    sequences = sorted(kept.column("sequence_number").to_pylist(), key=int)
    tag, shard = object_name(rows).split("-", 1)[0], "shardId-000000000000"
    new_key = partition_prefix(PREFIX, HOUR) + f"{tag}-{shard}-{sequences[0]}-{sequence_digest(sequences)}.parquet"
    assert erasure.rows == {"gone": 3}
    assert list(store.objects) == [new_key]
    assert pq.read_table(pa.BufferReader(store.objects[new_key])).to_pylist() == kept.to_pylist()
    assert store.calls == [f"create {new_key}", f"delete {key}"]  # the new one durable before the old is deleted
    assert erasure.deleted == [key]
    assert old_etag != store.etag(new_key)


def test_a_covered_raw_object_is_deleted_and_one_replaced_since_listing_is_left():
    rows = renamed(generated_rows(6), "gone", 2)
    store = MemoryStore()
    key = partition_prefix(PREFIX, HOUR) + object_name(rows)
    store.objects[key] = encode_parquet(rows)
    ledger = {key: LedgerEntry(store.etag(key), HOUR)}

    erasure = erase_raw(store, PREFIX, ledger, ["gone"])

    assert erasure.rows == {"gone": 2}
    assert store.objects == {}  # its rows are in the tables: nothing rewritten
    assert store.calls == [f"delete {key}"]


def test_quarantine_and_failure_records_keep_every_other_line_and_record():
    def data(fan: str) -> str:
        return base64.b64encode(json.dumps({"dynamodb": {"Keys": {"sk": {"S": f"FAN#{fan}"}}}}).encode()).decode()

    store = MemoryStore()
    lines = [{"sequence_number": str(number), "data": data(fan)} for number, fan in enumerate(["a", "gone", "b"])]
    store.objects["demand/quarantine/dt=2026-03-31/x.jsonl.gz"] = encode_quarantine(lines)
    records = [{"kinesis": {"data": data(fan)}, "eventID": fan} for fan in ["gone", "c"]]
    store.objects["aws/lambda/m/s/2026/03/31/one"] = json.dumps({"payload": {"Records": records}, "v": 1}).encode()
    store.objects["aws/lambda/m/s/2026/03/31/two"] = json.dumps(
        {"payload": json.dumps({"Records": records[:1]})}
    ).encode()

    quarantine = erase_quarantine(store, "demand/quarantine/", ["gone"])
    failures = erase_failures(store, ["gone"])

    assert quarantine.rows == {"gone": 1}
    assert failures.rows == {"gone": 2}
    (new_quarantine,) = quarantine.rewritten
    assert new_quarantine.startswith("demand/quarantine/dt=2026-03-31/x-e")
    kept = [json.loads(line) for line in gzip.decompress(store.objects[new_quarantine]).splitlines()]
    assert kept == [lines[0], lines[2]]
    (new_failure,) = failures.rewritten
    assert new_failure.startswith("aws/lambda/m/s/2026/03/31/one-e")
    assert json.loads(store.objects[new_failure]) == {"payload": {"Records": records[1:]}, "v": 1}
    assert sorted(failures.deleted) == ["aws/lambda/m/s/2026/03/31/one", "aws/lambda/m/s/2026/03/31/two"]
    assert sorted(store.objects) == [new_failure, new_quarantine]
    # A rerun finds nothing more.
    assert erase_quarantine(store, "demand/quarantine/", ["gone"]).rows == {}
    assert erase_failures(store, ["gone"]).rows == {}


class ListingStore(MemoryStore):
    def list(self, prefix: str) -> list[StoredObject]:
        self.calls.append(f"list {prefix}")
        return super().list(prefix)


def test_without_a_salt_erasure_is_off_and_lists_nothing():
    store = ListingStore({"erasure/requests/20260331T230000Z-0badc0de.json": b"{}"})
    run = ErasureRun(store, "bucket", PREFIX, "demand/snapshots/", "demand/quarantine/", "", lambda: HOUR)
    tables = cast(Any, object())

    outcome, changes, registrations = run.run(tables, tables, lambda c, r: (c, r))

    assert (changes, registrations) == (tables, tables)
    assert outcome.summary() == {
        "requests_completed": [],
        "requests_malformed": [],
        "rows_removed": {},
        "versions_purged": {},
        "objects_unreadable": [],
        "data_files_left": 0,
    }
    assert store.calls == []  # a stack without a salt has no grant on erasure/: not even a listing


def deleted_earlier(store: MemoryStore, key: str, body: bytes) -> None:
    """``key`` written then deleted on the versioned ``store`` (as the curator deletes a covered raw object after
    the grace period): only a noncurrent version under a delete marker is left."""
    store.create(key, body)
    store.delete(key, store.etag(key))
    store.calls.clear()


def test_a_noncurrent_version_holding_a_fan_is_purged_with_its_marker_and_another_fans_is_kept():
    store = MemoryStore(versioned=True)
    holding = renamed(generated_rows(6, seed=1), "gone", 2)
    other = generated_rows(7, seed=2)  # another count: another name
    holding_key = partition_prefix(PREFIX, HOUR) + object_name(holding)
    other_key = partition_prefix(PREFIX, HOUR) + object_name(other)
    deleted_earlier(store, holding_key, encode_parquet(holding))
    deleted_earlier(store, other_key, encode_parquet(other))
    assert store.objects == {}

    dry = erase_raw(store, PREFIX, {}, ["gone"], dry_run=True)
    assert (dry.rows, dry.versions.versions, dry.versions.markers) == ({}, 1, 1)
    assert [call.split()[0] for call in store.calls] == ["read", "read"]  # a dry run only reads and counts
    store.calls.clear()

    erasure = erase_raw(store, PREFIX, {}, ["gone"])

    # Only current rows count as rows removed: the old version's rows were curated (or erased) already.
    assert (erasure.rows, erasure.versions.versions, erasure.versions.markers) == ({}, 1, 1)
    assert holding_key not in store.older  # its version first, then the marker: nothing of it is left
    assert [call.split()[0] for call in store.calls] == ["read", "read", "purge", "purge"]
    assert store.calls[2:] == [f"purge {holding_key} v1", f"purge {holding_key} v2"]  # the version, then its marker
    assert [body is None for _, body in store.older[other_key]] == [True, False]  # the marker still above it
    assert store.objects == {}  # nothing brought back as current
    # A rerun finds nothing more to purge.
    again = erase_raw(store, PREFIX, {}, ["gone"])
    assert (again.versions.versions, again.versions.markers) == (0, 0)


def test_an_object_the_erasure_deletes_has_its_old_version_purged_after_the_delete_without_a_second_read():
    store = MemoryStore(versioned=True)
    rows = renamed(generated_rows(6), "gone", 6)  # every row the fan's: the object is just deleted
    key = partition_prefix(PREFIX, HOUR) + object_name(rows)
    store.create(key, encode_parquet(rows))
    store.calls.clear()

    erasure = erase_raw(store, PREFIX, {}, ["gone"])

    assert erasure.rows == {"gone": 6}
    # The old version, then the marker; not read again: its (key, ETag) was just read whole and deleted.
    assert store.calls == [f"delete {key}", f"purge {key} v1", f"purge {key} v2"]
    assert store.objects == {}
    assert store.older == {}


def test_noncurrent_quarantine_and_failure_versions_are_read_as_their_place_reads_them():
    def data(fan: str) -> str:
        return base64.b64encode(json.dumps({"dynamodb": {"Keys": {"sk": {"S": f"FAN#{fan}"}}}}).encode()).decode()

    store = MemoryStore(versioned=True)
    deleted_earlier(store, "demand/quarantine/dt=2026-03-30/a.jsonl.gz", encode_quarantine([{"data": data("gone")}]))
    deleted_earlier(store, "demand/quarantine/dt=2026-03-30/b.jsonl.gz", encode_quarantine([{"data": data("kept")}]))
    deleted_earlier(store, "demand/quarantine/dt=2026-03-30/c.jsonl.gz", b"not gzip")
    failure = {"payload": json.dumps({"Records": [{"kinesis": {"data": data("gone")}}]})}
    deleted_earlier(store, "aws/lambda/m/s/2026/03/30/one", json.dumps(failure).encode())
    kept = {"payload": json.dumps({"Records": [{"kinesis": {"data": data("kept")}}]})}
    deleted_earlier(store, "aws/lambda/m/s/2026/03/30/two", json.dumps(kept).encode())

    quarantine = erase_quarantine(store, "demand/quarantine/", ["gone"])
    failures = erase_failures(store, ["gone"])

    assert (quarantine.versions.versions, failures.versions.versions) == (1, 1)
    # An old version that cannot be read may hold the fan: named with its version id, so the request stays pending.
    (unreadable,) = quarantine.unreadable
    assert unreadable.startswith("demand/quarantine/dt=2026-03-30/c.jsonl.gz?versionId=v")
    assert sorted(store.older) == [
        "aws/lambda/m/s/2026/03/30/two",
        "demand/quarantine/dt=2026-03-30/b.jsonl.gz",
        "demand/quarantine/dt=2026-03-30/c.jsonl.gz",
    ]


def test_on_an_unversioned_bucket_the_version_pass_purges_nothing():
    store = MemoryStore()
    rows = generated_rows(6)
    key = partition_prefix(PREFIX, HOUR) + object_name(rows)
    store.objects[key] = encode_parquet(rows)

    erasure = erase_raw(store, PREFIX, {}, [rows.column("fan_id")[0].as_py()])

    assert (erasure.versions.versions, erasure.versions.markers) == (0, 0)
    assert not any(call.startswith("purge") for call in store.calls)


def test_a_key_with_another_fans_version_left_keeps_its_markers_so_nothing_comes_back():
    # One name written twice (same sequences, another fan's rows the second time), deleted each time: purging the
    # fan's version must not remove the markers, or the other version would read as current again.
    store = MemoryStore(versioned=True)
    holding = renamed(generated_rows(6, seed=1), "gone", 2)
    key = partition_prefix(PREFIX, HOUR) + object_name(holding)
    deleted_earlier(store, key, encode_parquet(holding))
    deleted_earlier(store, key, encode_parquet(generated_rows(6, seed=2)))

    erasure = erase_raw(store, PREFIX, {}, ["gone"])

    assert (erasure.versions.versions, erasure.versions.markers) == (1, 0)
    assert [body is None for _, body in store.older[key]] == [True, False, True]
    assert store.objects == {}


EXPORT = "demand/exports/20261207T084000000000Z/AWSDynamoDB/01765096800000-a1b2c3d4/"


def export_line(fan: str, quantity: int) -> bytes:
    item = {"pk": {"S": "EVENT#e1"}, "sk": {"S": f"FAN#{fan}"}, "quantity": {"N": str(quantity)}}
    return json.dumps({"Item": item}).encode() + b"\n"


def test_export_data_files_are_overwritten_in_place_and_one_left_empty_is_an_empty_gzip_file():
    store = MemoryStore(versioned=True)
    mixed, only, other = (f"{EXPORT}data/{name}.json.gz" for name in ("mixed", "only", "other"))
    lines = [export_line("gone", 1), export_line("gone-not", 2), export_line("kept", 3), export_line("gone", 4)]
    store.create(mixed, gzip.compress(b"".join(lines)))
    store.create(only, gzip.compress(export_line("gone", 5)))
    store.create(other, gzip.compress(export_line("kept", 6)))
    manifest = f"{EXPORT}manifest-files.json"  # counts and checksums only: never read, never rewritten
    store.create(manifest, b'{"itemCount": 4, "dataFileS3Key": "..."}\n')
    untouched = {key: store.objects[key] for key in (other, manifest)}

    erasure = erase_exports(store, "demand/exports/", ["gone"])

    assert erasure.rows == {"gone": 3}
    assert erasure.rewritten == [mixed, only]
    assert erasure.deleted == []
    assert sorted(store.objects) == sorted([mixed, only, other, manifest])  # every name the manifest gives is kept
    assert gzip.decompress(store.objects[mixed]) == lines[1] + lines[2]  # the other lines' bytes, in order
    assert gzip.decompress(store.objects[only]) == b""
    assert {key: store.objects[key] for key in (other, manifest)} == untouched
    # the old bytes were overwritten, never deleted, then purged as versions, without a second read
    assert [call for call in store.calls if not call.startswith("create")] == [
        f"overwrite {mixed}",
        f"overwrite {only}",
        f"purge {mixed} v1",
        f"purge {only} v2",
    ]
    assert store.older == {}
    assert erasure.versions.versions == 2


def test_an_export_dry_run_counts_the_lines_and_old_versions_and_changes_nothing():
    store = MemoryStore(versioned=True)
    key = f"{EXPORT}data/a.json.gz"
    store.create(key, gzip.compress(export_line("gone", 1) + export_line("kept", 2)))
    store.overwrite(key, gzip.compress(export_line("gone", 3)), store.etag(key))  # an old version holding the fan
    before = (dict(store.objects), {name: list(found) for name, found in store.older.items()})
    store.calls.clear()

    dry = erase_exports(store, "demand/exports/", ["gone"], dry_run=True)

    assert (dry.rows, dry.versions.versions, dry.rewritten) == ({"gone": 1}, 1, [])
    assert (dict(store.objects), {name: list(found) for name, found in store.older.items()}) == before
    assert not any(call.startswith(("overwrite", "purge", "delete")) for call in store.calls)
