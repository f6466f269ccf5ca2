"""A lake with one fan's rows in every place erasure reaches, and a search of every stored byte for a fan id.

Places: raw objects already curated (covered by the ledger) and not yet curated, late rows for an hour already
curated, several Iceberg snapshots of both tables, a backfill snapshot object, a stream and a snapshot quarantine
line, a failed batch in the failure bucket, and the DynamoDB export the backfill read (a data file holding the fan
among others, with its manifest, and an older version of another data file that held the fan). Both buckets are
versioned, as the stack creates them, so every delete leaves a noncurrent version, which the search reads too. The
fan's id is short enough (at most 16 characters) for Iceberg to keep it whole as a column bound, and sorts after
every generated (UUID) fan id, so it is the upper bound of every data file holding it.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.curation import Curator, CuratorSettings
from curator.erasure_requests import ErasureRequest
from curator.store import S3Store
from pipeline.writer import encode_parquet, encode_quarantine
from sandbox.changes import FIRST_SEQUENCE, DemandGenerator, changes_event
from tests.curator.conftest import HOUR, OTHER_SHARD, PREFIX, STREAM_ARN, CuratedLake, generated_rows

__all__ = [
    "ERASED",
    "EXPORT_DATA",
    "EXPORT_MANIFEST",
    "EXPORT_REWRITTEN",
    "KEPT",
    "SALT",
    "PlantedLake",
    "export_item",
    "failed_batch",
    "find_bytes",
    "normalized",
    "plant",
    "versioned",
    "with_fans",
]

#: The fan erased, and a fan kept whose id is a prefix of it (never matched by mistake).
ERASED = "zz-erased-fan"
KEPT = "zz-erased-fa"
SALT = "stack-salt-for-tests"
NEXT_HOUR = HOUR + timedelta(hours=1)
EXPORT_PREFIX = "demand/snapshots/export_id=01700000000000-abcdef12/"
FAILURE_KEY = "aws/lambda/9f0e4c2a-1111-2222-3333-444455556666/shardId-000000000000/2026/03/31/2026-03-31T23.30.00-1"
#: The DynamoDB export the backfill read: its data files and its manifest (counts and checksums, no item).
EXPORT_FOLDER = "demand/exports/20260331T230000000000Z/AWSDynamoDB/01700000000000-abcdef12/"
EXPORT_DATA = f"{EXPORT_FOLDER}data/hcxsrcrp4a6ztitu6r5yjzbbbu.json.gz"
#: A data file whose current version names other fans only; its older version held the fan.
EXPORT_REWRITTEN = f"{EXPORT_FOLDER}data/2xnqbk3iyq7unbzdg3ywgn3lde.json.gz"
EXPORT_MANIFEST = f"{EXPORT_FOLDER}manifest-files.json"
_COLUMNS = ("change_id", "event_id", "fan_id", "op", "status", "quantity", "extra_attributes")


def with_fans(rows: pa.Table, fans: dict[str, str]) -> pa.Table:
    """``rows`` with the fans named in ``fans`` renamed (old -> new); renamed rows get ``extra_attributes``
    naming their fan too, so that column is searched."""
    old = rows.column("fan_id").to_pylist()
    new = [fans.get(fan, fan) for fan in old]
    extra = [
        json.dumps({"contact": fans[fan]}) if fan in fans else value
        for fan, value in zip(old, rows.column("extra_attributes").to_pylist(), strict=True)
    ]
    index = rows.schema.get_field_index("fan_id")
    rows = rows.set_column(index, rows.schema.field(index), pa.array(new, rows.schema.field(index).type))
    index = rows.schema.get_field_index("extra_attributes")
    return rows.set_column(index, rows.schema.field(index), pa.array(extra, rows.schema.field(index).type))


def _fans_with_changes(rows: pa.Table, count: int) -> list[str]:
    """The ``count`` fans with the most rows (ties by id), so each renamed fan has several changes."""
    counts = pc.value_counts(rows.column("fan_id")).to_pylist()
    ranked = sorted(counts, key=lambda item: (-item["counts"], item["values"]))
    return [item["values"] for item in ranked[:count]]


def _renamed(rows: pa.Table) -> pa.Table:
    first, second = _fans_with_changes(rows, 2)
    return with_fans(rows, {first: ERASED, second: KEPT})


def _record_data(fan: str, seed: int) -> list[dict[str, Any]]:
    """Kinesis records (as Lambda delivers them) of a few changes, the first one's fan renamed ``fan``."""
    changes = list(DemandGenerator(seed=seed, start=HOUR + timedelta(minutes=30)).changes(3))
    event = changes_event(changes, stream_arn=STREAM_ARN, first_sequence=FIRST_SEQUENCE + seed * 1000)
    records: list[dict[str, Any]] = event["Records"]
    data = base64.b64decode(records[0]["kinesis"]["data"])
    original = json.loads(data)["dynamodb"]["Keys"]["sk"]["S"].removeprefix("FAN#")
    records[0]["kinesis"]["data"] = base64.b64encode(data.replace(original.encode(), fan.encode())).decode()
    return records


