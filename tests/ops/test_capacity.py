"""Capacity and cost arithmetic on fixed inputs, with the numbers worked out by hand."""

from __future__ import annotations

import io
import json

import pytest

from ops import capacity
from ops.capacity import PipelineShape

# 5,000 records/s per invocation, 150 ms per batch overhead, batches of 500: a full batch takes 0.25 s,
# so one shard x parallelization slot processes 2,000 records/s.
SHAPE = PipelineShape(
    records_per_second_per_invocation=5_000,
    shards=4,
    on_demand=True,
    parallelization_factor=1,
    batch_size=500,
    batching_window_seconds=5,
    memory_mb=1_024,
    record_bytes=1_024,
    invocation_overhead_seconds=0.15,
)


def test_full_batch_duration_and_slot_throughput():
    assert SHAPE.batch_seconds == pytest.approx(0.25)
    assert SHAPE.records_per_second_per_slot == pytest.approx(2_000)
    assert SHAPE.shard_write_records == 1_000  # 1 KiB records: the 1,000 records/s limit binds first


def test_large_records_hit_the_megabyte_limit_before_the_record_limit():
    shape = PipelineShape(**{**SHAPE.__dict__, "record_bytes": 4_096})

    assert shape.shard_write_records == pytest.approx(256)


def test_sustained_rate_is_the_lower_of_stream_and_processing():
    result = capacity.capacity(SHAPE)

    assert result.stream_write == pytest.approx(4_000)
    assert result.processing == pytest.approx(8_000)
    assert result.concurrency == 4
    assert result.sustained == pytest.approx(4_000)
    assert result.bottleneck == "stream writes (shards)"


def test_slow_handler_makes_lambda_the_bottleneck():
    shape = PipelineShape(**{**SHAPE.__dict__, "records_per_second_per_invocation": 1_000})  # 0.65 s per batch

    result = capacity.capacity(shape)

    assert result.processing == pytest.approx(4 * 500 / 0.65)
    assert result.bottleneck == "processing (Lambda)"


def test_on_sale_peak_needs_nine_shards_and_drains_late_as_is():
    # 5,000,000 registrations in 10 minutes = 8,333 records/s.
    peak = capacity.peak_plan(SHAPE, records=5_000_000, minutes=10, iterator_age_alarm_seconds=300)

    assert peak.required_rate == pytest.approx(8_333.33, rel=1e-4)
    assert peak.shards_needed == 9
    assert peak.parallelization_needed == 1  # 9 shards x 2,000 records/s per slot is enough
    assert peak.concurrency_needed == 9
    assert peak.drain_minutes_as_is == pytest.approx(5_000_000 / 4_000 / 60)  # 20.8 min at 4,000/s
    assert peak.peak_iterator_age_minutes_as_is == pytest.approx(5_000_000 / 4_000 / 60 - 10)
    assert any("pre-warm" in line and "9 shards" in line for line in peak.advice)
    assert any("IteratorAge alarm (300 s) will fire" in line for line in peak.advice)


def test_processing_bound_peak_raises_parallelization_before_shards():
    shape = PipelineShape(**{**SHAPE.__dict__, "on_demand": False, "records_per_second_per_invocation": 500})
    # 1.15 s per batch: 434.8 records/s per slot; the stream has room for 4,000/s.
    peak = capacity.peak_plan(shape, records=2_400_000, minutes=10, iterator_age_alarm_seconds=300)  # 4,000/s

    assert peak.shards_needed == 4
    assert peak.parallelization_needed == 3  # ceil(4,000 / (4 x 434.8))
    assert "raise parallelizationFactor to 3" in " ".join(peak.advice)


def test_parallelization_is_capped_at_ten_and_the_rest_comes_from_shards():
    shape = PipelineShape(**{**SHAPE.__dict__, "on_demand": False, "records_per_second_per_invocation": 100})
    # 5.15 s per batch: 97.09 records/s per slot; 971 records/s per shard at factor 10.
    peak = capacity.peak_plan(shape, records=6_000_000, minutes=10, iterator_age_alarm_seconds=300)  # 10,000/s

    assert peak.parallelization_needed == 10
    assert peak.shards_needed == 11  # ceil(10,000 / 970.9)
    assert "raise the stream to 11 shards" in " ".join(peak.advice)


