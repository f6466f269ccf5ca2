"""Erasure in the noncurrent versions of a versioned bucket: the copies a delete leaves behind.

On a versioned bucket (the data bucket the stack creates, the failure bucket) a ``DeleteObject`` only adds a delete
marker: the old bytes stay, readable with ``GetObject?versionId=``, until the lifecycle expires them (30 days in the
data bucket, 7 in the failure bucket; a looked-up data bucket may keep them for ever). That holds for every object
an erasure deletes or replaces, and for every object deleted before the request (raw objects the curator removed
after the grace period, Iceberg files removed by retention). So, per place, once its current objects are done:

- every noncurrent version the place's reader finds holding one of the fans is purged (``DeleteObject`` with its
  ``VersionId``, permanent); one whose (key, ETag) the run has just deleted itself is known to hold them and is
  purged without reading it again. Other fans' old versions are kept: they are what a restore would need;
- under an Iceberg table's location every noncurrent version is purged without reading: table files are written
  once, so a noncurrent one is a file already deleted (an old data file, a manifest whose bounds may be a fan's
  id, old metadata);
- last, the delete markers of every key that has no object version left (they hold nothing, and a marker above a
  kept version is never touched: removing it would bring that version back as current).

Purging a version twice is no error (S3 answers a version already gone with success), so a rerun after a crash
lists again and finishes the same way. A version that cannot be read may hold the fans: it is named as
``<key>?versionId=<id>`` among the place's unreadable objects, and the requests stay pending.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from curator.store import ObjectGoneError, ObjectStore, ObjectVersion

__all__ = ["Holds", "VersionPurge", "purge_versions"]

#: What a place's reader says of one version's bytes: True if it holds one of the fans, None if it cannot be read.
Holds = Callable[[bytes], "bool | None"]


@dataclass
class VersionPurge:
    """The noncurrent versions of one place: purged (or, in a dry run, to purge), and the delete markers removed."""

    versions: int = 0
    markers: int = 0
    unreadable: list[str] = field(default_factory=list)


def purge_versions(
    store: ObjectStore,
    prefix: str,
    *,
    holds: Holds | None,
    keep: Callable[[str], bool] = lambda key: True,
    known: Collection[tuple[str, str]] = (),
    dry_run: bool = False,
) -> VersionPurge:
    """Purge the noncurrent versions under ``prefix`` (keys ``keep`` accepts) that hold a fan (``holds`` None: all of
    them, the Iceberg case), then the delete markers of keys left without a version. ``known``: (key, ETag) of
    objects the run deleted, whose old versions hold a fan by construction."""
    purge = VersionPurge()
    listed = [item for item in store.versions(prefix) if keep(item.key)]
    remaining: dict[str, int] = {}
    for item in listed:
        if not item.delete_marker:
            remaining[item.key] = remaining.get(item.key, 0) + 1
    for item in listed:
        if not item.noncurrent or not _holds(store, item, holds, known, purge):
            continue
        purge.versions += 1
        remaining[item.key] -= 1
        if not dry_run:
            store.purge(item.key, item.version_id)
    for item in listed:
        if item.delete_marker and not remaining.get(item.key):
            purge.markers += 1
            if not dry_run:
                store.purge(item.key, item.version_id)
    return purge


def _holds(
    store: ObjectStore,
    item: ObjectVersion,
    holds: Holds | None,
    known: Collection[tuple[str, str]],
    purge: VersionPurge,
) -> bool:
    if holds is None or (item.key, item.etag) in known:
        return True
    try:
        body = store.get_version(item.key, item.version_id)
    except ObjectGoneError:
        return False  # purged or expired since listed: nothing left to purge
    found = holds(body)
    if found is None:
        purge.unreadable.append(f"{item.key}?versionId={item.version_id}")
        return False
    return found
