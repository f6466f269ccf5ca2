"""Replay against the embedded local AWS with the real handler: counts, kills at each step, S3 failing, sources.

Every test checks the one invariant a replay must keep: each record of the source is, at every moment, a Parquet
row, a quarantine line or still in its source. A replay is "killed" by a step hook raising where a kill would stop
it; S3 failures come from the local server's fault rules.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.metrics import Metrics

from ops import replay
from pipeline.writer import encode_quarantine, object_name, quarantine_partition_prefix, sequence_digest
from sandbox.changes import FIRST_SEQUENCE, KinesisEntry, kinesis_entries, lambda_event
from sandbox.lake import Lake
from sandbox.local_aws import LocalAws, local_aws
from sandbox.server import FaultRule
from sandbox.workload import poison_change, tagged_changes

pytestmark = pytest.mark.slow

SHARD = "shardId-000000000000"
FAILURE_BUCKET = "prd3292-dev1-us-east-1-failures-local"
_OFFSETS = itertools.count(1)


class Killed(BaseException):
    """Stands for the process being killed between two steps (not an Exception: nothing may catch it)."""


@pytest.fixture(scope="module")
def local() -> Iterator[LocalAws]:
    with local_aws("dev1") as aws:
        aws.client("s3").create_bucket(Bucket=FAILURE_BUCKET)
        yield aws


@dataclass
class Quarantined:
    """A quarantine object written by a faulty release: ``good`` records the fix turns into rows, ``bad`` ones not."""

    key: str
    entries: list[KinesisEntry]
    good: set[str]
    bad: set[str]

    @property
    def sequences(self) -> set[str]:
        return self.good | self.bad


def _entries(local: LocalAws, good: int, bad: int) -> tuple[list[KinesisEntry], set[str], set[str]]:
    tag = f"replay{uuid.uuid4().hex[:8]}"
    changes = tagged_changes(tag, good) + [poison_change("unknown_status", event_id=tag) for _ in range(bad)]
    first = FIRST_SEQUENCE + next(_OFFSETS) * 10**12  # sequence numbers of their own, per test
    entries = kinesis_entries(
        changes,
        table_name=local.outputs.table_name,
        precision=local.settings.change_time_precision,  # what the stack's destination stamps
        first_sequence=first,
    )
    numbers = [entry.sequence_number for entry in entries]
    return entries, set(numbers[:good]), set(numbers[good:])


def _quarantine(local: LocalAws, good: int = 6, bad: int = 2) -> Quarantined:
    outputs = local.outputs
    entries, good_set, bad_set = _entries(local, good, bad)
    lines = [
        {
            "sequence_number": entry.sequence_number,
            "shard_id": SHARD,
            "partition_key": entry.partition_key,
            "approximate_arrival_timestamp": entry.arrival,
            "event_source_arn": outputs.stream_arn,
            "event_id": f"{SHARD}:{entry.sequence_number}",
            "error_kind": "faulty_release",
            "reason": "a faulty release refused it",
            "data": base64.b64encode(entry.data).decode(),
        }
        for entry in entries
    ]
    prefix = quarantine_partition_prefix(outputs.quarantine_prefix, datetime.fromtimestamp(entries[0].arrival, UTC))
    digest = sequence_digest(entry.sequence_number for entry in entries)
    key = prefix + object_name(outputs.stream_arn, SHARD, entries[0].sequence_number, digest, ".jsonl.gz")
    local.client("s3").put_object(Bucket=outputs.bucket_name, Key=key, Body=encode_quarantine(lines))
    return Quarantined(key, entries, good_set, bad_set)


def _where(local: LocalAws, sequences: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Our records' rows (sequence numbers, with repeats) and quarantine lines (sequence -> error kinds)."""
    lake = Lake(local.outputs, s3=local.client("s3"), filesystem=local.filesystem())
    rows = [sequence for sequence in lake.events().column("sequence_number").to_pylist() if sequence in sequences]
    quarantined: dict[str, list[str]] = {}
    for line in lake.quarantined():
        if line["sequence_number"] in sequences:
            quarantined.setdefault(line["sequence_number"], []).append(line["error_kind"])
    return rows, quarantined


def _exists(local: LocalAws, key: str, bucket: str | None = None) -> bool:
    listed = local.client("s3").list_objects_v2(Bucket=bucket or local.outputs.bucket_name, Prefix=key)
    return any(item["Key"] == key for item in listed.get("Contents", []))


