"""Replaying quarantined records after a fix lands each of them exactly once."""

from __future__ import annotations

import base64
import json

from pipeline.replay import replay_events
from tests.pipeline.conftest import BUCKET, list_keys, load_event, read_quarantine, read_rows


def test_replaying_a_quarantine_object_after_a_fix_writes_the_fixed_records_once(handler_module, s3):
    # GIVEN a batch whose poison records were quarantined, and an operator who takes the quarantine objects
    # out of the quarantine prefix to replay them (the replay quarantines again what still fails)
    event = load_event("poison_batch.json")
    handler_module.handler(event, None)
    rows_before = read_rows(s3)
    lines = read_quarantine(s3)
    assert len(lines) == 12
    for key in list_keys(s3, "demand/quarantine/"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    # WHEN the unknown status 'MAYBE' becomes valid upstream data fixed in place (here: the record is repaired)
    for line in lines:
        if "MAYBE" in line["reason"]:
            record = json.loads(base64.b64decode(line["data"]))
            record["dynamodb"]["NewImage"]["status"] = {"S": "WAITLISTED"}
            line["data"] = base64.b64encode(json.dumps(record).encode()).decode()
    (replay,) = replay_events(lines)
    assert [r["kinesis"]["sequenceNumber"] for r in replay["Records"]] == [line["sequence_number"] for line in lines]
    handler_module.handler(replay, None)
    handler_module.handler(replay, None)  # and replaying twice changes nothing
    # THEN the repaired record is one more row, and the quarantine holds the eleven still failing
    rows_after = read_rows(s3)
    assert len(rows_after) == len(rows_before) + 1
    assert {row["sequence_number"] for row in rows_after} - {row["sequence_number"] for row in rows_before} == {
        line["sequence_number"] for line in lines if "MAYBE" in line["reason"]
    }
    still_failing = read_quarantine(s3)
    assert sorted(line["sequence_number"] for line in still_failing) == sorted(
        line["sequence_number"] for line in lines if "MAYBE" not in line["reason"]
    )
