"""What both tables' writers share: staged files, the one overwrite commit, typed predicates, the run's error.

A run writes data files first and commits them in one overwrite snapshot; files of a commit that does not happen
are deleted again (``Staged.discard``), and anything a crash leaves is removed by the retention cleanup.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.exceptions import PipelineError

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.manifest import DataFile, ManifestFile
    from pyiceberg.table import Table

__all__ = ["CurationError", "Staged", "commit_overwrite", "per_thread", "predicate"]

#: Whether a manifest may hold rows of the partitions a commit touches.
Evaluator = Callable[["ManifestFile"], bool]


class CurationError(PipelineError):
    """The curated tables are not in a state a run can continue from (the message says which and why)."""


@dataclass
class Staged:
    """Files written for one commit, deleted again if the commit does not happen."""

    table: Table
    written: list[str] = field(default_factory=list)

    def discard(self) -> None:
        for path in self.written:
            with contextlib.suppress(Exception):  # best effort: an unreferenced file is removed by the cleanup
                self.table.io.delete(path)


def commit_overwrite(
    table: Table, removed: Sequence[DataFile], added: Sequence[DataFile], properties: dict[str, str]
) -> Table:
    """One overwrite snapshot swapping ``removed`` for ``added``; ``CommitFailedException`` on any conflict."""
    transaction = table.transaction()
    with transaction.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
        overwrite._build_manifest_evaluator = per_thread(overwrite._build_manifest_evaluator)  # type: ignore[method-assign,assignment]
        for data_file in removed:
            overwrite.delete_data_file(data_file)
        for data_file in added:
            overwrite.append_data_file(data_file)
    return transaction.commit_transaction()


def per_thread(build: Callable[[int], Evaluator]) -> Callable[[int], Evaluator]:
    """``build`` (a partition spec's manifest evaluator) with one evaluator per thread.

    pyiceberg's overwrite shares one evaluator per spec among the threads that read the parent snapshot's manifests,
    and the evaluator keeps the manifest it is looking at in an attribute. Two threads at once can each judge the
    other's manifest: the one holding a file to delete is skipped and the commit fails ("Missing required files to
    delete"). Each thread here builds and keeps its own.
    """
    local = threading.local()

    def for_spec(spec_id: int) -> Evaluator:
        def evaluate(manifest: ManifestFile) -> bool:
            evaluators: dict[int, Evaluator] = local.__dict__.setdefault("evaluators", {})
            if (evaluator := evaluators.get(spec_id)) is None:
                evaluator = evaluators[spec_id] = build(spec_id)
            return evaluator(manifest)

        return evaluate

    return for_spec


def predicate(kind: Any, *arguments: Any) -> BooleanExpression:
    """A pyiceberg predicate (its pydantic constructors are not typed positionally)."""
    expression: BooleanExpression = kind(*arguments)
    return expression
