"""The backfill of one export data file: event validation, row mapping, layout, quarantine, write-once re-runs."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.decode import KinesisRecord, parse_change_record
from pipeline.exceptions import ConfigError, InvalidEventError, NotChangeRecordError, WriteError
from pipeline.export import SNAPSHOT_OP, TTL_COLUMN, ExportFile, ItemCountError, decode_export_lines
from pipeline.normalize import CHANGE_COLUMNS, normalize
from pipeline.schema import arrow_schema
from pipeline.snapshot import (
    SnapshotConflictError,
    SnapshotSettings,
    _chunks,
    backfill_file,
    counts_key,
    load_snapshot_settings,
    quarantine_key,
    snapshot_key,
)
from sandbox.changes import Change, DemandGenerator, change_record, item_key, to_dynamodb_json
from tests.pipeline.conftest import BUCKET, emf_metrics, list_keys

BACKFILL_FILE = Path(__file__).resolve().parents[2] / "pipeline" / "backfill.py"
TABLE = "prd3292-dev1-us-east-1-demand-table"
EXPORT_ID = "01764201600000-a1b2c3d4"
DATA_KEY = f"demand/exports/AWSDynamoDB/{EXPORT_ID}/data/hcxsrcrp4a6ztitu6r5yjzbbbu.json.gz"
EXPORT_TIME = "2026-03-31T23:10:00Z"
EXPORT_MICROS = int(datetime(2026, 3, 31, 23, 10, tzinfo=UTC).timestamp()) * 1_000_000


def items(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """``count`` distinct live items, as a table holds them."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for change in DemandGenerator(seed=seed).changes(count * 3):
        key = (change.keys["pk"], change.keys["sk"])
        if change.new_image is None:
            live.pop(key, None)
        else:
            live[key] = change.new_image
    return list(live.values())[:count]


def export_lines(table_items: list[dict[str, Any]], *, compact: bool = True) -> list[bytes]:
    """Export lines as AWS writes them (compact) or as moto does (with spaces)."""
    separators = (",", ":") if compact else (", ", ": ")
    return [json.dumps({"Item": to_dynamodb_json(item)}, separators=separators).encode() for item in table_items]


def put_data_file(s3: Any, lines: list[bytes], key: str = DATA_KEY) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"".join(line + b"\n" for line in lines)))


def event(**overrides: Any) -> dict[str, Any]:
    return {"export_bucket": BUCKET, "data_key": DATA_KEY, "export_time": EXPORT_TIME, **overrides}


def stream_row(item: dict[str, Any]) -> dict[str, Any]:
    """The row the stream handler's strict path makes of an INSERT of ``item``, read back through Arrow."""
    change = Change("INSERT", item_key(item), item, None, datetime(2026, 3, 31, tzinfo=UTC))
    record = change_record(change, table_name=TABLE)
    envelope = KinesisRecord("1", "shardId-000000000000", "", "", 0.0, "", "shardId-000000000000:1")
    row = normalize(envelope, parse_change_record(json.dumps(record).encode(), "MILLISECOND"))
    return pa.Table.from_pylist([row], schema=arrow_schema()).to_pylist()[0]


def read_parquet(s3: Any, key: str) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def read_quarantine_object(s3: Any, key: str) -> list[dict[str, Any]]:
    body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return [json.loads(line) for line in body.decode().splitlines()]


@pytest.fixture
def settings() -> SnapshotSettings:
    return SnapshotSettings(output_bucket=BUCKET, source_table_name=TABLE)


# -- the event --------------------------------------------------------------------------------------------------
def test_event_gives_export_id_file_and_time():
    export = ExportFile.from_event(event())
    assert export.export_id == EXPORT_ID
    assert export.file_name == "hcxsrcrp4a6ztitu6r5yjzbbbu.json.gz"
    assert export.stem == "hcxsrcrp4a6ztitu6r5yjzbbbu"
    assert export.export_time_micros == EXPORT_MICROS
    moto_style = ExportFile.from_event(event(data_key="demand/exports/AWSDynamoDB/3f0c-9a/data/5b1e-77.gz"))
    assert (moto_style.export_id, moto_style.stem) == ("3f0c-9a", "5b1e-77")


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"export_bucket": "Not_A_Bucket"}, "'Not_A_Bucket'"),
        ({"data_key": "demand/exports/AWSDynamoDB/abc/manifest-files.json"}, "manifest-files.json"),
        ({"data_key": "demand/exports/data/x.json.gz"}, "demand/exports/data/x.json.gz"),
        ({"export_time": "2026-03-31T23:10:00"}, "no UTC offset"),
        ({"export_time": "yesterday"}, "'yesterday'"),
        ({"export_time": "1970-01-01T00:00:00Z"}, "between 2000 and 2100"),
        ({"export_time": None}, "export_time is None"),
        ({"data_key": 7}, "data_key is 7"),
    ],
)
def test_bad_event_is_refused_naming_the_value(bad: dict[str, Any], named: str):
    with pytest.raises(InvalidEventError, match=named.replace("(", r"\(").replace(".", r"\.")):
        ExportFile.from_event(event(**bad))


