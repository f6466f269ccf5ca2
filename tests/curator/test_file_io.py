"""The curator's FileIO: a table file smaller than one part is written with one PutObject (no multipart request),
and one past a part is still written whole."""

from __future__ import annotations

import os

from pyiceberg.io import load_file_io

from curator.file_io import SinglePutFileIO
from sandbox.server import FaultRule, MotoProcess
from tests.curator.conftest import CuratedLake


def test_a_small_table_file_is_one_put_and_a_big_one_is_written_whole(lake: CuratedLake, aws_server: MotoProcess):
    io = load_file_io(lake.catalog().properties, f"s3://{lake.bucket}/curated/")
    assert isinstance(io, SinglePutFileIO)
    small, big = os.urandom(20_000), os.urandom(12 * 2**20)  # a manifest's size; past one part (pyarrow: 10 MiB)
    # Every POST to a table file fails: a multipart upload's create and complete are POSTs, a single put is not.
    with aws_server.faults(FaultRule("s3", method="POST", path_contains="/curated/probe/")):
        with io.new_output(f"s3://{lake.bucket}/curated/probe/metadata/small.avro").create(overwrite=True) as out:
            out.write(small)
        [multipart_posts] = aws_server.fault_hits()
    with io.new_output(f"s3://{lake.bucket}/curated/probe/data/big.parquet").create(overwrite=True) as out:
        out.write(big)

    assert multipart_posts == 0
    read = {key: lake.s3.get_object(Bucket=lake.bucket, Key=key)["Body"].read() for key in lake.keys("curated/probe/")}
    assert read == {"curated/probe/data/big.parquet": big, "curated/probe/metadata/small.avro": small}