def _assert_nothing_lost(local: LocalAws, source: Quarantined) -> None:
    rows, quarantined = _where(local, source.sequences)
    lost = source.sequences - set(rows) - set(quarantined)
    assert lost == set(), f"{len(lost)} records are neither rows nor quarantined"


def _replay(local: LocalAws, source: Quarantined, **kwargs: Any) -> replay.ReplayReport:
    outputs = local.outputs
    invoke = replay.in_process_invoker(outputs, "dev1")
    return replay.replay_quarantine(outputs, invoke, s3=local.client("s3"), keys=[source.key], **kwargs)


def _assert_done(local: LocalAws, source: Quarantined) -> None:
    rows, quarantined = _where(local, source.sequences)
    assert sorted(rows) == sorted(source.good), "each fixed record is one row, none twice"
    assert set(quarantined) == source.bad
    assert all("schema_violation" in kinds for kinds in quarantined.values()), "quarantined again, by the handler"
    assert not _exists(local, source.key), "the source is gone once every record is durable elsewhere"


def test_counts_rows_and_records_quarantined_again_and_removes_the_source(local, tmp_path, capsys):
    # Powertools keeps metrics in a store shared by every Metrics instance of the process: drop what another test's
    # handler (in this worker, e.g. one refused a write in tests/sandbox) added without flushing.
    Metrics(namespace="unflushed").clear_metrics()
    source = _quarantine(local, good=6, bad=2)
    log = tmp_path / "handler.log"

    status = replay.main(["quarantine", "dev1", "--key", source.key, "--log-file", str(log)])

    out, err = capsys.readouterr()
    assert status == 1, "two records are not rows"
    assert (
        "8 records: 6 rows written by this run, 0 already written, 2 quarantined again (schema_violation 2), "
        "0 still failing"
    ) in out
    assert "sources: 1 removed, 0 kept" in out
    assert f"replayed  {source.key}: 8 records: 6 rows written by this run" in out
    assert "account 123456789012, stack dev1, region us-east-1: 1 sources in s3://" in out
    assert "batch processed" not in out + err, "handler logs go to the file"
    assert '"RowsWritten":[6.0]' not in out + err
    # The metrics are printed per invocation; the log line goes where the process's first handler logger was
    # created (in a fresh process, this file; in a test worker, possibly an earlier test's capture).
    assert '"RowsWritten":[6.0]' in log.read_text(encoding="utf-8")
    _assert_done(local, source)


def test_every_record_a_row_exits_zero(local, tmp_path, capsys):
    source = _quarantine(local, good=5, bad=0)

    assert replay.main(["quarantine", "dev1", "--key", source.key, "--log-file", str(tmp_path / "log")]) == 0

    out = capsys.readouterr().out
    assert "5 records: 5 rows written by this run, 0 already written, 0 quarantined again, 0 still failing" in out
    _assert_done(local, source)


