"""An operator's shell for commands a test runs as printed: outside `make test` and its `uv run`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def outside_make_and_venv(environment: dict[str, str]) -> dict[str, str]:
    """A shell's environment as an operator has it: not inside `make test` and its `uv run` (the Makefile's
    python3 must be the one that has uv, not the project's environment)."""
    venv = str(ROOT / ".venv")
    path = [part for part in environment.get("PATH", "").split(":") if not part.startswith(venv)]
    cleaned = {
        key: value
        for key, value in environment.items()
        if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR", "VIRTUAL_ENV")
    }
    return cleaned | {"PATH": ":".join(path)}
