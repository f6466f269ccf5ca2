"""Strict decoding: every DynamoDB type, numbers, precision, images, unicode, empty values, envelopes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.batch import decode_one, decode_strict
from pipeline.columnar import decode_batch
from pipeline.decode import EventName, deserialize_value, parse_change_record, parse_kinesis_records, sequence_key
from pipeline.exceptions import InvalidEventError, NotBase64Error, NotChangeRecordError, NotJsonError
from pipeline.normalize import plain_json
from sandbox.changes import KinesisEntry, lambda_event

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/demand-changes"
DECODERS = [pytest.param(decode_strict, id="strict"), pytest.param(decode_batch, id="columnar")]


def item(**attributes: Any) -> dict[str, Any]:
    """A valid item in typed DynamoDB JSON, with ``attributes`` added or replaced (None removes one)."""
    base = {
        "pk": {"S": "EVENT#vvA1"},
        "sk": {"S": "FAN#f-1"},
        "market_id": {"N": "27"},
        "status": {"S": "REGISTERED"},
        "quantity": {"N": "2"},
        "created_at": {"S": "2026-11-28T23:50:00.024Z"},
    }
    base.update(attributes)
    return {name: value for name, value in base.items() if value is not None}


def record(
    image: dict[str, Any] | None = None, *, event_name: str = "INSERT", old: dict[str, Any] | None = None, **body: Any
) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1795909800024,
        "Keys": {"pk": {"S": "EVENT#vvA1"}, "sk": {"S": "FAN#f-1"}},
    }
    if image is not None:
        dynamodb["NewImage"] = image
    if old is not None:
        dynamodb["OldImage"] = old
    dynamodb.update(body)
    return {
        "awsRegion": "us-east-1",
        "eventID": "c0ffee",
        "eventName": event_name,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": "demand",
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }


def event_of(*payloads: dict[str, Any] | bytes, first: int = 1000) -> dict[str, Any]:
    entries = [
        KinesisEntry(
            payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            "pk",
            str(first + index),
            1795909800.5,
        )
        for index, payload in enumerate(payloads)
    ]
    return lambda_event(entries, shard_id="shardId-000000000001", stream_arn=STREAM)


def rows_of(decoder: Any, *payloads: dict[str, Any] | bytes, precision: str = "MILLISECOND") -> list[dict[str, Any]]:
    decoded = decoder(parse_kinesis_records(event_of(*payloads)), precision)
    assert not decoded.quarantined, [str(item.error) for item in decoded.quarantined]
    rows: list[dict[str, Any]] = decoded.rows.to_pylist()
    return rows


def reason_of(decoder: Any, payload: dict[str, Any] | bytes, precision: str = "MILLISECOND") -> str:
    decoded = decoder(parse_kinesis_records(event_of(payload)), precision)
    assert decoded.rows.num_rows == 0
    (quarantined,) = decoded.quarantined
    return f"{quarantined.error.kind}: {quarantined.error}"


# -- typed values ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ({"S": "héllo 🎟"}, "héllo 🎟"),
        ({"S": ""}, ""),
        ({"N": "42"}, Decimal(42)),
        ({"N": "-0.000001"}, Decimal("-0.000001")),
        ({"N": "12345678901234567890123456789012345678"}, Decimal("12345678901234567890123456789012345678")),
        ({"N": "1E+125"}, Decimal("1E+125")),
        ({"B": base64.b64encode(b"\x00\xff").decode()}, b"\x00\xff"),
        ({"BOOL": False}, False),
        ({"NULL": True}, None),
        ({"M": {"a": {"N": "1"}, "b": {"L": []}}}, {"a": Decimal(1), "b": []}),
        ({"L": [{"S": "x"}, {"N": "2"}, {"NULL": True}]}, ["x", Decimal(2), None]),
        ({"SS": ["b", "a"]}, {"a", "b"}),
        ({"SS": []}, set()),
        ({"NS": ["1", "2.5"]}, {Decimal(1), Decimal("2.5")}),
        ({"BS": [base64.b64encode(b"x").decode()]}, {b"x"}),
    ],
)
def test_every_dynamodb_type_decodes(typed, expected):
    assert deserialize_value(typed) == expected


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ({"S": "a", "N": "1"}, "expected one DynamoDB typed value"),
        ({"X": "1"}, "unknown DynamoDB type tag 'X'"),
        ({"NULL": False}, "NULL must hold true"),
        ({"N": "NaN"}, "not a decimal number"),
        ({"N": " 1"}, "not a decimal number"),
        ({"N": "1_000"}, "not a decimal number"),
        ({"N": "123456789012345678901234567890123456789"}, "38-digit precision"),
        ({"B": "***"}, "not base64"),
        ({"S": 5}, "S must hold a string"),
        ({"BOOL": "true"}, "BOOL must hold true or false"),
        ({"SS": "a"}, "SS must hold a list of strings"),
    ],
)
def test_malformed_typed_values_are_refused_with_the_value(typed, message):
    with pytest.raises(ValueError, match=message):
        deserialize_value(typed)


_SCALARS = st.one_of(
    st.text(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**20), max_value=10**20).map(
        lambda value: Decimal(str(value)).normalize()
    ),
    st.booleans(),
    st.none(),
    st.binary(max_size=12).map(Binary),
)
_SETS = st.one_of(
    st.sets(st.text(max_size=8), min_size=1, max_size=4),
    st.sets(st.integers(-(10**12), 10**12).map(Decimal), min_size=1, max_size=4),
)
_VALUES = st.recursive(
    st.one_of(_SCALARS, _SETS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _python(value: Any) -> Any:
    """What the decoder returns for a value boto3 serialized: Binary -> bytes, containers recursively."""
    if isinstance(value, Binary):
        return value.value  # type: ignore[attr-defined]
    if isinstance(value, dict):
        return {key: _python(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_python(item) for item in value]
    return value


def _wire(typed: dict[str, Any]) -> dict[str, Any]:
    """boto3's typed JSON as it travels on the stream: JSON text, binary as base64."""

    def encode(value: Any) -> str:
        if isinstance(value, bytes | bytearray):
            return base64.b64encode(value).decode("ascii")
        raise TypeError(type(value))

    wire: dict[str, Any] = json.loads(json.dumps(typed, default=encode))
    return wire


