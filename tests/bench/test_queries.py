"""The query benchmark's data and verdicts: a steady lake, both layouts holding the same changes, every pair of
queries giving the same answer, and a target met only when both its figure and its answers are."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.queries import T, build_lake, checks, main, query_figures, write_curated_changes, write_registrations
from pipeline.change_order import newer_order_key


def test_the_lake_is_steady_and_delivers_a_hundredth_twice() -> None:
    lake = build_lake(snapshot_rows=2_000, changes_per_day=200, days=30, seed=3)
    changes = lake.changes
    assert lake.snapshot.num_rows == 2_000
    assert changes.num_rows == 6_000 + 60
    ids = Counter(changes.column("change_id").to_pylist())
    assert len(ids) == 6_000
    assert sorted(Counter(ids.values()).items()) == [(1, 5_940), (2, 60)]
    ops = Counter(changes.column("op").to_pylist())
    assert 0.25 < ops["INSERT"] / changes.num_rows < 0.35
    assert 0.25 < ops["REMOVE"] / changes.num_rows < 0.35
    assert len(set(changes.column("event_id").to_pylist())) == 40
    times = changes.column("change_time_us").to_pylist()[:6_000]
    assert times == sorted(times)
    assert times[0] >= T.timestamp() * 1_000_000
    assert times[-1] < (T + timedelta(days=30)).timestamp() * 1_000_000


def _brute_state(lake: Any, days: int) -> dict[tuple[str, str], str]:
    until = (T + timedelta(days=days)).timestamp() * 1_000_000
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in [*lake.snapshot.to_pylist(), *lake.changes.to_pylist()]:
        if row["change_time_us"] >= until:
            continue
        key = (row["event_id"], row["fan_id"])
        if key not in best or newer_order_key(row) > newer_order_key(best[key]):
            best[key] = row
    return {key: row["status"] for key, row in best.items() if row["op"] != "REMOVE"}


def test_the_curated_layout_is_the_curators(tmp_path: Path) -> None:
    lake = build_lake(snapshot_rows=500, changes_per_day=40, days=30, seed=4)
    files = write_curated_changes(lake, tmp_path)
    log = [pq.read_table(path) for path in files]
    assert sum(table.num_rows for table in log) == 1_200  # each change once
    for table in log:
        hours = pc.unique(pc.floor_temporal(table.column("change_time"), unit="hour"))
        assert len(hours) == 1, "one hour per file"
        keys = list(
            zip(*(table.column(name).to_pylist() for name in ("event_id", "fan_id", "change_time")), strict=True)
        )
        assert keys == sorted(keys)
    for days in (1, 30):
        state_files = write_registrations(lake, tmp_path, days)
        rows = [row for path in state_files for row in pq.read_table(path).to_pylist()]
        assert {(row["event_id"], row["fan_id"]): row["status"] for row in rows} == _brute_state(lake, days)
        assert all(len(set(pq.read_table(path).column("event_id").to_pylist())) == 1 for path in state_files)


def test_every_pair_of_queries_gives_the_same_answer() -> None:
    figures = query_figures(snapshot_rows=400, changes_per_day=30, days=30, seed=6, repeat=1)
    assert figures["changes"] == 900 + 9
    assert figures["demand"]["same_answer"] is True
    assert figures["demand"]["rows"] > 0
    assert figures["one_event"]["same_answer"] is True
    assert [row["same_answer"] for row in figures["current_state"].values()] == [True, True, True]
    assert list(figures["current_state"]) == ["1", "7", "30"]
    assert figures["curated_change_files"] <= 30 * 24
    assert figures["raw_objects"] >= figures["curated_change_files"]
    verdicts = checks(figures)
    assert len(verdicts) == 3


def _figures(demand: float, event: float, flat: float, same: bool = True) -> dict[str, Any]:
    row = {"raw_ms": 10.0, "curated_ms": 1.0, "rows": 1, "same_answer": same}
    return {
        "demand": {**row, "speedup": demand},
        "one_event": {**row, "speedup": event},
        "current_state": {"1": row, "7": row, "30": row},
        "flat_ratio": flat,
    }


@pytest.mark.parametrize(
    ("figures", "verdicts"),
    [
        (_figures(5.0, 20.0, 1.5), [True, True, True]),
        (_figures(4.9, 19.9, 1.51), [False, False, False]),
        (_figures(50.0, 200.0, 1.0, same=False), [False, False, False]),
    ],
)
def test_a_target_is_met_by_its_figure_and_its_answers(figures: dict[str, Any], verdicts: list[bool]) -> None:
    assert list(checks(figures).values()) == verdicts


def test_a_bad_argument_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--days", "7"]) == 2
    assert capsys.readouterr().err == "--days must be at least 30, got 7\n"
    assert main(["--repeat", "0"]) == 2
    assert capsys.readouterr().err == "--repeat must be at least 1, got 0\n"