def test_a_short_overshoot_may_be_left_to_the_stream_buffer():
    shape = PipelineShape(**{**SHAPE.__dict__, "on_demand": False, "shards": 8})  # 8,000/s sustained

    peak = capacity.peak_plan(shape, records=5_000_000, minutes=10, iterator_age_alarm_seconds=300)  # 8,333/s

    assert peak.shards_needed == 9
    assert peak.peak_iterator_age_minutes_as_is == pytest.approx(5_000_000 / 8_000 / 60 - 10)  # 0.42 min
    assert peak.advice[0] == "raise the stream to 9 shards before the on-sale (UpdateShardCount, then back)"
    assert peak.advice[1].startswith("or leave it: the stream buffers the burst and the last change waits 0.4 min")


def test_a_burst_that_fits_needs_nothing():
    peak = capacity.peak_plan(SHAPE, records=1_000_000, minutes=10, iterator_age_alarm_seconds=300)

    assert peak.advice == ["nothing to raise: the burst fits today's capacity"]
    assert peak.peak_iterator_age_minutes_as_is == 0


def test_cost_per_million_changes_on_demand_next_to_firehose():
    cost = capacity.cost_per_million(SHAPE)

    # 2,000 invocations of 0.25 s at 1 GB = 500 GB-s.
    assert cost.lambda_requests == pytest.approx(2_000 * 0.20 / 1e6)  # 0.0004
    assert cost.lambda_duration == pytest.approx(500 * 0.0000133334)  # 0.0066667
    assert cost.s3_puts == pytest.approx(2_000 * 0.005 / 1_000)  # 0.01
    gib = 1_000_000 * 1_024 / 1_024**3  # 0.9537 GiB at 1 KiB per record
    assert cost.kinesis == pytest.approx(gib * (0.08 + 0.04))  # 0.11444
    assert cost.kinesis_fixed_monthly == pytest.approx(0.04 * 730)
    # The curator every 15 min (ops.curator_capacity): a run curates 3,600,000 changes (4 shards x 1,000/s x 900 s);
    # a million changes are 1/3.6 of a run, charged what the run costs beyond one that finds nothing: 27.61 s for
    # its 3,636,000 raw rows, 94.50 s rewriting 5,400,000 committed rows of its hour, 49.55 s rewriting all 40
    # files of a 10M-row registrations, at 4,096 MB.
    run = cost.curator
    assert (run.changes, run.raw_rows, run.committed_rows_rewritten) == (3_600_000, 3_636_000, 5_400_000)
    seconds = 3_636_000 / 131_700 + 5_400_000 / 57_143 + 10_000_000 / 201_814  # 171.66 s
    assert run.seconds == pytest.approx(3 + seconds)
    assert cost.curator_duration == pytest.approx(seconds * 4 * 0.0000133334 / 3.6)  # 0.002543
    # Beyond an idle run: a GET per raw object (7,200 a shard-hour: 7,200 in the quarter-hour of 4 shards), 11
    # committed files of the hour read, 40 state files read; 18 hour files and 40 state files written, 11 commit
    # files, 15 LISTs of the raw prefix (14,400 objects listed) and 6 of the two tables' locations, less the
    # idle run's 11 commit files and 6 location LISTs.
    assert run.s3_gets == pytest.approx(7_200 + 11 + 40 + 2 * 672 * 2)
    assert run.s3_puts_and_lists == pytest.approx(18 + 40 + 11 + 15 + 6)
    assert cost.curator_s3_requests == pytest.approx((7_251 * 0.0004 / 1_000 + 73 * 0.005 / 1_000) / 3.6)
    # 2,920 runs a month whatever the traffic: a request, 3 s at 4 GB, retention reading 2 objects of each of the
    # 672 kept snapshots of both tables, 11 commit files and 6 LISTs, 14 Glue calls.
    idle = 0.2e-6 + 3 * 4 * 0.0000133334 + 2_688 * 0.0004 / 1_000 + 17 * 0.005 / 1_000 + 14 * 1e-6
    assert cost.curator_fixed_monthly == pytest.approx(2_920 * idle)  # $3.90
    # The stream is not in it: both pipelines pay it.
    curator = cost.curator_s3_requests + cost.curator_duration
    assert cost.pipeline == pytest.approx(0.0004 + 0.0066667 + 0.01 + curator, rel=1e-5)
    firehose_gib = 1_000_000 * 5 * 1_024 / 1_024**3  # every record billed as 5 KB
    assert cost.firehose_ingest == pytest.approx(firehose_gib * 0.029)
    assert cost.firehose_conversion == pytest.approx(firehose_gib * 0.018)
    assert cost.firehose == pytest.approx(0.224113, rel=1e-5)
    assert cost.firehose_ratio == pytest.approx(0.224113 / (0.0170667 + curator), rel=1e-4)  # 10x: batches of 500