@given(st.dictionaries(st.text(min_size=1, max_size=10), _VALUES, max_size=6))
def test_random_items_round_trip_through_boto3s_serializer_and_the_decoder(random_item):
    serializer = TypeSerializer()
    typed = _wire({name: serializer.serialize(value) for name, value in random_item.items()})
    assert {name: deserialize_value(value) for name, value in typed.items()} == _python(random_item)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), _VALUES, min_size=1, max_size=4))
def test_unknown_attributes_round_trip_into_extra_attributes_on_both_paths(unknown):
    # GIVEN an item carrying attributes the contract does not know, serialized by boto3
    known = {"pk", "sk", "event_id", "fan_id", "market_id", "status", "quantity", "price_levels", "channel"}
    unknown = {f"x_{name}": value for name, value in unknown.items() if name not in known}
    serializer = TypeSerializer()
    payload = record(item(**_wire({name: serializer.serialize(value) for name, value in unknown.items()})))
    # WHEN both decoders read it
    strict, columnar = rows_of(decode_strict, payload), rows_of(decode_batch, payload)
    # THEN they agree, and extra_attributes is the exact JSON of the plain values
    assert strict == columnar
    expected = plain_json({name: _python(value) for name, value in unknown.items()})
    assert strict[0]["extra_attributes"] == (expected if unknown else None)
    if unknown:
        assert set(json.loads(strict[0]["extra_attributes"])) == set(unknown)