def test_dry_run_says_would_replay_and_changes_nothing(local, capsys):
    source = _quarantine(local, good=3, bad=1)

    assert replay.main(["quarantine", "dev1", "--key", source.key, "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert f"would replay  {source.key}" in out
    assert "dry run: would replay 4 records from 1 sources; nothing changed" in out
    assert "replayed" not in out.replace("would replay", "")
    assert _exists(local, source.key)
    assert _where(local, source.sequences)[0] == []


def test_a_source_whose_records_are_all_still_bad_is_kept(local):
    """The records quarantined again can land at the source's own key (write-once: "already there"): keep it."""
    source = _quarantine(local, good=0, bad=3)

    report = _replay(local, source)

    assert (report.rows, sum(report.quarantined.values()), report.failed) == (0, 3, {})
    assert report.removed == []
    assert report.kept == [f"{source.key}: 3 of its records have no other durable copy"]
    assert _exists(local, source.key)
    _assert_nothing_lost(local, source)


@pytest.mark.parametrize("step", ["read", "invoked", "accounted", "removed"])
def test_killed_at_each_step_loses_nothing_and_a_second_run_finishes(local, step):
    source = _quarantine(local, good=6, bad=2)

    def kill(at: str, label: str) -> None:
        if at == step:
            raise Killed(f"killed after {at} of {label}")

    with pytest.raises(Killed):
        _replay(local, source, step=kill)
    _assert_nothing_lost(local, source)

    if _exists(local, source.key):
        report = _replay(local, source)
        assert (report.records, report.rows, sum(report.quarantined.values()), report.failed) == (8, 6, 2, {})
        assert report.removed == [source.key]
    _assert_done(local, source)


@pytest.mark.parametrize(
    ("failing", "expected_kept"),
    [
        ("quarantine writes", "have no other durable copy"),
        ("deletes", "every record is accounted for, but removing it failed"),
        ("reading rows back", "have no other durable copy"),
    ],
)
def test_s3_failing_loses_nothing_and_counts_right(local, failing, expected_kept):
    source = _quarantine(local, good=6, bad=2)
    bucket, outputs = local.outputs.bucket_name, local.outputs
    rule = {
        "quarantine writes": FaultRule("s3", method="PUT", path_contains=f"/{bucket}/{outputs.quarantine_prefix}"),
        "deletes": FaultRule("s3", method="DELETE", path_contains=f"/{bucket}/{outputs.quarantine_prefix}"),
        "reading rows back": FaultRule("s3", method="GET", path_contains=f"/{bucket}/{outputs.events_prefix}"),
    }[failing]

    with local.faults(rule):
        report = _replay(local, source)

    assert not report.ok
    assert report.records == 8
    assert report.rows + sum(report.quarantined.values()) + len(report.failed) == 8, "each record counted once"
    if failing == "quarantine writes":
        assert (report.rows, len(report.failed)) == (6, 2), "the handler failed the two it could not quarantine"
    elif failing == "deletes":
        assert (report.rows, sum(report.quarantined.values()), report.failed) == (6, 2, {})
    else:
        assert report.rows == 0, "a row that cannot be read back is not counted as a row"
        assert set(report.failed.values()) == {
            "sent to the function, but could not be read back from S3 (SlowDown on GetObject): run again"
        }
    assert report.removed == []
    assert len(report.kept) == 1
    assert expected_kept in report.kept[0]
    assert _exists(local, source.key)
    _assert_nothing_lost(local, source)

    again = _replay(local, source)
    assert (again.rows, sum(again.quarantined.values()), again.failed, again.removed) == (6, 2, {}, [source.key])
    # the rows the first run wrote are found, not written again (and not counted as written by this run)
    assert (again.written, again.already) == (0, 6)
    assert again.invocations == 1, "only the two bad records were driven again"
    _assert_done(local, source)


# -- the S3 on-failure destination --------------------------------------------------------------------------------
def _on_failure_object(local: LocalAws, *, good: int, bad: int, payload_as_text: bool = True) -> tuple[str, set[str]]:
    """An object as Lambda's S3 on-failure destination writes it for a discarded Kinesis batch."""
    entries, good_set, bad_set = _entries(local, good, bad)
    event = lambda_event(entries, shard_id=SHARD, stream_arn=local.outputs.stream_arn)
    now = datetime.now(UTC)
    record = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": local.outputs.function_alias_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 6,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "7", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "KinesisBatchInfo": {
            "shardId": SHARD,
            "startSequenceNumber": entries[0].sequence_number,
            "endSequenceNumber": entries[-1].sequence_number,
            "approximateArrivalOfFirstRecord": now.isoformat(),
            "approximateArrivalOfLastRecord": now.isoformat(),
            "batchSize": len(entries),
            "streamArn": local.outputs.stream_arn,
        },
        "payload": json.dumps(event) if payload_as_text else event,
    }
    key = f"aws/lambda/{uuid.uuid4()}/{SHARD}/{now:%Y/%m/%d}/{now:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    local.client("s3").put_object(Bucket=FAILURE_BUCKET, Key=key, Body=json.dumps(record).encode())
    return key, good_set | bad_set


@pytest.mark.parametrize("payload_as_text", [True, False])
def test_failures_replays_the_on_failure_bucket_and_removes_the_object(local, tmp_path, capsys, payload_as_text):
    key, sequences = _on_failure_object(local, good=4, bad=0, payload_as_text=payload_as_text)
    argv = ["failures", "dev1", "--bucket", FAILURE_BUCKET, "--key", key, "--log-file", str(tmp_path / "log")]

    assert replay.main(argv) == 0

    out = capsys.readouterr().out
    assert "4 records: 4 rows written by this run, 0 already written, 0 quarantined again, 0 still failing" in out
    assert f"replayed  s3://{FAILURE_BUCKET}/{key}: 4 records: " in out
    assert sorted(_where(local, sequences)[0]) == sorted(sequences)
    assert not _exists(local, key, FAILURE_BUCKET)


