"""A small model of how GitLab reads .gitlab-ci.yml: `extends` merging and `rules`/`workflow` evaluation.

Enough of GitLab's semantics to simulate which jobs a pipeline gets for a given push or merge request,
so the tests can assert triggers and gates instead of just looking at strings.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CI_FILE",
    "GLOBAL_KEYWORDS",
    "Pipeline",
    "PlannedJob",
    "evaluate",
    "glob_matches",
    "jobs",
    "load",
    "plan_pipeline",
]

CI_FILE = Path(__file__).resolve().parents[2] / ".gitlab-ci.yml"
GLOBAL_KEYWORDS = frozenset(
    {
        "workflow",
        "stages",
        "variables",
        "default",
        "include",
        "image",
        "services",
        "cache",
        "before_script",
        "after_script",
    }
)


def load(path: Path = CI_FILE) -> dict[str, Any]:
    """The CI file as YAML (anchors resolved)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path} is not a mapping"
    return document


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """GitLab's `extends` merge: hashes merge key by key, everything else (lists included) is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _resolve(name: str, config: Mapping[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in seen:
        raise ValueError(f"extends cycle: {' -> '.join((*seen, name))}")
    definition = config[name]
    parents = definition.get("extends", [])
    parents = [parents] if isinstance(parents, str) else parents
    resolved: dict[str, Any] = {}
    for parent in parents:
        resolved = _deep_merge(resolved, _resolve(parent, config, (*seen, name)))
    own = {key: value for key, value in definition.items() if key != "extends"}
    return _deep_merge(resolved, own)


def jobs(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every visible job with its templates merged in (GitLab's view after `extends`)."""
    return {name: _resolve(name, config) for name in config if name not in GLOBAL_KEYWORDS and not name.startswith(".")}


# ---------------------------------------------------------------- rules expressions

_TOKEN = re.compile(r'\s*(?:(\$[A-Za-z_][A-Za-z0-9_]*)|"([^"]*)"|(==|!=|&&|\|\||\(|\)))')


def _tokens(expression: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expression.rstrip()):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise ValueError(f"unsupported rules expression near {expression[position:]!r} in {expression!r}")
        variable, string, operator = match.groups()
        if variable is not None:
            tokens.append(("var", variable[1:]))
        elif string is not None:
            tokens.append(("str", string))
        else:
            tokens.append(("op", operator))
        position = match.end()
    return tokens


def evaluate(expression: str, variables: Mapping[str, str]) -> bool:
    """Evaluate a `rules:if` expression: $VAR, "strings", ==, !=, &&, ||, parentheses."""
    tokens = _tokens(expression)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        token = tokens[position]
        position += 1
        return token

    def operand() -> str | None:
        kind, value = take()
        if kind == "var":
            return variables.get(value)
        if kind == "str":
            return value
        raise ValueError(f"expected a variable or a string in {expression!r}")

    def comparison() -> bool:
        if peek() == ("op", "("):
            take()
            result = disjunction()
            assert take() == ("op", ")"), f"unbalanced parentheses in {expression!r}"
            return result
        left = operand()
        if peek() in (("op", "=="), ("op", "!=")):
            _, operator = take()
            right = operand()
            return (left == right) if operator == "==" else (left != right)
        return bool(left)

    def conjunction() -> bool:
        result = comparison()
        while peek() == ("op", "&&"):
            take()
            right = comparison()
            result = result and right
        return result

    def disjunction() -> bool:
        result = conjunction()
        while peek() == ("op", "||"):
            take()
            right = conjunction()
            result = result or right
        return result

    result = disjunction()
    if position != len(tokens):
        raise ValueError(f"trailing tokens in {expression!r}")
    return result


def glob_matches(pattern: str, path: str) -> bool:
    """GitLab `changes` globbing: `**` crosses directories, `*` does not."""
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.fullmatch(regex, path) is not None


# ---------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class PlannedJob:
    """A job as it appears in a pipeline: how it starts and whether its failure blocks."""

    name: str
    when: str  # on_success, manual, always, delayed
    allow_failure: bool


@dataclass(frozen=True)
class Pipeline:
    """The jobs of one simulated pipeline (empty when `workflow:rules` creates none)."""

    created: bool
    jobs: dict[str, PlannedJob]

    def names(self) -> set[str]:
        return set(self.jobs)


def _changes_match(rule: Mapping[str, Any], changed: Iterable[str] | None) -> bool:
    if "changes" not in rule or changed is None:
        return True  # GitLab: `changes` is true in pipelines without a diff to compare with
    changes = rule["changes"]
    patterns = changes["paths"] if isinstance(changes, Mapping) else changes
    return any(glob_matches(pattern, path) for pattern in patterns for path in changed)


def _first_rule(rules: list[Mapping[str, Any]], variables: Mapping[str, str], changed: Iterable[str] | None):
    for rule in rules:
        if "if" in rule and not evaluate(rule["if"], variables):
            continue
        if not _changes_match(rule, changed):
            continue
        return rule
    return None


def plan_pipeline(
    config: Mapping[str, Any],
    variables: Mapping[str, str],
    changed: Iterable[str] | None = None,
) -> Pipeline:
    """Which jobs GitLab creates for these predefined variables (and, for MR pipelines, these changed files)."""
    changed = list(changed) if changed is not None else None
    workflow_rules = config.get("workflow", {}).get("rules")
    if workflow_rules is not None:
        rule = _first_rule(workflow_rules, variables, changed)
        if rule is None or rule.get("when") == "never":
            return Pipeline(created=False, jobs={})
    planned: dict[str, PlannedJob] = {}
    for name, job in jobs(config).items():
        if "rules" in job:
            rule = _first_rule(job["rules"], variables, changed)
            if rule is None or rule.get("when") == "never":
                continue
            when = rule.get("when", job.get("when", "on_success"))
            allow_failure = rule.get("allow_failure", job.get("allow_failure", False))
        else:
            when = job.get("when", "on_success")
            # Outside rules, a manual job may fail (or never run) without blocking by default.
            allow_failure = job.get("allow_failure", when == "manual")
        planned[name] = PlannedJob(name, when, bool(allow_failure))
    return Pipeline(created=True, jobs=planned)