# -- rows --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", DECODERS)
def test_a_full_item_decodes_to_the_contract_row(decoder):
    image = item(
        price_levels={"L": [{"S": "PL1"}, {"S": "GA"}]},
        channel={"S": "web"},
        presale_code={"NULL": True},
        updated_at={"S": "2026-11-29T01:02:03.456+01:00"},
        attributes={"M": {"utm_source": {"S": "email"}, "locale": {"S": "fr-FR"}}},
        marketing={"M": {"wave": {"N": "2"}, "opt_in": {"BOOL": True}}},
    )
    (row,) = rows_of(decoder, record(image))
    assert row == {
        "event_id": "vvA1",
        "fan_id": "f-1",
        "market_id": 27,
        "status": "REGISTERED",
        "quantity": 2,
        "price_levels": ["PL1", "GA"],
        "channel": "web",
        "presale_code": None,
        "created_at": datetime(2026, 11, 28, 23, 50, 0, 24000, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 29, 0, 2, 3, 456000, tzinfo=UTC),
        "attributes": [("locale", "fr-FR"), ("utm_source", "email")],
        "op": "INSERT",
        "change_id": "c0ffee",
        "change_time": datetime(2026, 11, 28, 23, 50, 0, 24000, tzinfo=UTC),
        "shard_id": "shardId-000000000001",
        "sequence_number": "1000",
        "table_name": "demand",
        "extra_attributes": '{"marketing":{"opt_in":true,"wave":2}}',
        "deleted_by_ttl": False,
        "change_time_us": 1795909800024000,
    }


@pytest.mark.parametrize("decoder", DECODERS)
def test_high_precision_numbers_stay_exact_in_extra_attributes(decoder):
    image = item(score={"N": "12345678901234567890.123456789012345678"}, tiny={"N": "1E-130"}, big={"N": "-9.9E+125"})
    (row,) = rows_of(decoder, record(image))
    assert row["extra_attributes"] == (
        '{"big":-9.9E+125,"score":12345678901234567890.123456789012345678,"tiny":1E-130}'
    )
    parsed = json.loads(row["extra_attributes"], parse_float=Decimal)
    assert parsed["score"] == Decimal("12345678901234567890.123456789012345678")


@pytest.mark.parametrize("decoder", DECODERS)
def test_sets_and_binary_in_extra_attributes_are_sorted_lists_and_base64(decoder):
    image = item(tags={"SS": ["b", "a"]}, sizes={"NS": ["10", "9"]}, blob={"B": "AP8="}, blobs={"BS": ["Yg==", "YQ=="]})
    (row,) = rows_of(decoder, record(image))
    assert json.loads(row["extra_attributes"]) == {
        "blob": "AP8=",
        "blobs": ["YQ==", "Yg=="],
        "sizes": [9, 10],
        "tags": ["a", "b"],
    }


@pytest.mark.parametrize("decoder", DECODERS)
def test_microsecond_precision_from_the_record_or_the_configuration(decoder):
    micros = 1795909800024123
    own = record(item(), ApproximateCreationDateTime=micros, ApproximateCreationDateTimePrecision="MICROSECOND")
    configured = record(item(), ApproximateCreationDateTime=micros)
    expected = datetime(2026, 11, 28, 23, 50, 0, 24123, tzinfo=UTC)
    assert rows_of(decoder, own)[0]["change_time"] == expected  # the record's own precision wins
    assert rows_of(decoder, configured, precision="MICROSECOND")[0]["change_time"] == expected
    # a record that says MILLISECOND is read as milliseconds even where MICROSECOND is configured
    millis = record(item(), ApproximateCreationDateTimePrecision="MILLISECOND")
    assert rows_of(decoder, millis, precision="MICROSECOND")[0]["change_time"].microsecond == 24000
    # the order column holds the same instant as an integer, whatever the precision it was read at
    assert rows_of(decoder, own)[0]["change_time_us"] == micros
    assert rows_of(decoder, configured, precision="MICROSECOND")[0]["change_time_us"] == micros
    assert rows_of(decoder, millis, precision="MICROSECOND")[0]["change_time_us"] == 1795909800024000


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_precision_mix_up_is_quarantined_not_written_in_year_58000(decoder):
    reason = reason_of(decoder, record(item(), ApproximateCreationDateTime=1795909800024123))
    assert reason.startswith("not_change_record: dynamodb.ApproximateCreationDateTime 1795909800024123 read as MILLI")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_remove_without_new_image_uses_the_old_image(decoder):
    (row,) = rows_of(decoder, record(None, event_name="REMOVE", old=item(status={"S": "CANCELLED"})))
    assert (row["op"], row["status"], row["fan_id"]) == ("REMOVE", "CANCELLED", "f-1")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_remove_without_any_image_is_quarantined(decoder):
    reason = reason_of(decoder, record(None, event_name="REMOVE"))
    assert reason == (
        "not_change_record: REMOVE record has no dynamodb.OldImage: a row needs the item "
        "(is the stream view type NEW_AND_OLD_IMAGES?)"
    )


