"""The erasure's look, kept between runs: which of the tables' data files hold the pending requests' fans.

Looking is reading a data file's ``fan_id`` column (``curator.erasure``); at the documented load one request may
have to look at billions of rows, more than one run can. So a run looks at a bounded share of the files not looked
at yet and keeps what it found in ``LookState``. Data files are written once, so what the look found about a file
stays true as long as the file is in the table: a file the table no longer holds (rewritten, or replaced by a later
curation of its hour) is forgotten, and a file it holds that the state does not know (written since) is looked at.

The state names files and counts only, never a fan: per table, the paths found without the fans, and for each file
holding some, its record count and the rows of each request's fans. It is kept as
``erasure/progress/look-<digest>-<n>.json``, written once (a new ``n`` each time, the one read deleted after),
where ``<digest>`` names the set of pending requests it is for: when that set changes (a request filed meanwhile),
the look starts over for all of them. The run that completes the requests deletes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from curator.erasure_requests import PROGRESS_PREFIX
from curator.store import ObjectGoneError, ObjectStore, StoredObject
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE

__all__ = ["LOOK_PREFIX", "Held", "LookState", "delete_looks", "load_look", "save_look"]

LOOK_PREFIX = f"{PROGRESS_PREFIX}look-"
_TABLES = (CHANGES_TABLE, REGISTRATIONS_TABLE)
_DIGEST_CHARACTERS = 16


@dataclass(frozen=True)
class Held:
    """A data file holding some of the fans: its record count and the rows of each request's fans (by request id)."""

    rows: int
    found: dict[str, int]


@dataclass
class LookState:
    """What the look has found so far, per table (see the module docstring)."""

    digest: str
    clean: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in _TABLES})
    holding: dict[str, dict[str, Held]] = field(default_factory=lambda: {name: {} for name in _TABLES})
    #: The object it was read from (key, ETag, number), None for a new look; whether it changed since.
    key: str | None = None
    etag: str | None = None
    number: int = 0
    changed: bool = False

    def forget_all_but(self, table: str, paths: Iterable[str]) -> None:
        """Forget the files of ``table`` it no longer holds (``paths``: the files it may hold the fans in)."""
        current = set(paths)
        known = len(self.known(table))
        self.clean[table] &= current
        self.holding[table] = {path: held for path, held in self.holding[table].items() if path in current}
        self.changed = self.changed or len(self.known(table)) != known

    def known(self, table: str) -> set[str]:
        return self.clean[table] | self.holding[table].keys()

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "requests_digest": self.digest,
                "tables": {
                    name: {
                        "clean": sorted(self.clean[name]),
                        "holding": {
                            path: {"rows": held.rows, "found": held.found}
                            for path, held in sorted(self.holding[name].items())
                        },
                    }
                    for name in _TABLES
                },
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, body: bytes, digest: str) -> LookState:
        data = json.loads(body)
        tables = data.get("tables", {})
        state = cls(digest)
        for name in _TABLES:
            table = tables.get(name, {})
            state.clean[name] = set(table.get("clean", []))
            state.holding[name] = {
                path: Held(int(held["rows"]), {request: int(rows) for request, rows in held["found"].items()})
                for path, held in table.get("holding", {}).items()
            }
        return state


def requests_digest(request_ids: Iterable[str]) -> str:
    """A short digest of the set of request ids a look is for."""
    return hashlib.sha256("\n".join(sorted(set(request_ids))).encode()).hexdigest()[:_DIGEST_CHARACTERS]


def _number(key: str) -> int:
    return int(key.removesuffix(".json").rsplit("-", 1)[1])


def load_look(store: ObjectStore, request_ids: Iterable[str]) -> LookState:
    """The look of these requests so far (a new one if none is kept); the looks of other sets of requests, and
    any older copy of this one, are deleted."""
    digest = requests_digest(request_ids)
    mine: list[StoredObject] = []
    others: list[StoredObject] = []
    for item in store.list(LOOK_PREFIX):
        (mine if item.key.startswith(f"{LOOK_PREFIX}{digest}-") else others).append(item)
    for item in others:
        store.delete(item.key, item.etag)
    mine.sort(key=lambda item: _number(item.key))
    for item in reversed(mine):
        try:
            body, read = store.get(item.key)
        except ObjectGoneError:
            continue
        state = LookState.from_json(body, digest)
        state.key, state.etag, state.number = item.key, read.etag, _number(item.key)
        for older in mine:
            if older.key != item.key and _number(older.key) < state.number:
                store.delete(older.key, older.etag)
        return state
    return LookState(digest)


def save_look(store: ObjectStore, state: LookState) -> None:
    """Keep the state (if it changed) as a new object, then delete the one it was read from."""
    if not state.changed:
        return
    number = state.number + 1
    key = f"{LOOK_PREFIX}{state.digest}-{number:06d}.json"
    store.create(key, state.to_json())
    if state.key is not None and state.etag is not None:
        store.delete(state.key, state.etag)
    state.key, state.etag, state.number, state.changed = key, None, number, False


def delete_looks(store: ObjectStore) -> None:
    """Delete every kept look (the requests they were for are done)."""
    for item in store.list(LOOK_PREFIX):
        store.delete(item.key, item.etag)
