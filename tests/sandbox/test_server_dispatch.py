"""The local AWS server's dispatch: moto's list of its backends is read once, not on every request."""

from __future__ import annotations

import os

import pytest
from moto import backends

from sandbox.server import list_moto_modules_once


def test_moto_lists_its_backends_once_and_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "list_of_moto_modules", backends.list_of_moto_modules)  # restored afterwards
    listed = list(backends.list_of_moto_modules())

    list_moto_modules_once()

    def no_listing(path: str) -> list[str]:
        raise AssertionError(f"moto listed {path} again")

    monkeypatch.setattr(os, "listdir", no_listing)
    assert list(backends.list_of_moto_modules()) == listed
    assert {"s3", "glue", "kinesis", "dynamodbstreams"} <= set(listed)
    list_moto_modules_once()  # a second call keeps the first list
    assert list(backends.list_of_moto_modules()) == listed