@pytest.mark.parametrize("decoder", DECODERS)
def test_unicode_survives_every_column(decoder):
    image = item(
        pk={"S": "EVENT#東京-🎸"},
        sk={"S": "FAN#ñandú"},
        channel={"S": 'línea\n"quoted" \\ tab\t'},
        attributes={"M": {"ключ": {"S": "значение"}}},
        notes={"S": "zoë \u2028 ✓"},
    )
    payload = record(image)
    payload["dynamodb"]["Keys"] = {"pk": {"S": "EVENT#東京-🎸"}, "sk": {"S": "FAN#ñandú"}}
    (row,) = rows_of(decoder, payload)
    assert (row["event_id"], row["fan_id"]) == ("東京-🎸", "ñandú")
    assert row["channel"] == 'línea\n"quoted" \\ tab\t'
    assert row["attributes"] == [("ключ", "значение")]
    assert json.loads(row["extra_attributes"]) == {"notes": "zoë \u2028 ✓"}


@pytest.mark.parametrize("decoder", DECODERS)
def test_empty_strings_and_empty_collections(decoder):
    image = item(channel={"S": ""}, price_levels={"SS": []}, attributes={"M": {}}, presale_code={"S": ""})
    (row,) = rows_of(decoder, record(image))
    assert (row["channel"], row["presale_code"], row["price_levels"], row["attributes"]) == ("", "", [], [])
    (row,) = rows_of(decoder, record(item(price_levels={"L": []})))
    assert row["price_levels"] == []


