"""make backfill against the embedded local AWS: a real moto export, the handler per data file, the count check."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from boto3.dynamodb.types import TypeDeserializer

from curator.erasure_objects import erase_exports
from curator.store import S3Store
from ops import backfill
from ops.backfill import FileOutcome, check_counts, count_lines, manifest_item_counts
from sandbox.changes import DemandGenerator, to_dynamodb_json
from sandbox.local_aws import LocalAws, local_aws
from sandbox.workload import POISON_KINDS, TableWriter, poison_change

# one worker runs the whole module, so its module fixture runs once (make unit: --dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("backfill")]

_deserializer = TypeDeserializer()


@pytest.fixture(scope="module")
def local() -> Iterator[LocalAws]:
    with local_aws("dev1") as aws:
        writer = TableWriter(aws.client("dynamodb"), aws.outputs.table_name)
        writer.apply(DemandGenerator(seed=5).changes(1500))
        writer.apply(poison_change(kind, event_id=f"poison-{kind}") for kind in POISON_KINDS)
        # the cutover checks need the bridge and a mapping reading from T - lead: recorded when they are created
        aws.pipeline(config=aws.mapping_config(starting_position="AT_TIMESTAMP", starting_position_timestamp=_now()))
        yield aws


def _now() -> datetime:
    return datetime.now(UTC)


# These tests are about the export and the counts; tests/ops/test_backfill_checks.py is about the cutover checks.
NO_LEAD = ["--lead-seconds", "0"]


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def _scan(local: LocalAws) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in local.client("dynamodb").get_paginator("scan").paginate(TableName=local.outputs.table_name):
        items.extend({name: _deserializer.deserialize(value) for name, value in item.items()} for item in page["Items"])
    return items


def _export_arn(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("export arn:"))
    return line.split()[1].rstrip(":")


@pytest.fixture(scope="module")
def first_run(local: LocalAws) -> dict[str, Any]:
    """One backfill of the stack, run once for the module: its exit status, output and the objects after it."""
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        status = backfill.main(["dev1", "--workers", "2", *NO_LEAD])
    s3 = local.client("s3")
    return {
        "status": status,
        "output": capture.getvalue(),
        "snapshots": _keys(s3, local.outputs.bucket_name, "demand/snapshots/"),
        "quarantine": _keys(s3, local.outputs.bucket_name, "demand/quarantine/snapshots/"),
    }


def test_backfill_of_a_real_export_holds_every_item(local: LocalAws, first_run: dict[str, Any]):
    # the seed's poison items are a few per cent of the table: every item accounted for, but far above the default
    # 0.1 % quarantine threshold, so the run does not recommend publishing
    assert first_run["status"] == 1, first_run["output"]
    assert "counts match" in first_run["output"]
    assert "publish it:" not in first_run["output"]
    assert first_run["output"].splitlines()[-1] == (
        "backfill: do not publish this snapshot: too many lines were quarantined (see above)"
    )
    assert re.search(r"^\[1/1\] [0-9a-f-]+\.gz: [0-9,]+ of [0-9,]+ items$", first_run["output"], re.MULTILINE)
    s3 = local.client("s3")
    bucket = local.outputs.bucket_name
    parquet_keys = [key for key in first_run["snapshots"] if key.endswith(".parquet")]
    assert len(parquet_keys) == 1  # moto writes one data file per export
    export_id = parquet_keys[0].split("export_id=")[1].split("/")[0]
    folder, name = parquet_keys[0].rsplit("/", 1)
    assert folder == f"demand/snapshots/export_id={export_id}"
    assert first_run["snapshots"] == sorted([f"{folder}/_{name.removesuffix('.parquet')}.counts.json", parquet_keys[0]])
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=parquet_keys[0])["Body"].read()))
    rows = {(row["event_id"], row["fan_id"]): row for row in table.to_pylist()}
    scanned = _scan(local)
    good = [item for item in scanned if not item["pk"].startswith("EVENT#poison-")]
    assert len(rows) == table.num_rows == len(good)
    export_times = set()
    for item in good:
        row = rows[(item["pk"].removeprefix("EVENT#"), item["sk"].removeprefix("FAN#"))]
        assert row["op"] == "SNAPSHOT"
        assert row["shard_id"] == export_id
        assert row["table_name"] == local.outputs.table_name
        assert row["change_id"].startswith(f"{export_id}:")
        assert row["change_id"].endswith(f":{row['sequence_number']}")
        assert row["market_id"] == int(item["market_id"])
        assert row["quantity"] == int(item["quantity"])
        assert row["status"] == item["status"]
        assert row["channel"] == item.get("channel")
        assert row["presale_code"] == item.get("presale_code")
        assert row["price_levels"] == item.get("price_levels")
        assert dict(row["attributes"] or []) == (item.get("attributes") or {})
        assert row["created_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == item["created_at"]
        if "marketing" in item:
            assert json.loads(row["extra_attributes"])["marketing"]["source"]["wave"] == 2
        else:
            assert row["extra_attributes"] is None
        export_times.add(row["change_time"])
    assert len(export_times) == 1  # every row of the snapshot is at the export time


def test_poison_items_are_quarantined_with_data_file_and_line(local: LocalAws, first_run: dict[str, Any]):
    s3 = local.client("s3")
    bucket = local.outputs.bucket_name
    assert len(first_run["quarantine"]) == 1
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=first_run["quarantine"][0])["Body"].read())
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert len(lines) == len(POISON_KINDS)
    for line in lines:
        data = json.loads(base64.b64decode(line["data"]))
        kind = data["Item"]["pk"]["S"].removeprefix("EVENT#poison-")
        assert POISON_KINDS[kind] in line["reason"]  # the reason names the field
        assert line["reason"].startswith(f"line {line['line_number']}")
        assert line["data_key"].endswith(line["data_file"])
        assert line["data_key"].startswith("demand/exports/")
        # the line number is the data file's own
        source = gzip.decompress(s3.get_object(Bucket=bucket, Key=line["data_key"])["Body"].read()).splitlines()
        assert source[line["line_number"] - 1] == base64.b64decode(line["data"])


def test_rerun_of_the_same_export_adds_no_rows(local: LocalAws, first_run: dict[str, Any], capsys):
    s3 = local.client("s3")
    bucket = local.outputs.bucket_name
    etags = {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in first_run["snapshots"]}
    arn = _export_arn(first_run["output"])
    # a threshold above the seed's poison share: the same counts now pass (a local run names no real stack's command)
    assert backfill.main(["dev1", "--export-arn", arn, "--max-quarantined-percent", "10"]) == 0
    output = capsys.readouterr().out
    assert "(1 files already done)" in output
    assert "is the local lake's snapshot (nothing to publish" in output
    assert "pulumi config set" not in output
    folder = first_run["snapshots"][0].rsplit("/", 1)[0] + "/"  # demand/snapshots/export_id=<first export>/
    assert _keys(s3, bucket, folder) == first_run["snapshots"]
    quarantine_folder = first_run["quarantine"][0].rsplit("/", 1)[0] + "/"
    assert _keys(s3, bucket, quarantine_folder) == first_run["quarantine"]
    assert {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in first_run["snapshots"]} == etags


def test_a_rerun_after_an_erasure_rewrote_the_data_file_still_says_complete_and_adds_nothing(
    local: LocalAws, first_run: dict[str, Any], capsys
):
    # GIVEN the export's data file rewritten in place without a fan's lines, as an erasure does (moto writes no
    # manifest: the rerun must not take the file's fewer lines for its item count)
    s3 = local.client("s3")
    bucket = local.outputs.bucket_name
    prefix = _export_prefix(first_run)
    data_key = next(key for key in _keys(s3, bucket, prefix) if "/data/" in key)
    lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=data_key)["Body"].read()).splitlines()
    fan = json.loads(lines[0])["Item"]["sk"]["S"].removeprefix("FAN#")
    erased = erase_exports(S3Store(bucket, client=s3), "demand/exports/", [fan])
    assert erased.rewritten == [data_key]
    after = gzip.decompress(s3.get_object(Bucket=bucket, Key=data_key)["Body"].read()).splitlines()
    assert len(after) == len(lines) - erased.rows[fan] < len(lines)
    etags = {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in first_run["snapshots"]}
    capsys.readouterr()

    # WHEN the same export is back-filled again
    arn = _export_arn(first_run["output"])
    status = backfill.main(["dev1", "--export-arn", arn, "--max-quarantined-percent", "10"])

    # THEN it is complete with the counts of the first run, and no object is added or rewritten
    output = capsys.readouterr().out
    assert status == 0, output
    assert "(1 files already done)" in output
    assert "counts match" in output
    assert f"{len(lines):,} items: " in output
    folder = first_run["snapshots"][0].rsplit("/", 1)[0] + "/"
    assert _keys(s3, bucket, folder) == first_run["snapshots"]
    assert {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in first_run["snapshots"]} == etags


def _export_prefix(first_run: dict[str, Any]) -> str:
    """``demand/exports/<request time>/``: the first run's export, from the data file its output names."""
    line = next(line for line in first_run["output"].splitlines() if " data files under s3://" in line)
    return line.split(" data files under s3://", 1)[1].split("/", 1)[1].split(":")[0]