def test_event_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidEventError, match="list"):
        ExportFile.from_event([event()])


# -- settings ---------------------------------------------------------------------------------------------------
def test_settings_need_the_bucket_and_the_source_table():
    with pytest.raises(ConfigError, match="OUTPUT_BUCKET is required"):
        load_snapshot_settings({"SOURCE_TABLE_NAME": TABLE})
    with pytest.raises(ConfigError, match="SOURCE_TABLE_NAME is required"):
        load_snapshot_settings({"OUTPUT_BUCKET": BUCKET})
    with pytest.raises(ConfigError, match="SOURCE_TABLE_NAME='a b'"):
        load_snapshot_settings({"OUTPUT_BUCKET": BUCKET, "SOURCE_TABLE_NAME": "a b"})
    loaded = load_snapshot_settings({"OUTPUT_BUCKET": BUCKET, "SOURCE_TABLE_NAME": TABLE})
    assert (loaded.snapshot_prefix, loaded.quarantine_prefix) == ("demand/snapshots/", "demand/quarantine/")


def test_settings_refuse_bad_or_overlapping_prefixes():
    base = {"OUTPUT_BUCKET": BUCKET, "SOURCE_TABLE_NAME": TABLE}
    with pytest.raises(ConfigError, match="SNAPSHOT_PREFIX='/demand'"):
        load_snapshot_settings({**base, "SNAPSHOT_PREFIX": "/demand"})
    with pytest.raises(ConfigError, match="must not contain one another"):
        load_snapshot_settings({**base, "SNAPSHOT_PREFIX": "demand/", "QUARANTINE_PREFIX": "demand/quarantine/"})


def test_keys_follow_the_layout(settings: SnapshotSettings):
    export = ExportFile.from_event(event())
    assert (
        snapshot_key(settings, export) == f"demand/snapshots/export_id={EXPORT_ID}/hcxsrcrp4a6ztitu6r5yjzbbbu.parquet"
    )
    assert counts_key(settings, export) == (
        f"demand/snapshots/export_id={EXPORT_ID}/_hcxsrcrp4a6ztitu6r5yjzbbbu.counts.json"
    )
    assert quarantine_key(settings, export) == (
        f"demand/quarantine/snapshots/export_id={EXPORT_ID}/hcxsrcrp4a6ztitu6r5yjzbbbu.jsonl.gz"
    )


# -- lines -> rows ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compact", [True, False])
def test_rows_are_the_stream_rows_with_snapshot_metadata(compact: bool):
    table_items = items(300)
    export = ExportFile.from_event(event())
    chunk = decode_export_lines(export_lines(table_items, compact=compact), 1, export, TABLE)
    assert chunk.bad_lines == ()
    rows = chunk.rows.to_pylist()
    assert len(rows) == len(table_items)
    change_time = datetime(2026, 3, 31, 23, 10, tzinfo=UTC)
    for number, (row, item) in enumerate(zip(rows, table_items, strict=True), start=1):
        expected = stream_row(item)
        for name in arrow_schema().names:
            if name not in CHANGE_COLUMNS and name != TTL_COLUMN:
                assert row[name] == expected[name], (number, name)
        assert row["op"] == SNAPSHOT_OP
        assert row["change_id"] == f"{EXPORT_ID}:hcxsrcrp4a6ztitu6r5yjzbbbu.json.gz:{number}"
        assert row["change_time"] == change_time
        assert (row["shard_id"], row["sequence_number"], row["table_name"]) == (EXPORT_ID, str(number), TABLE)
        # values straight from the item, not only "equal to the stream's"
        assert row["event_id"] == item["pk"].removeprefix("EVENT#")
        assert row["fan_id"] == item["sk"].removeprefix("FAN#")
        assert row["market_id"] == int(item["market_id"])
        assert row["quantity"] == int(item["quantity"])
        assert row["status"] == item["status"]
        if TTL_COLUMN in row:
            assert row[TTL_COLUMN] is False
    assert chunk.rows.schema == arrow_schema()