@pytest.mark.parametrize("decoder", DECODERS)
def test_price_levels_accept_a_list_of_strings_or_a_string_set(decoder):
    rows = rows_of(
        decoder, record(item(price_levels={"L": [{"S": "PL2"}]})), record(item(price_levels={"SS": ["VIP", "GA"]}))
    )
    assert [row["price_levels"] for row in rows] == [["PL2"], ["VIP", "GA"]]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T23:50:00Z", datetime(2026, 11, 28, 23, 50, tzinfo=UTC)),
        ("2026-11-28T23:50:00+00:00", datetime(2026, 11, 28, 23, 50, tzinfo=UTC)),
        ("2026-11-28T23:50:00.5-05:00", datetime(2026, 11, 29, 4, 50, 0, 500000, tzinfo=UTC)),
        ("2026-11-28T23:50:00.123999Z", datetime(2026, 11, 28, 23, 50, 0, 123000, tzinfo=UTC)),  # truncated
        ("2026-11-28 23:50:00Z", datetime(2026, 11, 28, 23, 50, tzinfo=UTC)),
        ("20261128T235000Z", datetime(2026, 11, 28, 23, 50, tzinfo=UTC)),
    ],
)
def test_timestamps_with_an_offset_are_read_as_utc_milliseconds(decoder, text, expected):
    (row,) = rows_of(decoder, record(item(created_at={"S": text})))
    assert row["created_at"] == expected


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"created_at": {"S": "2026-11-28T23:50:00"}}, "attribute 'created_at': expected ISO-8601 text (S) with a UTC"),
        ({"created_at": {"S": "2026-02-30T00:00:00Z"}}, "attribute 'created_at': expected ISO-8601"),
        ({"quantity": {"N": "2.5"}}, "attribute 'quantity': expected an int in [-2147483648, 2147483647]"),
        ({"quantity": {"N": "2147483648"}}, "attribute 'quantity': expected an int in"),
        ({"market_id": None}, "attribute 'market_id' is required but missing"),
        ({"market_id": {"NULL": True}}, "attribute 'market_id': expected a number (N) holding a"),
        ({"status": {"S": "registered"}}, "attribute 'status': expected one of REGISTERED"),
        ({"channel": {"N": "1"}}, 'attribute \'channel\': expected a string (S), got {"N": "1"}'),
        ({"channel": {"S": "web", "N": "1"}}, "attribute 'channel': expected a string (S)"),
        ({"price_levels": {"L": [{"N": "1"}]}}, "attribute 'price_levels[0]': expected a string (S)"),
        ({"attributes": {"M": {"k": {"N": "1"}}}}, "attribute 'attributes.k': expected a string (S)"),
        ({"presale_code": {"S": None}}, "attribute 'presale_code': expected a string (S), got {\"S\": null}"),
        ({"channel": {"NULL": False}}, "attribute 'channel': expected a string (S)"),
        ({"odd": {"Q": "1"}}, "attribute 'odd': unknown DynamoDB type tag 'Q'"),
        ({"pk": {"S": "EVENT#other"}}, 'attribute \'pk\': image holds {"S": "EVENT#other"} but the key is'),
        ({"event_id": {"S": "vvA2"}}, "attribute 'event_id': image holds {\"S\": \"vvA2\"} but the key 'pk' says"),
    ],
)
def test_schema_violations_name_the_field_and_value(decoder, attributes, reason):
    assert reason_of(decoder, record(item(**attributes))) == f"schema_violation: {reason}" or reason in reason_of(
        decoder, record(item(**attributes))
    )


@pytest.mark.parametrize("decoder", DECODERS)
def test_json_null_in_an_item_means_absent(decoder):
    image = item(
        channel=None,
        attributes={"M": {"locale": {"S": "en-GB"}, "gone": None}},
        quantity={"N": "4", "S": None},
        presale_code={"NULL": True, "S": None},
        extra={"M": {"a": {"N": "1"}, "b": None}},
    )
    image["updated_at"] = None
    (row,) = rows_of(decoder, record(image))
    assert (row["channel"], row["updated_at"], row["presale_code"], row["quantity"]) == (None, None, None, 4)
    assert row["attributes"] == [("locale", "en-GB")]
    assert row["extra_attributes"] == '{"extra":{"a":1}}'
    # but a null where a value must be is still refused
    assert "attribute 'price_levels[1]': expected a string (S), got null" in reason_of(
        decoder, record(item(price_levels={"L": [{"S": "GA"}, None]}))
    )
    assert "attribute 'price_levels[1]'" in reason_of(decoder, record(item(price_levels={"SS": ["GA", None]})))


