"""One way to fail on user input: every command's parser reports a bad argument in one line, exit status 2.

``CommandParser`` is an ``argparse.ArgumentParser`` whose errors are a single line on stderr (no usage block),
and the argument types below name the bad value and what would be valid. ``user_error`` does the same for a
mistake found after parsing (a missing object key, an unreadable file, a stack file that does not validate).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from components.settings import PROJECT_ROOT

__all__ = [
    "USER_ERROR",
    "CommandParser",
    "integer_at_least",
    "known_stacks",
    "number_above",
    "number_at_least",
    "stack_file_problem",
    "stack_name",
    "unreachable",
    "user_error",
]

USER_ERROR = 2


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``<prog>: error: <what was wrong and what is valid>``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR, f"{self.prog}: error: {message}\n")


def user_error(prog: str, message: str) -> int:
    """Print one line for a user's mistake and return the exit status for it."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USER_ERROR


def known_stacks() -> tuple[str, ...]:
    """The stacks that have a stack file (``Pulumi.<stack>.yaml``) in the project."""
    return tuple(sorted(path.name[len("Pulumi.") : -len(".yaml")] for path in PROJECT_ROOT.glob("Pulumi.*.yaml")))


def stack_name(text: str) -> str:
    """An argument type: the name of a stack that has a stack file."""
    stacks = known_stacks()
    if text not in stacks:
        raise argparse.ArgumentTypeError(f"unknown stack {text!r} (stacks: {', '.join(stacks)})")
    return text


def stack_file_problem(stack: str) -> str | None:
    """Why ``Pulumi.<stack>.yaml`` does not validate (one line naming the key and the fix), or None when it does.

    Mutating commands call it before they change anything: a broken stack file is found before an export is
    requested or an alias moved, not half-way through.
    """
    from components.settings import SettingsError, settings_from_stack_file  # noqa: PLC0415 - reads the stack file

    try:
        settings_from_stack_file(stack)
    except SettingsError as error:
        return f"{error} (fix Pulumi.{stack}.yaml, then run the command again)"
    except OSError as error:
        return f"cannot read Pulumi.{stack}.yaml: {error.strerror or error}"
    return None


def unreachable(error: BaseException, endpoint: str | None) -> str | None:
    """One line for an AWS endpoint that cannot be reached (the local AWS stopped, no network), else None."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError  # noqa: PLC0415

    if not isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
        return None
    if endpoint and any(host in endpoint for host in ("127.0.0.1", "localhost")):
        return (
            f"the local AWS at {endpoint} does not answer: start it (make demo ARGS=--keep) and use the "
            "endpoint it prints"
        )
    return f"cannot reach AWS ({error}): check the network and AWS_REGION"


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argument type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def number_above(minimum: float) -> Callable[[str], float]:
    """An argument type: a finite number > ``minimum`` (nan and inf are refused)."""
    what = f"a finite number > {minimum:g}"

    def parse(text: str) -> float:
        value = _number(text, what)
        if value <= minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def number_at_least(minimum: float) -> Callable[[str], float]:
    """An argument type: a finite number >= ``minimum`` (nan and inf are refused)."""
    what = f"a finite number >= {minimum:g}"

    def parse(text: str) -> float:
        value = _number(text, what)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse
