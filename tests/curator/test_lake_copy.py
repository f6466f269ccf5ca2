"""A lake's copy restored in place: a versioned bucket gets back each key's versions and delete markers, in order,
with the same current version; an unversioned one its objects; keys written since are removed."""

from __future__ import annotations

from typing import Any

from tests.curator.conftest import Clock, CuratedLake
from tests.curator.lake_copy import LakeCopy


def versions_of(s3: Any, bucket: str) -> dict[str, list[bytes | None]]:
    """Each key's versions, the noncurrent one first (the tests keep two at most): the bytes, or None for a delete
    marker."""
    answer = s3.list_object_versions(Bucket=bucket)
    found: dict[str, list[tuple[Any, bool, bytes | None]]] = {}
    for item in answer.get("Versions", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])["Body"].read()
        found.setdefault(item["Key"], []).append((item["IsLatest"], False, body))
    for item in answer.get("DeleteMarkers", []):
        found.setdefault(item["Key"], []).append((item["IsLatest"], True, None))
    return {
        key: [body for _, _, body in sorted(entries, key=lambda entry: entry[0])]
        for key, entries in sorted(found.items())
    }


def test_a_versioned_bucket_gets_back_every_version_and_marker(lake: CuratedLake):
    s3, bucket = lake.s3, lake.bucket
    lake.glue.create_database(DatabaseInput={"Name": lake.database})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="raw/a", Body=b"a1")
    s3.delete_object(Bucket=bucket, Key="raw/a")  # a delete marker over a noncurrent version
    s3.put_object(Bucket=bucket, Key="raw/b", Body=b"b1")
    s3.put_object(Bucket=bucket, Key="raw/c", Body=b"c1")
    copy = LakeCopy.save(s3, lake.glue, (bucket,), lake.database)
    planted = versions_of(s3, bucket)
    assert planted == {"raw/a": [b"a1", None], "raw/b": [b"b1"], "raw/c": [b"c1"]}
    # What a run may do: purge a key's versions, write a key anew, write new keys, delete one.
    for item in s3.list_object_versions(Bucket=bucket, Prefix="raw/a").get("Versions", []):
        s3.delete_object(Bucket=bucket, Key="raw/a", VersionId=item["VersionId"])
    s3.put_object(Bucket=bucket, Key="raw/b", Body=b"b2")
    s3.put_object(Bucket=bucket, Key="raw/d", Body=b"d1")
    s3.delete_object(Bucket=bucket, Key="raw/c")
    assert versions_of(s3, bucket) != planted

    copy.restore()

    assert versions_of(s3, bucket) == planted
    assert sorted(copy.rewritten[bucket]) == ["raw/a", "raw/b", "raw/c", "raw/d"]
    copy.restore()
    assert copy.rewritten[bucket] == []  # nothing differs: nothing is written


def test_an_unversioned_bucket_and_the_clock_come_back(lake: CuratedLake):
    s3, bucket = lake.s3, lake.bucket
    lake.glue.create_database(DatabaseInput={"Name": lake.database})
    clock = Clock()
    s3.put_object(Bucket=bucket, Key="raw/a", Body=b"a1")
    s3.put_object(Bucket=bucket, Key="raw/b", Body=b"b1")
    copy = LakeCopy.save(s3, lake.glue, (bucket,), lake.database, clock)
    planted_now = clock.now
    s3.delete_object(Bucket=bucket, Key="raw/a")
    s3.put_object(Bucket=bucket, Key="raw/b", Body=b"b2")
    s3.put_object(Bucket=bucket, Key="raw/c", Body=b"c1")
    clock.advance(minutes=30)

    copy.restore()

    assert versions_of(s3, bucket) == {"raw/a": [b"a1"], "raw/b": [b"b1"]}
    assert clock.now == planted_now
