"""The curator's run model on fixed inputs, worked out by hand: rows, seconds, requests, and the load one run fits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops.curator_capacity import SPILL_MEMORY_MB, CuratorLoad, curator_run, largest_fitting_shards, scale_rows

# One shard at its limit, every 15 minutes, 720 raw objects a shard-hour, a 10M-row registrations (40 files).
LOAD = CuratorLoad(shards=1, records_per_second_per_shard=1_000, raw_objects_per_shard_hour=720)


def test_a_run_reads_the_interval_and_rewrites_its_hour_and_the_touched_state_files():
    run = curator_run(LOAD)

    assert run.changes == 900_000
    assert run.raw_rows == pytest.approx(909_000)  # 1 % delivered twice
    assert run.raw_objects == pytest.approx(180)
    assert run.committed_rows_rewritten == pytest.approx(1_350_000)  # 0, 1, 2, 3 runs' rows: 1.5 on average
    assert run.state_rows_rewritten == pytest.approx(10_000_000)  # 900,000 keys touch all 40 files
    assert run.seconds == pytest.approx(3 + 909_000 / 131_700 + 1_350_000 / 57_143 + 10_000_000 / 201_814)
    assert run.runs_per_day == 96
    assert run.glue_requests == 14
    # GETs: 180 raw objects, 3 committed hour files, 40 state files, 2 objects of each of 2 x 672 kept snapshots.
    assert run.s3_gets == pytest.approx(180 + 3 + 40 + 2_688)
    # PUTs and LISTs: 5 hour files, 40 state files, 11 commit files, 1 LIST of 360 raw objects, 2 x 3 of the
    # tables' locations (2,016 snapshot files and 30 data files each).
    assert run.s3_puts_and_lists == pytest.approx(5 + 40 + 11 + 1 + 6)
    assert run.gb_seconds(4_096) == pytest.approx(run.seconds * 4)


def test_the_hours_last_run_rewrites_three_runs_of_committed_rows():
    last = curator_run(LOAD, last_of_hour=True)

    assert last.committed_rows_rewritten == pytest.approx(2_700_000)
    hourly = curator_run(CuratorLoad(**{**LOAD.__dict__, "interval_minutes": 60}), last_of_hour=True)
    assert hourly.committed_rows_rewritten == 0
    assert hourly.changes == 3_600_000


def test_few_changes_touch_few_state_files_and_an_idle_run_costs_its_overhead_and_retention():
    quiet = curator_run(CuratorLoad(**{**LOAD.__dict__, "records_per_second_per_shard": 10 / 900}))  # 10 a run

    assert quiet.changes == pytest.approx(10)
    assert quiet.state_rows_rewritten == pytest.approx(10_000_000 * (1 - (39 / 40) ** 10))  # 2.24M of 10M
    idle = curator_run(
        CuratorLoad(**{**LOAD.__dict__, "records_per_second_per_shard": 0, "raw_objects_per_shard_hour": 0})
    )
    assert (idle.changes, idle.state_rows_rewritten, idle.seconds) == (0, 0, 3.0)
    assert idle.s3_gets == 2_688
    assert idle.s3_puts_and_lists == 11 + 6


def test_scale_rows_say_where_a_run_stops_fitting_its_timeout_and_memory():
    one, eight, nine, sixteen, twenty_four = scale_rows([1, 8, 9, 16, 24])

    assert (one.changes, nine.raw_rows) == (900_000, pytest.approx(8_181_000))
    assert one.seconds == pytest.approx(3 + 909_000 / 131_700 + 2_700_000 / 57_143 + 10_000_000 / 201_814)  # 106.7
    assert one.peak_mb == eight.peak_mb == 1_647  # bounded by design: the shard-hour run's peak
    assert (one.fits_time, one.fits_memory) == (True, True)
    assert (eight.fits_time, eight.fits_memory) == (True, True)  # 486 s
    assert (nine.fits_time, nine.fits_memory) == (True, True)  # 540 s
    assert scale_rows([10])[0].fits_time is True  # 594 s against 600
    assert scale_rows([11])[0].fits_time is False  # 648 s
    # an hour of 16 shards holds 58.2M rows, past the 32M its 64 slices hold at SLICE_ROWS: the peak beyond the
    # spill's 768 MB of memory grows with it
    assert sixteen.peak_mb == pytest.approx(768 + (1_647 - 768) * 14_544_000 * 4 / 32_000_000)  # 2,366.0 MB
    assert scale_rows([23])[0].fits_memory is True  # 3,065.2 MB
    assert twenty_four.fits_memory is False  # 3,165.0 MB
    # the hour's last run at nine shards spills its 8.18M raw rows and the hour's 24.3M committed rows
    assert nine.disk_mb == pytest.approx((8_181_000 + 3 * 8_100_000) * 175 / 1e6)  # 5,684 MB
    assert (nine.fits_disk, scale_rows([12])[0].fits_disk, scale_rows([13])[0].fits_disk) == (True, True, False)
    assert largest_fitting_shards() == (10, 23)
    # A faster curation rate moves only the raw rows' share: the rewrites keep an 11th shard out of 600 s.
    assert largest_fitting_shards(rows_per_second=250_000) == (10, 23)
    assert largest_fitting_shards(memory_mb=10_240)[1] == 69


def test_a_load_without_a_rate_is_refused():
    with pytest.raises(ValueError, match="curation rows per second must be positive"):
        CuratorLoad(shards=1, records_per_second_per_shard=1, raw_objects_per_shard_hour=1, rows_per_second=0)


def test_the_scale_table_in_the_docs_is_the_models_output():
    text = (Path(__file__).parents[2] / "docs" / "curation.md").read_text(encoding="utf-8")
    section = text[text.index("## Scale\n") :]
    lines = [line for line in section.splitlines() if re.match(r"^\| \d+ \|", line)]
    documented = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    shards = [int(row[0]) for row in documented]
    assert shards == [1, 2, 4, 8, 9, 10, 12, 13, 16, 19, 20]
    expected = [
        [
            str(row.shards),
            f"{row.changes / 1e6:.1f}M",
            f"{row.raw_rows / 1e6:.2f}M",
            f"{row.seconds:,.0f} s",
            "yes" if row.fits_time else "no",
            f"{row.peak_mb:,.0f} MB",
            "yes" if row.fits_memory else "no",
            f"{row.disk_mb:,.0f} MB",
            "yes" if row.fits_disk else "no",
        ]
        for row in scale_rows(shards)
    ]
    assert documented == expected
    assert "up to **10 shards** at their limit, its local disk up to **12** and its memory up to\n**23**" in section
    assert "**131,700 rows/s**" in section


def test_the_models_local_disk_is_the_functions():
    from components.curation import EPHEMERAL_STORAGE_MB as FUNCTION_DISK  # noqa: PLC0415
    from ops.curator_capacity import EPHEMERAL_STORAGE_MB  # noqa: PLC0415

    assert EPHEMERAL_STORAGE_MB == FUNCTION_DISK


def test_the_models_spill_memory_is_the_curators():
    from curator.spill import MEMORY_BYTES  # noqa: PLC0415

    assert SPILL_MEMORY_MB * 2**20 == MEMORY_BYTES
