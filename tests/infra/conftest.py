"""Shared fixtures of the infra tests: the program run once per stack per test process."""

from __future__ import annotations

from functools import cache

from ops.program import ProgramRun, run_program

STACKS = ("dev1", "qa1", "preprod1", "prod1")


@cache
def program_run(stack: str) -> ProgramRun:
    """The real program under mocks for a stack's real config (cached: Pulumi state is process-global)."""
    return run_program(stack)
