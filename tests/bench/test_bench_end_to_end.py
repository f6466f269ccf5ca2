"""``bench.curation`` and ``bench.registrations`` run end to end at a tiny scale: counts and target lines printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import curation, registrations

pytestmark = pytest.mark.slow


def test_curation_bench_curates_a_tiny_shard_hour_and_prints_its_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 11 seconds of one shard at 1,000 records/s: batches of 9,900 new records, the second one starting
    # with the last 100 of the first again (1 % re-delivered)
    monkeypatch.setenv("DMD_BENCH_CACHE", str(tmp_path))
    # WHEN the benchmark builds, uploads and curates them in a fresh process
    assert curation.main(["--targets", "shard-hour", "--scale", str(11 / 3_600)]) == 0
    out = capsys.readouterr().out
    # THEN every change is read (re-deliveries too) and added once, in the hour it belongs to
    assert "shard-hour (scale 0.00305556): 11,000 changes, 11,100 rows read, 11,000 added" in out
    assert "hours 2026-03-31T23" in out
    assert re.search(r"^  (PASS|FAIL)  shard-hour: rows/s >= 250,000: [\d,]+$", out, re.MULTILINE)
    assert re.search(r"^  (PASS|FAIL)  shard-hour: peak RSS <= 3,072 MB \(75 % of 4,096 MB\): [\d,]+ MB$", out, re.M)
    assert re.search(r"s CPU of the run, [\d.]+ s user\+sys of the fresh process\)", out)


def test_curation_bench_refuses_a_scale_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert curation.main(["--targets", "shard-hour", "--scale", "0"]) == 2
    assert capsys.readouterr().err.strip() == "--scale must be above 0 and at most 1"


def test_registrations_bench_advances_a_tiny_state_and_prints_its_targets(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a 3,000-row state over 6 events and 500 changed keys (about 300 new, 150 modified, 50 removed)
    # WHEN the benchmark builds them on a local AWS and advances the state in a fresh process
    assert registrations.main(["--rows", "3000", "--keys", "500", "--events", "6", "--cpu", "0"]) == 0
    out = capsys.readouterr().out
    # THEN every changed key is applied once (one key in ten changed twice: its later change wins) and the rows
    # after are the rows before plus the new keys less the removed ones
    assert re.search(r"^registrations: 3,000 rows over 6 events, 500 changed keys \([\d,]+ applied\)", out, re.M)
    counted = r"^  PASS  rows after = before \+ new keys - removed keys \(([\d,]+), ([\d,]+) expected\)$"
    after = re.search(counted, out, re.M)
    assert after is not None
    assert after[1] == after[2]
    assert 3_000 + 300 - 100 < int(after[1].replace(",", "")) < 3_000 + 300
    timed = r"^  (PASS|FAIL)  advance 3,000 rows by 500 keys <= 60 s \(measured [\d.]+ s, CPU [\d.]+ s, user\+sys of"
    assert re.search(timed, out, re.M)
    assert re.search(r"^  (PASS|FAIL)  peak RSS of the fresh process <= 3,072 MB", out, re.M)
