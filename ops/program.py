"""Run the real Pulumi program (``__main__.py``) for one stack under mocks, without the Pulumi CLI or AWS.

Config comes from ``Pulumi.<stack>.yaml`` with the defaults of ``Pulumi.yaml`` applied, as the CLI would.
Pulumi keeps its runtime state in module globals and context variables, so each run resets them first; runs
are sequential (one at a time per process).
"""

from __future__ import annotations

import json
import os
import runpy
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.settings import (
    ERASURE_SALT_KEY,
    PROJECT,
    PROJECT_ROOT,
    project_defaults,
    settings_from_stack_file,
)
from ops.mocks import AwsMocks, Declared

__all__ = ["PLAN_ERASURE_SALT", "ProgramRun", "run_program", "stack_config"]

# The CLI decrypts the stack's erasureSalt for the program; an offline run cannot, so it stands in for it (the plan
# shows the variable as [secret], whatever its value).
PLAN_ERASURE_SALT = f"[secret {ERASURE_SALT_KEY}]"

_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProgramRun:
    """What the program declared for a stack: resources in declaration order, invokes, and stack outputs."""

    stack: str
    declared: tuple[Declared, ...]
    invokes: tuple[tuple[str, dict[str, Any]], ...]
    outputs: dict[str, Any]
    urns: tuple[str, ...]
    invoke_providers: tuple[tuple[str, str], ...] = ()

    def of_type(self, typ: str) -> list[Declared]:
        """Declared resources of one type token (e.g. ``aws:lambda/function:Function``)."""
        return [resource for resource in self.declared if resource.type == typ]

    def one(self, typ: str) -> Declared:
        """The single resource of a type; fails naming the type when there are none or several."""
        found = self.of_type(typ)
        if len(found) != 1:
            raise AssertionError(f"{self.stack}: expected exactly one {typ}, found {len(found)}")
        return found[0]


def stack_config(stack: str, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Config the CLI would give the program: Pulumi.yaml defaults overlaid with the stack file's values.

    The stack file is validated first (YAML, keys, types, values: ``SettingsError``), as the program would. The
    erasure salt, a secret the CLI decrypts, is ``PLAN_ERASURE_SALT``.
    """
    settings_from_stack_file(stack, root)
    config = project_defaults(root / "Pulumi.yaml")
    stack_file = root / f"Pulumi.{stack}.yaml"
    values = (yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}).get("config") or {}
    for key, value in values.items():
        qualified = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, bool):
            config[qualified] = "true" if value else "false"
        elif isinstance(value, dict | list):
            config[qualified] = json.dumps(value)  # structured values reach programs as JSON, as with the CLI
        else:
            config[qualified] = str(value)
    if root == PROJECT_ROOT:
        # The CLI would decrypt the stack's salt ({secure: ...}); offline, a stand-in that names it.
        config[ERASURE_SALT_KEY] = PLAN_ERASURE_SALT
    return config


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _reset_runtime() -> None:
    """Forget the previous run's root stack, RPCs and pending outputs."""
    runtime_settings.ROOT.set(None)
    runtime_settings.SETTINGS.rpc_manager.clear()
    runtime_settings.SETTINGS.outputs.clear()


def run_program(
    stack: str,
    *,
    root: Path = PROJECT_ROOT,
    config: dict[str, str] | None = None,
    mocks: AwsMocks | None = None,
    project: str = PROJECT,
) -> ProgramRun:
    """Run ``__main__.py`` for ``stack`` under mocks (``config`` replaces the stack file's, when given).

    ``root`` and ``project`` name another Pulumi project of the repository (the account bootstrap).
    """
    effective = stack_config(stack, root) if config is None else dict(config)
    mocks = mocks or AwsMocks(region=effective.get("aws:region", "us-east-1"))
    resolved: dict[str, Any] = {}

    def program() -> None:
        with warnings.catch_warnings():
            # pulumi_aws warns about its own deprecated classes as its modules load; they are not used here.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws\.")
            runpy.run_path(str(root / "__main__.py"), run_name="__main__")
        stack_resource = runtime_settings.get_root_resource()
        exported = dict(getattr(stack_resource, "outputs", {}))

        def keep(values: dict[str, Any]) -> None:
            resolved.update(values)

        pulumi.Output.all(**exported).apply(keep)

    with _LOCK, _working_directory(root):
        _reset_runtime()
        runtime_config.set_all_config(effective, [ERASURE_SALT_KEY] if ERASURE_SALT_KEY in effective else [])
        monitor = MockMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
        try:
            _sync_await(run_pulumi_func(program))
        finally:
            _reset_runtime()
            runtime_config.set_all_config({}, [])
    urns = tuple(sorted(monitor.get_registered_resources()))
    return ProgramRun(stack, tuple(mocks.declared), tuple(mocks.invokes), resolved, urns, tuple(mocks.invoke_providers))
