"""IAM policy checks for the infra tests: parliament's findings plus the house rule (no ``*`` where AWS allows less)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import sys
import types
import warnings
from typing import Any

__all__ = ["lint_identity_policy", "resource_level_unsupported", "wildcards"]


def _parliament() -> Any:
    # parliament 1.6 still imports pkg_resources (gone with modern setuptools) only for resource_filename.
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(  # type: ignore[attr-defined]
            importlib.resources.files(package).joinpath(name)
        )
        sys.modules["pkg_resources"] = shim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # parliament's regexes use invalid escapes
        import parliament  # noqa: PLC0415

    return parliament


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resource_level_unsupported(action: str) -> bool:
    """True when IAM defines no resource type for ``service:Action``, so ``*`` is its only possible resource."""
    service, _, name = action.partition(":")
    for definition in _parliament().iam_definition:
        if definition["prefix"] == service:
            for privilege in definition["privileges"]:
                if privilege["privilege"].lower() == name.lower():
                    return all(kind["resource_type"] == "" for kind in privilege["resource_types"])
    raise KeyError(f"unknown IAM action {action}")


def wildcards(document: dict[str, Any]) -> list[str]:
    """Allow statements with a wildcard action, or a ``*`` resource for an action that could be scoped."""
    problems = []
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = _as_list(statement.get("Action", []))
        for action in actions:
            if "*" in action:
                problems.append(f"{statement.get('Sid')}: wildcard action {action}")
        cannot_be_scoped = not any("*" in action for action in actions) and all(
            resource_level_unsupported(action) for action in actions
        )
        for resource in _as_list(statement.get("Resource", [])):
            if resource == "*":
                too_wide = not cannot_be_scoped
            else:
                too_wide = resource.endswith(":*:*") or ":*:" in resource.split(":log-stream")[0]
            if too_wide:
                problems.append(f"{statement.get('Sid')}: wildcard resource {resource}")
    return problems


def lint_identity_policy(document: dict[str, Any]) -> list[str]:
    """Parliament findings (community auditors included) and wildcard problems, as readable strings."""
    policy = _parliament().analyze_policy_string(json.dumps(document), include_community_auditors=True)
    findings = [f"{finding.issue}: {finding.detail}" for finding in policy.findings]
    return findings + wildcards(document)
