"""The demand generator's live items: the n-th key in insertion order, as ``list(dict)[n]`` gives it; and the ids of
the stream records it makes."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from sandbox.changes import Change, DemandGenerator, _LiveItems, change_record


def test_key_at_picks_what_a_list_of_the_dict_would_pick():
    # GIVEN a dict and the live items under the same inserts, replacements and removals
    rng = random.Random(5)
    live = _LiveItems()
    reference: dict[tuple[str, str], dict[str, int]] = {}
    picks = 0
    for step in range(3000):
        roll = rng.random()
        if roll < 0.5 or len(reference) < 3:
            key = (f"EVENT#{step % 7}", f"FAN#{step}")
            live[key] = reference[key] = {"step": step}
            continue
        # WHEN a position is drawn, THEN both name the same key and item
        position = rng.randrange(len(reference))
        key = list(reference)[position]
        assert live.key_at(position) == key, step
        assert live[key] == reference[key]
        picks += 1
        if roll < 0.8:  # a replaced item keeps its place
            live[key] = reference[key] = {"step": step}
        else:
            assert live.pop(key) == reference.pop(key)
        assert len(live) == len(reference)
    assert picks > 1000
    assert [live.key_at(index) for index in range(len(live))] == list(reference)


def test_key_at_refuses_a_position_outside_the_live_items():
    live = _LiveItems()
    live[("EVENT#a", "FAN#1")] = {}
    live[("EVENT#a", "FAN#2")] = {}
    live.pop(("EVENT#a", "FAN#1"))
    assert live.key_at(0) == ("EVENT#a", "FAN#2")
    with pytest.raises(IndexError):
        live.key_at(1)


def test_a_seeded_workload_is_the_same_every_time_and_keeps_its_mix():
    first = list(DemandGenerator(seed=3).changes(5000))
    again = list(DemandGenerator(seed=3).changes(5000))
    assert first == again
    kinds = {name: sum(change.event_name == name for change in first) for name in ("INSERT", "MODIFY", "REMOVE")}
    assert sum(kinds.values()) == 5000
    assert 2700 < kinds["INSERT"] < 3300
    assert 1200 < kinds["MODIFY"] < 1800
    assert 300 < kinds["REMOVE"] < 700
    # every MODIFY and REMOVE names an item that is live at that moment
    live: set[tuple[str, str]] = set()
    for change in first:
        key = (change.keys["pk"], change.keys["sk"])
        if change.event_name == "INSERT":
            assert key not in live
            live.add(key)
        elif change.event_name == "MODIFY":
            assert key in live
        else:
            live.remove(key)


def test_two_changes_of_one_item_in_the_same_microsecond_get_two_event_ids():
    # GIVEN an INSERT and a MODIFY of one item at the same instant (the generator can draw no time between them)
    moment = datetime(2026, 4, 1, 1, 0, 2, 34000, tzinfo=UTC)
    keys = {"pk": "EVENT#e1", "sk": "FAN#f1"}
    inserted = {**keys, "status": "REGISTERED", "quantity": 2}
    modified = {**inserted, "quantity": 3}
    insert = Change("INSERT", keys, inserted, None, moment)
    modify = Change("MODIFY", keys, modified, inserted, moment)
    # WHEN each becomes a stream record, THEN each has its own eventID, and the same change always the same one
    ids = [change_record(change, table_name="demand")["eventID"] for change in (insert, modify, insert)]
    assert ids[0] != ids[1]
    assert ids[2] == ids[0]
