"""Quarantined records back into Lambda events, to run through the handler again once the cause is fixed.

A quarantine object's lines carry everything the original Kinesis record had (data, sequence number, shard,
partition key, arrival, stream ARN), so the rebuilt event is the one Lambda delivered, minus the good records.
To replay, take the quarantine objects out of the quarantine prefix (move them aside), then run the events
through the handler: the records that now pass become rows, under keys named by their own sequence numbers,
which no original Parquet object used (they were quarantined, so no row run started at them); the records that
still fail are quarantined again. Replaying the same events twice rewrites the same keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.decode import sequence_key

__all__ = ["replay_events"]


def replay_events(lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Quarantine lines -> one Lambda Kinesis event per (stream, shard), records in sequence order."""
    by_shard: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for line in lines:
        by_shard.setdefault((str(line["event_source_arn"]), str(line["shard_id"])), []).append(line)
    events = []
    for (arn, shard_id), shard_lines in sorted(by_shard.items()):
        shard_lines.sort(key=lambda line: sequence_key(str(line["sequence_number"])))
        events.append(
            {
                "Records": [
                    {
                        "kinesis": {
                            "kinesisSchemaVersion": "1.0",
                            "partitionKey": line["partition_key"],
                            "sequenceNumber": line["sequence_number"],
                            "data": line["data"],
                            "approximateArrivalTimestamp": line["approximate_arrival_timestamp"],
                        },
                        "eventSource": "aws:kinesis",
                        "eventVersion": "1.0",
                        "eventID": f"{shard_id}:{line['sequence_number']}",
                        "eventName": "aws:kinesis:record",
                        "eventSourceARN": arn,
                    }
                    for line in shard_lines
                ]
            }
        )
    return events