def test_failures_with_a_bad_record_quarantines_it_and_removes_the_object(local, tmp_path, capsys):
    key, sequences = _on_failure_object(local, good=3, bad=1)
    argv = ["failures", "dev1", "--bucket", FAILURE_BUCKET, "--key", key, "--log-file", str(tmp_path / "log")]

    assert replay.main(argv) == 1, "one record is not a row"

    assert (
        "4 records: 3 rows written by this run, 0 already written, 1 quarantined again (schema_violation 1), "
        "0 still failing"
    ) in capsys.readouterr().out
    rows, quarantined = _where(local, sequences)
    assert len(rows) == 3
    assert len(quarantined) == 1
    assert not _exists(local, key, FAILURE_BUCKET), "each record is durable: a row or in quarantine"


def test_failures_killed_before_removal_keeps_the_object(local):
    key, sequences = _on_failure_object(local, good=3, bad=0)

    def kill(at: str, label: str) -> None:
        if at == "accounted":
            raise Killed(at)

    with pytest.raises(Killed):
        replay.replay_failures(
            local.outputs,
            replay.in_process_invoker(local.outputs, "dev1"),
            s3=local.client("s3"),
            bucket=FAILURE_BUCKET,
            keys=[key],
            step=kill,
        )
    assert _exists(local, key, FAILURE_BUCKET)
    assert sorted(_where(local, sequences)[0]) == sorted(sequences)


def test_a_saved_on_failure_record_replays_and_stays(local, tmp_path, capsys):
    key, _ = _on_failure_object(local, good=2, bad=0)
    saved = tmp_path / "record.json"
    saved.write_bytes(local.client("s3").get_object(Bucket=FAILURE_BUCKET, Key=key)["Body"].read())

    argv = ["failures", "dev1", "--message-file", str(saved), "--log-file", str(tmp_path / "log")]
    assert replay.main(argv) == 0

    assert "2 records: 2 rows written by this run" in capsys.readouterr().out
    assert saved.exists()


# -- mistakes: one line, exit 2, nothing changed ------------------------------------------------------------------
def test_a_missing_quarantine_key_is_one_line(local, capsys):
    key = f"{local.outputs.quarantine_prefix}dt=2026-01-01/nope.jsonl.gz"

    assert replay.main(["quarantine", "dev1", "--key", key]) == 2

    assert capsys.readouterr().err == (
        f"python -m ops.replay: error: quarantine object {key!r} does not exist in s3://{local.outputs.bucket_name}/\n"
    )


def test_a_missing_message_file_is_one_line(local, tmp_path, capsys):
    missing = tmp_path / "absent.json"

    assert replay.main(["failures", "dev1", "--message-file", str(missing)]) == 2

    assert capsys.readouterr().err == (
        f"python -m ops.replay: error: --message-file {str(missing)!r}: No such file or directory\n"
    )