def test_missing_data_file_is_caught_by_the_count_check(local: LocalAws, first_run: dict[str, Any], capsys):
    s3 = local.client("s3")
    bucket = local.outputs.bucket_name
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert backfill.main(["dev1", *NO_LEAD, "--max-quarantined-percent", "10"]) == 0  # a second export, complete
    arn = _export_arn(capture.getvalue())
    dynamodb = local.client("dynamodb")
    table_arn = dynamodb.describe_table(TableName=local.outputs.table_name)["Table"]["TableArn"]
    exported = backfill.find_export(dynamodb, table_arn, arn)  # the ARN as printed (moto's own repeats the table's)
    data_keys = [key for key in _keys(s3, bucket, exported["S3Prefix"]) if "/data/" in key]
    assert len(data_keys) == 1
    # AWS writes the export's manifests beside its data files (moto writes none): they stay when a data file is lost
    manifest = data_keys[0].split("/data/", 1)[0] + "/manifest-summary.json"
    s3.put_object(Bucket=bucket, Key=manifest, Body=b"{}")
    s3.delete_object(Bucket=bucket, Key=data_keys[0])  # lost between the export and the backfill
    capsys.readouterr()
    assert backfill.main(["dev1", "--export-arn", arn]) == 1
    captured = capsys.readouterr()
    assert f"the export holds {exported['ItemCount']} items but its data files hold 0: a data file is missing" in (
        captured.err
    )
    assert "INCOMPLETE" in captured.out


