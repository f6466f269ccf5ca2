"""Advancing ``registrations`` (10M rows) by 100,000 changed keys: time on one core and peak RSS of a fresh process.

    python -m bench.registrations [--rows 10000000] [--keys 100000] [--events 400] [--seed 5] [--cpu 0]

The state is built as the demo workload spreads keys (``sandbox.changes.DemandGenerator``): registrations over many
events chosen uniformly, random UUID fans, the generator's shares of optional attributes, statuses, price levels,
attributes maps and unknown attributes, each value drawn at random (never a tiled sample, so it compresses as real
data does). The run's changes are the generator's mix over the same events: 60 % registrations of new fans, 30 %
status changes and 10 % cancellations of registrations in the state, one in ten keys changed twice. They are
committed to ``registration_changes`` on the local AWS (moto server on 127.0.0.1) and the state is advanced once, in
a fresh process pinned to one core (``taskset -c``): the figures include the local S3 and Glue server's work, on the
same machine but on another core; they are not the Lambda's time. Targets (issue 15): <= 60 s, peak RSS <= 75 % of
the curator's 4,096 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.curation import local_client_options, run_once_in_fresh_process, status_kib

_BUCKET = "bench-registrations"
_DATABASE = "bench_registrations"
_STATE_END = datetime(2026, 3, 31, 22, tzinfo=UTC)  # every state row is older; the changes follow, within an hour
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SEQUENCE_HEAD = "4959033827149025660855969253836157109592157598"  # 46 digits; 10 more count up
TARGET_SECONDS = 60.0
FUNCTION_MEMORY_MB = 4096
TARGET_PEAK_MB = FUNCTION_MEMORY_MB * 0.75
_ROWS_PER_WRITE = 250_000


def _curator(endpoint_url: str) -> Any:
    import boto3  # noqa: PLC0415

    from curator.catalog import glue_catalog  # noqa: PLC0415
    from curator.curation import Curator, CuratorSettings  # noqa: PLC0415
    from curator.store import S3Store  # noqa: PLC0415

    options = local_client_options(endpoint_url)
    catalog = glue_catalog(
        "us-east-1",
        endpoint_url=endpoint_url,
        access_key_id=options["aws_access_key_id"],
        secret_access_key=options["aws_secret_access_key"],
    )
    settings = CuratorSettings(bucket=_BUCKET, raw_prefix="demand/events/", database=_DATABASE)
    return Curator(catalog=catalog, store=S3Store(_BUCKET, client=boto3.client("s3", **options)), settings=settings)


class _Rows:
    """Columns drawn as the demo generator draws them, vectorised with Arrow (random bytes from a seeded
    ``random.Random``)."""

    def __init__(self, seed: int, events: int) -> None:
        import random  # noqa: PLC0415

        self.random = random.Random(seed)
        alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
        self.event_ids = ["vv" + "".join(self.random.choices(alphabet, k=14)) for _ in range(events)]
        self.sequence = 0

    def uniform(self, count: int) -> Any:
        """``count`` floats in [0, 1)."""
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        words = pa.Array.from_buffers(pa.uint32(), count, [None, pa.py_buffer(self.random.randbytes(4 * count))])
        return pc.divide(words.cast(pa.float64()), float(2**32))

    def integers(self, low: int, high: int, count: int) -> Any:
        """``count`` integers in [low, high)."""
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        scaled = pc.floor(pc.multiply(self.uniform(count), float(high - low)))
        return pc.add(scaled.cast(pa.int64()), low)

    def chance(self, share: float, count: int) -> Any:
        import pyarrow.compute as pc  # noqa: PLC0415

        return pc.less(self.uniform(count), share)

    def uuids(self, count: int) -> Any:
        """Random version-4 UUID texts."""
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        hexes = self.random.randbytes(16 * count).hex().encode()
        offsets = pa.array(range(0, 32 * (count + 1), 32), pa.int64())
        text = pa.LargeStringArray.from_buffers(count, offsets.buffers()[1], pa.py_buffer(hexes)).cast(pa.string())

        def part(start: int, stop: int) -> Any:
            return pc.utf8_slice_codeunits(text, start, stop)

        return pc.binary_join_element_wise(
            part(0, 8), part(8, 12), pc.binary_join_element_wise("4", part(13, 16), ""), part(16, 20), part(20, 32), "-"
        ).cast(pa.large_string())

    def table(self, event_index: Any, fans: Any, times_us: Any, ops: list[str] | None, schema: Any) -> Any:
        """Rows in ``schema`` (the state's, or the changes' with ``ops``) for the given keys and change times."""
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        count = len(fans)

        def choice(values: tuple[Any, ...], share: float = 1.0, kind: Any = None) -> Any:
            picked = pa.array(values, kind).take(self.integers(0, len(values), count))
            return pc.if_else(self.chance(share, count), picked, pa.nulls(count, picked.type))

        lengths = self.integers(1, 4, count)
        offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(lengths)])
        levels = pa.array(("PL1", "PL2", "PL3", "PL4", "GA", "VIP"), pa.large_string())
        price_levels = pa.LargeListArray.from_arrays(
            offsets,
            levels.take(self.integers(0, 6, offsets[-1].as_py())),
            mask=pc.invert(self.chance(0.8, count)),
        )
        locales = pa.array(("en-US", "en-GB", "fr-FR", "es-MX"), pa.large_string()).take(self.integers(0, 4, count))
        # Each map is {"locale": <one of four>, "utm_source": "email"}: values interleaved as the keys are.
        values = pa.concat_arrays([locales, pa.array(["email"] * count, pa.large_string())]).take(
            pa.array([index + half for index in range(count) for half in (0, count)], pa.int64())
        )
        attributes = pa.MapArray.from_arrays(
            pa.array(range(0, 2 * (count + 1), 2), pa.int32()),
            pa.array(["locale", "utm_source"] * count, pa.large_string()),
            values,
            mask=pc.invert(self.chance(0.6, count)),
        )
        micros = pa.array(times_us, pa.int64())
        created = pc.subtract(micros, self.integers(0, 3 * 86_400_000_000, count))
        modified = self.chance(0.3, count)
        sequences = pc.binary_join_element_wise(
            _SEQUENCE_HEAD,
            pc.utf8_lpad(pa.array(range(self.sequence, self.sequence + count), pa.int64()).cast(pa.string()), 10, "0"),
            "",
        )
        self.sequence += count
        presale = pc.binary_join_element_wise("PRESALE", self.integers(100, 1000, count).cast(pa.string()), "")
        stamp = pa.timestamp("us", tz="UTC")
        columns = {
            "event_id": pa.array(self.event_ids, pa.large_string()).take(event_index),
            "fan_id": fans,
            "market_id": choice((1, 2, 3, 7, 11, 27, 101), kind=pa.int64()),
            "status": pc.if_else(modified, choice(("SELECTED", "WAITLISTED", "CANCELLED")), pa.scalar("REGISTERED")),
            "quantity": self.integers(1, 9, count).cast(pa.int32()),
            "price_levels": price_levels,
            "channel": choice(("web", "ios", "android", "partner"), 0.9),
            "presale_code": pc.if_else(self.chance(0.3, count), presale, pa.nulls(count, pa.string())),
            "created_at": created.cast(stamp),
            "updated_at": pc.if_else(modified, micros, pa.nulls(count, pa.int64())).cast(stamp),
            "attributes": attributes,
            "change_id": self.uuids(count),
            "change_time": micros.cast(stamp),
            "shard_id": choice(tuple(f"shardId-00000000000{index}" for index in range(4))),
            "sequence_number": sequences,
            "table_name": pa.array(["demand"] * count, pa.large_string()),
            "extra_attributes": pc.if_else(
                self.chance(0.15, count),
                pa.scalar('{"marketing":{"opt_in":true,"source":{"campaign":"onsale","wave":2}}}'),
                pa.nulls(count, pa.string()),
            ),
            "change_time_us": micros,
        }
        if ops is not None:
            columns["op"] = pa.array(ops, pa.large_string())
            columns["deleted_by_ttl"] = pa.array([False] * count)
        return pa.table({name: columns[name].cast(schema.field(name).type) for name in schema.names}, schema=schema)


def _build(endpoint_url: str, rows: int, keys: int, events: int, seed: int) -> dict[str, Any]:
    """The state of ``rows`` registrations and a ``registration_changes`` snapshot of ``keys`` changed keys."""
    import boto3  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    from curator.commits import commit_overwrite  # noqa: PLC0415
    from curator.files import write_files  # noqa: PLC0415
    from curator.state import APPLIED_PROPERTY, STATE_FILE_ROWS, WATERMARK_PROPERTY  # noqa: PLC0415
    from curator.tables import registrations_spec  # noqa: PLC0415

    boto3.client("s3", **local_client_options(endpoint_url)).create_bucket(Bucket=_BUCKET)
    changes, state = _curator(endpoint_url).tables()
    draw = _Rows(seed, events)
    end_us = (_STATE_END - _EPOCH) // timedelta(microseconds=1)
    # Events drawn uniformly, as the generator draws them; written a few events at a time, each event's rows
    # sorted by fan as the curator keeps them (files of disjoint fan ranges, at most STATE_FILE_ROWS rows each).
    counted = pc.value_counts(draw.integers(0, events, rows))
    per_event = dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))
    del counted
    # 40 % of the changed keys are in the state (30 % modified, 10 % removed), picked while the state is written.
    existing_share = 0.4 * keys / rows
    picked: list[Any] = []
    files = []
    schema = registrations_spec().arrow_schema
    group: list[int] = []
    for event in range(events):
        group.append(event)
        if event < events - 1 and sum(per_event.get(item, 0) for item in [*group, event + 1]) <= _ROWS_PER_WRITE:
            continue
        event_index = pa.array([item for item in group for _ in range(per_event.get(item, 0))], pa.int64())
        group = []
        count = len(event_index)
        times = pc.subtract(end_us, draw.integers(0, 30 * 86_400_000_000, count))
        chunk = draw.table(event_index, draw.uuids(count), times, None, schema)
        chunk = chunk.take(pc.sort_indices(chunk, sort_keys=[("event_id", "ascending"), ("fan_id", "ascending")]))
        for offset in range(0, count, STATE_FILE_ROWS):
            files.extend(write_files(state, chunk.slice(offset, STATE_FILE_ROWS)))
        picked.append(chunk.filter(draw.chance(existing_share, count)).select(["event_id", "fan_id"]))
        del chunk
    existing = pa.concat_tables(picked)
    changes = _commit_changes(changes, draw, end_us, existing, keys)
    first = changes.metadata.snapshots[0].snapshot_id
    state = commit_overwrite(state, [], files, {APPLIED_PROPERTY: str(first), WATERMARK_PROPERTY: str(end_us)})
    removed = existing.num_rows - existing.num_rows * 3 // 4
    return {
        "state_files": len(files),
        "expected_rows_after": rows + (keys - existing.num_rows) - removed,
        "changes_snapshot": changes.current_snapshot().snapshot_id,
    }


def _replaced(rows: Any, name: str, values: Any) -> Any:
    index = rows.schema.get_field_index(name)
    return rows.set_column(index, rows.schema.field(index), values)


def _commit_changes(changes: Any, draw: _Rows, end_us: int, existing: Any, keys: int) -> Any:
    """Two ``registration_changes`` snapshots: one change older than the state's, then the run's changes."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    from curator.commits import commit_overwrite  # noqa: PLC0415
    from curator.files import write_files  # noqa: PLC0415
    from curator.tables import changes_spec  # noqa: PLC0415

    schema = changes_spec().arrow_schema
    earlier = draw.table(pa.array([0]), draw.uuids(1), [end_us - 1], ["INSERT"], schema)
    changes = commit_overwrite(changes, [], write_files(changes, earlier), {})
    order = list(range(existing.num_rows))
    draw.random.shuffle(order)
    existing = existing.take(pa.array(order, pa.int64()))
    modified = existing.num_rows * 3 // 4
    new_keys = keys - existing.num_rows
    position = {event: index for index, event in enumerate(draw.event_ids)}
    event_index = pa.concat_arrays(
        [
            draw.integers(0, len(draw.event_ids), new_keys),
            pa.array([position[event] for event in existing.column("event_id").to_pylist()], pa.int64()),
        ]
    )
    fans = pa.concat_arrays([draw.uuids(new_keys), existing.column("fan_id").combine_chunks()])
    ops = ["INSERT"] * new_keys + ["MODIFY"] * modified + ["REMOVE"] * (existing.num_rows - modified)
    # Within 50 minutes after the state's last change, in no particular order of key.
    times = pc.add(draw.integers(0, 3_000_000_000, keys), end_us + 60_000_000)
    rows = draw.table(event_index, fans, times, ops, schema)
    # One key in ten (not removed) changes again a second later (a status change).
    again = rows.filter(pc.and_(draw.chance(0.1, keys), pc.not_equal(rows.column("op"), "REMOVE")))
    later = pc.add(again.column("change_time_us"), 1_000_000)
    again = _replaced(again, "op", pa.array(["MODIFY"] * again.num_rows, pa.large_string()))
    again = _replaced(again, "change_time_us", later)
    again = _replaced(again, "change_time", later.cast(pa.timestamp("us", tz="UTC")))
    again = _replaced(again, "change_id", draw.uuids(again.num_rows))
    rows = pa.concat_tables([rows, again])
    keys_order = [("event_id", "ascending"), ("fan_id", "ascending"), ("change_time", "ascending")]
    return commit_overwrite(
        changes, [], write_files(changes, rows.take(pc.sort_indices(rows, sort_keys=keys_order))), {}
    )


