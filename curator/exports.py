"""Export expiry: a backfill's DynamoDB export is removed, every version of every object under it, once the snapshot
holds all of it and the export is older than the stack's ``exportRetentionDays``.

``make backfill`` requests each export under ``<exports prefix><request time>/`` (``%Y%m%dT%H%M%S%fZ``, UTC) and the
backfill function writes one snapshot object per data file, with a counts object (``<snapshot prefix>export_id=<id>/
_<file stem>.counts.json``) last. Once every data file of the export has its counts object, the export is a second
copy of the snapshot's rows: kept for the retention (a re-run of the same export, ``--export-arn``, still reads it),
then purged. Purged, not deleted: on a versioned bucket a delete would leave every item line readable as a
noncurrent version. An export with a data file the snapshot lacks (a failed backfill never finished) is kept and
reported, whatever its age: its rows are nowhere else in the lake. A folder whose name is not a request time was not
made by ``make backfill`` and is left alone.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from curator.store import ObjectStore, ObjectVersion

__all__ = ["EXPORT_DATA_FILE", "REQUEST_TIME_FORMAT", "ExportExpiry", "expire_exports"]

#: How ``make backfill`` names an export's folder: its request time (``ops.backfill``).
REQUEST_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
#: An export's data file: ``<folder>/AWSDynamoDB/<export id>/data/<name>.json.gz`` (moto: ``<uuid>.gz``); the
#: stem names the file's snapshot objects. The backfill command and erasure recognise data files by it too.
EXPORT_DATA_FILE = re.compile(r"/AWSDynamoDB/(?P<export_id>[A-Za-z0-9-]{1,64})/data/(?P<stem>[^/]+?)(?:\.json)?\.gz$")


@dataclass
class ExportExpiry:
    """What one run did with the exports: the folders purged, and those kept although old enough."""

    expired: list[str] = field(default_factory=list)
    #: Old enough, but a data file has no counts object in the snapshot (its backfill never finished).
    incomplete: list[str] = field(default_factory=list)
    versions_purged: int = 0


def _requested(folder: str) -> datetime | None:
    try:
        return datetime.strptime(folder, REQUEST_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _counts_keys(versions: list[ObjectVersion], snapshot_prefix: str) -> set[str]:
    """The counts object each data file of the export needs."""
    needed = set()
    for version in versions:
        if (match := EXPORT_DATA_FILE.search(version.key)) is not None:
            needed.add(f"{snapshot_prefix}export_id={match['export_id']}/_{match['stem']}.counts.json")
    return needed


def expire_exports(
    store: ObjectStore, exports_prefix: str, snapshot_prefix: str, *, now: datetime, keep_for: timedelta
) -> ExportExpiry:
    """Purge every export under ``exports_prefix`` requested before ``now - keep_for`` whose data files all have
    their counts object under ``snapshot_prefix``; report those that do not."""
    expiry = ExportExpiry()
    folders: dict[str, list[ObjectVersion]] = defaultdict(list)
    for version in store.versions(exports_prefix):
        folder, _, rest = version.key[len(exports_prefix) :].partition("/")
        if rest:
            folders[folder].append(version)
    for folder, versions in sorted(folders.items()):
        requested = _requested(folder)
        if requested is None or requested > now - keep_for:
            continue
        needed = _counts_keys(versions, snapshot_prefix)
        written = {
            item.key
            for export_prefix in {key.rsplit("/", 1)[0] + "/_" for key in needed}
            for item in store.list(export_prefix)
        }
        if needed - written:
            expiry.incomplete.append(f"{exports_prefix}{folder}/")
            continue
        for version in versions:
            expiry.versions_purged += int(store.purge(version.key, version.version_id))
        expiry.expired.append(f"{exports_prefix}{folder}/")
    return expiry