def test_bad_lines_are_quarantined_with_their_line_number_and_reason():
    table_items = items(40)
    lines = export_lines(table_items)
    lines[2] = b"{not json"
    lines[5] = b'{"Item": 3}'
    lines[7] = b'{"Item": {"pk": {"S": "EVENT#e1"}}, "Extra": 1}'
    bad_status = dict(table_items[9], status="MAYBE")
    lines[9] = json.dumps({"Item": to_dynamodb_json(bad_status)}).encode()
    lines[11] = b""
    lines[13] = b"\xff\xfe"
    chunk = decode_export_lines(lines, 101, ExportFile.from_event(event()), TABLE)
    found = {bad.line_number: (bad.error.kind, str(bad.error), bad.line) for bad in chunk.bad_lines}
    assert sorted(found) == [103, 106, 108, 110, 112, 114]
    assert found[103][0] == "not_json"
    assert found[103][1].startswith("line 103 is not JSON")
    assert found[106][0] == "not_change_record"
    assert found[108][0] == "not_change_record"
    assert found[110][0] == "schema_violation"
    assert found[110][1].startswith("line 110: attribute 'status'")
    assert "MAYBE" in found[110][1]
    assert found[112][0] == "not_json"
    assert found[114][1].startswith("line 114 is not UTF-8")
    assert found[110][2] == lines[9]
    assert chunk.rows.num_rows == 40 - 6
    assert chunk.rows.column("sequence_number").to_pylist()[:3] == ["101", "102", "104"]


def test_stream_records_named_snapshot_are_still_refused():
    record = change_record(
        Change("INSERT", {"pk": "EVENT#e", "sk": "FAN#f"}, None, None, datetime.now(UTC)), table_name=TABLE
    )
    record["eventName"] = "SNAPSHOT"
    with pytest.raises(NotChangeRecordError, match="SNAPSHOT"):
        parse_change_record(json.dumps(record).encode(), "MILLISECOND")


# -- one data file -> objects -----------------------------------------------------------------------------------
def test_data_file_becomes_one_object_with_row_groups(s3: Any, settings: SnapshotSettings):
    table_items = items(2500)
    put_data_file(s3, export_lines(table_items))
    export = ExportFile.from_event(event())
    result = backfill_file(export, settings, s3, chunk_lines=300, row_group_rows=1000)
    assert (result.items, result.rows, result.quarantined, result.already_done) == (2500, 2500, 0, False)
    assert result.quarantine_key is None
    assert list_keys(s3, "demand/snapshots/") == [counts_key(settings, export), snapshot_key(settings, export)]
    assert list_keys(s3, "demand/quarantine/") == []
    parquet = read_parquet(s3, snapshot_key(settings, export))
    assert [parquet.metadata.row_group(index).num_rows for index in range(parquet.num_row_groups)] == [1000, 1000, 500]
    table = parquet.read()
    assert table.schema.equals(arrow_schema(), check_metadata=False)
    assert table.column("fan_id").to_pylist() == [item["sk"].removeprefix("FAN#") for item in table_items]
    assert table.column("sequence_number").to_pylist() == [str(number) for number in range(1, 2501)]
    counts = json.loads(s3.get_object(Bucket=BUCKET, Key=counts_key(settings, export))["Body"].read())
    assert (counts["items"], counts["rows"], counts["quarantined"]) == (2500, 2500, 0)


def test_poison_lines_go_to_quarantine_with_data_file_and_line(s3: Any, settings: SnapshotSettings):
    table_items = items(30)
    lines = export_lines(table_items)
    lines[4] = export_lines([dict(table_items[4], quantity="two")])[0]
    lines[20] = b"truncated {"
    put_data_file(s3, lines)
    export = ExportFile.from_event(event())
    result = backfill_file(export, settings, s3, chunk_lines=8)
    assert (result.items, result.rows, result.quarantined) == (30, 28, 2)
    assert result.quarantine_kinds == {"schema_violation": 1, "not_json": 1}
    assert result.quarantine_key == quarantine_key(settings, export)
    quarantined = read_quarantine_object(s3, result.quarantine_key)
    assert [line["line_number"] for line in quarantined] == [5, 21]
    for line in quarantined:
        assert line["data_key"] == DATA_KEY
        assert line["data_file"] == "hcxsrcrp4a6ztitu6r5yjzbbbu.json.gz"
        assert line["export_id"] == EXPORT_ID
        assert base64.b64decode(line["data"]) == lines[line["line_number"] - 1]
    assert quarantined[0]["error_kind"] == "schema_violation"
    assert "quantity" in quarantined[0]["reason"]
    rows = read_parquet(s3, result.object_key).read()
    assert "5" not in rows.column("sequence_number").to_pylist()
    assert rows.num_rows == 28


