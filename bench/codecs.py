"""The Parquet codecs alone on a shard-hour's raw objects: the floor under the curation benchmark's time.

    taskset -c 0 python -m bench.codecs [--folder DIR] [--json]

A curation run decodes every raw object and encodes the rows of both tables (``registration_changes``: every
change, ``registrations``: one row per key); this times those three passes alone, on the calling core, with the
curator's writer settings (the tables' zstd, dictionaries and statistics on the same columns, ``SLICE_ROWS`` rows a
file), from local disk: no S3, no deduplication, sort or merge. ``--folder`` holds the raw objects (``*.parquet``,
any depth); by default the shard-hour of ``bench.curation`` (built through the stream handler on first use, about
ten minutes). ``registrations`` is encoded as many rows as that shard-hour leaves keys (``STATE_ROWS``); with
fewer rows in the folder, all of them. Compare the sum with ``bench.curation``'s 14.4 s budget (3.6M rows at
250,000 rows/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Keys of the shard-hour's changes (``registrations`` rows after one run over an empty table).
STATE_ROWS = 2_160_000


def shard_hour_folders() -> list[Path]:
    """The folders of ``bench.curation``'s shard-hour raw objects, built if missing."""
    from bench.curation import shard_hour_streams  # noqa: PLC0415
    from bench.curation_data import cached_objects  # noqa: PLC0415

    return [cached_objects(stream)[0] for stream in shard_hour_streams()]


def _encode(rows: pa.Table, file_rows: int) -> None:
    """``rows`` written as the curator writes a data file (``curator.files.write_partition``), into memory."""
    from pyiceberg.io.pyarrow import _get_parquet_writer_kwargs  # noqa: PLC0415

    from curator.files import DICTIONARY_COLUMNS, STATISTICS_COLUMNS  # noqa: PLC0415
    from curator.tables import table_properties  # noqa: PLC0415

    columns = set(rows.column_names)
    options = _get_parquet_writer_kwargs(table_properties(timedelta(days=7)))
    for offset in range(0, rows.num_rows, file_rows):
        with pq.ParquetWriter(
            pa.BufferOutputStream(),
            rows.schema,
            use_dictionary=sorted(DICTIONARY_COLUMNS & columns),
            write_statistics=sorted(STATISTICS_COLUMNS & columns),
            **options,
        ) as writer:
            writer.write_table(rows.slice(offset, file_rows))


def measure(folders: list[Path]) -> dict[str, Any]:
    """CPU seconds of each codec pass over the raw objects under ``folders``."""
    from curator.curation import SLICE_ROWS  # noqa: PLC0415
    from curator.tables import registrations_spec  # noqa: PLC0415

    pa.set_memory_pool(pa.system_memory_pool())  # as the curator's run does
    bodies = [path.read_bytes() for folder in folders for path in sorted(folder.rglob("*.parquet"))]
    if not bodies:
        raise ValueError(f"no *.parquet under {', '.join(str(folder) for folder in folders)}")
    started = time.process_time()
    tables = [pq.ParquetFile(pa.BufferReader(body)).read(use_threads=False) for body in bodies]
    decode = time.process_time() - started
    rows = pa.concat_tables(tables).combine_chunks()
    del tables
    rows = rows.take(pc.sort_indices(rows, sort_keys=[("event_id", "ascending"), ("fan_id", "ascending")]))
    started = time.process_time()
    _encode(rows, SLICE_ROWS)
    changes = time.process_time() - started
    state_columns = [name for name in registrations_spec().arrow_schema.names if name in rows.column_names]
    state_rows = rows.select(state_columns).slice(0, STATE_ROWS)
    started = time.process_time()
    _encode(state_rows, SLICE_ROWS)
    state = time.process_time() - started
    return {
        "objects": len(bodies),
        "rows": rows.num_rows,
        "state_rows": state_rows.num_rows,
        "decode_seconds": round(decode, 2),
        "encode_changes_seconds": round(changes, 2),
        "encode_state_seconds": round(state, 2),
        "total_seconds": round(decode + changes + state, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codecs", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="raw objects (*.parquet); default: bench.curation's shard-hour")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.folder is not None and not args.folder.is_dir():
        print(f"--folder {args.folder} is not a folder", file=sys.stderr)
        return 2
    try:
        figures = measure([args.folder] if args.folder is not None else shard_hour_folders())
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print(
        f"codecs on {figures['objects']:,} raw objects, {figures['rows']:,} rows (CPU of this process's core): "
        f"decode {figures['decode_seconds']} s, encode registration_changes {figures['encode_changes_seconds']} s, "
        f"encode registrations ({figures['state_rows']:,} rows) {figures['encode_state_seconds']} s; "
        f"{figures['total_seconds']} s in all"
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