def test_a_message_file_without_a_payload_is_refused(local, tmp_path, capsys):
    saved = tmp_path / "sqs-record.json"
    saved.write_text(json.dumps({"KinesisBatchInfo": {"shardId": SHARD}}))

    assert replay.main(["failures", "dev1", "--message-file", str(saved)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no invocation event in payload" in err


def test_the_outputs_of_another_stack_are_refused(local, capsys):
    """$STACK_OUTPUTS_FILE names the local dev1 outputs: asking for prod1 must not act on them."""
    assert replay.main(["quarantine", "prod1", "--dry-run"]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "belong to stack 'dev1', not 'prod1'" in err


# -- what a replay selects, and what it says while it runs ----------------------------------------------------------
def _snapshot_quarantine(local: LocalAws) -> str:
    """A line a backfill quarantined (the demo writes one every run): not a stream record."""
    key = f"{local.outputs.quarantine_prefix}snapshots/export_id=0123-abcd/{uuid.uuid4().hex}.jsonl.gz"
    line = {"export_id": "0123-abcd", "data_key": "demand/exports/x/data/f.json.gz", "line_number": 3}
    local.client("s3").put_object(Bucket=local.outputs.bucket_name, Key=key, Body=encode_quarantine([line]))
    return key


def test_a_backfill_quarantine_object_is_skipped_and_said_so(local, capsys):
    skipped = _snapshot_quarantine(local)
    source = _quarantine(local, good=2, bad=0)

    assert replay.main(["quarantine", "dev1", "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert f"would replay  {source.key}" in out
    assert skipped not in out.replace("skipped ", "")
    assert re.search(
        r"^skipped   \d+ backfill quarantine objects under demand/quarantine/snapshots/ \(lines of an export data "
        r"file, not stream records: make replay does not re-drive them;",
        out,
        re.MULTILINE,
    )
    assert _exists(local, skipped)


@pytest.mark.parametrize("option", ["--key", "--prefix"])
def test_asking_for_a_backfill_quarantine_object_is_one_line(local, capsys, option):
    key = _snapshot_quarantine(local)
    value = key if option == "--key" else key.rsplit("/", 1)[0] + "/"

    assert replay.main(["quarantine", "dev1", option, value, "--dry-run"]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"python -m ops.replay: error: {option} {value!r} ")
    assert "back-fill a new export (docs/backfill.md)" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["quarantine", "dev1", "--prefix", "demand/quarantine/dt=1999-01-01/"],
        ["quarantine", "dev1", "--prefix", "demand/quarantine/dt=2026-13", "--dry-run"],
        ["failures", "dev1", "--bucket", FAILURE_BUCKET, "--prefix", "aws/lambda/no-such-mapping/"],
    ],
)
def test_an_empty_or_mistyped_prefix_is_one_line(local, capsys, argv):
    assert replay.main(argv) == 2

    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert f"--prefix {argv[3 if argv[0] == 'quarantine' else 5]!r} holds no " in line
    assert "leave --prefix out" in line
    assert "records:" not in captured.out


def test_a_broken_stack_file_is_one_line_before_anything(local, capsys, tmp_path, monkeypatch):
    import shutil  # noqa: PLC0415

    from components import settings as settings_module  # noqa: PLC0415

    root = settings_module.PROJECT_ROOT
    shutil.copy(root / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    stack_file = (root / "Pulumi.dev1.yaml").read_text(encoding="utf-8")
    (tmp_path / "Pulumi.dev1.yaml").write_text(stack_file + "  dmd-pipeline:batchSze: 100\n", encoding="utf-8")
    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path)
    source = _quarantine(local, good=2, bad=0)

    assert replay.main(["quarantine", "dev1", "--key", source.key]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert "unknown config key dmd-pipeline:batchSze" in line
    assert _exists(local, source.key)
    assert _where(local, source.sequences)[0] == []


def test_the_progress_bar_is_drawn_before_the_first_invocation(local, tmp_path, monkeypatch):
    from rich.console import Console  # noqa: PLC0415

    screen = io.StringIO()
    monkeypatch.setattr(replay, "progress_console", lambda: Console(file=screen, force_terminal=True, width=100))
    seen_at_first_call: list[str] = []
    real_invoker = replay.in_process_invoker

    def invoker(*args: Any, **kwargs: Any) -> replay.Invoker:
        invoke = real_invoker(*args, **kwargs)

        def watched(event: dict[str, Any]) -> Any:
            seen_at_first_call.append(screen.getvalue())
            return invoke(event)

        return watched

    monkeypatch.setattr(replay, "in_process_invoker", invoker)
    source = _quarantine(local, good=3, bad=0)

    assert replay.main(["quarantine", "dev1", "--key", source.key, "--log-file", str(tmp_path / "log")]) == 0

    assert len(seen_at_first_call) == 1
    assert "replaying records" in seen_at_first_call[0]
    assert "0/3" in seen_at_first_call[0]
    assert "3/3" in screen.getvalue()


# -- the handler acts as the function's role ---------------------------------------------------------------------
def test_the_handler_acts_as_the_local_processor_role(local, tmp_path, capsys):
    source = _quarantine(local, good=3, bad=0)

    assert replay.main(["quarantine", "dev1", "--key", source.key, "--log-file", str(tmp_path / "log")]) == 0

    out = capsys.readouterr().out
    assert "via pipeline.handler in this process as the local processor role prd3292-dev1-demand-processor" in out
    _assert_done(local, source)


def test_without_the_processor_roles_writes_the_replay_stops_in_one_line_naming_it(local, tmp_path, capsys):
    source = _quarantine(local, good=3, bad=0)
    assert local.roles is not None

    with local.roles.without_statement("processor", "WriteEventsAndQuarantine"):
        status = replay.main(["quarantine", "dev1", "--key", source.key, "--log-file", str(tmp_path / "log")])

    [line] = [line for line in capsys.readouterr().err.splitlines() if line]  # (the progress bar ends a line)
    assert status == 1
    events = f"arn:aws:s3:::{local.outputs.bucket_name}/{local.outputs.events_prefix}dt="
    assert line.startswith(
        f"python -m ops.replay: IAM denied: role prd3292-dev1-demand-processor may not s3:PutObject on {events}"
    ), line
    assert line.endswith("(PutObject); nothing of that source was removed"), line
    assert _exists(local, source.key), "the source is kept: none of its records was written"
