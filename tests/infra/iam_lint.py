"""IAM policy checks for the infra tests: parliament's findings plus the house rule (no ``*`` where AWS allows less)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import sys
import types
import warnings
from typing import Any

__all__ = ["lint_identity_policy", "wildcards"]


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


def wildcards(document: dict[str, Any]) -> list[str]:
    """Allow statements with a wildcard action or a bare ``*`` resource (scoped ``arn:...:prefix/*`` is fine)."""
    problems = []
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        for action in _as_list(statement.get("Action", [])):
            if "*" in action:
                problems.append(f"{statement.get('Sid')}: wildcard action {action}")
        for resource in _as_list(statement.get("Resource", [])):
            if resource == "*" or resource.endswith(":*:*") or ":*:" in resource.split(":log-stream")[0]:
                problems.append(f"{statement.get('Sid')}: wildcard resource {resource}")
    return problems


def lint_identity_policy(document: dict[str, Any]) -> list[str]:
    """Parliament findings (community auditors included) and wildcard problems, as readable strings."""
    policy = _parliament().analyze_policy_string(json.dumps(document), include_community_auditors=True)
    findings = [f"{finding.issue}: {finding.detail}" for finding in policy.findings]
    return findings + wildcards(document)