def run_once(endpoint_url: str) -> dict[str, Any]:
    """Advance the state once (in this process, which should be fresh): its counts, time and memory."""
    from curator.curation import CurationResult  # noqa: PLC0415
    from curator.state import StateAdvance  # noqa: PLC0415

    curator = _curator(endpoint_url)
    changes, state = curator.tables()
    before = int(state.current_snapshot().summary["total-records"])
    baseline = status_kib("VmRSS")
    result = CurationResult()
    started, cpu = time.perf_counter(), time.process_time()
    StateAdvance(changes, state, result).run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    after = curator.tables()[1].current_snapshot()
    return {
        "state_rows_before": before,
        "state_rows_after": int(after.summary["total-records"]),
        "changes_applied": result.state_changes_applied,
        "events_rewritten": result.events_written,
        "files_removed": int(after.summary.get("deleted-data-files") or 0),
        "files_added": int(after.summary.get("added-data-files") or 0),
        "rows_rewritten": int(after.summary.get("added-records") or 0),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "rss_before_run_mb": round(baseline / 1024),
        "peak_rss_mb": round(status_kib("VmHWM") / 1024),
    }


def measure(rows: int, keys: int, events: int, seed: int, cpu: int | None) -> dict[str, Any]:
    """Build the state and the changes on a local AWS, then advance the state by the changes in a fresh process;
    its figures."""
    from sandbox.server import MotoProcess  # noqa: PLC0415

    with MotoProcess() as server:
        started = time.perf_counter()
        built = _build(server.endpoint_url, rows, keys, events, seed)
        built["build_seconds"] = round(time.perf_counter() - started, 1)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        figures = run_once_in_fresh_process("bench.registrations", server.endpoint_url, cpu)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # user + sys of the whole fresh process (imports included), as /usr/bin/time reports it
    figures["process_cpu_seconds"] = round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1)
    return {"rows": rows, "keys": keys, "events": events, "cpu": cpu, **built, **figures}


