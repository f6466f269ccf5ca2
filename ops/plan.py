"""Offline preview: what the program declares for a stack, without the Pulumi CLI or AWS.

Runs the real ``__main__.py`` under mocks with the stack's real config and prints every resource: type,
logical name and input properties (policies and tags parsed, artifact hashes masked so the plan does not
depend on whether ``make package`` ran). ARNs use the mocks' account ``123456789012``.

    python -m ops.plan qa1                 # print the plan (make plan STACK=qa1)
    python -m ops.plan qa1 --check         # exit 1 if it differs from tests/infra/golden/qa1.txt
    python -m ops.plan all --write-golden  # regenerate every golden file after an intended change

The golden files make every infrastructure change a reviewable diff; ``tests/infra/test_golden.py`` fails
when the program and its golden file disagree.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from components.settings import PROJECT_ROOT, SettingsError
from ops.mocks import ACCOUNT_ID, Declared
from ops.program import ProgramRun, run_program

__all__ = ["GOLDEN_DIR", "STACKS", "golden_path", "main", "render"]

STACKS = ("dev1", "qa1", "preprod1", "prod1")
GOLDEN_DIR = PROJECT_ROOT / "tests" / "infra" / "golden"
# Content hashes of the built artifact: shown as placeholders so plans match with or without dist/.
_LAYER_HASH = "<sha256 of the layer zip>"
_FUNCTION_HASH = "<sha256 of the function zip>"
_HASHED = {
    "aws:s3/bucketObjectv2:BucketObjectv2": ("sourceHash", _LAYER_HASH),
    "aws:lambda/layerVersion:LayerVersion": ("sourceCodeHash", _LAYER_HASH),
    "aws:lambda/function:Function": ("sourceCodeHash", _FUNCTION_HASH),
}
_JSON_PROPERTIES = {"policy", "assumeRolePolicy", "defaultTags", "dashboardBody"}


class _PlanDumper(yaml.SafeDumper):
    """YAML with multi-line strings (SQL) as literal blocks, so diffs show the changed lines."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlanDumper.add_representer(str, _string)


def _dump(data: Any) -> list[str]:
    text = yaml.dump(data, Dumper=_PlanDumper, sort_keys=True, default_flow_style=False, width=200)
    return text.rstrip("\n").splitlines()


def golden_path(stack: str) -> Path:
    """The golden plan of a stack."""
    return GOLDEN_DIR / f"{stack}.txt"


def _clean(value: Any) -> Any:
    """Inputs as plain, stable YAML data: integral floats as ints, assets as their paths."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    path = getattr(value, "path", None)
    if path is not None and type(value).__module__.startswith("pulumi"):
        return f"<{type(value).__name__} {path}>"
    return value


def _properties(resource: Declared) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    hashed, placeholder = _HASHED.get(resource.type, ("", ""))
    if hashed:
        properties[hashed] = placeholder
    for key, value in sorted(resource.inputs.items()):
        if key == hashed:
            continue
        if key in _JSON_PROPERTIES and isinstance(value, str):
            properties[key] = json.loads(value)
        else:
            properties[key] = _clean(value)
    return properties


def _parents(run: ProgramRun) -> dict[tuple[str, str], str]:
    """(type, logical name) -> type of the component it belongs to (or the stack)."""
    parents: dict[tuple[str, str], str] = {}
    for urn in run.urns:
        parts = urn.split("::")
        if len(parts) < 4:  # urn:pulumi:<stack>::<project>::<type chain>::<name>
            continue
        chain = parts[2].split("$")
        parents[(chain[-1], parts[3])] = chain[-2] if len(chain) > 1 else ""
    return parents


def render(run: ProgramRun) -> str:
    """The plan of one program run as text: components in order, each with its resources and properties."""
    parents = _parents(run)
    resources = [resource for resource in run.declared if resource.type != "pulumi:pulumi:Stack"]
    components = [resource for resource in resources if not resource.custom]
    lines = [
        f"# dmd-pipeline stack {run.stack}: {len(resources)} resources declared (offline plan, mocks;"
        f" account {ACCOUNT_ID} in ARNs)",
        "",
    ]

    def block(resource: Declared, indent: str) -> None:
        lines.append(f"{indent}{resource.type}  {resource.name}")
        properties = _properties(resource)
        if properties:
            lines.extend(f"{indent}    {line}" for line in _dump(properties))

    roots = sorted(
        (r for r in resources if r.custom and parents.get((r.type, r.name), "") in ("", "pulumi:pulumi:Stack")),
        key=lambda r: (r.type, r.name),
    )
    for resource in roots:
        block(resource, "")
        lines.append("")
    for component in sorted(components, key=lambda r: (r.type, r.name)):
        lines.append(f"{component.type}  {component.name}")
        children = sorted(
            (r for r in resources if r.custom and parents.get((r.type, r.name)) == component.type),
            key=lambda r: (r.type, r.name),
        )
        for child in children:
            block(child, "  ")
        lines.append("")
    lines.append("outputs:")
    outputs = dict(run.outputs)
    if "function_code_sha256" in outputs:  # the built zip's digest, like the function's sourceCodeHash above
        outputs["function_code_sha256"] = _FUNCTION_HASH
    lines.extend(f"    {line}" for line in _dump(outputs))
    return "\n".join(lines) + "\n"


def _diff(stack: str, expected: str, actual: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"golden/{stack}.txt",
            tofile=f"program ({stack})",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.plan", description=__doc__.splitlines()[0])
    parser.add_argument("stack", choices=[*STACKS, "all"], help="stack to plan, or all")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with the golden file; exit 1 on a difference")
    mode.add_argument("--write-golden", action="store_true", help="(re)write the golden file(s)")
    args = parser.parse_args(argv)
    stacks = STACKS if args.stack == "all" else (args.stack,)
    status = 0
    for stack in stacks:
        try:
            text = render(run_program(stack))
        except SettingsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.write_golden:
            golden_path(stack).parent.mkdir(parents=True, exist_ok=True)
            golden_path(stack).write_text(text, encoding="utf-8")
            print(f"wrote {golden_path(stack).relative_to(PROJECT_ROOT)}")
        elif args.check:
            expected = golden_path(stack).read_text(encoding="utf-8") if golden_path(stack).exists() else ""
            if expected != text:
                print(_diff(stack, expected, text), end="")
                status = 1
            else:
                print(f"{stack}: plan matches {golden_path(stack).relative_to(PROJECT_ROOT)}")
        else:
            print(text, end="")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
