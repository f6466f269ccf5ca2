"""The erasure request and audit formats: what the operator files and what the curator leaves behind."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from curator.erasure_requests import (
    AuditRecord,
    ErasureRequest,
    ErasureRequestError,
    fan_id_hmac,
    parse_fan_ids,
    request_id_of_key,
)

FILED = datetime(2026, 12, 7, 5, 0, 1, tzinfo=UTC)


def test_fan_ids_skip_blanks_and_comments_and_keep_first_occurrence() -> None:
    lines = ["# erase per ticket 42", "fan-2", "", "  fan-1  ", "fan-2"]

    assert parse_fan_ids(lines, "fans.txt") == ("fan-2", "fan-1")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["fan-1", "two words"], "fans.txt:2: 'two words' is not a fan id"),
        (["FAN#fan-1"], "fans.txt:1: 'FAN#fan-1' is a sort key"),
        (["# only a comment", ""], "fans.txt: no fan id"),
    ],
)
def test_a_bad_fan_file_names_the_line_and_value(lines: list[str], message: str) -> None:
    with pytest.raises(ErasureRequestError, match=message):
        parse_fan_ids(lines, "fans.txt")


def test_a_request_round_trips_under_its_key() -> None:
    request = ErasureRequest.new(("fan-1", "fan-2"), now=FILED, token="0a1b2c3d")

    again = ErasureRequest.from_json(request.to_json(), request.key)

    assert request.key == "erasure/requests/20261207T050001Z-0a1b2c3d.json"
    assert request.audit_key == "erasure/audit/20261207T050001Z-0a1b2c3d.json"
    assert again == request
    assert request_id_of_key(request.key) == request_id_of_key(request.audit_key) == request.request_id


def test_a_request_stored_under_another_key_is_refused() -> None:
    request = ErasureRequest.new(("fan-1",), now=FILED, token="0a1b2c3d")

    with pytest.raises(ErasureRequestError, match=r"whose key is 'erasure/requests/20261207T050001Z-0a1b2c3d\.json'"):
        ErasureRequest.from_json(request.to_json(), "erasure/requests/20261207T050001Z-ffffffff.json")


def test_the_audit_keeps_salted_hmacs_never_the_ids() -> None:
    request = ErasureRequest.new(("fan-1", "fan-2"), now=FILED, token="0a1b2c3d")
    completed = datetime(2026, 12, 7, 5, 15, tzinfo=UTC)

    record = AuditRecord.of(
        request, "salt-dev1", completed, {"registrations": 2}, {"registrations": {"before": 1, "after": 2}}
    )
    data = record.to_json()

    assert b"fan-1" not in data
    assert b"fan-2" not in data
    assert record.fan_id_hmacs == (fan_id_hmac("salt-dev1", "fan-1"), fan_id_hmac("salt-dev1", "fan-2"))
    assert fan_id_hmac("salt-dev1", "fan-1") != fan_id_hmac("salt-qa1", "fan-1")
    assert AuditRecord.from_json(data, record.key) == record
    assert json.loads(data)["rows_removed"] == {"registrations": 2}


def test_an_audit_with_an_unknown_place_is_refused() -> None:
    request = ErasureRequest.new(("fan-1",), now=FILED, token="0a1b2c3d")

    with pytest.raises(ErasureRequestError, match=r"unknown place\(s\) \['lake'\]"):
        AuditRecord.of(request, "salt", FILED, {"lake": 1}, {})
