"""The erasure's look kept between runs (``curator.erasure_look``): written once per change under a new number,
the copy it was read from deleted after; another set of requests starts afresh and removes the old set's look."""

from __future__ import annotations

from curator.erasure_look import LOOK_PREFIX, Held, LookState, delete_looks, load_look, requests_digest, save_look
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE
from tests.curator.test_erasure_objects import MemoryStore

REQUESTS = ["20260331T230000Z-0badc0de", "20260331T231500Z-0badc0df"]


def looked(store: MemoryStore) -> list[str]:
    return sorted(item.key for item in store.list(LOOK_PREFIX))


def test_a_look_is_kept_under_its_requests_digest_and_read_back_as_it_was() -> None:
    store = MemoryStore()
    state = load_look(store, REQUESTS)
    assert (state.clean, state.holding, state.key) == (
        {CHANGES_TABLE: set(), REGISTRATIONS_TABLE: set()},
        {
            CHANGES_TABLE: {},
            REGISTRATIONS_TABLE: {},
        },
        None,
    )
    state.clean[CHANGES_TABLE].update({"s3://b/curated/registration_changes/data/a.parquet"})
    state.holding[REGISTRATIONS_TABLE]["s3://b/curated/registrations/data/b.parquet"] = Held(250, {REQUESTS[0]: 3})
    state.changed = True

    save_look(store, state)

    digest = requests_digest(reversed(REQUESTS))  # the set, whatever the order
    assert looked(store) == [f"{LOOK_PREFIX}{digest}-000001.json"]
    again = load_look(store, REQUESTS)
    assert again.clean == state.clean
    assert again.holding == {
        CHANGES_TABLE: {},
        REGISTRATIONS_TABLE: {"s3://b/curated/registrations/data/b.parquet": Held(250, {REQUESTS[0]: 3})},
    }
    assert again.number == 1


def test_each_change_is_a_new_object_and_the_one_read_is_deleted_after_it() -> None:
    store = MemoryStore()
    first = load_look(store, REQUESTS)
    first.clean[CHANGES_TABLE].add("s3://b/one.parquet")
    first.changed = True
    save_look(store, first)
    store.calls.clear()

    second = load_look(store, REQUESTS)
    save_look(store, second)  # unchanged: nothing written
    assert store.calls == []
    second.clean[CHANGES_TABLE].add("s3://b/two.parquet")
    second.changed = True
    save_look(store, second)

    digest = requests_digest(REQUESTS)
    old, new = (f"{LOOK_PREFIX}{digest}-{number:06d}.json" for number in (1, 2))
    assert store.calls == [f"create {new}", f"delete {old}"]  # the new copy durable before the old goes
    assert looked(store) == [new]
    assert load_look(store, REQUESTS).clean[CHANGES_TABLE] == {"s3://b/one.parquet", "s3://b/two.parquet"}


def test_another_set_of_requests_starts_afresh_and_the_old_look_is_deleted() -> None:
    store = MemoryStore()
    state = load_look(store, REQUESTS[:1])
    state.clean[CHANGES_TABLE].add("s3://b/one.parquet")
    state.changed = True
    save_look(store, state)

    fresh = load_look(store, REQUESTS)  # a request filed meanwhile: its fans were not looked for

    assert fresh.clean == {CHANGES_TABLE: set(), REGISTRATIONS_TABLE: set()}
    assert looked(store) == []
    fresh.changed = True
    save_look(store, fresh)
    delete_looks(store)
    assert looked(store) == []


def test_files_the_tables_no_longer_hold_are_forgotten() -> None:
    state = LookState("d")
    state.clean[CHANGES_TABLE].update({"a", "b"})
    state.holding[CHANGES_TABLE] = {"c": Held(10, {"r": 1}), "d": Held(10, {"r": 2})}

    state.forget_all_but(CHANGES_TABLE, ["a", "b", "c", "d"])
    assert not state.changed, "nothing forgotten: nothing to keep anew"

    state.forget_all_but(CHANGES_TABLE, ["a", "d", "e"])

    assert state.known(CHANGES_TABLE) == {"a", "d"}
    assert state.holding[CHANGES_TABLE] == {"d": Held(10, {"r": 2})}
    assert state.changed


def test_a_crash_between_the_new_copy_and_the_delete_leaves_two_and_the_newer_is_read() -> None:
    store = MemoryStore()
    digest = requests_digest(REQUESTS)
    older, newer = LookState(digest), LookState(digest)
    older.clean[CHANGES_TABLE].add("s3://b/one.parquet")
    newer.clean[CHANGES_TABLE].update({"s3://b/one.parquet", "s3://b/two.parquet"})
    store.create(f"{LOOK_PREFIX}{digest}-000001.json", older.to_json())
    store.create(f"{LOOK_PREFIX}{digest}-000002.json", newer.to_json())  # the run stopped before deleting the first

    state = load_look(store, REQUESTS)

    assert state.clean[CHANGES_TABLE] == {"s3://b/one.parquet", "s3://b/two.parquet"}
    assert state.number == 2
    assert looked(store) == [f"{LOOK_PREFIX}{digest}-000002.json"]
