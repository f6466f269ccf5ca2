"""The compaction benchmark measures a real compaction: its counts add up, and bad arguments are refused."""

from __future__ import annotations

import pytest

from bench import compaction as bench


@pytest.mark.slow
def test_measure_compacts_a_shard_hour_with_redelivered_rows() -> None:
    figures = bench.measure(60_000, 12, 0.05, 7)

    assert (figures["rows_in"], figures["rows_out"], figures["duplicates_removed"]) == (63_000, 60_000, 3_000)
    assert figures["objects_in"] == 13
    assert figures["cpu_seconds"] > 0
    assert figures["output_mb"] > 0
    assert figures["peak_growth_mb"] >= 0


def test_recommended_memory_is_a_lambda_size_with_margin() -> None:
    assert bench.recommended_memory_mb({"runtime_baseline_mb": 73, "peak_growth_mb": 1104}) == 2048
    assert bench.recommended_memory_mb({"runtime_baseline_mb": 73, "peak_growth_mb": 400}) == 1024
    assert bench.recommended_memory_mb({"runtime_baseline_mb": 73, "peak_growth_mb": 9000}) == 10240


@pytest.mark.parametrize("argv", [["--rows", "0"], ["--duplicates", "1.5"], ["--cores", "0"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
