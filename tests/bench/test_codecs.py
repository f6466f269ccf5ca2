"""The codec floor benchmark (``bench.codecs``) on a folder of a few raw objects: counts, and a bad folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import codecs
from pipeline.writer import encode_parquet
from tests.curator.conftest import HOUR, generated_rows


def test_it_decodes_and_encodes_every_raw_object_of_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    counts = (20, 7, 12)
    for index, count in enumerate(counts):
        folder = tmp_path / f"dt=2026-03-31/{index}"  # any depth
        folder.mkdir(parents=True)
        (folder / f"object-{index}.parquet").write_bytes(encode_parquet(generated_rows(count, hour=HOUR, seed=index)))
    (tmp_path / "rows.txt").write_text("39")  # not a raw object

    assert codecs.main(["--folder", str(tmp_path), "--json"]) == 0

    out = capsys.readouterr().out
    figures = json.loads(out[out.index("{") :])
    assert (figures["objects"], figures["rows"], figures["state_rows"]) == (3, sum(counts), sum(counts))
    assert set(figures) >= {"decode_seconds", "encode_changes_seconds", "encode_state_seconds", "total_seconds"}
    assert out.startswith("codecs on 3 raw objects, 39 rows")


def test_a_folder_without_raw_objects_or_no_folder_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert codecs.main(["--folder", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"no *.parquet under {tmp_path}"
    assert codecs.main(["--folder", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"--folder {tmp_path / 'missing'} is not a folder"