def test_a_rerun_of_an_export_the_curator_purged_is_one_line_and_exit_2(local: LocalAws, capsys):
    s3 = local.client("s3")
    bucket = local.outputs.bucket_name
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert backfill.main(["dev1", *NO_LEAD, "--max-quarantined-percent", "10"]) == 0
    arn = _export_arn(capture.getvalue())
    dynamodb = local.client("dynamodb")
    table_arn = dynamodb.describe_table(TableName=local.outputs.table_name)["Table"]["TableArn"]
    prefix = backfill.find_export(dynamodb, table_arn, arn)["S3Prefix"]
    listed = s3.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/")
    for item in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:  # as the curator's expiry does
        s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    capsys.readouterr()

    assert backfill.main(["dev1", "--export-arn", arn]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"backfill: --export-arn {arn!r}: nothing is left under s3://{bucket}/{prefix}/")
    assert err.rstrip().endswith("leave --export-arn out to export anew")


def test_point_in_time_recovery_off_is_refused(local: LocalAws, capsys):
    dynamodb = local.client("dynamodb")
    table = local.outputs.table_name
    dynamodb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )
    try:
        assert backfill.main(["dev1", *NO_LEAD]) == 2
    finally:
        dynamodb.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"point-in-time recovery is DISABLED on table {table}" in err


