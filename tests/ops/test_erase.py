"""`make erase` and `make erase-status`: checks before anything, filing a request, the dry run's counts, the listing."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from components.settings import PROJECT_ROOT
from curator.erasure_requests import AuditRecord, ErasureRequest
from ops import compact, erase
from ops.erasure_scan import count_json_records, fans_named, scan_places
from pipeline.writer import encode_parquet
from sandbox.server import MotoProcess
from tests.curator.conftest import RawLake, generated_rows, new_catalog
from tests.ops.conftest import REGION, outputs_values, outside_project_venv

BUCKET = outputs_values()["bucket_name"]
FAILURES = outputs_values()["failure_bucket_name"]
NOW = datetime(2026, 4, 30, 12, 0, tzinfo=UTC)


def _clock() -> datetime:
    return NOW


def _fans_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fans.txt"
    path.write_text(text)
    return path


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


# -- mistakes: one line, exit 2, before anything ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["qa9", "--status"], "erase: error: argument stack: unknown stack 'qa9' (stacks: dev1, preprod1, prod1, qa1)"),
        (["qa1"], "erase: error: one of the arguments --fans --status is required"),
        (["qa1", "--status", "--dry-run"], "erase: error: --dry-run goes with --fans (--status only reads)"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        erase.main(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err == message + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fan-1\nFAN#fan-2\n", "fans.txt:2: 'FAN#fan-2' is a sort key; give the fan id without 'FAN#'"),
        ("fan-1\nfan two\n", "fans.txt:2: 'fan two' is not a fan id"),
        ("# nobody\n\n", "fans.txt: no fan id (one per line)"),
    ],
)
@pytest.mark.usefixtures("aws")
def test_a_bad_fans_file_is_one_line_and_nothing_is_written(
    text: str, message: str, outputs_file: Path, tmp_path: Path, capsys
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    path = _fans_file(tmp_path, text)

    status = erase.main(["qa1", "--fans", str(path), "--outputs-file", str(outputs_file)], clock=_clock)

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("erase: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert _keys(s3, BUCKET) == []


@pytest.mark.usefixtures("aws")
def test_a_missing_fans_file_is_named(outputs_file: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.txt"
    assert erase.main(["qa1", "--fans", str(missing), "--outputs-file", str(outputs_file)]) == 2
    assert capsys.readouterr().err == (
        f"erase: error: cannot read the fans file {str(missing)!r}: No such file or directory\n"
    )


def test_outputs_of_another_stack_are_refused(aws: None, tmp_path: Path, capsys) -> None:
    other = tmp_path / "outputs.json"
    other.write_text(json.dumps(outputs_values(stack_name="qa1")))
    path = _fans_file(tmp_path, "fan-1\n")
    assert erase.main(["dev1", "--fans", str(path), "--outputs-file", str(other)]) == 2
    assert "the outputs belong to stack 'qa1', not 'dev1'; refusing to act" in capsys.readouterr().err


# -- filing and the status listing (in-process moto: a deployed stack's path) ------------------------------------
def test_filing_writes_one_request_and_says_what_happens_next(
    aws: None, outputs_file: Path, tmp_path: Path, capsys
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    path = _fans_file(tmp_path, "# from ticket 123\nfan-1\nfan-2\n\nfan-1\n")

    assert erase.main(["qa1", "--fans", str(path), "--outputs-file", str(outputs_file)], clock=_clock) == 0

    keys = _keys(s3, BUCKET)
    assert len(keys) == 1
    assert keys[0].startswith("erasure/requests/20260430T120000Z-")
    request = ErasureRequest.from_json(s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read(), keys[0])
    assert request.fan_ids == ("fan-1", "fan-2")  # the duplicate once
    assert request.filed_at == NOW
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"account 123456789012, stack qa1, region us-east-1: file an erasure request for 2 fans at s3://{BUCKET}/{keys[0]}"
    )
    assert out[2] == f"filed erasure request {request.request_id}"
    assert out[3] == (
        "the curator carries it out at the start of its next run (every 15 minutes); to run it now: "
        "make compact STACK=qa1"
    )
    assert out[4] == "check it: make erase-status STACK=qa1 (deadline 25 days: 2026-05-25 12:00Z)"


def test_status_lists_pending_and_completed_and_flags_the_overdue(aws: None, outputs_file: Path, capsys) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    old = ErasureRequest.new(("fan-1",), now=NOW - timedelta(days=26), token="0000000a")
    recent = ErasureRequest.new(("fan-2",), now=NOW - timedelta(hours=5), token="0000000b")
    done = ErasureRequest.new(("fan-3", "fan-4"), now=NOW - timedelta(days=3), token="0000000c")
    for request in (old, recent, done):
        s3.put_object(Bucket=BUCKET, Key=request.key, Body=request.to_json())
    audit = AuditRecord.of(
        done,
        "salt",
        completed_at=NOW - timedelta(days=3) + timedelta(minutes=7),
        rows_removed={"registration_changes": 9, "registrations": 2, "raw_events": 4, "quarantine": 1, "exports": 3},
        snapshots={"registration_changes": {"before": 11, "after": 12}, "registrations": {"before": 21, "after": 22}},
        versions_purged={"registration_changes": 30, "raw_events": 2, "failures": 1, "exports": 2},
    )
    s3.put_object(Bucket=BUCKET, Key=audit.key, Body=audit.to_json())
    s3.delete_object(Bucket=BUCKET, Key=done.key)  # the curator deletes a request once its audit is written

    status = erase.main(["qa1", "--status", "--outputs-file", str(outputs_file)], clock=_clock)

    assert status == 1  # one request is past the deadline
    assert capsys.readouterr().out.splitlines() == [
        "3 requests: 1 completed, 2 pending (1 older than the 25-day deadline)",
        "OVERDUE    20260404T120000Z-0000000a  filed 2026-04-04 12:00Z  age 26d 00h  due 2026-04-29",
        "completed  20260427T120000Z-0000000c  filed 2026-04-27 12:00Z  completed 2026-04-27 12:07Z  took 0d 00h"
        "  fans 2",
        "           rows removed: registration_changes 9, registrations 2, raw_events 4, snapshots 0, quarantine 1,"
        " failures 0, exports 3",
        "           old versions purged: registration_changes 30, registrations 0, raw_events 2, snapshots 0,"
        " quarantine 0, failures 1, exports 2",
        "           snapshots: registration_changes 11 -> 12; registrations 21 -> 22",
        "pending    20260430T070000Z-0000000b  filed 2026-04-30 07:00Z  age 0d 05h  due 2026-05-25",
    ]
    s3.delete_object(Bucket=BUCKET, Key=old.key)
    assert erase.main(["qa1", "--status", "--outputs-file", str(outputs_file)], clock=_clock) == 0
    capsys.readouterr()
    broken = "erasure/audit/20260429T120000Z-0000000d.json"
    s3.put_object(Bucket=BUCKET, Key=broken, Body=b"{}")
    assert erase.main(["qa1", "--status", "--outputs-file", str(outputs_file)], clock=_clock) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (
        "3 requests: 1 completed, 1 pending (0 older than the 25-day deadline), 1 with an unreadable audit record"
    )
    assert printed[5].startswith(f"UNREADABLE 20260429T120000Z-0000000d  filed 2026-04-29 12:00Z  {broken}: ")
    s3.delete_object(Bucket=BUCKET, Key=broken)
    assert (
        erase.main(["qa1", "--status", "--outputs-file", str(outputs_file)], clock=lambda: NOW + timedelta(days=30))
        == 1
    )


def test_status_of_a_stack_without_requests(aws: None, outputs_file: Path, capsys) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    assert erase.main(["qa1", "--status", "--outputs-file", str(outputs_file)], clock=_clock) == 0
    assert capsys.readouterr().out == "no erasure request filed\n"


# -- what the dry run counts ------------------------------------------------------------------------------------
def _kinesis_data(fan: str) -> str:
    image = {"pk": {"S": "EVENT#e1"}, "sk": {"S": f"FAN#{fan}"}, "status": {"S": "REGISTERED"}}
    return base64.b64encode(json.dumps({"eventName": "INSERT", "dynamodb": {"NewImage": image}}).encode()).decode()


def test_json_places_count_records_naming_the_fan() -> None:
    lines = [{"data": _kinesis_data(fan), "reason": "bad"} for fan in ("a", "b", "a", "c")]
    body = gzip.compress("\n".join(json.dumps(line) for line in lines).encode())
    assert count_json_records(body, {"a"}, per_line=True) == 2
    assert count_json_records(body, {"a", "c"}, per_line=True) == 3
    assert count_json_records(body, {"zz"}, per_line=True) == 0
    event = {"Records": [{"kinesis": {"data": _kinesis_data(fan)}} for fan in ("a", "b", "a")]}
    record = json.dumps({"requestContext": {}, "payload": json.dumps(event)}).encode()
    assert count_json_records(record, {"a"}, per_line=False) == 2  # the payload is a JSON string
    assert fans_named('{"fan_id": "f-9", "sk": "FAN#f-8"}') == {"f-9", "f-8"}
    assert fans_named('{"fan_id": {"S": "f-7"}}') == {"f-7"}


@pytest.mark.usefixtures("aws")
def test_a_table_not_created_yet_counts_zero_and_says_so() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("data", "failures"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="data", Key="demand/events/a.parquet", Body=encode_parquet(generated_rows(10)))
    s3.put_object(Bucket="data", Key="demand/events/b.parquet", Body=b"{}")  # not Parquet: named, not fatal
    asked: list[tuple[str, set[str]]] = []

    def no_table(table: str, fans: set[str]) -> int | None:
        asked.append((table, fans))
        return None

    counts = scan_places(
        s3,
        bucket="data",
        events_prefix="demand/events/",
        snapshot_prefix="demand/snapshots/",
        quarantine_prefix="demand/quarantine/",
        failure_bucket="failures",
        fans=["nobody"],
        table_rows=no_table,
        tables=("registration_changes", "registrations"),
    )

    assert asked == [("registration_changes", {"nobody"}), ("registrations", {"nobody"})]
    assert [(c.place, c.rows, c.objects_read, c.note) for c in counts] == [
        ("registration_changes", 0, 0, "not created yet"),
        ("registrations", 0, 0, "not created yet"),
        ("raw_events", 0, 2, "1 unreadable, e.g. demand/events/b.parquet"),
        ("snapshots", 0, 0, ""),
        ("quarantine", 0, 0, ""),
        ("failures", 0, 0, ""),
        ("exports", 0, 0, ""),
    ]
    not_yet = "  registration_changes          0 rows        0 objects read in Iceberg table (not created yet)"
    assert counts[0].line() == not_yet


@pytest.fixture(scope="module")
def local_server() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


def test_the_dry_run_counts_every_place_and_changes_nothing(
    local_server: MotoProcess, tmp_path: Path, monkeypatch, capsys
) -> None:
    bucket = f"erase-{uuid.uuid4().hex[:12]}"
    failures = f"erase-failures-{uuid.uuid4().hex[:8]}"
    database = f"erase_{uuid.uuid4().hex[:12]}"
    endpoint = local_server.endpoint_url
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=failures)
    for versioned in (bucket, failures):  # as the stack creates them: a delete leaves a noncurrent version
        s3.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    rows = generated_rows(80)
    lake = RawLake(s3, bucket)
    for start in range(0, 80, 40):
        lake.write(rows.slice(start, 40))
    outputs_file = tmp_path / "outputs-qa1.json"
    outputs_file.write_text(
        json.dumps(outputs_values(bucket_name=bucket, athena_database_name=database, failure_bucket_name=failures))
    )
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "STACK_OUTPUTS_FILE": str(outputs_file),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert compact.main(["qa1"]) == 0  # the curated tables, from the raw objects (kept for the grace period)
    capsys.readouterr()
    changes = new_catalog(endpoint).load_table((database, "registration_changes")).scan().to_arrow()
    state = new_catalog(endpoint).load_table((database, "registrations")).scan().to_arrow()
    in_state = state.column("fan_id").to_pylist()
    fan = max(set(in_state), key=lambda name: (rows.column("fan_id").to_pylist().count(name), name))
    in_raw = rows.column("fan_id").to_pylist().count(fan)
    snapshot_rows = rows.slice(0, 50)
    s3.put_object(Bucket=bucket, Key="demand/snapshots/export_id=x/part-0.parquet", Body=encode_parquet(snapshot_rows))
    quarantine = "\n".join(json.dumps({"data": _kinesis_data(f), "reason": "r"}) for f in (fan, "other", fan))
    s3.put_object(
        Bucket=bucket, Key="demand/quarantine/dt=2026-03-31/q.jsonl.gz", Body=gzip.compress(quarantine.encode())
    )
    event = {"Records": [{"kinesis": {"data": _kinesis_data(f)}} for f in (fan, "other")]}
    s3.put_object(Bucket=failures, Key="aws/lambda/u/shardId-0/2026/03/31/f", Body=json.dumps({"payload": event}))
    # Old versions: deleted objects, one holding the fan per place (counted), one of another fan (not counted).
    for who in (fan, "other"):
        lines = gzip.compress(json.dumps({"data": _kinesis_data(who)}).encode())
        old_quarantine = f"demand/quarantine/dt=2026-03-30/{who}.jsonl.gz"
        s3.put_object(Bucket=bucket, Key=old_quarantine, Body=lines)
        s3.delete_object(Bucket=bucket, Key=old_quarantine)
        old_batch = {"payload": {"Records": [{"kinesis": {"data": _kinesis_data(who)}}]}}
        s3.put_object(Bucket=failures, Key=f"aws/lambda/replayed/{who}", Body=json.dumps(old_batch))
        s3.delete_object(Bucket=failures, Key=f"aws/lambda/replayed/{who}")
    # the export the backfill read: a data file with the fan in two lines, and an old version of one that held it
    export = "demand/exports/20260331T230000000000Z/AWSDynamoDB/01700000000000-abcdef12/"
    items = [json.dumps({"Item": {"sk": {"S": f"FAN#{who}"}}}) for who in (fan, "other", fan, f"{fan}x")]
    s3.put_object(Bucket=bucket, Key=f"{export}data/a.json.gz", Body=gzip.compress("\n".join(items).encode()))
    for who in (fan, "other"):
        body = gzip.compress(json.dumps({"Item": {"sk": {"S": f"FAN#{who}"}}}).encode())
        s3.put_object(Bucket=bucket, Key=f"{export}data/b.json.gz", Body=body)
    s3.put_object(Bucket=bucket, Key=f"{export}manifest-summary.json", Body=json.dumps({"itemCount": 5}).encode())
    # a table file retention deleted: under the table's location every old version is purged, unread
    s3.put_object(Bucket=bucket, Key="curated/registration_changes/data/retired.parquet", Body=b"old file")
    s3.delete_object(Bucket=bucket, Key="curated/registration_changes/data/retired.parquet")
    table_versions = {
        table: sum(
            not item["IsLatest"]
            for item in s3.list_object_versions(Bucket=bucket, Prefix=f"curated/{table}/").get("Versions", [])
        )
        for table in ("registration_changes", "registrations")
    }
    assert table_versions["registration_changes"] >= 1
    fans = _fans_file(tmp_path, f"{fan}\nnobody\n")
    everything = {name: _keys(s3, name) for name in (bucket, failures)}
    dist = sorted(path.name for path in (PROJECT_ROOT / "dist").glob("*")) if (PROJECT_ROOT / "dist").exists() else []

    assert erase.main(["qa1", "--fans", str(fans), "--dry-run"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert {name: _keys(s3, name) for name in (bucket, failures)} == everything  # nothing written or deleted
    dist_after = sorted(p.name for p in (PROJECT_ROOT / "dist").glob("*")) if (PROJECT_ROOT / "dist").exists() else []
    assert dist_after == dist
    in_changes = changes.column("fan_id").to_pylist().count(fan)
    in_snapshot = snapshot_rows.column("fan_id").to_pylist().count(fan)
    assert (in_changes, in_raw, in_state.count(fan) >= 1) == (in_raw, in_changes, True)
    role = "the local CI role prd3292-qa1-gitlab-ci"
    assert out[0] == f"dry run: stack qa1, 2 fans, acting as {role}; rows the erasure would remove:"
    counted = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out[1:8]}
    assert counted == {
        "registration_changes": in_changes,
        "registrations": in_state.count(fan),
        "raw_events": in_raw,
        "snapshots": in_snapshot,
        "quarantine": 2,
        "failures": 1,
        "exports": 2,
    }
    old_versions = {line.split()[0]: line.partition(", ")[2] for line in out[1:8]}
    assert old_versions == {
        **{table: f"{count} old versions to purge" if count else "" for table, count in table_versions.items()},
        "raw_events": "",
        "snapshots": "",
        "quarantine": "1 old versions to purge",
        "failures": "1 old versions to purge",
        "exports": "1 old versions to purge",
    }
    total = in_changes + in_state.count(fan) + in_raw + in_snapshot + 2 + 1 + 2
    versions = sum(table_versions.values()) + 3
    assert out[8].startswith(f"total {total:,} rows, and {versions:,} old versions to purge; nothing changed")


def test_make_passes_the_exit_status_and_names_a_missing_fans_file(tmp_path: Path) -> None:
    environ = outside_project_venv(dict(__import__("os").environ))
    result = subprocess.run(
        ["make", "-s", "erase", "STACK=qa1"], cwd=PROJECT_ROOT, env=environ, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "FANS is required: make erase STACK=qa1 FANS=<file of fan ids, one per line>" in result.stderr
    bad = _fans_file(tmp_path, "FAN#x\n")
    result = subprocess.run(
        ["make", "-s", "erase", "STACK=qa1", f"FANS={bad}", "ARGS=--dry-run"],
        cwd=PROJECT_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    refused = f"erase: error: {bad}:1: 'FAN#x' is a sort key; give the fan id without 'FAN#'"
    assert refused in result.stderr.splitlines()
