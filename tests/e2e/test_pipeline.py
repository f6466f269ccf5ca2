"""End to end, on the target TEST_ENV names: table -> stream -> function -> Parquet -> query, and quarantine."""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest

from components.catalog import unique_changes_cte
from sandbox.targets import Target, named_query_sql, quarantined_records, table_items
from tests.e2e.conftest import TaggedSet

pytestmark = pytest.mark.e2e


def _source(target: Target) -> str:
    return f'"{target.outputs.athena_database_name}"."{target.outputs.glue_table_name}"'


def test_every_change_is_present_exactly_once_after_deduplication(target: Target, tagged: TaggedSet):
    tagged_rows = f"(SELECT * FROM {_source(target)} WHERE {tagged.partition_filter()})"  # noqa: S608
    sql = f"WITH {unique_changes_cte(tagged_rows)}\nSELECT op, fan_id, status, quantity, change_id FROM unique_changes"
    rows = target.query(sql)
    expected = Counter(
        (
            change.event_name,
            str(change.keys["sk"]).removeprefix("FAN#"),
            (change.new_image or change.old_image or {})["status"],
        )
        for change in tagged.changes
    )
    assert Counter((row["op"], row["fan_id"], row["status"]) for row in rows) == expected
    assert len({row["change_id"] for row in rows}) == len(tagged.changes)


def test_current_state_query_equals_the_table(target: Target, tagged: TaggedSet):
    target.curate()  # registrations then holds every change landed so far (the schedule's run, at once)
    current = named_query_sql(target, "current_registrations")
    sql = f"SELECT * FROM ({current}\n) AS current_state WHERE event_id = '{tagged.tag}'"  # noqa: S608
    rows = target.query(sql)
    in_lake = {(row["fan_id"], row["status"], str(row["quantity"]), str(row["market_id"])) for row in rows}
    items = table_items(target, f"EVENT#{tagged.tag}")
    in_table = {
        (str(item["sk"]).removeprefix("FAN#"), item["status"], str(item["quantity"]), str(item["market_id"]))
        for item in items
    }
    assert in_table, "the tagged items are in the table"
    assert in_lake == in_table
    assert {fan for fan, *_ in in_lake} == {"alice", "carol", "dave"}, "bob was removed"


def test_optional_and_unknown_attributes_land(target: Target, tagged: TaggedSet):
    sql = f"""
    SELECT price_levels, channel, presale_code, attributes['locale'] AS locale, extra_attributes
    FROM {_source(target)}
    WHERE {tagged.partition_filter()} AND fan_id = 'dave'"""  # noqa: S608
    [row] = target.query(sql)
    assert row["channel"] == "ios"
    assert row["presale_code"] == "PRESALE123"
    assert row["locale"] == "fr-FR"
    assert "PL1" in row["price_levels"]
    assert "VIP" in row["price_levels"]
    assert json.loads(row["extra_attributes"]) == {"marketing": {"opt_in": True}}


def test_poison_item_is_quarantined_with_its_reason(target: Target, tagged: TaggedSet):
    [record] = quarantined_records(target, tagged.poison_event)
    assert "status" in record["reason"]
    assert "MAYBE" in record["reason"]
    assert record["shard_id"].startswith("shardId-")
    assert record["sequence_number"]
    change = json.loads(base64.b64decode(record["data"]))
    assert change["eventName"] == "INSERT"
    assert change["dynamodb"]["Keys"]["pk"] == {"S": f"EVENT#{tagged.poison_event}"}
    assert change["dynamodb"]["NewImage"]["status"] == {"S": "MAYBE"}
    source = _source(target)
    sql = f"SELECT count(*) AS n FROM {source} WHERE event_id = '{tagged.poison_event}'"  # noqa: S608
    assert int(target.query(sql)[0]["n"]) == 0, "a quarantined record is never a row"