def test_rerun_adds_nothing(s3: Any, settings: SnapshotSettings):
    lines = export_lines(items(200))
    lines[3] = b"poison"
    put_data_file(s3, lines)
    export = ExportFile.from_event(event())
    first = backfill_file(export, settings, s3)
    before = {key: s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in list_keys(s3, "demand/")}
    again = backfill_file(export, settings, s3)
    after = {key: s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in list_keys(s3, "demand/")}
    assert after == before
    assert again.already_done is True
    assert (again.items, again.rows, again.quarantined) == (first.items, first.rows, first.quarantined) == (200, 199, 1)
    assert again.bytes_written == 0


def test_rerun_after_a_crash_before_the_counts_keeps_the_first_object(s3: Any, settings: SnapshotSettings):
    put_data_file(s3, export_lines(items(120)))
    export = ExportFile.from_event(event())
    backfill_file(export, settings, s3)
    s3.delete_object(Bucket=BUCKET, Key=counts_key(settings, export))  # as if it crashed before the last write
    etag = s3.head_object(Bucket=BUCKET, Key=snapshot_key(settings, export))["ETag"]
    again = backfill_file(export, settings, s3)
    assert again.already_done is True  # the conditional PUT found the object
    assert (again.items, again.rows) == (120, 120)
    assert s3.head_object(Bucket=BUCKET, Key=snapshot_key(settings, export))["ETag"] == etag
    assert s3.head_object(Bucket=BUCKET, Key=counts_key(settings, export))["ContentLength"] > 0


def test_large_object_goes_up_in_parts_and_a_conflict_leaves_no_upload(
    s3: Any, settings: SnapshotSettings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 1024)
    table_items = items(1500)
    put_data_file(s3, export_lines(table_items))
    export = ExportFile.from_event(event())
    result = backfill_file(export, settings, s3, chunk_lines=200, row_group_rows=400, part_bytes=8 * 1024)
    head = s3.head_object(Bucket=BUCKET, Key=result.object_key)
    assert "-" in head["ETag"]  # a multipart object's ETag is <md5 of md5s>-<parts>
    assert int(head["ETag"].strip('"').rsplit("-", 1)[1]) >= 2
    assert read_parquet(s3, result.object_key).read().num_rows == 1500
    # another writer got there first: this run's upload is dropped, the object stays as it was
    s3.delete_object(Bucket=BUCKET, Key=counts_key(settings, export))
    second = backfill_file(export, settings, s3, chunk_lines=200, row_group_rows=400, part_bytes=8 * 1024)
    assert second.already_done is True
    assert s3.head_object(Bucket=BUCKET, Key=result.object_key)["ETag"] == head["ETag"]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_empty_data_file_gives_an_empty_object(s3: Any, settings: SnapshotSettings):
    put_data_file(s3, [])
    export = ExportFile.from_event(event())
    result = backfill_file(export, settings, s3)
    assert (result.items, result.rows, result.quarantined) == (0, 0, 0)
    assert read_parquet(s3, result.object_key).metadata.num_rows == 0


def test_missing_data_file_fails_and_writes_nothing(s3: Any, settings: SnapshotSettings):
    export = ExportFile.from_event(event())
    with pytest.raises(Exception, match="NoSuchKey"):
        backfill_file(export, settings, s3)
    assert list_keys(s3, "demand/snapshots/") == []


def test_failed_write_is_a_write_error_and_commits_nothing(s3: Any, settings: SnapshotSettings):
    lines = export_lines(items(10))
    lines[0] = b"poison"
    put_data_file(s3, lines)
    export = ExportFile.from_event(event())
    real_put = s3.put_object

    def failing_put(**kwargs: Any) -> Any:
        if kwargs["Key"].startswith("demand/quarantine/"):
            raise ConnectionError("S3 unavailable")
        return real_put(**kwargs)

    s3.put_object = failing_put
    try:
        with pytest.raises(WriteError, match="S3 unavailable"):
            backfill_file(export, settings, s3)
    finally:
        s3.put_object = real_put
    assert list_keys(s3, "demand/snapshots/") == []  # no snapshot object without its bad lines