def report(figures: dict[str, Any]) -> dict[str, bool]:
    """Print the targets with their figures; which were met."""
    expected = figures["expected_rows_after"]
    checks = {
        f"advance {figures['rows']:,} rows by {figures['keys']:,} keys <= {TARGET_SECONDS:.0f} s "
        f"(measured {figures['seconds']} s, CPU {figures['cpu_seconds']} s, user+sys of the fresh process "
        f"{figures['process_cpu_seconds']} s)": figures["seconds"] <= TARGET_SECONDS,
        f"peak RSS of the fresh process <= {TARGET_PEAK_MB:,.0f} MB (75 % of {FUNCTION_MEMORY_MB:,} MB; measured "
        f"{figures['peak_rss_mb']:,} MB)": figures["peak_rss_mb"] <= TARGET_PEAK_MB,
        f"rows after = before + new keys - removed keys ({figures['state_rows_after']:,}, {expected:,} expected)": (
            figures["state_rows_after"] == expected
        ),
    }
    print(
        f"registrations: {figures['rows']:,} rows over {figures['events']} events, {figures['keys']:,} changed keys "
        f"({figures['changes_applied']:,} applied); {figures['events_rewritten']} events, "
        f"{figures['files_removed']} files replaced by {figures['files_added']}, {figures['rows_rewritten']:,} rows "
        f"written; CPU {figures['cpu']} (moto's S3 and Glue on the same machine are part of the time)"
    )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registrations", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0, help="the core the measured process is pinned to")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit non-zero when a target is missed")
    parser.add_argument("--run-once", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_once:
        print(json.dumps(run_once(args.run_once)))
        return 0
    if args.rows <= 0 or args.keys <= 0 or args.events <= 0 or args.keys * 4 // 10 > args.rows:
        print("--rows, --keys and --events must be positive, and 40 % of --keys at most --rows", file=sys.stderr)
        return 2
    figures = measure(args.rows, args.keys, args.events, args.seed, args.cpu)
    checks = report(figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 1 if args.check and not all(checks.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