@pytest.mark.parametrize("argv", [[], ["dev1", "--workers", "0"], ["dev1", "--bogus"], ["dev1", "--timeout", "x"]])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], capsys):
    with pytest.raises(SystemExit) as exit_info:
        backfill.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("python -m ops.backfill: error: ")


def test_unknown_export_arn_is_refused(local: LocalAws, capsys):
    assert backfill.main(["dev1", "--export-arn", "arn:aws:dynamodb:us-east-1:123456789012:table/x/export/1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backfill: --export-arn")
    assert err.count("\n") == 1
    assert "has no export '1'" in err


# -- the pure parts ---------------------------------------------------------------------------------------------
def test_count_check_names_each_problem():
    done = {"rows": 9, "quarantined": 1, "already_done": False}
    outcomes = [
        FileOutcome("a.json.gz", 10, result=done),
        FileOutcome("b.json.gz", 10, result={"rows": 8, "quarantined": 1}),
        FileOutcome("c.json.gz", 5, error="NoSuchKey: gone"),
    ]
    assert check_counts(outcomes, 25) == [
        "b.json.gz: 10 items but 9 rows + quarantined",
        "c.json.gz: failed: NoSuchKey: gone",
    ]
    assert check_counts(outcomes[:1], 10) == []
    assert check_counts(outcomes[:1], 12) == [
        "the export holds 12 items but its data files hold 10: a data file is missing"
    ]


def test_manifest_gives_the_item_count_per_data_file():
    manifest = [
        '{"itemCount":3,"md5Checksum":"x","etag":"y","dataFileS3Key":"p/AWSDynamoDB/e1/data/a.json.gz"}',
        "",
        '{"itemCount":0,"md5Checksum":"x","etag":"y","dataFileS3Key":"p/AWSDynamoDB/e1/data/b.json.gz"}',
    ]
    assert manifest_item_counts(manifest) == {
        "p/AWSDynamoDB/e1/data/a.json.gz": 3,
        "p/AWSDynamoDB/e1/data/b.json.gz": 0,
    }
    with pytest.raises(backfill.BackfillError, match="line 1"):
        manifest_item_counts(['{"itemCount": 3}'])


def test_count_lines_counts_a_last_line_without_newline():
    item = json.dumps({"Item": to_dynamodb_json({"pk": "EVENT#e", "sk": "FAN#f", "n": Decimal(1)})}).encode()
    assert count_lines(io.BytesIO(gzip.compress(item + b"\n" + item))) == 2
    assert count_lines(io.BytesIO(gzip.compress(item + b"\n"))) == 1
    assert count_lines(io.BytesIO(gzip.compress(b""))) == 0


def test_boto3_is_pointed_at_the_local_aws(local: LocalAws):
    assert boto3.client("s3").meta.endpoint_url == local.endpoint_url


def test_the_function_part_acts_as_the_local_backfill_role(local: LocalAws, first_run: dict[str, Any], capsys):
    assert "acting as the local backfill role prd3292-dev1-demand-backfill" in first_run["output"]
    assert local.roles is not None
    arn = _export_arn(first_run["output"])
    # the same export again, with the role lacking its snapshot statement: the function's reads are refused
    with local.roles.without_statement("backfill", "WriteSnapshotsAndQuarantine"):
        status = backfill.main(["dev1", "--export-arn", arn, *NO_LEAD, "--max-quarantined-percent", "100"])
    local.roles.denials.clear()
    captured = capsys.readouterr()
    assert status == 1
    assert "INCOMPLETE" in captured.out
    assert "prd3292-dev1-demand-backfill/local is not authorized to perform: s3:GetObject" in captured.err
