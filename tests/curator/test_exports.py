"""Export expiry: an export whose snapshot holds every data file is purged, every version, once older than its
retention; a younger one, one whose backfill never finished, and a folder ``make backfill`` did not name stay."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from curator.exports import REQUEST_TIME_FORMAT, expire_exports
from pipeline.export import ExportFile
from pipeline.snapshot import SnapshotSettings, counts_key
from tests.curator.conftest import CuratedLake, generated_rows
from tests.curator.erasure_lake import versioned

EXPORTS = "demand/exports/"
SNAPSHOTS = "demand/snapshots/"
KEEP_FOR = timedelta(days=14)


def plant_export(lake: CuratedLake, age: timedelta, export_id: str, *, done: tuple[str, ...]) -> tuple[str, list[str]]:
    """An export requested ``age`` before the lake's clock, as DynamoDB writes one (a JSON and a moto-style data
    file, the manifests, the marker), with a counts object in the snapshot for each data file named in ``done``.
    One data file was rewritten in place once (as an erasure does): it has a noncurrent version too."""
    folder = f"{EXPORTS}{lake.clock() - age:{REQUEST_TIME_FORMAT}}/"
    base = f"{folder}AWSDynamoDB/{export_id}/"
    data = {"a": f"{base}data/a3xk2m.json.gz", "b": f"{base}data/5b1e-77.gz"}
    keys = [*data.values(), f"{base}manifest-files.json", f"{base}manifest-summary.json", f"{folder}_started"]
    for key in keys:
        lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=b"item lines or manifest")
    lake.s3.put_object(Bucket=lake.bucket, Key=data["a"], Body=b"the lines without an erased fan")
    settings = SnapshotSettings(output_bucket=lake.bucket, source_table_name="demand-table", snapshot_prefix=SNAPSHOTS)
    for name in done:
        export = ExportFile.from_event(
            {"export_bucket": lake.bucket, "data_key": data[name], "export_time": "2026-03-01T00:00:00Z"}
        )
        lake.s3.put_object(Bucket=lake.bucket, Key=counts_key(settings, export), Body=json.dumps({"items": 1}).encode())
    return folder, keys


def versions_under(lake: CuratedLake, prefix: str) -> list[tuple[str, str]]:
    listed: dict[str, Any] = lake.s3.list_object_versions(Bucket=lake.bucket, Prefix=prefix)
    return sorted(
        (item["Key"], item["VersionId"]) for item in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
    )


def test_an_export_past_its_retention_whose_snapshot_holds_it_is_purged_and_no_other(lake: CuratedLake):
    versioned(lake.s3, lake.bucket)
    old, old_keys = plant_export(lake, KEEP_FOR, "01700000000000-aaaaaaaa", done=("a", "b"))
    young, _ = plant_export(lake, KEEP_FOR - timedelta(microseconds=1), "01700000000000-bbbbbbbb", done=("a", "b"))
    unfinished, _ = plant_export(lake, KEEP_FOR * 3, "01700000000000-cccccccc", done=("a",))
    foreign = f"{EXPORTS}by-hand/AWSDynamoDB/01600000000000-dddddddd/data/x.json.gz"
    lake.s3.put_object(Bucket=lake.bucket, Key=foreign, Body=b"not ours")
    assert len(versions_under(lake, old)) == len(old_keys) + 1  # the rewritten data file's old version
    others = {prefix: versions_under(lake, prefix) for prefix in (young, unfinished, foreign, SNAPSHOTS)}
    assert len(others[SNAPSHOTS]) == 5

    expiry = expire_exports(lake.store(), EXPORTS, SNAPSHOTS, now=lake.clock(), keep_for=KEEP_FOR)

    assert expiry.expired == [old]
    assert expiry.incomplete == [unfinished]
    assert expiry.versions_purged == len(old_keys) + 1
    assert versions_under(lake, old) == []
    assert {prefix: versions_under(lake, prefix) for prefix in others} == others
    again = expire_exports(lake.store(), EXPORTS, SNAPSHOTS, now=lake.clock(), keep_for=KEEP_FOR)
    assert (again.expired, again.incomplete, again.versions_purged) == ([], [unfinished], 0)


def test_an_unfinished_export_is_purged_once_its_backfill_is_finished(lake: CuratedLake):
    folder, keys = plant_export(lake, KEEP_FOR * 2, "01700000000000-eeeeeeee", done=("a",))
    store = lake.store()
    assert expire_exports(store, EXPORTS, SNAPSHOTS, now=lake.clock(), keep_for=KEEP_FOR).incomplete == [folder]
    # the re-run of the same export writes the missing file's snapshot and counts
    later = plant_export(lake, KEEP_FOR * 2, "01700000000000-eeeeeeee", done=("a", "b"))
    assert later[0] == folder

    expiry = expire_exports(store, EXPORTS, SNAPSHOTS, now=lake.clock(), keep_for=KEEP_FOR)

    assert (expiry.expired, expiry.incomplete) == ([folder], [])
    assert expiry.versions_purged == len(keys)  # unversioned bucket: each key's one object, its "null" version
    assert versions_under(lake, folder) == []


def test_a_curator_run_purges_an_expired_export_and_reports_it(lake: CuratedLake):
    versioned(lake.s3, lake.bucket)
    lake.write(generated_rows(20))
    folder, keys = plant_export(lake, lake.settings.export_retention, "01700000000000-ffffffff", done=("a", "b"))
    young, _ = plant_export(lake, timedelta(days=1), "01700000000000-gggggggg", done=("a", "b"))

    result = lake.curator().run()

    assert result.changes_added == 20
    assert result.exports_expired == [folder]
    assert result.export_versions_purged == len(keys) + 1
    assert result.summary()["exports_expired"] == [folder]
    assert versions_under(lake, folder) == []
    assert len(versions_under(lake, young)) == len(keys) + 1
