"""Erasure in the lake's objects, on an in-memory store: new names, old objects deleted only on their ETag, the rest
kept as it was, and dry runs that only count."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.erasure import ErasureRun
from curator.erasure_objects import FanMatcher, erase_failures, erase_quarantine, erase_raw
from curator.raw import LedgerEntry
from curator.store import ObjectGoneError, StoredObject
from pipeline.writer import encode_parquet, encode_quarantine, partition_prefix, sequence_digest
from tests.curator.conftest import HOUR, PREFIX, generated_rows, object_name


@dataclass
class MemoryStore:
    """``ObjectStore`` in memory; ETags are the bodies' digests, as S3's are for single-part objects."""

    objects: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

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
        del self.objects[key]
        return True

    def create(self, key: str, body: bytes) -> bool:
        self.calls.append(f"create {key}")
        if key in self.objects:
            return False
        self.objects[key] = body
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
        "objects_unreadable": [],
    }
    assert store.calls == []  # a stack without a salt has no grant on erasure/: not even a listing