def test_the_6_mb_event_limit_ends_a_batch_before_10000_records():
    shape = PipelineShape(**{**SHAPE.__dict__, "batch_size": 10_000})

    assert shape.event_bytes_per_record == 4 * 342 + 600  # base64 of 1,024 bytes, plus the event's own fields
    assert shape.records_per_invocation == 6 * 1_024**2 // 1_968  # 3,196
    assert shape.batch_seconds == pytest.approx(0.15 + 3_196 / 5_000)
    small = PipelineShape(**{**SHAPE.__dict__, "batch_size": 10_000, "record_bytes": 200})
    assert small.records_per_invocation == 6 * 1_024**2 // (4 * 67 + 600)  # 7,245: still under 10,000


def test_big_batches_and_the_window_set_the_floor_of_the_fifty_times_target():
    # The curator as measured (131,700 rows/s, its hour rewritten four times an hour, a 10M-row registrations
    # rewritten every run) costs more per change than the stream handler: Firehose is only 39x as dear.
    measured = PipelineShape(**{**SHAPE.__dict__, "batch_size": 10_000, "records_per_second_per_invocation": 17_800})
    assert capacity.cost_per_million(measured).firehose_ratio == pytest.approx(38.90, abs=0.01)
    assert capacity.lowest_rate_meeting(measured) is None
    # A curator at the 250,000 rows/s, hourly, over an empty registrations: the target holds at load.
    shape = PipelineShape(
        **{
            **measured.__dict__,
            "curation_rows_per_second": 250_000,
            "curation_interval_minutes": 60,
            "state_rows": 0,
        }
    )

    cost = capacity.cost_per_million(shape)

    assert cost.objects_per_shard_hour == pytest.approx(3_600_000 / 3_196)  # 1,126 objects per shard-hour
    assert cost.s3_puts == pytest.approx(1_000_000 / 3_196 * 0.005 / 1_000)
    assert cost.curator.committed_rows_rewritten == 0  # one run an hour: nothing committed in its hour yet
    assert cost.firehose_ratio >= 50
    # Light traffic: the 5 s window closes a batch 720 times an hour, whatever it holds.
    assert shape.objects_per_shard_hour(1) == pytest.approx(720)
    slow = capacity.cost_per_million(shape, records_per_second_per_shard=10)
    assert slow.objects_per_shard_hour == pytest.approx(720)
    assert slow.s3_puts == pytest.approx(1_000_000 / 50 * 0.005 / 1_000)  # 50 changes per object
    lowest = capacity.lowest_rate_meeting(shape)
    assert lowest is not None
    assert capacity.cost_per_million(shape, records_per_second_per_shard=lowest).firehose_ratio >= 50
    assert capacity.cost_per_million(shape, records_per_second_per_shard=lowest - 1).firehose_ratio < 50
    assert capacity.lowest_rate_meeting(SHAPE) is None  # batches of 500 miss the target even at load


def test_cost_per_million_changes_provisioned():
    shape = PipelineShape(**{**SHAPE.__dict__, "on_demand": False})

    cost = capacity.cost_per_million(shape)

    assert cost.kinesis == pytest.approx(1_000_000 * 0.014 / 1e6)  # one 25 KB payload unit per record
    assert cost.kinesis_fixed_monthly == pytest.approx(4 * 0.015 * 730)


def test_records_per_second_read_from_a_benchmark_results_file(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"handler": {"records": 50_000, "records_per_second_per_invocation": 4_321.5}}))

    assert capacity.records_per_second_from_bench(path) == 4_321.5