@pytest.mark.parametrize("decoder", DECODERS)
def test_integral_numbers_in_other_notations_are_accepted(decoder):
    (row,) = rows_of(decoder, record(item(quantity={"N": "3.0"}, market_id={"N": "1E+2"})))
    assert (row["quantity"], row["market_id"]) == (3, 100)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not_json: payload is not JSON"),
        (b'{"a": 1}\n{"b": 2}', "not_json: payload is not JSON (Extra data"),
        (b"\xff{}", "not_json: payload is not UTF-8 text"),
        (b"null", "not_json: payload is JSON NoneType, expected an object"),
        (b"{}", "not_change_record: eventID is missing"),
        (json.dumps({**record(item()), "eventName": "TTL"}).encode(), "not_change_record: eventName 'TTL'"),
        (json.dumps({**record(item()), "dynamodb": []}).encode(), "not_change_record: dynamodb is []"),
        (json.dumps(record(item(), ApproximateCreationDateTime=1.5e12)).encode(), "ApproximateCreationDateTime is 1"),
        (json.dumps(record(item(), ApproximateCreationDateTimePrecision="SECOND")).encode(), "'SECOND' is not one"),
    ],
)
def test_payloads_that_are_not_change_records_are_refused(decoder, payload, reason):
    assert reason in reason_of(decoder, payload)


def test_not_base64_is_its_own_kind():
    event = event_of(record(item()))
    event["Records"][0]["kinesis"]["data"] = "eyJ*"
    (envelope,) = parse_kinesis_records(event)
    with pytest.raises(NotBase64Error, match="not base64"):
        decode_one(envelope, "MILLISECOND")


def test_parse_change_record_returns_a_typed_change():
    change = parse_change_record(json.dumps(record(item(), event_name="MODIFY", old=item())).encode(), "MILLISECOND")
    assert change.event_name is EventName.MODIFY
    assert change.image == item()
    assert change.change_time_micros == 1795909800024000
    with pytest.raises(NotJsonError):
        parse_change_record(b"[", "MILLISECOND")
    with pytest.raises(NotChangeRecordError):
        parse_change_record(b'{"eventID": "x"}', "MILLISECOND")


# -- envelopes ---------------------------------------------------------------------------------------------------
def test_sequence_numbers_are_ordered_as_integers_not_text():
    event = event_of(record(item()), record(item()), record(item()), first=998)  # 998, 999, 1000
    event["Records"].reverse()
    batch = parse_kinesis_records(event)
    assert list(batch.sequence_numbers) == ["998", "999", "1000"]
    assert sorted(["1000", "999", "0998"], key=sequence_key) == ["0998", "999", "1000"]


def test_a_realistic_56_digit_sequence_number_is_kept_exactly():
    sequence = "49590338271490256608559692538361571095921575989136588898"
    event = event_of(record(item()))
    event["Records"][0]["kinesis"]["sequenceNumber"] = sequence
    event["Records"][0]["eventID"] = f"shardId-000000000001:{sequence}"
    (row,) = decode_batch(parse_kinesis_records(event), "MILLISECOND").rows.to_pylist()
    assert row["sequence_number"] == sequence


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda event: event.pop("Records"), "no 'Records' list"),
        (lambda event: event["Records"][1]["kinesis"].pop("data"), r"Records\[1\] is not a Kinesis event record"),
        (lambda event: event["Records"][1]["kinesis"].update(sequenceNumber="12a"), "is not a decimal number"),
        (lambda event: event["Records"][1].update(eventID="shardId-9:1001"), "mixes shards"),
        (lambda event: event["Records"][1].update(eventID="1001"), "is not '<shardId>:1001'"),
        (lambda event: event["Records"].append(event["Records"][0]), "appears twice"),
    ],
)
def test_a_malformed_envelope_fails_the_invocation(mutate, message):
    event = event_of(record(item()), record(item()))
    mutate(event)
    with pytest.raises(InvalidEventError, match=message):
        parse_kinesis_records(event)


# -- records that are not ours, TTL deletions ---------------------------------------------------------------------
def _outcomes(decoder: Any, payloads: list[dict[str, Any]], source_table: str | None) -> list[tuple[str, Any]]:
    """Per record, ("row", deleted_by_ttl) or (error kind, reason), in batch order."""
    decoded = decoder(parse_kinesis_records(event_of(*payloads)), "MILLISECOND", source_table)
    outcomes: dict[int, tuple[str, Any]] = {
        position: ("row", row["deleted_by_ttl"])
        for position, row in zip(decoded.positions, decoded.rows.to_pylist(), strict=True)
    }
    outcomes.update({item.position: (item.error.kind, str(item.error)) for item in decoded.quarantined})
    return [outcomes[position] for position in range(len(payloads))]


