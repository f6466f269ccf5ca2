"""make package as a command: an unknown option is refused in one line, --dry-run writes nothing (dist/ neither)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ops import package
from tests.ops.conftest import outside_project_venv

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (what a write would change)."""
    if not folder.exists():
        return {}
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.mark.parametrize("argv", [["--dry-rn"], ["--index-url", "http://example.invalid"], ["extra"]])
def test_an_unknown_option_is_one_line_and_writes_nothing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "dist"

    with pytest.raises(SystemExit) as stopped:
        package.main([*argv, "--out", str(out)])

    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m ops.package: error: unrecognized arguments: ")
    assert argv[0] in line
    assert not out.exists()


def test_dry_run_says_what_it_would_write_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "dist"

    assert package.main(["--dry-run", "--allow-dirty", "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert printed.startswith(f"dry run: would write {out / 'function.zip'} (")
    assert f"and {out / 'layer.zip'} (the locked runtime dependencies, arm64)" in printed
    assert printed.rstrip().endswith("nothing written")
    assert not out.exists()


@pytest.mark.slow
def test_make_package_dry_run_leaves_dist_as_it_was():
    before = _files(ROOT / "dist")

    done = subprocess.run(
        ["make", "--no-print-directory", "package", "ARGS=--dry-run --allow-dirty"],
        cwd=ROOT,
        env=outside_project_venv(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run: would write " in done.stdout
    assert _files(ROOT / "dist") == before