def test_records_per_second_of_the_largest_batch_from_the_benchmark_output(tmp_path):
    figures = {
        "cpus": 2,
        "batches": [
            {"records": 1_000, "handler_ms": 30.0, "records_per_second": 33_333},
            {"records": 10_000, "handler_ms": 200.0, "records_per_second": 50_000},
        ],
        "import_ms": 210.0,
    }
    path = tmp_path / "bench.txt"
    path.write_text("records  handler ms  records/s\n   10000       200.0     50,000\n" + json.dumps(figures, indent=2))

    assert capacity.records_per_second_from_bench(path) == 50_000


def test_benchmark_figures_piped_on_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"batches": [{"records": 10, "records_per_second": 7}]})))

    assert capacity.main(["qa1", "--bench-results", "-", "--shards", "2", "--peak-records", "100"]) == 0
    # Measured on one core; at 1,024 MB Lambda gives 1,024 / 1,769 of a vCPU: 7 x 0.579 = 4.05 records/s.
    assert "4 records/s per invocation" in capsys.readouterr().out


def test_a_one_core_figure_is_scaled_to_the_functions_vcpu_share(monkeypatch, capsys):
    figures = {"cpus": 1, "batches": [{"records": 10_000, "records_per_second": 29_693}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(figures)))

    assert capacity.main(["prod1", "--bench-results", "-", "--on-demand"]) == 0
    assert capacity.lambda_vcpus(1_024) == pytest.approx(0.5789, rel=1e-3)
    assert capacity.lambda_vcpus(1_769) == 1.0
    out = capsys.readouterr().out
    assert f"{29_693 * 1_024 / 1_769:,.0f} records/s per invocation" in out  # 17,188
    assert "Firehose costs 39x this pipeline (MISSES the 50x target)" in out  # the curator as measured


def test_benchmark_file_without_the_number_is_refused(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"seconds": 3}))

    with pytest.raises(ValueError, match="no records_per_second_per_invocation"):
        capacity.records_per_second_from_bench(path)


def test_invalid_shapes_are_refused():
    with pytest.raises(ValueError, match="run python -m bench"):
        PipelineShape(**{**SHAPE.__dict__, "records_per_second_per_invocation": 0})
    with pytest.raises(ValueError, match=r"parallelization factor must be 1\.\.10"):
        PipelineShape(**{**SHAPE.__dict__, "parallelization_factor": 11})


def test_command_reads_the_stack_settings_and_prints_the_report(capsys):
    status = capacity.main(["prod1", "--records-per-second", "5000", "--on-demand", "--peak-records", "5000000"])

    assert status == 0
    out = capsys.readouterr().out
    assert "batch 10000, window 5 s, parallelization 1, 1024 MB arm64" in out  # prod1's stack file and defaults
    assert "full batch          3,196 records (1,968 B each in the event; Lambda stops a batch at 6 MB)" in out
    assert "sustained           4,000 records/s = 240,000/min (limited by stream writes (shards))" in out
    assert "needs               9 shards x parallelization 1 = 9 concurrent invocations" in out
    assert "light traffic       a change reaches S3 within ~5.8 s (batching window + one batch)" in out
    assert "curator Lambda        0.00254   (131,700 rows/s, 4096 MB; + 3.90/month for the runs themselves" in out
    assert "curator run         3,600,000 changes every 15 min at full load: 175 s at 131,700 rows/s" in out
    assert "Firehose + Parquet    0.22411" in out
    assert "Firehose costs 29x this pipeline (MISSES the 50x target)" in out  # a slow handler: 5,000 records/s


def test_command_without_a_stream_or_aws_says_what_to_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STACK_OUTPUTS_FILE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi CLI

    assert capacity.main(["qa1", "--records-per-second", "5000"]) == 2
    assert "pass --shards N or --on-demand" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["2000000", "1048577"])
def test_an_impossible_record_size_is_one_line(size: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        capacity.main(["prod1", "--records-per-second", "5000", "--on-demand", "--record-bytes", size])

    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"python -m ops.capacity: error: argument --record-bytes: {int(size):,} bytes is above ")
    assert "the largest change record, 1,048,576 bytes" in line


def test_the_largest_possible_record_size_is_estimated(capsys: pytest.CaptureFixture[str]):
    argv = ["prod1", "--records-per-second", "1", "--on-demand", "--record-bytes", str(capacity.MAX_RECORD_BYTES)]

    assert capacity.main(argv) == 0

    assert "records/s per shard at 1048576 B" in capsys.readouterr().out