@dataclass
class PlantedLake:
    """The lake, the failure bucket, and what was planted where."""

    lake: CuratedLake
    failure_bucket: str
    everything: pa.Table  # every change written to the raw layer

    @property
    def settings(self) -> CuratorSettings:
        return CuratorSettings(
            bucket=self.lake.bucket,
            raw_prefix=PREFIX,
            database=self.lake.database,
            erasure_salt=SALT,
            failure_bucket=self.failure_bucket,
        )

    def curator(self, **overrides: Any) -> Curator:
        catalog = overrides.pop("catalog", None) or self.lake.catalog()
        client = overrides.pop("s3", None) or self.lake.s3
        return Curator(
            catalog=catalog,
            store=S3Store(self.lake.bucket, client=client),
            settings=overrides.pop("settings", None) or self.settings,
            clock=self.lake.clock,
            failure_store=S3Store(self.failure_bucket, client=client),
            **overrides,
        )

    def file_request(self, *fans: str, token: str = "0badc0de") -> ErasureRequest:  # noqa: S107 - a request id
        request = ErasureRequest.new(tuple(fans), now=self.lake.clock(), token=token)
        self.lake.s3.put_object(Bucket=self.lake.bucket, Key=request.key, Body=request.to_json(), IfNoneMatch="*")
        return request

    def versions(self) -> list[tuple[str, str, str, bool]]:
        """(bucket, key, version id, current) of every object version of both buckets (delete markers hold nothing
        and are left out)."""
        found: list[tuple[str, str, str, bool]] = []
        for bucket in (self.lake.bucket, self.failure_bucket):
            for page in self.lake.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                found.extend(
                    (bucket, item["Key"], item["VersionId"], item["IsLatest"]) for item in page.get("Versions", [])
                )
        return sorted(found)

    def version_ids(self, bucket: str, key: str) -> dict[str, bool]:
        """Version id -> whether it is a delete marker, of every version of ``key`` (exactly that key)."""
        response = self.lake.s3.list_object_versions(Bucket=bucket, Prefix=key)
        found = {item["VersionId"]: False for item in response.get("Versions", []) if item["Key"] == key}
        found.update({item["VersionId"]: True for item in response.get("DeleteMarkers", []) if item["Key"] == key})
        return found

    def objects(self) -> dict[tuple[str, str], str]:
        """(bucket, key) -> ETag of every object of both buckets."""
        found = {}
        for bucket in (self.lake.bucket, self.failure_bucket):
            for page in self.lake.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    found[(bucket, item["Key"])] = item["ETag"]
        return found

    def body(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id is not None else {}
        body: bytes = self.lake.s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
        return body


def versioned(s3: Any, *buckets: str) -> None:
    """Turn versioning on, as the stack does for the data bucket it creates and for the failure bucket."""
    for bucket in buckets:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def plant(lake: CuratedLake, failure_bucket: str) -> PlantedLake:
    """Write and curate the lake (see the module docstring); the fan's raw rows stay in the raw layer."""
    versioned(lake.s3, lake.bucket, failure_bucket)
    first = _renamed(generated_rows(30, seed=11))
    late = _renamed(generated_rows(16, shard_id=OTHER_SHARD, seed=12))
    fresh = _renamed(generated_rows(12, hour=NEXT_HOUR, seed=13))
    planted = PlantedLake(lake, failure_bucket, pa.concat_tables([first, late, fresh]))
    lake.write(first)
    planted.curator().run()  # snapshot 1 of both tables
    lake.clock.advance(minutes=5)
    lake.write(late)  # late rows of an hour already curated
    planted.curator().run()  # snapshot 2: the hour rewritten; both raw objects are covered, within the grace
    lake.clock.advance(minutes=5)
    lake.write(fresh, hour=NEXT_HOUR)  # not curated yet
    # A backfill snapshot object with its counts, and the two kinds of quarantine lines.
    snapshot_rows = _renamed(generated_rows(20, seed=14))
    lake.s3.put_object(Bucket=lake.bucket, Key=f"{EXPORT_PREFIX}data-1.parquet", Body=encode_parquet(snapshot_rows))
    counts = {"items": snapshot_rows.num_rows, "rows": snapshot_rows.num_rows, "quarantined": 0}
    lake.s3.put_object(Bucket=lake.bucket, Key=f"{EXPORT_PREFIX}_data-1.counts.json", Body=json.dumps(counts).encode())
    stream_lines = [
        {
            "sequence_number": record["kinesis"]["sequenceNumber"],
            "shard_id": "shardId-000000000000",
            "partition_key": record["kinesis"]["partitionKey"],
            "approximate_arrival_timestamp": record["kinesis"]["approximateArrivalTimestamp"],
            "event_source_arn": STREAM_ARN,
            "event_id": record["eventID"],
            "error_kind": "contract",
            "reason": "quantity is not a number",
            "data": record["kinesis"]["data"],
        }
        for record in _record_data(ERASED, seed=21)
    ]
    lake.s3.put_object(
        Bucket=lake.bucket,
        Key="demand/quarantine/dt=2026-03-31/abcd1234-shardId-000000000000-1-000000000000.jsonl.gz",
        Body=encode_quarantine(stream_lines),
    )
    export_lines = [
        {
            "export_bucket": "exports",
            "data_key": "AWSDynamoDB/01700000000000-abcdef12/data/data-1.json.gz",
            "data_file": "data-1.json.gz",
            "export_id": "01700000000000-abcdef12",
            "line_number": number,
            "error_kind": "json",
            "reason": "not JSON",
            "data": base64.b64encode(f'{{"Item":{{"pk":{{"S":"EVENT#e1"}},"sk":{{"S":"FAN#{fan}"}},'.encode()).decode(),
        }
        for number, fan in ((7, ERASED), (9, KEPT))
    ]
    lake.s3.put_object(
        Bucket=lake.bucket,
        Key="demand/quarantine/snapshots/export_id=01700000000000-abcdef12/data-1.jsonl.gz",
        Body=encode_quarantine(export_lines),
    )
    lake.s3.put_object(Bucket=failure_bucket, Key=FAILURE_KEY, Body=failed_batch((ERASED, 22), (KEPT, 23)))
    _plant_export(lake)
    return planted


def export_item(fan: str, event: str, quantity: int) -> bytes:
    """One line of an export data file (DynamoDB JSON), the fan named in the sort key and in an attribute."""
    item = {
        "pk": {"S": f"EVENT#{event}"},
        "sk": {"S": f"FAN#{fan}"},
        "quantity": {"N": str(quantity)},
        "contact": {"M": {"fan": {"S": fan}}},
    }
    return json.dumps({"Item": item}, separators=(",", ":")).encode() + b"\n"


def _plant_export(lake: CuratedLake) -> None:
    lines = [export_item(fan, "e1", number) for number, fan in enumerate((KEPT, ERASED, "f-1", ERASED, "f-2"))]
    lake.s3.put_object(Bucket=lake.bucket, Key=EXPORT_DATA, Body=gzip.compress(b"".join(lines)))
    old = [export_item(fan, "e2", 1) for fan in ("f-3", ERASED)]
    lake.s3.put_object(Bucket=lake.bucket, Key=EXPORT_REWRITTEN, Body=gzip.compress(b"".join(old)))
    lake.s3.put_object(Bucket=lake.bucket, Key=EXPORT_REWRITTEN, Body=gzip.compress(export_item("f-3", "e2", 1)))
    manifest = [
        {"itemCount": len(lines), "dataFileS3Key": EXPORT_DATA, "md5Checksum": "x", "etag": "y"},
        {"itemCount": 1, "dataFileS3Key": EXPORT_REWRITTEN, "md5Checksum": "x", "etag": "y"},
    ]
    body = "".join(json.dumps(entry) + "\n" for entry in manifest).encode()
    lake.s3.put_object(Bucket=lake.bucket, Key=EXPORT_MANIFEST, Body=body)


def failed_batch(*fans: tuple[str, int]) -> bytes:
    """An on-failure record (Lambda's S3 destination) of a batch with a few changes per (fan, seed)."""
    event = {"Records": [record for fan, seed in fans for record in _record_data(fan, seed)]}
    failure = {
        "version": "1.0",
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "KinesisBatchInfo": {"shardId": "shardId-000000000000", "batchSize": len(event["Records"])},
        "payload": json.dumps(event),
    }
    return json.dumps(failure).encode()


def normalized(rows: pa.Table, *, without: str | None = ERASED) -> list[tuple[Any, ...]]:
    """The rows' identifying columns as sorted tuples (timestamps' units differ between raw and tables, so they
    are left out), without the fan ``without``."""
    if without is not None:
        rows = rows.filter(pc.not_equal(rows.column("fan_id"), without))
    names = [name for name in _COLUMNS if name in rows.column_names]
    return sorted(tuple(row[name] for name in names) for row in rows.select(names).to_pylist())


def digest(items: Any) -> str:
    return hashlib.sha256(repr(items).encode()).hexdigest()


def _texts(key: str, body: bytes) -> list[bytes]:
    """Every decoded form of an object's bytes: the bytes, gunzipped, Parquet column by column, Avro records,
    JSON with base64 fields decoded."""
    texts = [body]
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
        texts.append(body)
    if body[:4] == b"PAR1":
        table = pq.read_table(pa.BufferReader(body))
        texts.extend(repr(column.to_pylist()).encode() for column in table.columns)
        metadata = pq.ParquetFile(pa.BufferReader(body)).metadata
        texts.append(repr(metadata.to_dict()).encode())
    elif body[:4] == b"Obj\x01":
        import io  # noqa: PLC0415

        texts.extend(repr(record).encode() for record in fastavro.reader(io.BytesIO(body)))
    else:
        for line in body.splitlines():
            try:
                document = json.loads(line)
            except ValueError:
                continue
            texts.append(repr(document).encode())
            texts.extend(_base64_fields(document))
        with contextlib.suppress(ValueError):
            texts.append(repr(json.loads(body)).encode())
    return texts


def _base64_fields(document: Any) -> list[bytes]:
    found: list[bytes] = []
    if isinstance(document, dict):
        for value in document.values():
            found.extend(_base64_fields(value))
    elif isinstance(document, list):
        for value in document:
            found.extend(_base64_fields(value))
    elif isinstance(document, str):
        if document.startswith(("{", "[")):
            with contextlib.suppress(ValueError):
                found.extend(_base64_fields(json.loads(document)))
        with contextlib.suppress(ValueError):
            found.append(base64.b64decode(document, validate=True))
    return found


def find_bytes(planted: PlantedLake, needle: str) -> list[str]:
    """Every object version of both buckets, current or noncurrent (``GetObject?versionId=``), and the Glue tables'
    parameters, in which ``needle``'s bytes occur, decoded; a noncurrent hit is named with its version id."""
    hits = []
    for bucket, key, version_id, current in planted.versions():
        body = planted.body(bucket, key, version_id)
        if any(needle.encode() in text for text in _texts(key, body)):
            hits.append(f"s3://{bucket}/{key}" + ("" if current else f"?versionId={version_id}"))
    tables = planted.lake.glue.get_tables(DatabaseName=planted.lake.database)["TableList"]
    if needle in json.dumps(tables, default=str):
        hits.append(f"glue:{planted.lake.database}")
    return hits
