"""The handler against moto S3: rows read back value by value, partitions, quarantine, counts in the log."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest
from boto3.dynamodb.types import TypeDeserializer

from bench.naive import KNOWN_ATTRIBUTES, plain_value
from pipeline.exceptions import ConfigError, InvalidEventError
from pipeline.writer import S3ObjectStore, parse_object_name, sequence_digest
from sandbox.changes import DemandGenerator, changes_event
from tests.pipeline.conftest import (
    BUCKET,
    emf_metrics,
    fresh_handler_module,
    invocation_logs,
    list_keys,
    load_event,
    payloads,
    read_quarantine,
    read_rows,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expected_row(record: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
    """What the row must hold, computed independently of the handler (boto3's deserializer, datetime)."""
    body = record["dynamodb"]
    image = body["OldImage"] if record["eventName"] == "REMOVE" else body["NewImage"]
    item = {name: TypeDeserializer().deserialize(value) for name, value in image.items()}
    updated = item.get("updated_at")
    extra = {name: plain_value(value) for name, value in item.items() if name not in KNOWN_ATTRIBUTES}
    unit = 1 if body.get("ApproximateCreationDateTimePrecision") == "MICROSECOND" else 1000
    return {
        "event_id": item["pk"].removeprefix("EVENT#"),
        "fan_id": item["sk"].removeprefix("FAN#"),
        "market_id": int(item["market_id"]),
        "status": item["status"],
        "quantity": int(item["quantity"]),
        "price_levels": item.get("price_levels"),
        "channel": item.get("channel"),
        "presale_code": item.get("presale_code"),
        "created_at": datetime.fromisoformat(item["created_at"]),
        "updated_at": datetime.fromisoformat(updated) if updated else None,
        "attributes": sorted(item["attributes"].items()) if "attributes" in item else None,
        "op": record["eventName"],
        "change_id": record["eventID"],
        "change_time": _EPOCH + timedelta(microseconds=body["ApproximateCreationDateTime"] * unit),
        "shard_id": envelope["eventID"].rsplit(":", 1)[0],
        "sequence_number": envelope["kinesis"]["sequenceNumber"],
        "table_name": record["tableName"],
        "extra_attributes": extra or None,
        "deleted_by_ttl": record["eventName"] == "REMOVE"
        and record.get("userIdentity") == {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "change_time_us": body["ApproximateCreationDateTime"] * unit,
    }


def _metric(blob: dict[str, Any], name: str) -> float:
    value = blob[name]
    (single,) = value if isinstance(value, list) else [value]
    return float(single)


def invoke(module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = module.handler(event, None)
    return response


def _rows_by_sequence(s3: Any) -> dict[str, dict[str, Any]]:
    rows = read_rows(s3)
    by_sequence = {row["sequence_number"]: row for row in rows}
    assert len(by_sequence) == len(rows), "a record landed twice"
    return by_sequence


def test_rows_read_back_equal_the_input_items(handler_module, s3):
    # GIVEN a batch of INSERT, MODIFY and REMOVE changes, with optional attributes missing and an unknown one
    event = load_event("kinesis_batch.json")
    # WHEN the handler runs
    response = invoke(handler_module, event)
    # THEN every row read back from Parquet equals the item it came from, value by value
    assert response == {"batchItemFailures": []}
    rows = _rows_by_sequence(s3)
    assert len(rows) == len(event["Records"])
    for envelope, record in zip(event["Records"], payloads(event), strict=True):
        row = dict(rows[envelope["kinesis"]["sequenceNumber"]])
        row["extra_attributes"] = json.loads(row["extra_attributes"]) if row["extra_attributes"] else None
        assert row == expected_row(record, envelope)
    assert {row["op"] for row in rows.values()} == {"INSERT", "MODIFY", "REMOVE"}
    assert any(row["extra_attributes"] for row in rows.values())
    assert list_keys(s3, "demand/quarantine/") == []


def test_rows_land_in_the_partition_of_their_change_time(handler_module, s3):
    # GIVEN changes on both sides of midnight UTC
    generator = DemandGenerator(seed=3, start=datetime(2026, 11, 28, 23, 59, 55, tzinfo=UTC))
    event = changes_event(list(generator.changes(300)))
    # WHEN the handler runs
    assert invoke(handler_module, event) == {"batchItemFailures": []}
    # THEN each object sits under dt=/hour= of its rows' change_time, one object per partition
    keys = list_keys(s3, "demand/events/")
    assert [key.split("/")[2:4] for key in keys] == [["dt=2026-11-28", "hour=23"], ["dt=2026-11-29", "hour=00"]]
    first_sequence = event["Records"][0]["kinesis"]["sequenceNumber"]
    name = parse_object_name(keys[0])
    assert (name.shard_id, name.first_sequence, name.suffix) == ("shardId-000000000000", first_sequence, ".parquet")
    for key in keys:
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        # the name's digest is the one of the sequence numbers the object holds
        assert parse_object_name(key).digest == sequence_digest(table.column("sequence_number").to_pylist())
        dt, hour = key.split("/")[2][3:], key.split("/")[3][5:]
        for change_time in table.column("change_time").to_pylist():
            assert change_time.strftime("%Y-%m-%d %H") == f"{dt} {hour}"
    assert sum(1 for _ in read_rows(s3)) == 300


POISON_KINDS = [
    ("not_base64", "not base64"),
    ("not_json", "not JSON"),
    ("not_json", "expected an object"),
    ("not_change_record", "eventID is missing"),
    ("not_change_record", "eventName 'UPSERT'"),
    ("schema_violation", "attribute 'status' is required but missing"),
    ("schema_violation", 'attribute \'quantity\': expected a number (N) holding an int, got {"S": "three"}'),
    ("schema_violation", "attribute 'created_at': expected ISO-8601"),
    ("schema_violation", "attribute 'status': expected one of REGISTERED, SELECTED, WAITLISTED, CANCELLED"),
    ("not_change_record", "REMOVE record has no dynamodb.OldImage"),
    ("schema_violation", 'attribute \'fan_id\': image holds {"S": "someone-else"}'),
    ("not_change_record", 'key \'pk\' is {"S": "SHOW#1"}'),
]


def test_poison_records_of_each_kind_end_in_quarantine_with_their_reason(handler_module, s3):
    # GIVEN good records interleaved with one poison record of each kind
    event = load_event("poison_batch.json")
    # WHEN the handler runs
    response = invoke(handler_module, event)
    # THEN the shard is not blocked, good records are rows and each poison record is a quarantine line
    assert response == {"batchItemFailures": []}
    records = event["Records"]
    rows = _rows_by_sequence(s3)
    assert sorted(rows) == sorted(record["kinesis"]["sequenceNumber"] for record in records[0::2])
    lines = sorted(read_quarantine(s3), key=lambda line: int(line["sequence_number"]))
    assert len(lines) == len(POISON_KINDS)
    for line, record, (kind, reason) in zip(lines, records[1::2], POISON_KINDS, strict=True):
        assert line["error_kind"] == kind
        assert reason in line["reason"], line["reason"]
        assert line["sequence_number"] == record["kinesis"]["sequenceNumber"]
        assert line["data"] == record["kinesis"]["data"]
        assert line["shard_id"] == "shardId-000000000003"
        assert line["partition_key"] == record["kinesis"]["partitionKey"]
        assert line["approximate_arrival_timestamp"] == record["kinesis"]["approximateArrivalTimestamp"]
        assert line["event_source_arn"] == record["eventSourceARN"]
    assert all(key.split("/")[2] == "dt=2026-11-28" for key in list_keys(s3, "demand/quarantine/"))


def test_a_duplicated_batch_adds_no_rows(handler_module, s3, make_event):
    # GIVEN a batch already processed once
    event = make_event(500, seed=21)
    invoke(handler_module, event)
    keys, rows = list_keys(s3), read_rows(s3)
    # WHEN the same batch is delivered again
    assert invoke(handler_module, event) == {"batchItemFailures": []}
    # THEN the same objects were overwritten: same keys, same rows
    assert list_keys(s3) == keys
    assert read_rows(s3) == rows
    assert len(rows) == 500


def test_an_empty_event_writes_nothing(handler_module, s3):
    assert invoke(handler_module, load_event("empty_batch.json")) == {"batchItemFailures": []}
    assert list_keys(s3) == []
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    assert (log["records_received"], log["rows_written"], log["objects_written"]) == (0, 0, 0)


def test_an_all_remove_batch_writes_old_images(handler_module, s3):
    event = load_event("all_remove_batch.json")
    assert invoke(handler_module, event) == {"batchItemFailures": []}
    rows = _rows_by_sequence(s3)
    assert len(rows) == 3
    for envelope, record in zip(event["Records"], payloads(event), strict=True):
        row = dict(rows[envelope["kinesis"]["sequenceNumber"]])
        row["extra_attributes"] = json.loads(row["extra_attributes"]) if row["extra_attributes"] else None
        assert "NewImage" not in record["dynamodb"]
        assert row == expected_row(record, envelope)
        assert row["op"] == "REMOVE"


def test_every_count_in_the_invocation_log_matches_what_landed(handler_module, s3, capsys):
    # GIVEN a batch with good and poison records
    event = load_event("poison_batch.json")
    # WHEN the handler runs
    invoke(handler_module, event)
    # THEN the one log line and the EMF metrics carry the counts of what is in the bucket
    (log,) = invocation_logs(handler_module.log_stream.getvalue())
    keys = list_keys(s3)
    sizes = sum(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] for key in keys)
    assert log["records_received"] == len(event["Records"]) == 25
    assert log["rows_written"] == len(read_rows(s3)) == 13
    assert log["records_quarantined"] == len(read_quarantine(s3)) == 12
    assert log["records_failed"] == 0
    assert log["rows_written"] + log["records_quarantined"] + log["records_failed"] == log["records_received"]
    assert log["objects_written"] == len(keys)
    assert sorted(log["object_keys"]) == keys
    assert log["bytes_written"] == sizes
    assert log["quarantine_kinds"] == {"not_base64": 1, "not_json": 2, "not_change_record": 4, "schema_violation": 5}
    assert log["freshness_seconds"] > 0
    assert log["duration_ms"] > 0
    assert log["service"] == "dmd-pipeline-test"
    (metrics,) = emf_metrics(capsys.readouterr().out)
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "DmdPipelineTest"
    assert _metric(metrics, "RecordsReceived") == 25
    assert _metric(metrics, "RowsWritten") == 13
    assert _metric(metrics, "RecordsQuarantined") == 12
    assert _metric(metrics, "RecordsFailed") == 0
    assert _metric(metrics, "ObjectsWritten") == len(keys)
    assert _metric(metrics, "BytesWritten") == sizes
    assert _metric(metrics, "Freshness") > 0


def test_missing_output_bucket_fails_the_cold_start_naming_the_variable(handler_module, monkeypatch):
    monkeypatch.delenv("OUTPUT_BUCKET")
    with pytest.raises(ConfigError, match="OUTPUT_BUCKET is required"):
        fresh_handler_module()
    monkeypatch.setenv("OUTPUT_BUCKET", "Not_A_Bucket")
    with pytest.raises(ConfigError, match="OUTPUT_BUCKET='Not_A_Bucket'"):
        fresh_handler_module()


def test_a_malformed_event_fails_the_invocation_and_is_counted(handler_module, capsys):
    with pytest.raises(InvalidEventError, match="no 'Records' list"):
        invoke(handler_module, {"detail": {}})
    (metrics,) = emf_metrics(capsys.readouterr().out)
    assert _metric(metrics, "InvalidEvents") == 1


def test_a_crash_fails_the_invocation_and_is_counted(handler_module, capsys, monkeypatch):
    def crash(event: dict[str, Any], context: Any = None) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(handler_module.processor, "process", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        invoke(handler_module, load_event("kinesis_batch.json"))
    (metrics,) = emf_metrics(capsys.readouterr().out)
    assert _metric(metrics, "UnhandledErrors") == 1


_NO_PANDAS = """
import json, sys
from pipeline.handler import processor
boto3_at_import = "boto3" in sys.modules
from pipeline.writer import MemoryObjectStore
from sandbox.changes import DemandGenerator, changes_event
processor.store = MemoryObjectStore()
result = processor.process(changes_event(list(DemandGenerator(seed=1).changes(200))))
print(json.dumps({"rows": result.rows_written, "pandas": "pandas" in sys.modules, "boto3": boto3_at_import}))
"""


def test_importing_and_running_the_handler_never_imports_pandas(tmp_path):
    env = {"OUTPUT_BUCKET": BUCKET, "PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    done = subprocess.run([sys.executable, "-c", _NO_PANDAS], env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {"rows": 200, "pandas": False, "boto3": False}


def test_the_s3_client_honours_aws_endpoint_url(aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4599")
    store = S3ObjectStore(BUCKET)
    assert store._client().meta.endpoint_url == "http://127.0.0.1:4599"