def _of_table(name: str) -> dict[str, Any]:
    return dict(record(item()), tableName=name)


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_change_of_another_table_is_quarantined_naming_both_tables(decoder):
    # GIVEN two tables streaming into one Kinesis stream, and a function that owns "demand"
    payloads = [_of_table("demand"), _of_table("orders"), _of_table("demand")] * 10
    # WHEN the batch is decoded with SOURCE_TABLE_NAME=demand
    outcomes = _outcomes(decoder, payloads, "demand")
    # THEN the other table's changes are quarantined as wrong_table, the reason naming both tables
    expected_reason = "tableName is 'orders', expected 'demand' (SOURCE_TABLE_NAME): a change of another table"
    assert [kind for kind, _ in outcomes] == ["row", "wrong_table", "row"] * 10
    assert all(reason.startswith(expected_reason) for kind, reason in outcomes if kind == "wrong_table")
    # and without SOURCE_TABLE_NAME every table's change is a row
    assert [kind for kind, _ in _outcomes(decoder, payloads, None)] == ["row"] * 30


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("source", "kind", "reason"),
    [
        ("aws:kinesis", "wrong_source", "eventSource is 'aws:kinesis', expected 'aws:dynamodb'"),
        ("aws:dynamodb ", "wrong_source", "eventSource is 'aws:dynamodb ', expected 'aws:dynamodb'"),
        (7, "wrong_source", "eventSource is 7, expected 'aws:dynamodb'"),
        (None, "not_change_record", "eventSource is missing"),
    ],
)
def test_a_record_that_dynamodb_did_not_write_is_quarantined(decoder, source, kind, reason):
    foreign = record(item())
    if source is None:
        del foreign["eventSource"]
    else:
        foreign["eventSource"] = source
    # a foreign record's kind wins over its other faults (here: it is of another table too)
    payloads = [record(item()), dict(foreign, tableName="orders" if kind == "wrong_source" else "demand")] * 20
    outcomes = _outcomes(decoder, payloads, "demand")
    assert outcomes[::2] == [("row", False)] * 20
    assert outcomes[1::2] == [(kind, reason)] * 20


TTL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


@pytest.mark.parametrize("decoder", DECODERS)
def test_deleted_by_ttl_is_true_only_for_a_remove_by_dynamodb_ttl(decoder):
    def change(event_name: str, identity: Any) -> dict[str, Any]:
        image = item()
        payload = (
            record(event_name="REMOVE", old=image) if event_name == "REMOVE" else record(image, event_name=event_name)
        )
        return dict(payload, userIdentity=identity)

    cases = [
        (change("REMOVE", TTL), True),
        (change("REMOVE", dict(TTL, extra="x")), True),
        (change("REMOVE", None), False),
        (change("REMOVE", {"type": "Service", "principalId": "lambda.amazonaws.com"}), False),
        (change("REMOVE", {"type": "User", "principalId": "dynamodb.amazonaws.com"}), False),
        (change("REMOVE", {"type": "Service"}), False),
        (change("MODIFY", TTL), False),
        (change("INSERT", None), False),
    ]
    payloads = [payload for payload, _ in cases] * 5
    assert _outcomes(decoder, payloads, None) == [("row", expected) for _, expected in cases] * 5
    # a batch without any identity, and one where the identity's fields are not text
    assert _outcomes(decoder, [change("REMOVE", None)] * 20, None) == [("row", False)] * 20
    odd = [change("REMOVE", {"type": 1, "principalId": ["dynamodb.amazonaws.com"]})] * 20
    assert _outcomes(decoder, odd, None) == [("row", False)] * 20