# -- the handler ------------------------------------------------------------------------------------------------
@pytest.fixture
def backfill_module(s3: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("OUTPUT_BUCKET", BUCKET)
    monkeypatch.setenv("SOURCE_TABLE_NAME", TABLE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "dmd-backfill-test")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "DmdPipelineTest")
    for name in ("SNAPSHOT_PREFIX", "QUARANTINE_PREFIX", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("pipeline_backfill_under_test", BACKFILL_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._clients[:] = [s3]
    # Powertools keeps metrics in a store shared by every Metrics instance of the process: drop what an earlier
    # test's handler added without flushing, so this module's flush holds its own invocation's values only.
    module.metrics.clear_metrics()
    return module


def test_handler_returns_and_publishes_the_counts(
    backfill_module: ModuleType, s3: Any, capsys: pytest.CaptureFixture[str]
):
    lines = export_lines(items(50))
    lines[10] = b"{}"
    put_data_file(s3, lines)
    response = backfill_module.handler(event(), None)
    assert response["items"] == 50
    assert response["rows"] == 49
    assert response["quarantined"] == 1
    assert response["object_key"] == f"demand/snapshots/export_id={EXPORT_ID}/hcxsrcrp4a6ztitu6r5yjzbbbu.parquet"
    assert response["already_done"] is False
    json.dumps(response)  # a Step Functions result must be JSON
    metrics = emf_metrics(capsys.readouterr().out)
    values = {
        name: blob[name] for blob in metrics for name in ("ItemsRead", "SnapshotRowsWritten", "RecordsQuarantined")
    }
    assert values == {"ItemsRead": [50.0], "SnapshotRowsWritten": [49.0], "RecordsQuarantined": [1.0]}
    again = backfill_module.handler(event(), None)
    assert (again["already_done"], again["rows"]) == (True, 49)


def test_handler_refuses_a_bad_event(backfill_module: ModuleType):
    with pytest.raises(InvalidEventError, match="'not-a-key'"):
        backfill_module.handler(event(data_key="not-a-key"), None)


def test_numbers_keep_their_values(s3: Any, settings: SnapshotSettings):
    item = dict(items(1)[0], market_id=Decimal(9_007_199_254_740_993), quantity=Decimal(8))
    put_data_file(s3, export_lines([item]))
    result = backfill_file(ExportFile.from_event(event()), settings, s3)
    row = read_parquet(s3, result.object_key).read().to_pylist()[0]
    assert (row["market_id"], row["quantity"]) == (9_007_199_254_740_993, 8)


def test_import_is_cheap():
    """A cold start imports neither boto3 (created on the first invocation) nor pandas."""
    code = "import sys, pipeline.backfill; print(sorted(m for m in ('boto3', 'pandas') if m in sys.modules))"
    env = dict(os.environ, OUTPUT_BUCKET=BUCKET, SOURCE_TABLE_NAME=TABLE, PYTHONPATH=str(BACKFILL_FILE.parents[1]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_deleted_by_ttl_is_false_on_every_snapshot_row():
    """A snapshot row is an item as it stands, never a TTL deletion."""
    assert TTL_COLUMN in arrow_schema().names
    chunk = decode_export_lines(export_lines(items(20)), 1, ExportFile.from_event(event()), TABLE)
    assert chunk.rows.schema == arrow_schema()
    assert chunk.rows.column(TTL_COLUMN).to_pylist() == [False] * 20
    assert chunk.rows.column("op").to_pylist() == [SNAPSHOT_OP] * 20


@pytest.mark.parametrize(
    "body", [b"not gzip at all", gzip.compress(b'{"Item":{}}\n' * 50, mtime=0)[:-20]], ids=["not-gzip", "truncated"]
)
def test_corrupt_or_truncated_data_file_fails_and_commits_nothing(s3: Any, settings: SnapshotSettings, body: bytes):
    s3.put_object(Bucket=BUCKET, Key=DATA_KEY, Body=body)
    with pytest.raises((OSError, EOFError)):
        backfill_file(ExportFile.from_event(event()), settings, s3)
    assert list_keys(s3, "demand/") == [DATA_KEY]  # nothing but the data file


@pytest.mark.parametrize("count", ["3", -1, True, 2.0])
def test_item_count_must_be_a_count(count: Any):
    with pytest.raises(InvalidEventError, match=f"item_count is {count!r}"):
        ExportFile.from_event(event(item_count=count))


def test_item_count_from_the_manifest_is_checked_before_anything_is_committed(s3: Any, settings: SnapshotSettings):
    lines = export_lines(items(30))
    lines[2] = b"poison"
    put_data_file(s3, lines)
    with pytest.raises(ItemCountError, match="holds 30 lines but the manifest's itemCount is 31"):
        backfill_file(ExportFile.from_event(event(item_count=31)), settings, s3)
    assert list_keys(s3, "demand/") == [DATA_KEY]  # neither the rows nor the bad line
    result = backfill_file(ExportFile.from_event(event(item_count=30)), settings, s3)
    assert (result.items, result.rows, result.quarantined) == (30, 29, 1)
    with pytest.raises(ItemCountError, match="itemCount is 29"):  # a file already done is checked too
        backfill_file(ExportFile.from_event(event(item_count=29)), settings, s3)


@pytest.mark.parametrize("read_bytes", [1, 7, 1 << 20])
def test_lines_are_cut_the_same_whatever_the_read_size(monkeypatch: pytest.MonkeyPatch, read_bytes: int):
    monkeypatch.setattr("pipeline.snapshot._READ_BYTES", read_bytes)
    text = b'{"a":1}\n\n{"b":22}\r\n{"c":333}\n{"d":4444}'  # a blank line, a CRLF, no final line break
    chunks = list(_chunks(io.BytesIO(gzip.compress(text)), 2))
    assert chunks == [[b'{"a":1}', b""], [b'{"b":22}\r', b'{"c":333}'], [b'{"d":4444}']]
    assert list(_chunks(io.BytesIO(gzip.compress(b"")), 2)) == []
    assert list(_chunks(io.BytesIO(gzip.compress(b"x\n")), 2)) == [[b"x"]]


def test_unicode_escapes_keep_their_characters_and_lone_surrogates_are_quarantined():
    base = items(3)
    lines = export_lines([dict(base[0], channel="caf\u00e9 \U0001f3ab"), base[1], dict(base[2], channel="x\ud800")])
    assert b"\\ud83c\\udfab" in lines[0]  # json.dumps escapes the emoji as a surrogate pair
    chunk = decode_export_lines(lines, 1, ExportFile.from_event(event()), TABLE)
    assert chunk.rows.column("channel").to_pylist() == ["caf\u00e9 \U0001f3ab", base[1].get("channel")]
    assert [(bad.line_number, bad.error.kind) for bad in chunk.bad_lines] == [(3, "not_json")]
    assert "lone surrogate" in str(chunk.bad_lines[0].error)


def test_objects_of_an_earlier_run_with_other_rows_are_a_conflict_not_overwritten(s3: Any, settings: SnapshotSettings):
    lines = export_lines(items(40))
    good_line_4 = lines[3]
    lines[3] = b"poison"
    put_data_file(s3, lines)
    export = ExportFile.from_event(event())
    backfill_file(export, settings, s3)
    s3.delete_object(Bucket=BUCKET, Key=counts_key(settings, export))  # crashed before the counts...
    lines[3] = good_line_4  # ...and the file (or the code) changed before the re-run
    put_data_file(s3, lines)
    etag = s3.head_object(Bucket=BUCKET, Key=snapshot_key(settings, export))["ETag"]
    with pytest.raises(SnapshotConflictError, match="with 39 records, but this run made 40"):
        backfill_file(export, settings, s3)
    assert s3.head_object(Bucket=BUCKET, Key=snapshot_key(settings, export))["ETag"] == etag
    assert counts_key(settings, export) not in list_keys(s3, "demand/snapshots/")  # no counts that lie


def test_a_quarantine_object_of_an_earlier_run_is_a_conflict_too(s3: Any, settings: SnapshotSettings):
    lines = export_lines(items(20))
    put_data_file(s3, [*lines, b"poison"])
    export = ExportFile.from_event(event())
    assert backfill_file(export, settings, s3).quarantined == 1
    s3.delete_object(Bucket=BUCKET, Key=counts_key(settings, export))
    put_data_file(s3, lines)  # the same rows, and no bad line any more
    with pytest.raises(SnapshotConflictError, match="this run quarantined nothing"):
        backfill_file(export, settings, s3)
