"""The fast path agrees with the strict path, row for row and reason for reason, whatever the records hold."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import columnar
from pipeline.batch import DecodedBatch, decode_strict
from pipeline.decode import parse_kinesis_records
from pipeline.schema import field_specs
from sandbox.changes import DemandGenerator, change_record, changes_event

BASE = [change_record(change, table_name="demand") for change in DemandGenerator(seed=17).changes(24)]

TYPED_VALUES = [
    {"S": "x"}, {"S": ""}, {"S": "REGISTERED"}, {"S": "CANCELLED"}, {"S": "naïve ✓"}, {"S": "2026-11-28T23:50:00Z"},
    {"S": "2026-11-28T23:50:00.123456+05:30"}, {"S": "2026-11-28 23:50:00Z"}, {"S": "2026-11-28T23:50:00"},
    {"S": "1969-12-31T23:59:59.999Z"}, {"S": "1969-12-31T23:59:59.9995Z"}, {"S": "2026-11-28T23:50:00.5+23:59"},
    {"S": "2026-02-30T00:00:00Z"}, {"S": "EVENT#vvOther"}, {"S": "null"},
    {"N": "1"}, {"N": "-5"}, {"N": "3.0"}, {"N": "1e2"}, {"N": "2147483648"}, {"N": "99999999999999999999"},
    {"N": "0.0000001"}, {"N": "1.50"}, {"N": "007"}, {"N": "x"}, {"NULL": True}, {"NULL": False}, {"S": None},
    None, {"BOOL": True}, {"S": "x", "N": "1"}, {"Q": "1"}, {"S": 5}, {"B": "AP8="}, {"SS": ["b", "a"]}, {"SS": []},
    {"NS": ["2", "1"]}, {"L": []}, {"L": [{"S": "PL1"}, {"S": "GA"}]}, {"L": [{"N": "1"}]}, {"L": [None]},
    {"M": {}}, {"M": {"locale": {"S": "en-US"}}}, {"M": {"a.b": {"S": "v"}, "k": {"N": "1"}}}, {"M": {"k": None}},
    {"M": {"deep": {"M": {"x": {"L": [{"BOOL": False}, {"NULL": True}]}}}}}, [], "raw", {"S": "x", "N": None},
    {"SS": ["a", None]}, {"L": [{"S": "a", "N": None}]}, {"M": None}, {"NULL": None}, {"M": {"k": {"S": None}}},
]  # fmt: skip
ATTRIBUTES = [*[spec.name for spec in field_specs()][:11], "pk", "sk", "marketing", "new_attribute", "a.b"]


def _event(payloads: list[bytes | str]) -> dict[str, Any]:
    event = changes_event([])
    event["Records"] = []
    for index, payload in enumerate(payloads):
        data = payload if isinstance(payload, str) else base64.b64encode(payload).decode("ascii")
        sequence = str(5000 + index * 7)
        event["Records"].append(
            {
                "kinesis": {
                    "partitionKey": "pk",
                    "sequenceNumber": sequence,
                    "data": data,
                    "approximateArrivalTimestamp": 1795909800.5,
                },
                "eventID": f"shardId-000000000002:{sequence}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/demand-changes",
            }
        )
    return event


def _outcomes(decoded: DecodedBatch, count: int) -> list[Any]:
    outcome: list[Any] = [None] * count
    for position, row in zip(decoded.positions, decoded.rows.to_pylist(), strict=True):
        outcome[position] = ("row", row)
    for item in decoded.quarantined:
        outcome[item.position] = ("quarantine", item.error.kind, str(item.error))
    return outcome


def assert_paths_agree(payloads: list[bytes | str], precision: str = "MILLISECOND") -> list[Any]:
    batch = parse_kinesis_records(_event(payloads))
    by_strict = _outcomes(decode_strict(batch, precision), len(payloads))
    by_columns = _outcomes(columnar.decode_batch(batch, precision), len(payloads))
    for position, (expected, actual) in enumerate(zip(by_strict, by_columns, strict=True)):
        assert actual == expected, f"record {position}: {payloads[position]!r}"
    assert by_columns.count(None) == 0
    return by_strict


def _mutate(record: dict[str, Any], operation: str, attribute: str, value: Any, number: int) -> bytes | str:
    body = record["dynamodb"]
    image = body.get("NewImage") or body.get("OldImage") or {}
    if operation == "set":
        image[attribute] = value
    elif operation == "drop":
        image.pop(attribute, None)
    elif operation == "event_name":
        record["eventName"] = ["INSERT", "MODIFY", "REMOVE", "TTL", "", None, 3][number % 7]
    elif operation == "remove_without_images":
        record["eventName"] = "REMOVE"
        body.pop("NewImage", None)
        body.pop("OldImage", None)
    elif operation == "remove_with_old_only":
        record["eventName"] = "REMOVE"
        body["OldImage"] = body.pop("NewImage", None) or body.get("OldImage")
    elif operation == "time":
        body["ApproximateCreationDateTime"] = [0, -1, 1795909800024123, 1.5, "1795909800024", 1795909800024][number % 6]
    elif operation == "precision":
        body["ApproximateCreationDateTimePrecision"] = ["MICROSECOND", "MILLISECOND", "SECOND", None][number % 4]
    elif operation == "keys":
        body["Keys"][attribute if attribute in ("pk", "sk") else "pk"] = value
    elif operation == "pretty":
        return json.dumps(record, indent=2).encode()
    elif operation == "truncate":
        return json.dumps(record).encode()[: number % 400]
    elif operation == "garbage":
        return ["***", "", "eyJ", base64.b64encode(b" {}").decode(), base64.b64encode(b"{}{}").decode()][number % 5]
    elif operation == "envelope_field":
        record[["eventID", "tableName", "dynamodb", "userIdentity"][number % 4]] = value
    return json.dumps(record, ensure_ascii=number % 2 == 0).encode()


OPERATIONS = [
    "set", "set", "set", "drop", "event_name", "remove_without_images", "remove_with_old_only", "time", "precision",
    "keys", "pretty", "truncate", "garbage", "envelope_field", "none",
]  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(BASE) - 1),
            st.sampled_from(OPERATIONS),
            st.sampled_from(ATTRIBUTES),
            st.sampled_from(range(len(TYPED_VALUES))),
            st.integers(0, 10_000),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["MILLISECOND", "MICROSECOND"]),
)
def test_the_fast_path_agrees_with_the_strict_path_on_mutated_records(mutations, precision):
    # GIVEN a batch of real change records, some of them mutated in ways valid and invalid
    payloads: list[bytes | str] = [json.dumps(record).encode() for record in BASE]
    for index, operation, attribute, value_index, number in mutations:
        record = copy.deepcopy(BASE[index])
        payloads[index] = _mutate(record, operation, attribute, copy.deepcopy(TYPED_VALUES[value_index]), number)
    # WHEN both paths decode it THEN every record has the same outcome: the same row or the same reason
    assert_paths_agree(payloads, precision)


@pytest.mark.parametrize("event_name", ["INSERT", "REMOVE"])
@pytest.mark.parametrize("value_index", range(len(TYPED_VALUES)))
def test_every_attribute_holding_every_kind_of_value_gets_the_same_outcome_on_both_paths(event_name, value_index):
    # GIVEN good records, and one record per attribute holding this typed value (in the image the row is built
    # from, and in the keys); one value per batch, so that a value the reader refuses does not hide the others
    payloads: list[bytes | str] = [json.dumps(record).encode() for record in BASE[:6]]
    for position, attribute in enumerate(ATTRIBUTES):
        for operation in ("set", "keys"):
            record = copy.deepcopy(BASE[position % len(BASE)])
            if event_name == "REMOVE":
                _mutate(record, "remove_with_old_only", attribute, None, 0)
            payloads.append(_mutate(record, operation, attribute, copy.deepcopy(TYPED_VALUES[value_index]), position))
    # WHEN both paths decode them THEN each record has the same outcome
    outcomes = assert_paths_agree(payloads)
    assert all(outcome[0] == "row" for outcome in outcomes[:6])


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op not in ("set", "keys", "none")])
def test_every_envelope_mutation_gets_the_same_outcome_on_both_paths(operation):
    payloads: list[bytes | str] = []
    for number in range(40):
        record = copy.deepcopy(BASE[number % len(BASE)])
        payloads.append(_mutate(record, operation, "status", copy.deepcopy(TYPED_VALUES[number]), number * 37))
    assert_paths_agree(payloads)
    assert_paths_agree(payloads, "MICROSECOND")


@pytest.mark.parametrize(("seed", "count"), [(1, 1500), (2, 6000)])
def test_generated_batches_take_the_fast_path_and_match_the_strict_path(seed, count, monkeypatch):
    # GIVEN a realistic batch
    event = changes_event(list(DemandGenerator(seed=seed).changes(count)))
    batch = parse_kinesis_records(event)
    strict_calls: list[int] = []
    monkeypatch.setattr(columnar, "decode_one", lambda *args: strict_calls.append(1))
    # WHEN both paths decode it THEN the rows are identical and none needed the strict path
    by_columns = columnar.decode_batch(batch, "MILLISECOND")
    assert strict_calls == []
    by_strict = decode_strict(batch, "MILLISECOND")
    assert by_columns.rows.equals(by_strict.rows)
    assert by_columns.positions == by_strict.positions == tuple(range(count))


def test_text_the_reader_would_take_for_a_timestamp_is_kept_as_written():
    # GIVEN an unknown attribute the reader infers as a timestamp in some records and as text in others
    first, second = copy.deepcopy(BASE[0]), copy.deepcopy(BASE[1])
    first["dynamodb"]["NewImage"]["seen"] = {"S": "2026-11-28T23:50:00Z"}
    second["dynamodb"]["NewImage"]["seen"] = {"S": "yesterday"}
    payloads: list[bytes | str] = [json.dumps(first).encode() for _ in range(2500)]
    payloads += [json.dumps(second).encode() for _ in range(10)]
    # WHEN both paths decode it THEN they agree, and the text is kept as written
    outcomes = assert_paths_agree(payloads)
    assert json.loads(outcomes[0][1]["extra_attributes"]) == {"seen": "2026-11-28T23:50:00Z"}
    assert json.loads(outcomes[-1][1]["extra_attributes"]) == {"seen": "yesterday"}


def test_one_unparseable_record_costs_neither_the_batch_nor_its_neighbours(monkeypatch):
    # GIVEN 400 good records and one the JSON reader refuses (a number where text belongs)
    payloads: list[bytes | str] = [json.dumps(record).encode() for record in (BASE * 17)[:400]]
    bad = copy.deepcopy(BASE[0])
    bad["dynamodb"]["NewImage"]["status"] = {"S": 5}
    payloads[200] = json.dumps(bad).encode()
    # WHEN decoding, counting the records that go through the strict path
    strict_calls: list[int] = []
    original = columnar.decode_one

    def counting(record: Any, precision: str, source_table: str | None = None) -> Any:
        strict_calls.append(1)
        return original(record, precision, source_table)

    monkeypatch.setattr(columnar, "decode_one", counting)
    batch = parse_kinesis_records(_event(payloads))
    decoded = columnar.decode_batch(batch, "MILLISECOND")
    # THEN only a small sub-batch around it went the slow way, and only it is quarantined
    assert [item.position for item in decoded.quarantined] == [200]
    assert "attribute 'status': expected a string (S), got {\"S\": 5}" in str(decoded.quarantined[0].error)
    assert decoded.rows.num_rows == 399
    assert len(strict_calls) <= 16


def test_the_reader_schema_follows_the_contract():
    image = columnar.payload_schema().field("dynamodb").type.field("NewImage").type
    assert {field.name for field in image} == {spec.name for spec in field_specs()[:11]} | {"pk", "sk"}
    assert image.field("quantity").type.field("N").type == "string"


def test_base64_that_only_strict_binascii_accepts_still_decodes_alike():
    # GIVEN a payload whose base64 carries excess padding, which strict binascii accepts and pybase64 refuses
    payload = json.dumps(BASE[0]).encode()
    payload += b" " * (-len(payload) % 3)  # whole quanta, so that "==" is excess
    padded = base64.b64encode(payload).decode() + "=="
    # WHEN both paths decode a batch holding it THEN it is a row on both, like its neighbours
    outcomes = assert_paths_agree([json.dumps(BASE[1]).encode(), padded, json.dumps(BASE[2]).encode()])
    assert [outcome[0] for outcome in outcomes] == ["row", "row", "row"]
