"""``make bench-backfill`` shows progress from its start on a terminal (stderr), and nothing on a log."""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench import backfill

pytestmark = pytest.mark.slow


@pytest.fixture
def small_bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The data file cached under ``tmp_path``, from 600 generated items (not 30,000): seconds, not a minute."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(backfill, "_GENERATED_CHANGES", 600)
    return tmp_path


def _terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=80), screen


def test_progress_is_on_the_terminal_before_each_long_phase_starts(
    small_bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    console, screen = _terminal()
    seen: dict[str, str] = {}
    real_popen = subprocess.Popen
    real_data_file = backfill.data_file

    def data_file(*args: Any, **kwargs: Any) -> Path:
        seen["before generating"] = screen.getvalue()
        return real_data_file(*args, **kwargs)

    def popen(*args: Any, **kwargs: Any) -> Any:
        seen["before the probe"] = screen.getvalue()
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(backfill, "data_file", data_file)
    monkeypatch.setattr(backfill.subprocess, "Popen", popen)

    assert backfill.main(["--megabytes", "0.3", "--seed", "5"], console=console) == 0

    # drawn as each phase starts, not at its end: the generation's and the probe's lines are already there
    assert "generating items" in seen["before generating"]
    assert "backfill (fresh process)" in seen["before the probe"]
    size = backfill.data_path(0.3, 5).stat().st_size
    size_kib = size // 1024
    final = screen.getvalue()
    assert "600/600" in final  # every item generated
    assert f"{size_kib}/{size_kib}" in final  # the probe read the whole file
    printed = capsys.readouterr()
    assert f"data file: {size / 1024 / 1024:.1f} MB gzip, " in printed.out  # the figures on stdout
    assert "backfill (fresh process)" not in printed.out


def test_the_probe_reports_the_bytes_it_reads_up_to_the_whole_file(small_bench: Path) -> None:
    path = backfill.data_file(0.3, 5)
    positions: list[int] = []

    figures = backfill.run_probe(path, positions.append)

    assert len(positions) >= 2
    assert positions == sorted(set(positions)), "increasing"
    assert positions[-1] == path.stat().st_size
    assert figures["rows"] == figures["items"] > 0


def test_a_cached_file_skips_generation_and_a_log_gets_no_bars(
    small_bench: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backfill.data_file(0.3, 5)
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=80)

    assert backfill.main(["--megabytes", "0.3", "--seed", "5"], console=console) == 0

    assert log.getvalue() == ""  # not a terminal: no progress
    assert "backfill:" in capsys.readouterr().out


def test_a_failing_probe_is_one_message_and_exit_1(
    small_bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = backfill.data_file(0.3, 5)
    path.write_bytes(b"not gzip")
    console, _ = _terminal()

    assert backfill.main(["--megabytes", "0.3", "--seed", "5"], console=console) == 1

    error = capsys.readouterr().err
    assert error.startswith("python -m bench.backfill: the backfill probe failed (exit status 1):")
    assert "Traceback" in error  # the probe's own stderr, for whoever runs it
