"""Erasure requests carried out by the curator, the lake's only writer, at the start of a run, before curating.

All pending requests (``erasure/requests/``) are carried out together, in this order:

1. **Look.** ``registrations`` first catches up with ``registration_changes`` (as every run does). Then, per
   table, the data files that may hold the fans (the scan's pruning on ``fan_id`` bounds) are looked at by their
   ``fan_id`` column, at most ``look_rows_per_run`` rows of them a run. What the look found is kept between runs
   (``curator.erasure_look``: paths and counts per request); until it has seen every file the tables hold, the
   run changes nothing, the requests stay pending and the run curates as usual.
2. **Tally.** Each request's rows per place are counted (the tables' from the look, nothing changed yet) and
   kept, with each table's current snapshot id, as ``erasure/progress/<id>.json`` (counts only, no fan id). A
   rerun after a crash reads it back, so the audit counts what was there before the first change, however far
   that attempt got.
3. **Tables.** The files the look found holding the fans are rewritten without their rows, in one overwrite
   snapshot per table through the curator's commit path (a conflict abandons the run and changes nothing; the
   next run retries). ``registrations`` records the new ``registration_changes`` snapshot as the one it reflects.
   A run rewrites at most ``rows_per_run`` rows of files (``ROWS_PER_RUN``): when more hold the fans, it commits
   its share and stops the erasure there, the requests stay pending with their tally, the run curates as usual,
   and the next runs go on (they look only at the files written since). Once a run has rewritten every file
   left, per table: an empty append drops the manifests that hold only deleted entries (their column bounds may be
   a fan's id); every older snapshot is expired; the metadata log is cut to one entry (its older metadata files
   are deleted with the commit); and every file under the table's location that the current metadata does not
   reference is deleted, at once, without the usual grace (one writer by construction: nothing else is in
   flight). Finally no kept manifest may hold a fan's id in a bound, or the run fails.
4. **Objects** (``curator.erasure_objects``): raw landing objects, backfill snapshots, quarantine lines, the
   failure bucket's on-failure records, the DynamoDB export data files (overwritten in place: the export's
   manifest names them).
5. **Old versions** (``curator.erasure_versions``): on a versioned bucket a delete leaves the old bytes as a
   noncurrent version. Every noncurrent version under each table's location (a file already deleted: table files
   are written once) is purged once the history is cut; in the other places, each noncurrent version holding one
   of the fans (read as a current object of the place is) is purged after that place's objects are done.
6. **Audit.** The kept look is deleted; then per request, the audit record
   (``curator.erasure_requests.AuditRecord``), then the progress object and, last, the request (the only object
   naming the fans in clear) are deleted: its version purged, so no noncurrent copy is left. A request whose audit
   already exists only has its request deleted; any old version of a request with an audit is purged whenever the
   requests are listed.

A malformed request is reported in the run's result and left in place; it never stops the run. An object that
cannot be read (it may hold the fans) leaves every request pending, named in the run's result.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pyiceberg.expressions import In

from curator.commits import CurationError, Staged, commit_overwrite, predicate
from curator.erasure_look import Held, LookState, delete_looks, load_look, save_look
from curator.erasure_objects import (
    ObjectErasure,
    erase_exports,
    erase_failures,
    erase_quarantine,
    erase_raw,
    erase_snapshots,
)
from curator.erasure_requests import (
    AUDIT_PREFIX,
    PLACES,
    PROGRESS_PREFIX,
    REQUESTS_PREFIX,
    AuditRecord,
    ErasureRequest,
    ErasureRequestError,
)
from curator.erasure_tables import (
    TableErasure,
    bound_holds_fan,
    drop_deleted_manifests,
    forget_history,
    needs_cleanup,
    purge_table_versions,
    summary_properties,
    table_rows,
)
from curator.erasure_versions import purge_versions
from curator.files import files_matching
from curator.raw import LEDGER_PROPERTY, read_ledger
from curator.state import (
    APPLIED_PROPERTY,
    SEED_EXPORT_PROPERTY,
    SEED_EXPORT_TIME_PROPERTY,
    SEED_SINCE_PROPERTY,
    WATERMARK_PROPERTY,
)
from curator.store import ObjectGoneError, ObjectStore
from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

__all__ = [
    "LOOK_ROWS_PER_REWRITE_ROW",
    "PROGRESS_PREFIX",
    "ROWS_PER_RUN",
    "ErasureOutcome",
    "ErasureRun",
]

#: Rows of data files one run reads whole and rewrites, both tables together (the files' record counts): a request
#: holding more goes on in the next runs, so a run still ends within the function's timeout and curates as usual.
#: At the 4.9 µs a row the 30-day bench measured, 40M rows are about 200 s of one core (docs/erasure.md).
ROWS_PER_RUN = 40_000_000
#: A row looked at (its ``fan_id`` alone) costs about a fortieth of a row rewritten (0.11 µs against 4.9 µs): by
#: default a run looks at this many times its rewrite share in rows (``curator.erasure_look``).
LOOK_ROWS_PER_REWRITE_ROW = 40
#: Summary properties of a ``registrations`` snapshot that later runs read: carried by every erasure snapshot.
_STATE_PROPERTIES = (
    APPLIED_PROPERTY,
    WATERMARK_PROPERTY,
    SEED_EXPORT_PROPERTY,
    SEED_EXPORT_TIME_PROPERTY,
    SEED_SINCE_PROPERTY,
)


@dataclass
class ErasureOutcome:
    """What the erasure step of one run did."""

    requests_completed: list[str] = field(default_factory=list)
    requests_malformed: list[str] = field(default_factory=list)
    rows_removed: dict[str, int] = field(default_factory=dict)
    #: Noncurrent object versions purged per place (``PLACES``: a table's are those under its location).
    versions_purged: dict[str, int] = field(default_factory=dict)
    objects_unreadable: list[str] = field(default_factory=list)
    #: When each request still pending after the step was filed (a malformed one: when its object was written),
    #: by key: the deadline alarm's input.
    pending_since: dict[str, datetime] = field(default_factory=dict)
    #: Data files left to look at or to rewrite after the run (its share of either was spent): the requests stay
    #: pending and the next runs go on. 0 when the run looked at and rewrote all there was.
    data_files_left: int = 0

    def oldest_pending_hours(self, now: datetime) -> float:
        """Hours since the oldest request still pending was filed; 0 when none is."""
        if not self.pending_since:
            return 0.0
        return max(0.0, (now - min(self.pending_since.values())).total_seconds() / 3600)

    def summary(self) -> dict[str, Any]:
        return {
            "requests_completed": list(self.requests_completed),
            "requests_malformed": list(self.requests_malformed),
            "rows_removed": dict(self.rows_removed),
            "versions_purged": dict(self.versions_purged),
            "objects_unreadable": list(self.objects_unreadable),
            "data_files_left": self.data_files_left,
        }


@dataclass
class _Pending:
    request: ErasureRequest
    version_id: str
    tally: dict[str, Any] | None = None


@dataclass
class ErasureRun:
    """Carries out the pending requests of one stack (see the module docstring)."""

    store: ObjectStore
    bucket: str
    raw_prefix: str
    snapshot_prefix: str
    quarantine_prefix: str
    salt: str
    clock: Callable[[], datetime]
    failure_store: ObjectStore | None = None
    exports_prefix: str = "demand/exports/"
    checkpoint: Callable[[str], None] = lambda step: None
    #: Rows of data files the run reads whole and rewrites (``ROWS_PER_RUN``); past them the requests go on next run.
    rows_per_run: int = ROWS_PER_RUN
    #: Rows of data files whose ``fan_id`` the run looks at (None: ``rows_per_run`` x ``LOOK_ROWS_PER_REWRITE_ROW``).
    look_rows_per_run: int | None = None
    #: What the look has found so far (``curator.erasure_look``), once the run has loaded and advanced it.
    _look: LookState | None = None
    #: The data files of each table the look may find the fans in (the candidates it looked over), by path.
    _files: dict[str, dict[str, DataFile]] = field(default_factory=dict)

    @property
    def look(self) -> LookState:
        if self._look is None:
            raise CurationError("the erasure's look is used before it was loaded")
        return self._look

    # -- requests -------------------------------------------------------------------------------------------
    def pending(self, outcome: ErasureOutcome) -> list[_Pending]:
        """The requests to carry out; a malformed one is named in ``outcome``, one already audited is deleted (its
        version purged), and so are any old versions of audited requests: they name the fans in clear."""
        versions = self.store.versions(REQUESTS_PREFIX)
        audited = {item.key.removeprefix(AUDIT_PREFIX) for item in self.store.list(AUDIT_PREFIX)}
        found: list[_Pending] = []
        for item in versions:
            if not item.latest or item.delete_marker:
                continue
            try:
                body, _ = self.store.get(item.key)
                request = ErasureRequest.from_json(body, item.key)
            except ObjectGoneError:
                continue
            except ErasureRequestError as error:
                outcome.requests_malformed.append(str(error))
                outcome.pending_since[item.key] = item.last_modified or self.clock()
                continue
            if request.audit_key.removeprefix(AUDIT_PREFIX) in audited:
                self._delete_request(request.key, item.version_id)
                outcome.requests_completed.append(request.request_id)
                continue
            found.append(_Pending(request, item.version_id))
            outcome.pending_since[item.key] = request.filed_at
        if any(not item.latest or item.delete_marker for item in versions):
            purge_versions(
                self.store,
                REQUESTS_PREFIX,
                holds=None,
                keep=lambda key: key.removeprefix(REQUESTS_PREFIX) in audited,
            )
        return found

    def _delete_request(self, key: str, version_id: str) -> None:
        """The request's version purged, in one call: a plain delete would leave it readable on a versioned bucket
        (under a delete marker). A request is written once, so its version is the only one; on a bucket never
        versioned it is ``null``, the object itself."""
        self.store.purge(key, version_id)

    # -- a run ----------------------------------------------------------------------------------------------
    def run(
        self, changes: Table, registrations: Table, catch_up: Callable[[Table, Table], tuple[Table, Table]]
    ) -> tuple[ErasureOutcome, Table, Table]:
        """Carry out every pending request; ``catch_up`` advances ``registrations`` to ``registration_changes``
        (the run's own advance). ``CommitFailedException`` leaves the requests pending for the next run."""
        outcome = ErasureOutcome()
        if not self.salt:
            # Erasure is off: a stack without a salt has no grants on erasure/ either (no listing, not even).
            return outcome, changes, registrations
        requests = self.pending(outcome)
        if not requests:
            return outcome, changes, registrations
        self.checkpoint("erasure ready")
        changes, registrations = catch_up(changes, registrations)
        fans = sorted({fan for item in requests for fan in item.request.fan_ids})
        unlooked = self._look_tables(requests, (changes, registrations), fans)
        if unlooked:
            # More files than one run looks at: nothing is changed yet; the next runs look on from what is kept.
            outcome.data_files_left = unlooked + sum(len(held) for held in self.look.holding.values())
            self._keep_look()
            return outcome, changes, registrations
        self._tally(requests, changes, registrations)
        changes, registrations, table_rows, outcome.data_files_left = self._erase_tables(changes, registrations, fans)
        if outcome.data_files_left:
            # More rows than one run rewrites: the requests stay pending (their tally kept) and the next runs go on.
            self._keep_look()
            return outcome, changes, registrations
        tables = (changes, registrations)
        purged = {table.name()[-1]: purge_table_versions(table, self.store, self.bucket) for table in tables}
        self.checkpoint("erasure table versions purged")
        objects = self._erase_objects(changes, fans)
        executed: dict[str, Counter[str]] = {**table_rows, **{place: found.rows for place, found in objects.items()}}
        versions = {
            **{place: found.versions for place, found in purged.items()},
            **{place: found.versions.versions for place, found in objects.items()},
        }
        for found in objects.values():
            outcome.objects_unreadable.extend(found.unreadable)
        if outcome.objects_unreadable:
            # An object that cannot be read may hold the fans: the requests stay pending (the alarm on their age
            # fires) rather than be audited as complete.
            return outcome, changes, registrations
        snapshots_after = {
            CHANGES_TABLE: _snapshot_id(changes),
            REGISTRATIONS_TABLE: _snapshot_id(registrations),
        }
        delete_looks(self.store)  # a crash from here on looks again (the tables no longer hold the fans)
        for item in requests:
            rows, purged_versions = self._audit(item, executed, versions, snapshots_after)
            for place, count in rows.items():
                outcome.rows_removed[place] = outcome.rows_removed.get(place, 0) + count
            for place, count in purged_versions.items():  # the run's figure, the same in each request's audit
                outcome.versions_purged[place] = max(outcome.versions_purged.get(place, 0), count)
            outcome.requests_completed.append(item.request.request_id)
            outcome.pending_since.pop(item.request.key, None)
        self.checkpoint("erasure done")
        return outcome, changes, registrations

    def _tally(self, requests: list[_Pending], changes: Table, registrations: Table) -> None:
        """Each request's rows per place before anything changes, kept (write-once) for the audit; a rerun reads
        back the tally of the first attempt."""
        fans = sorted({fan for item in requests for fan in item.request.fan_ids})
        counted: dict[str, Counter[str]] | None = None
        versions: dict[str, int] = {}
        for item in requests:
            key = f"{PROGRESS_PREFIX}{item.request.request_id}.json"
            try:
                body, _ = self.store.get(key)
                item.tally = json.loads(body)
                continue
            except ObjectGoneError:
                pass
            if counted is None:
                for table in (changes, registrations):
                    old = purge_table_versions(table, self.store, self.bucket, dry_run=True)
                    versions[table.name()[-1]] = old.versions
                objects = self._erase_objects(changes, fans, dry_run=True)
                counted = {place: found.rows for place, found in objects.items()}
                versions.update({place: found.versions.versions for place, found in objects.items()})
            # The tables' rows: what the completed look found in the files the tables hold now.
            in_tables = {
                name: sum(held.found.get(item.request.request_id, 0) for held in self.look.holding[name].values())
                for name in (CHANGES_TABLE, REGISTRATIONS_TABLE)
            }
            item.tally = {
                "rows_removed": {
                    place: in_tables[place]
                    if place in in_tables
                    else _sum_for(counted.get(place, Counter()), item.request.fan_ids)
                    for place in PLACES
                },
                # Versions of all the run's requests together: a version is one object, whoever's rows it holds.
                "versions_purged": {place: versions.get(place, 0) for place in PLACES},
                "snapshots_before": {
                    CHANGES_TABLE: _snapshot_id(changes),
                    REGISTRATIONS_TABLE: _snapshot_id(registrations),
                },
            }
            self.store.create(key, json.dumps(item.tally, sort_keys=True).encode())
            self.checkpoint("erasure tallied")

    def _erase_tables(
        self, changes: Table, registrations: Table, fans: list[str]
    ) -> tuple[Table, Table, dict[str, Counter[str]], int]:
        """Rewrite the run's share of the files holding the fans (``_share``); once none is left, cut both tables'
        history. The rows removed per table, and the files left for the next runs."""
        rows: dict[str, Counter[str]] = {}
        ledger = summary_properties(changes, (LEDGER_PROPERTY,))
        # Both tables' holding files are known from the look: the rewrite reads only them.
        holds = [bool(self.look.holding[name]) for name in (CHANGES_TABLE, REGISTRATIONS_TABLE)]
        if not any(holds) and not any(
            needs_cleanup(table, self.store, self.bucket, fans) for table in (changes, registrations)
        ):
            return changes, registrations, {CHANGES_TABLE: Counter(), REGISTRATIONS_TABLE: Counter()}, 0
        share, left = self._share()
        marker = {"curator.erasure": "true"}
        found = self._rewrite(changes, fans, {**ledger, **marker}, share[CHANGES_TABLE])
        changes, rows[CHANGES_TABLE] = found.table, found.rows
        self._looked_rewritten(CHANGES_TABLE, found)
        if not left:
            changes = drop_deleted_manifests(changes, {**ledger, **marker})
        self.checkpoint("erasure changes committed")
        state = {**summary_properties(registrations, _STATE_PROPERTIES), **marker}
        if (applied := _snapshot_id(changes)) is not None:
            state[APPLIED_PROPERTY] = str(applied)
        found = self._rewrite(registrations, fans, state, share[REGISTRATIONS_TABLE])
        registrations, rows[REGISTRATIONS_TABLE] = found.table, found.rows
        self._looked_rewritten(REGISTRATIONS_TABLE, found)
        if left:
            # The run's share is committed; the rest, the history and the other places wait for the next runs.
            self.checkpoint("erasure share committed")
            return changes, registrations, rows, left
        registrations = drop_deleted_manifests(registrations, state)
        self.checkpoint("erasure registrations committed")
        for table in (changes, registrations):
            forget_history(table, self.store, self.bucket)
            if (manifest := bound_holds_fan(table, fans)) is not None:
                raise CurationError(f"after erasure, manifest {manifest} still holds a fan id in a column bound")
        self.checkpoint("erasure history forgotten")
        return changes, registrations, rows, 0

    def _look_tables(self, requests: list[_Pending], tables: Sequence[Table], fans: list[str]) -> int:
        """Load the look of these requests and look at the files of both tables it does not know yet, in path
        order, while their rows fit the run's look share (the first file always does); the files left unlooked."""
        look = load_look(self.store, [item.request.request_id for item in requests])
        self._look = look
        budget = self.look_rows_per_run or self.rows_per_run * LOOK_ROWS_PER_REWRITE_ROW
        spent, unlooked = 0, 0
        for table in tables:
            name = table.name()[-1]
            candidates = files_matching(table, predicate(In, "fan_id", fans))
            self._files[name] = {data_file.file_path: data_file for data_file in candidates}
            look.forget_all_but(name, self._files[name])
            known = look.known(name)
            unknown = [data_file for path, data_file in sorted(self._files[name].items()) if path not in known]
            chosen, left, spent = _within(unknown, budget, spent)
            unlooked += left
            if not chosen:
                continue
            found = table_rows(table, fans, write=False, files=chosen)
            for data_file in chosen:
                counts = found.per_file.get(data_file.file_path)
                if not counts:
                    look.clean[name].add(data_file.file_path)
                    continue
                per_request = {item.request.request_id: _sum_for(counts, item.request.fan_ids) for item in requests}
                look.holding[name][data_file.file_path] = Held(
                    data_file.record_count, {request: rows for request, rows in per_request.items() if rows}
                )
            look.changed = True
        return unlooked

    def _looked_rewritten(self, name: str, found: TableErasure) -> None:
        """The files the run rewrote no longer hold the fans, nor do the files it wrote in their place."""
        if not found.removed:
            return
        for data_file in found.removed:
            self.look.holding[name].pop(data_file.file_path, None)
        self.look.clean[name].update(data_file.file_path for data_file in found.added)
        self.look.changed = True

    def _keep_look(self) -> None:
        """Keep what the look has found for the next run (the requests stay pending)."""
        save_look(self.store, self.look)
        self.checkpoint("erasure look kept")

    def _share(self) -> tuple[dict[str, list[DataFile]], int]:
        """The data files each table rewrites this run, and how many are left for the next runs:
        ``registration_changes`` first, then ``registrations``, each in path order, while their rows fit
        ``rows_per_run`` (the first file always does, so every run moves a request on)."""
        chosen: dict[str, list[DataFile]] = {}
        spent, left = 0, 0
        for name in (CHANGES_TABLE, REGISTRATIONS_TABLE):
            holding = [self._files[name][path] for path in sorted(self.look.holding[name])]
            chosen[name], not_now, spent = _within(holding, self.rows_per_run, spent)
            left += not_now
        return chosen, left

    @staticmethod
    def _rewrite(table: Table, fans: list[str], properties: dict[str, str], files: list[DataFile]) -> TableErasure:
        staged = Staged(table)
        found = table_rows(table, fans, write=True, staged=staged, files=files)
        if not found.removed:
            return found
        try:
            found.table = commit_overwrite(table, found.removed, found.added, properties)
        except Exception:
            staged.discard()
            raise
        return found

    def _erase_objects(self, changes: Table, fans: list[str], *, dry_run: bool = False) -> dict[str, ObjectErasure]:
        snapshot = changes.current_snapshot()
        ledger_path = snapshot.summary.get(LEDGER_PROPERTY) if snapshot is not None and snapshot.summary else None
        ledger = read_ledger(changes.io, ledger_path)
        found = {
            "raw_events": erase_raw(self.store, self.raw_prefix, ledger, fans, dry_run=dry_run),
            "snapshots": erase_snapshots(self.store, self.snapshot_prefix, fans, dry_run=dry_run),
            "quarantine": erase_quarantine(self.store, self.quarantine_prefix, fans, dry_run=dry_run),
        }
        if self.failure_store is not None:
            found["failures"] = erase_failures(self.failure_store, fans, dry_run=dry_run)
        found["exports"] = erase_exports(self.store, self.exports_prefix, fans, dry_run=dry_run)
        if not dry_run:
            self.checkpoint("erasure objects done")
        return found

    def _audit(
        self,
        item: _Pending,
        executed: Mapping[str, Counter[str]],
        versions: Mapping[str, int],
        snapshots_after: Mapping[str, int | None],
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Write the request's audit, then delete its progress and the request; (rows, versions) per place."""
        tally = item.tally or {}
        planned: Mapping[str, int] = tally.get("rows_removed", {})
        rows = {
            place: max(int(planned.get(place, 0)), _sum_for(executed.get(place, Counter()), item.request.fan_ids))
            for place in PLACES
        }
        # The tally's count (versions there before the run) or this attempt's, the larger: after a crash the rerun
        # purges only what the first attempt left.
        planned_versions: Mapping[str, int] = tally.get("versions_purged", {})
        purged = {place: max(int(planned_versions.get(place, 0)), versions.get(place, 0)) for place in PLACES}
        before: Mapping[str, int | None] = tally.get("snapshots_before", {})
        snapshots = {table: {"before": before.get(table), "after": snapshots_after[table]} for table in snapshots_after}
        record = AuditRecord.of(item.request, self.salt, self.clock(), rows, snapshots, versions_purged=purged)
        self.store.create(record.key, record.to_json())
        self.checkpoint("erasure audited")
        progress = f"{PROGRESS_PREFIX}{item.request.request_id}.json"
        for listed in self.store.list(progress):
            if listed.key == progress:
                self.store.delete(listed.key, listed.etag)
        self._delete_request(item.request.key, item.version_id)
        return rows, purged


def _within(files: Sequence[DataFile], budget: int, spent: int) -> tuple[list[DataFile], int, int]:
    """Of ``files``, in their order, those whose rows (record counts) fit ``budget`` with ``spent`` rows already
    taken (the first file of a run always fits); how many did not; the rows taken then."""
    chosen: list[DataFile] = []
    left = 0
    for data_file in files:
        if spent and spent + data_file.record_count > budget:
            left += 1
            continue
        chosen.append(data_file)
        spent += data_file.record_count
    return chosen, left, spent


def _sum_for(counts: Counter[str], fans: Sequence[str]) -> int:
    return sum(counts.get(fan, 0) for fan in fans)


def _snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None
