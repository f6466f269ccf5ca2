"""What change rate a stack absorbs, what to raise for an on-sale peak, and what a million changes cost.

    python -m ops.capacity prod1 --records-per-second 2500                 # stream read from AWS
    python -m ops.capacity prod1 --records-per-second 2500 --shards 4      # offline
    python -m bench --json | python -m ops.capacity qa1 --bench-results - --on-demand --peak-records 5000000

Inputs: the handler's measured records per second per invocation (``python -m bench``), the stream's shards
(provisioned, or on-demand's current shards), the mapping's batch size, batching window and parallelization
factor plus the function's memory from the stack file (``components.settings``), and the curator's runs: one
every ``curationIntervalMinutes`` at ``curationMemoryMb``, its measured rows per second and requests
(``ops.curator_capacity``).
Model, assumptions and prices: docs/architecture.md, "Capacity and cost".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.cli import CommandParser, integer_at_least, number_above, number_at_least, stack_name
from ops.curator_capacity import CURATION_ROWS_PER_SECOND, CuratorLoad, CuratorRun, curator_run
from ops.outputs import OutputsError

__all__ = [
    "EVENT_OVERHEAD_BYTES",
    "INVOCATION_PAYLOAD_BYTES",
    "MAX_PARALLELIZATION_FACTOR",
    "MAX_RECORD_BYTES",
    "PRICES_US_EAST_1",
    "SHARD_WRITE_BYTES",
    "SHARD_WRITE_RECORDS",
    "Capacity",
    "CostPerMillion",
    "Peak",
    "PipelineShape",
    "Prices",
    "capacity",
    "cost_per_million",
    "lambda_vcpus",
    "lowest_rate_meeting",
    "peak_plan",
    "record_size",
    "records_per_second_from_bench",
    "render",
]

SHARD_WRITE_RECORDS = 1_000  # records per second a shard accepts
SHARD_WRITE_BYTES = 1024 * 1024  # bytes per second a shard accepts (1 MiB)
MAX_PARALLELIZATION_FACTOR = 10  # concurrent batches per shard Lambda allows
ON_DEMAND_INITIAL_SHARDS = 4  # a new on-demand stream accepts 4 MiB/s or 4,000 records/s
KIB = 1024
GIB = 1024**3
# The largest change record the stream can carry: DynamoDB items are at most 400 KB, a change record holds the new
# and the old image of one (plus keys and metadata, in typed JSON: about 800 KB at most), and a Kinesis record is at
# most 1 MiB. An average above it cannot happen; the estimate would be for a pipeline that cannot exist.
MAX_RECORD_BYTES = 1024 * KIB
HOURS_PER_MONTH = 730
# Lambda invokes synchronously: an event source mapping's batch stops at 6 MB of event, whatever the batch size.
INVOCATION_PAYLOAD_BYTES = 6 * 1024 * 1024
# Bytes an event carries per record besides its base64 data (sequence number, partition key, eventID, ARNs):
# 597 measured on the sandbox's change records (1,817 B per record in the event, 1,220 of them base64 data).
EVENT_OVERHEAD_BYTES = 600
# Lambda allocates CPU in proportion to memory: 1,769 MB is one full vCPU (1,024 MB about 0.58).
MB_PER_VCPU = 1_769


@dataclass(frozen=True)
class Prices:
    """List prices in USD, us-east-1 (sources and dates: docs/architecture.md, "Capacity and cost")."""

    lambda_arm_gb_second: float = 0.0000133334  # first 7.5 billion GB-s per month
    lambda_request: float = 0.20 / 1_000_000
    kinesis_on_demand_gb_in: float = 0.08
    kinesis_on_demand_gb_out: float = 0.04
    kinesis_on_demand_stream_hour: float = 0.04
    kinesis_shard_hour: float = 0.015
    kinesis_put_payload_unit: float = 0.014 / 1_000_000  # per 25 KB unit
    s3_put: float = 0.005 / 1_000  # PUT, COPY, POST and LIST requests, S3 Standard
    s3_get: float = 0.0004 / 1_000  # GET and all other requests; DELETE is free
    firehose_ingest_gb: float = 0.029  # first 500 TB per month, records rounded up to 5 KB
    firehose_format_conversion_gb: float = 0.018  # also on 5 KB-rounded ingested bytes
    glue_request: float = 1.00 / 1_000_000  # Data Catalog requests above the first million a month (free)


PRICES_US_EAST_1 = Prices()


@dataclass(frozen=True)
class PipelineShape:
    """The deployed pipeline, as far as throughput and cost are concerned."""

    records_per_second_per_invocation: float  # measured by the benchmark
    shards: int
    on_demand: bool
    parallelization_factor: int
    batch_size: int
    batching_window_seconds: int
    memory_mb: int
    record_bytes: int = 1_024  # average change record on the stream
    invocation_overhead_seconds: float = 0.15  # per batch: start, S3 PUT of the Parquet object, checkpoint
    curation_rows_per_second: float = CURATION_ROWS_PER_SECOND  # measured on one core
    curation_memory_mb: int = 4_096
    curation_interval_minutes: int = 15
    state_rows: int = 10_000_000  # live registrations: the files of registrations a run's keys fall in are rewritten

    def __post_init__(self) -> None:
        if not (math.isfinite(self.records_per_second_per_invocation) and self.records_per_second_per_invocation > 0):
            raise ValueError(
                f"records per second per invocation must be a positive number, got "
                f"{self.records_per_second_per_invocation!r} (run python -m bench)"
            )
        if not (math.isfinite(self.invocation_overhead_seconds) and self.invocation_overhead_seconds >= 0):
            raise ValueError(f"overhead per batch must be >= 0 s, got {self.invocation_overhead_seconds!r}")
        if self.shards < 1 or self.batch_size < 1 or self.record_bytes < 1:
            raise ValueError("shards, batch size and record size must be at least 1")
        if not 1 <= self.parallelization_factor <= MAX_PARALLELIZATION_FACTOR:
            raise ValueError(f"parallelization factor must be 1..{MAX_PARALLELIZATION_FACTOR}")
        if self.curation_rows_per_second <= 0:
            raise ValueError("curation rows per second must be positive (measured on one core)")

    @property
    def event_bytes_per_record(self) -> int:
        """Bytes one record takes in the Lambda event: base64 of the record plus the event's own fields."""
        return 4 * math.ceil(self.record_bytes / 3) + EVENT_OVERHEAD_BYTES

    @property
    def records_per_invocation(self) -> int:
        """A full batch: ``batchSize`` records, or fewer when 6 MB of event is reached first."""
        return max(1, min(self.batch_size, INVOCATION_PAYLOAD_BYTES // self.event_bytes_per_record))

    @property
    def batch_seconds(self) -> float:
        """Lambda duration of one full batch."""
        return self.invocation_overhead_seconds + self.records_per_invocation / self.records_per_second_per_invocation

    @property
    def records_per_second_per_slot(self) -> float:
        """Throughput of one shard x parallelization slot when batches are full (sustained load)."""
        return self.records_per_invocation / self.batch_seconds

    def objects_per_shard_hour(self, records_per_second: float) -> float:
        """Parquet objects one shard writes per hour at a rate: one per invocation (one hour partition each).

        A batch closes when it is full or when the batching window ends, whichever comes first.
        """
        if records_per_second <= 0:
            return 0.0
        seconds_per_batch = min(
            max(self.batching_window_seconds, self.batch_seconds), self.records_per_invocation / records_per_second
        )
        return 3600 / max(seconds_per_batch, self.batch_seconds)

    @property
    def shard_write_records(self) -> float:
        """Records per second one shard accepts at this record size (1,000 records or 1 MiB)."""
        return min(SHARD_WRITE_RECORDS, SHARD_WRITE_BYTES / self.record_bytes)


@dataclass(frozen=True)
class Capacity:
    """Sustained change rate and which limit sets it."""

    stream_write: float
    processing: float
    concurrency: int

    @property
    def sustained(self) -> float:
        return min(self.stream_write, self.processing)

    @property
    def bottleneck(self) -> str:
        return "stream writes (shards)" if self.stream_write <= self.processing else "processing (Lambda)"


def capacity(shape: PipelineShape) -> Capacity:
    """Records per second the stack absorbs indefinitely, and the Lambda concurrency that takes."""
    slots = shape.shards * shape.parallelization_factor
    return Capacity(
        stream_write=shape.shards * shape.shard_write_records,
        processing=slots * shape.records_per_second_per_slot,
        concurrency=slots,
    )


@dataclass(frozen=True)
class Peak:
    """What an on-sale burst needs, and what happens without changes."""

    records: int
    seconds: float
    required_rate: float
    shards_needed: int
    parallelization_needed: int
    concurrency_needed: int
    drain_minutes_as_is: float  # time to process the burst with today's capacity
    peak_iterator_age_minutes_as_is: float  # IteratorAge when the backlog is drained, today (burst end to drain end)
    advice: list[str] = field(default_factory=list)


def peak_plan(shape: PipelineShape, records: int, minutes: float, iterator_age_alarm_seconds: int) -> Peak:
    """Shards and parallelization for a burst of ``records`` in ``minutes``; backlog if nothing is raised."""
    if not (math.isfinite(minutes) and minutes > 0) or records < 1:
        raise ValueError(f"a burst needs >= 1 record over > 0 minutes, got {records} in {minutes!r}")
    seconds = minutes * 60
    rate = records / seconds
    today = capacity(shape)
    shards = max(shape.shards, math.ceil(rate / shape.shard_write_records))
    per_shard_processing = shape.records_per_second_per_slot
    parallelization = max(shape.parallelization_factor, math.ceil(rate / (shards * per_shard_processing)))
    if parallelization > MAX_PARALLELIZATION_FACTOR:
        parallelization = MAX_PARALLELIZATION_FACTOR
        shards = max(shards, math.ceil(rate / (MAX_PARALLELIZATION_FACTOR * per_shard_processing)))
    drain_seconds = max(seconds, records / today.sustained)
    # Written at `rate`, read at `sustained`: the oldest unread record's age grows until the backlog is gone,
    # and then equals drain time minus burst time (the last record waited that long).
    backlog_seconds = drain_seconds - seconds
    advice: list[str] = []
    if shards > shape.shards:
        if shape.on_demand:
            advice.append(
                f"on-demand stream: it doubles its previous 30-day peak without throttling; for {rate:,.0f}/s "
                f"(~{shards} shards) pre-warm it ahead of the on-sale or switch it to provisioned with {shards} shards"
            )
        else:
            advice.append(f"raise the stream to {shards} shards before the on-sale (UpdateShardCount, then back)")
    if parallelization > shape.parallelization_factor:
        advice.append(f"raise parallelizationFactor to {parallelization} in Pulumi.<stack>.yaml (order kept per key)")
    if not advice:
        advice.append("nothing to raise: the burst fits today's capacity")
    elif backlog_seconds <= iterator_age_alarm_seconds:
        advice.append(
            f"or leave it: the stream buffers the burst and the last change waits {backlog_seconds / 60:,.1f} min, "
            f"under the IteratorAge alarm ({iterator_age_alarm_seconds} s)"
        )
    if backlog_seconds > iterator_age_alarm_seconds:
        advice.append(
            f"as is, the last change waits {backlog_seconds / 60:,.1f} min: the IteratorAge alarm "
            f"({iterator_age_alarm_seconds} s) will fire"
        )
    return Peak(
        records=records,
        seconds=seconds,
        required_rate=rate,
        shards_needed=shards,
        parallelization_needed=parallelization,
        concurrency_needed=shards * parallelization,
        drain_minutes_as_is=drain_seconds / 60,
        peak_iterator_age_minutes_as_is=backlog_seconds / 60,
        advice=advice,
    )


@dataclass(frozen=True)
class CostPerMillion:
    """USD per million changes (variable costs), fixed monthly costs apart, and Firehose for the same changes."""

    lambda_requests: float
    lambda_duration: float
    s3_puts: float
    curator_s3_requests: float
    curator_duration: float
    kinesis: float
    kinesis_fixed_monthly: float
    curator_fixed_monthly: float
    """The curator's runs whatever the traffic: a run's request, overhead seconds, retention and Glue calls."""
    curator: CuratorRun
    """One run at the load priced (its rows, seconds, requests)."""
    firehose_ingest: float
    firehose_conversion: float
    objects_per_shard_hour: float

    @property
    def pipeline(self) -> float:
        """What this stack adds to the stream: Lambda, S3 requests and the curator (the stream both pay)."""
        return (
            self.lambda_requests
            + self.lambda_duration
            + self.s3_puts
            + self.curator_s3_requests
            + self.curator_duration
        )

    @property
    def firehose(self) -> float:
        """Amazon Data Firehose on the same stream, converting to Parquet: ingestion plus format conversion."""
        return self.firehose_ingest + self.firehose_conversion

    @property
    def firehose_ratio(self) -> float:
        """How many times cheaper this pipeline is than Firehose for the same changes (target: at least 50)."""
        return self.firehose / self.pipeline


def cost_per_million(
    shape: PipelineShape, prices: Prices = PRICES_US_EAST_1, records_per_second_per_shard: float | None = None
) -> CostPerMillion:
    """Cost of one million changes with each shard at ``records_per_second_per_shard`` (default: its limit).

    At the limit every batch is full; below it the batching window closes batches first, so each invocation
    carries fewer records and a million changes take more invocations and objects.

    Each invocation writes one Parquet object (one hour partition; a batch spans about a second of a shard, so a
    second object at an hour's end is rare). The curator runs every ``curation_interval_minutes``
    (``ops.curator_capacity``): what a run at this load costs beyond a run that finds nothing is charged to its
    changes; the runs themselves (request, overhead, retention, Glue) are the fixed monthly part.
    """
    changes = 1_000_000
    rate = shape.shard_write_records if records_per_second_per_shard is None else records_per_second_per_shard
    if rate <= 0:
        raise ValueError(f"records per second per shard must be positive, got {rate}")
    objects_per_shard_hour = shape.objects_per_shard_hour(rate)
    shard_hours = changes / (rate * 3600)
    invocations = objects_per_shard_hour * shard_hours
    records_per_invocation = changes / invocations
    batch_seconds = shape.invocation_overhead_seconds + records_per_invocation / shape.records_per_second_per_invocation
    gb_seconds = invocations * batch_seconds * shape.memory_mb / 1024
    run, idle = (curator_run(_curator_load(shape, per_shard, objects_per_shard_hour)) for per_shard in (rate, 0.0))
    per_million = changes / run.changes
    run_s3 = run.s3_gets * prices.s3_get + run.s3_puts_and_lists * prices.s3_put
    idle_s3 = idle.s3_gets * prices.s3_get + idle.s3_puts_and_lists * prices.s3_put
    gb_second = shape.curation_memory_mb / 1024 * prices.lambda_arm_gb_second
    runs_per_month = run.runs_per_day * HOURS_PER_MONTH / 24
    billed_kib = math.ceil(shape.record_bytes / KIB)  # Kinesis rounds each record up to 1 KiB
    if shape.on_demand:
        gib = changes * billed_kib * KIB / GIB
        kinesis = gib * (prices.kinesis_on_demand_gb_in + prices.kinesis_on_demand_gb_out)
        fixed = prices.kinesis_on_demand_stream_hour * HOURS_PER_MONTH
    else:
        payload_units = changes * math.ceil(shape.record_bytes / (25 * KIB))
        kinesis = payload_units * prices.kinesis_put_payload_unit
        fixed = shape.shards * prices.kinesis_shard_hour * HOURS_PER_MONTH
    firehose_gib = changes * math.ceil(shape.record_bytes / (5 * KIB)) * 5 * KIB / GIB  # 5 KB increments
    return CostPerMillion(
        lambda_requests=invocations * prices.lambda_request,
        lambda_duration=gb_seconds * prices.lambda_arm_gb_second,
        s3_puts=invocations * prices.s3_put,
        curator_s3_requests=(run_s3 - idle_s3) * per_million,
        curator_duration=(run.seconds - idle.seconds) * gb_second * per_million,
        kinesis=kinesis,
        kinesis_fixed_monthly=fixed,
        curator_fixed_monthly=runs_per_month
        * (prices.lambda_request + idle.seconds * gb_second + idle_s3 + idle.glue_requests * prices.glue_request),
        curator=run,
        firehose_ingest=firehose_gib * prices.firehose_ingest_gb,
        firehose_conversion=firehose_gib * prices.firehose_format_conversion_gb,
        objects_per_shard_hour=objects_per_shard_hour,
    )


def _curator_load(shape: PipelineShape, per_shard: float, objects_per_shard_hour: float) -> CuratorLoad:
    return CuratorLoad(
        shards=shape.shards,
        records_per_second_per_shard=per_shard,
        raw_objects_per_shard_hour=objects_per_shard_hour if per_shard else 0.0,
        interval_minutes=shape.curation_interval_minutes,
        state_rows=shape.state_rows,
        rows_per_second=shape.curation_rows_per_second,
    )


def lowest_rate_meeting(shape: PipelineShape, ratio: float = 50.0, prices: Prices = PRICES_US_EAST_1) -> float | None:
    """The lowest changes/s per shard (to 1/s) at which Firehose still costs ``ratio`` times this pipeline."""
    if cost_per_million(shape, prices).firehose_ratio < ratio:
        return None
    low, high = 1, math.floor(shape.shard_write_records)  # the ratio grows with the rate: meets at high
    if cost_per_million(shape, prices, low).firehose_ratio >= ratio:
        return float(low)
    while high - low > 1:
        middle = (low + high) // 2
        if cost_per_million(shape, prices, middle).firehose_ratio >= ratio:
            high = middle
        else:
            low = middle
    return float(high)


def lambda_vcpus(memory_mb: int) -> float:
    """The vCPUs a function of ``memory_mb`` gets: in proportion to memory, one at 1,769 MB."""
    return memory_mb / MB_PER_VCPU


def _bench_document(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        # `python -m bench --json` prints its table, then the figures as one JSON object.
        start = text.find("\n{")
        if start < 0:
            raise ValueError(f"{source}: no JSON figures found (run python -m bench --json)") from None
        return json.loads(text[start + 1 :])


def records_per_second_from_bench(path: Path | str) -> float:
    """The handler's records per second per invocation from the benchmark's figures (``-`` reads stdin).

    Takes the largest batch the benchmark measured (closest to steady state); also accepts a plain
    ``records_per_second_per_invocation`` or ``records_per_second`` value anywhere in the document.
    """
    source = "stdin" if str(path) == "-" else str(path)
    text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    document = _bench_document(text, source)
    if isinstance(document, dict) and isinstance(document.get("batches"), list):
        rows = [row for row in document["batches"] if isinstance(row, dict) and row.get("records_per_second")]
        if rows:
            return float(max(rows, key=lambda row: row.get("records", 0))["records_per_second"])
    candidates = [document]
    while candidates:
        item = candidates.pop(0)
        if isinstance(item, dict):
            for key in ("records_per_second_per_invocation", "records_per_second"):
                if isinstance(item.get(key), int | float) and item[key] > 0:
                    return float(item[key])
            candidates.extend(item.values())
        elif isinstance(item, list):
            candidates.extend(item)
    raise ValueError(f"{source}: no records_per_second_per_invocation (or records_per_second) value found")


def render(stack: str, shape: PipelineShape, peak: Peak | None, cost: CostPerMillion) -> str:
    """The report: capacity, the peak plan, cost per million changes next to Firehose."""
    today = capacity(shape)
    freshness = shape.batching_window_seconds + shape.batch_seconds
    mode = f"on-demand, {shape.shards} shards now" if shape.on_demand else f"provisioned, {shape.shards} shards"
    lines = [
        f"capacity of {stack}",
        f"  stream              {mode}; {shape.shard_write_records:,.0f} records/s per shard at {shape.record_bytes} B",
        f"  mapping             batch {shape.batch_size}, window {shape.batching_window_seconds} s, "
        f"parallelization {shape.parallelization_factor}, {shape.memory_mb} MB arm64",
        f"  full batch          {shape.records_per_invocation:,} records ({shape.event_bytes_per_record:,} B each in "
        f"the event; Lambda stops a batch at 6 MB)",
        f"  handler             {shape.records_per_second_per_invocation:,.0f} records/s per invocation; "
        f"full batch {shape.batch_seconds * 1000:,.0f} ms; {shape.records_per_second_per_slot:,.0f} records/s per slot",
        f"  stream accepts      {today.stream_write:,.0f} records/s",
        f"  Lambda processes    {today.processing:,.0f} records/s with {today.concurrency} concurrent invocations",
        f"  sustained           {today.sustained:,.0f} records/s = {today.sustained * 60:,.0f}/min "
        f"(limited by {today.bottleneck})",
        f"  light traffic       a change reaches S3 within ~{freshness:,.1f} s (batching window + one batch)",
        f"  objects             {cost.objects_per_shard_hour:,.0f} per shard-hour at full load, "
        f"{shape.objects_per_shard_hour(1):,.0f} at 1 change/s; the curator reads them every "
        f"{shape.curation_interval_minutes} min",
        f"  curator run         {cost.curator.changes:,.0f} changes every {shape.curation_interval_minutes} min at "
        f"full load: {cost.curator.seconds:,.0f} s at {shape.curation_rows_per_second:,.0f} rows/s "
        f"({cost.curator.committed_rows_rewritten:,.0f} committed rows and {cost.curator.state_rows_rewritten:,.0f} "
        f"of {shape.state_rows:,} registrations rewritten)",
    ]
    if peak is not None:
        lines += [
            "",
            f"peak: {peak.records:,} changes in {peak.seconds / 60:g} min = {peak.required_rate:,.0f} records/s",
            f"  needs               {peak.shards_needed} shards x parallelization {peak.parallelization_needed} "
            f"= {peak.concurrency_needed} concurrent invocations",
            f"  as is               processed {peak.drain_minutes_as_is:,.1f} min after the burst starts; "
            f"IteratorAge peaks at {peak.peak_iterator_age_minutes_as_is:,.1f} min",
        ]
        lines += [f"  - {advice}" for advice in peak.advice]
    lines += [
        "",
        "cost per million changes (USD, us-east-1 list prices, sustained load)",
        f"  Lambda requests     {cost.lambda_requests:9.5f}",
        f"  Lambda duration     {cost.lambda_duration:9.5f}",
        f"  S3 PUTs             {cost.s3_puts:9.5f}",
        f"  curator S3          {cost.curator_s3_requests:9.5f}   (GET each raw object, hour and state files "
        f"rewritten, LISTs)",
        f"  curator Lambda      {cost.curator_duration:9.5f}   ({shape.curation_rows_per_second:,.0f} rows/s, "
        f"{shape.curation_memory_mb} MB; + {cost.curator_fixed_monthly:,.2f}/month for the runs themselves: "
        f"{cost.curator.runs_per_day:,.0f} a day, Glue, retention)",
        f"  this pipeline       {cost.pipeline:9.5f}",
        f"  Firehose + Parquet  {cost.firehose:9.5f}   (ingest {cost.firehose_ingest:.4f}"
        f" + conversion {cost.firehose_conversion:.4f}; JSON input only, 5 KB rounding)",
        f"  ratio               Firehose costs {cost.firehose_ratio:,.0f}x this pipeline "
        f"({'meets' if cost.firehose_ratio >= 50 else 'MISSES'} the 50x target)",
        f"  stream, both        {cost.kinesis:9.5f}   (+ {cost.kinesis_fixed_monthly:,.2f}/month fixed)",
    ]
    lowest = lowest_rate_meeting(shape)
    if lowest is not None:
        lines.append(
            f"  50x holds           down to {lowest:,.0f} changes/s per shard (below, the batching window closes "
            f"small batches: {shape.objects_per_shard_hour(1):,.0f} invocations per shard-hour at most)"
        )
    return "\n".join(lines)


def _stream_from_aws(stack: str, outputs_file: str | None) -> tuple[int, bool]:
    import boto3  # noqa: PLC0415 - only the live lookup needs AWS

    from ops.outputs import bind_stack  # noqa: PLC0415

    try:
        outputs = bind_stack(stack, outputs_file=outputs_file).outputs
    except OutputsError as error:
        raise OutputsError(f"{error}; offline, pass --shards N or --on-demand") from None
    summary = boto3.client("kinesis", region_name=outputs.region).describe_stream_summary(
        StreamName=outputs.stream_name
    )["StreamDescriptionSummary"]
    on_demand = summary.get("StreamModeDetails", {}).get("StreamMode") == "ON_DEMAND"
    return int(summary["OpenShardCount"]), on_demand


def record_size(text: str) -> int:
    """An argument type: an average change record size in bytes, 1 to ``MAX_RECORD_BYTES``."""
    value = integer_at_least(1)(text)
    if value > MAX_RECORD_BYTES:
        raise argparse.ArgumentTypeError(
            f"{value:,} bytes is above the largest change record, {MAX_RECORD_BYTES:,} bytes (a Kinesis record is at "
            "most 1 MiB; a DynamoDB change carries at most two 400 KB images): give the average size in bytes"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m ops.capacity",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "stack", type=stack_name, help="stack whose settings (batch size, parallelization, memory) apply"
    )
    measured = parser.add_mutually_exclusive_group(required=True)
    measured.add_argument(
        "--records-per-second", type=number_above(0), help="handler records/s per invocation (python -m bench)"
    )
    measured.add_argument(
        "--bench-results",
        help="figures of taskset -c 0 python -m bench --json (a file, or - for stdin); largest batch, scaled to the "
        "vCPU share of the function's memory (0.58 at 1,024 MB)",
    )
    stream = parser.add_mutually_exclusive_group()
    stream.add_argument(
        "--shards", type=integer_at_least(1), help="provisioned shard count (default: read the stream from AWS)"
    )
    stream.add_argument(
        "--on-demand", action="store_true", help=f"on-demand stream ({ON_DEMAND_INITIAL_SHARDS} shards)"
    )
    parser.add_argument(
        "--record-bytes",
        type=record_size,
        default=1_024,
        help=f"average change record size, 1 to {MAX_RECORD_BYTES:,} (default 1024)",
    )
    parser.add_argument(
        "--overhead-ms", type=number_at_least(0), default=150.0, help="fixed cost per batch (default 150 ms)"
    )
    parser.add_argument(
        "--curation-rows-per-second",
        type=number_above(0),
        default=CURATION_ROWS_PER_SECOND,
        help=f"curator raw rows/s on one core (default {CURATION_ROWS_PER_SECOND:,}, measured: docs/curation.md)",
    )
    parser.add_argument(
        "--state-rows",
        type=integer_at_least(0),
        default=10_000_000,
        help="live registrations in the registrations table (default 10,000,000)",
    )
    parser.add_argument(
        "--peak-records", type=integer_at_least(1), default=5_000_000, help="changes in the burst (default 5M)"
    )
    parser.add_argument("--peak-minutes", type=number_above(0), default=10.0, help="length of the burst (default 10)")
    parser.add_argument("--outputs-file", help="stack outputs JSON for the AWS lookup")
    parser.add_argument("--debug", action="store_true", help="a traceback with an error")
    args = parser.parse_args(argv)

    from components.settings import SettingsError, settings_from_stack_file  # noqa: PLC0415

    try:
        settings = settings_from_stack_file(args.stack)
        rate = args.records_per_second
        if rate is None:
            # The benchmark runs on whole cores (one, under taskset -c 0); the handler uses one thread for its CPU
            # work, so at less than a vCPU it runs at that share of the one-core figure.
            rate = records_per_second_from_bench(args.bench_results) * min(1.0, lambda_vcpus(settings.lambda_memory_mb))
        if args.shards is not None:
            shards, on_demand = args.shards, False
        elif args.on_demand:
            shards, on_demand = ON_DEMAND_INITIAL_SHARDS, True
        else:
            shards, on_demand = _stream_from_aws(args.stack, args.outputs_file)
        shape = PipelineShape(  # validated again here: --bench-results may hold any figure
            records_per_second_per_invocation=rate,
            shards=shards,
            on_demand=on_demand,
            parallelization_factor=settings.parallelization_factor,
            batch_size=settings.batch_size,
            batching_window_seconds=settings.batching_window_seconds,
            memory_mb=settings.lambda_memory_mb,
            record_bytes=args.record_bytes,
            invocation_overhead_seconds=args.overhead_ms / 1000,
            curation_rows_per_second=args.curation_rows_per_second,
            curation_memory_mb=settings.curation_memory_mb,
            curation_interval_minutes=settings.curation_interval_minutes,
            state_rows=args.state_rows,
        )
    except (SettingsError, OutputsError, ValueError, OSError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"capacity: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        print(
            f"capacity: cannot read the stream of {args.stack} from AWS ({error}); offline, pass --shards N or "
            "--on-demand",
            file=sys.stderr,
        )
        return 2
    peak = peak_plan(shape, args.peak_records, args.peak_minutes, settings.iterator_age_alarm_seconds)
    print(render(args.stack, shape, peak, cost_per_million(shape)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
