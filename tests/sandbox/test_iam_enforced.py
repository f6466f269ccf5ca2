"""IAM enforced on the local AWS: each role acts with the program's own policy documents, and nothing more.

Real calls on the local server, signed with each role's temporary credentials: the preview role reads no data
object; no function role writes outside its prefixes; and removing one statement a role's code needs makes the
pipeline, the curator, the backfill and the e2e suite's calls fail naming the role, the action and the resource.
Where moto is more lenient than IAM (it ignores conditions such as ``s3:prefix``; it answers 404 for a missing key
whatever the caller may list), the policy documents are checked directly.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from components.naming import account_data_bucket_patterns
from components.policies import backfill_function_policy, curator_policy
from curator.catalog import glue_catalog
from curator.curation import Curator, CuratorSettings
from curator.erasure_requests import ErasureRequest
from curator.exports import REQUEST_TIME_FORMAT
from curator.store import S3Store
from ops.backfill import run_export
from pipeline.writer import encode_parquet, partition_prefix
from sandbox import demo
from sandbox.local_aws import LocalAws, local_aws
from sandbox.roles import ROLES, PolicyDeniedError, RoleSessions, UnknownStatementError
from sandbox.targets import LocalTarget
from sandbox.workload import TableWriter, workload
from tests.curator.conftest import HOUR, generated_rows, object_name
from tests.curator.erasure_lake import failed_batch

pytestmark = pytest.mark.slow

BODY = b"{}"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with local_aws("dev1", shards=1) as local:
        yield local


def _roles(aws: LocalAws) -> RoleSessions:
    assert aws.roles is not None, "the local AWS enforces IAM by default"
    return aws.roles


def _denied(aws: LocalAws, role: str, call: Any) -> PolicyDeniedError:
    with pytest.raises(PolicyDeniedError) as caught:
        call(aws.client("s3", role=role))
    return caught.value


def _data_objects(aws: LocalAws) -> dict[str, tuple[str, str]]:
    """One object of each kind of data the stack holds, written by the administrator: kind -> (bucket, key)."""
    outputs = aws.outputs
    layout = aws.names.prefixes
    objects = {
        "events": (outputs.bucket_name, f"{layout.events}dt=2026-01-01/hour=00/a.parquet"),
        "quarantine": (outputs.bucket_name, f"{layout.quarantine}dt=2026-01-01/a.jsonl.gz"),
        "exports": (outputs.bucket_name, f"{layout.exports}20260101T000000Z/AWSDynamoDB/x/data/a.json.gz"),
        "snapshots": (outputs.bucket_name, f"{layout.snapshots}export_id=x/a.parquet"),
        "failure bucket": (outputs.failure_bucket_name, "aws/lambda/uuid/shardId-000000000000/2026/01/01/a"),
        "athena results": (outputs.athena_results_bucket_name, f"{layout.athena_results}query-id.csv"),
    }
    admin = aws.client("s3")
    for bucket, key in objects.values():
        admin.put_object(Bucket=bucket, Key=key, Body=BODY)
    return objects


# -- the preview role reads no data ---------------------------------------------------------------------------
def test_preview_role_reads_no_data_object(aws: LocalAws):
    objects = _data_objects(aws)
    for kind, (bucket, key) in objects.items():
        error = _denied(aws, "preview", lambda s3, bucket=bucket, key=key: s3.get_object(Bucket=bucket, Key=key))
        assert error.denial.action == "s3:GetObject", kind
        assert error.denial.resource == f"arn:aws:s3:::{bucket}/{key}", kind
        assert error.denial.role == "prd3292-pulumi-preview", kind
    # ...while its read-only access reads what is not data: the deny, not a missing allow, keeps the data out
    preview = aws.client("s3", role="preview")
    artifact = f"{aws.names.prefixes.artifacts}function.zip"
    aws.client("s3").put_object(Bucket=aws.outputs.bucket_name, Key=artifact, Body=BODY)
    assert preview.get_object(Bucket=aws.outputs.bucket_name, Key=artifact)["Body"].read() == BODY
    listed = preview.list_objects_v2(Bucket=aws.outputs.failure_bucket_name)["KeyCount"]
    assert listed == 1, "listing is metadata, which a preview may read"


def test_the_previews_bucket_patterns_cover_this_stacks_data_buckets(aws: LocalAws):
    patterns = account_data_bucket_patterns(aws.settings.product_code)
    for bucket in (aws.outputs.failure_bucket_name, aws.outputs.athena_results_bucket_name):
        assert any(fnmatch.fnmatchcase(bucket, pattern) for pattern in patterns), bucket
    assert not any(fnmatch.fnmatchcase(aws.outputs.bucket_name, pattern) for pattern in patterns)


# -- no function role writes outside its prefixes -------------------------------------------------------------
OUTSIDE = {
    "processor": ["snapshots", "exports", "athena results", "artifacts"],
    "curator": ["artifacts", "erasure requests"],
    "backfill": ["events", "quarantine", "exports", "failure bucket", "artifacts", "erasure requests", "erasure audit"],
    "ci": [
        "events",
        "quarantine",
        "snapshots",
        "failure bucket",
        "curated",
        "erasure audit",
        "erasure progress",
        "erasure other",
    ],
}


def _place(aws: LocalAws, kind: str) -> tuple[str, str]:
    layout, outputs = aws.names.prefixes, aws.outputs
    return {
        "events": (outputs.bucket_name, f"{layout.events}dt=2026-01-01/hour=00/x.parquet"),
        "quarantine": (outputs.bucket_name, f"{layout.quarantine}dt=2026-01-01/x.jsonl.gz"),
        "snapshots": (outputs.bucket_name, f"{layout.snapshots}export_id=x/x.parquet"),
        "exports": (outputs.bucket_name, f"{layout.exports}x/data/x.json.gz"),
        "artifacts": (outputs.bucket_name, f"{layout.artifacts}function.zip"),
        "curated": (outputs.bucket_name, f"{layout.curated}registrations/data/x.parquet"),
        "failure bucket": (outputs.failure_bucket_name, "aws/lambda/x"),
        "athena results": (outputs.athena_results_bucket_name, f"{layout.athena_results}x.csv"),
        "erasure requests": (outputs.bucket_name, "erasure/requests/20260101T000000Z-0000000f.json"),
        "erasure audit": (outputs.bucket_name, "erasure/audit/20260101T000000Z-0000000f.json"),
        "erasure progress": (outputs.bucket_name, "erasure/progress/20260101T000000Z-0000000f.json"),
        "erasure other": (outputs.bucket_name, "erasure/x.json"),
    }[kind]


@pytest.mark.parametrize("role", sorted(OUTSIDE))
def test_a_role_writes_nowhere_outside_its_prefixes(aws: LocalAws, role: str):
    for kind in OUTSIDE[role]:
        bucket, key = _place(aws, kind)
        error = _denied(aws, role, lambda s3, bucket=bucket, key=key: s3.put_object(Bucket=bucket, Key=key, Body=BODY))
        assert (error.denial.action, error.denial.resource) == ("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}"), kind


INSIDE = {
    "processor": ["events", "quarantine", "failure bucket"],
    # everywhere else the curator writes only conditionally (below)
    "curator": ["curated"],
    "backfill": ["snapshots"],
    "ci": ["erasure requests"],  # make erase files a request, and writes nothing else
}


@pytest.mark.parametrize("role", sorted(INSIDE))
def test_a_function_role_writes_inside_its_prefixes(aws: LocalAws, role: str):
    s3 = aws.client("s3", role=role)
    for kind in INSIDE[role]:
        bucket, key = _place(aws, kind)
        s3.put_object(Bucket=bucket, Key=f"{key}.{role}", Body=BODY)
        assert aws.client("s3").get_object(Bucket=bucket, Key=f"{key}.{role}")["Body"].read() == BODY, kind


# an erasure rewrites raw objects, snapshots, quarantine lines and failed batches under new names and writes its
# progress and audit once: creates only (If-None-Match), never a replacement
WRITE_ONCE = ["events", "quarantine", "snapshots", "failure bucket", "erasure audit", "erasure progress"]


def test_the_curator_creates_write_once_objects_only_with_if_none_match(aws: LocalAws):
    admin, curator = aws.client("s3"), aws.client("s3", role="curator")
    for kind in WRITE_ONCE:
        bucket, key = _place(aws, kind)
        key = f"{key}.write-once"
        error = _denied(aws, "curator", lambda s3, bucket=bucket, key=key: s3.put_object(Bucket=bucket, Key=key))
        assert (error.denial.action, error.denial.resource) == ("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}"), kind
        assert admin.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount") == 0, f"{kind}: nothing written"
        curator.put_object(Bucket=bucket, Key=key, Body=BODY, IfNoneMatch="*")
        assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == BODY, kind
        # ...and a write-once object is not overwritten, neither unconditionally nor on its ETag
        etag = admin.head_object(Bucket=bucket, Key=key)["ETag"]
        for replace in (
            lambda s3, bucket=bucket, key=key: s3.put_object(Bucket=bucket, Key=key, Body=b"replaced"),
            lambda s3, bucket=bucket, key=key, etag=etag: s3.put_object(
                Bucket=bucket, Key=key, Body=b"replaced", IfMatch=etag
            ),
        ):
            assert _denied(aws, "curator", replace).denial.action == "s3:PutObject", kind
        assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == BODY, f"{kind}: unchanged"


def test_the_curator_overwrites_export_data_files_only_with_if_match_and_creates_none(aws: LocalAws):
    admin, curator = aws.client("s3"), aws.client("s3", role="curator")
    bucket, key = _place(aws, "exports")
    key = f"{key}.overwritten"
    resource = f"arn:aws:s3:::{bucket}/{key}"
    for create in (
        lambda s3: s3.put_object(Bucket=bucket, Key=key, Body=BODY),
        lambda s3: s3.put_object(Bucket=bucket, Key=key, Body=BODY, IfNoneMatch="*"),
    ):
        error = _denied(aws, "curator", create)
        assert (error.denial.action, error.denial.resource) == ("s3:PutObject", resource)
    assert admin.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount") == 0, "no export file created"
    etag = admin.put_object(Bucket=bucket, Key=key, Body=BODY)["ETag"]
    error = _denied(aws, "curator", lambda s3: s3.put_object(Bucket=bucket, Key=key, Body=b"unconditional"))
    assert (error.denial.action, error.denial.resource) == ("s3:PutObject", resource)
    curator.put_object(Bucket=bucket, Key=key, Body=b"rewritten", IfMatch=etag)
    assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == b"rewritten"


def test_the_curator_deletes_only_where_it_curates_or_erases(aws: LocalAws):
    admin, curator = aws.client("s3"), aws.client("s3", role="curator")
    for kind in (
        "events",
        "quarantine",
        "snapshots",
        "failure bucket",
        "erasure progress",
        "curated",
    ):
        bucket, key = _place(aws, kind)
        key = f"{key}.to-delete"
        admin.put_object(Bucket=bucket, Key=key, Body=BODY)
        curator.delete_object(Bucket=bucket, Key=key)
        assert admin.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount") == 0, kind
    # a request is purged (its version), never deleted: on the versioned bucket a delete would leave it readable
    for kind in ("exports", "artifacts", "erasure audit", "erasure requests"):
        bucket, key = _place(aws, kind)
        key = f"{key}.kept"
        admin.put_object(Bucket=bucket, Key=key, Body=BODY)
        error = _denied(aws, "curator", lambda s3, bucket=bucket, key=key: s3.delete_object(Bucket=bucket, Key=key))
        assert error.denial.action == "s3:DeleteObject", kind
        assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == BODY, f"{kind}: still there"


def _old_version(aws: LocalAws, kind: str, body: bytes = BODY) -> tuple[str, str, str]:
    """An object of ``kind`` written and deleted by the administrator: (bucket, key, its noncurrent version id)."""
    admin = aws.client("s3")
    bucket, key = _place(aws, kind)
    key = f"{key}.old"
    version_id = admin.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    admin.delete_object(Bucket=bucket, Key=key)
    return bucket, key, version_id


def _version_ids(aws: LocalAws, bucket: str, key: str) -> list[str]:
    response = aws.client("s3").list_object_versions(Bucket=bucket, Prefix=key)
    return [item["VersionId"] for item in response.get("Versions", []) if item["Key"] == key]


def test_the_curator_lists_reads_and_purges_old_versions_only_where_an_erasure_searches(aws: LocalAws):
    curator = aws.client("s3", role="curator")
    for kind in ("events", "quarantine", "snapshots", "failure bucket", "exports"):
        bucket, key, version_id = _old_version(aws, kind)
        listed = curator.list_object_versions(Bucket=bucket, Prefix=key)
        assert [item["VersionId"] for item in listed["Versions"]] == [version_id], kind
        assert curator.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read() == BODY, kind
        curator.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        assert _version_ids(aws, bucket, key) == [], kind
    # under the tables' location and the requests: purged unread
    for kind in ("curated", "erasure requests"):
        bucket, key, version_id = _old_version(aws, kind)
        curator.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        assert _version_ids(aws, bucket, key) == [], kind
    for kind in ("artifacts", "erasure audit"):
        bucket, key, version_id = _old_version(aws, kind)
        error = _denied(
            aws,
            "curator",
            lambda s3, b=bucket, k=key, v=version_id: s3.delete_object(Bucket=b, Key=k, VersionId=v),
        )
        assert error.denial.action == "s3:DeleteObjectVersion", kind
        assert error.denial.resource == f"arn:aws:s3:::{bucket}/{key}", kind
        assert _version_ids(aws, bucket, key) == [version_id], f"{kind}: still there"
    _roles(aws).denials.clear()


def test_the_operator_role_reads_old_versions_for_its_dry_run_and_never_purges_one(aws: LocalAws):
    ci = aws.client("s3", role="ci")
    for kind in ("events", "failure bucket", "exports"):
        bucket, key, version_id = _old_version(aws, kind)
        assert [item["VersionId"] for item in ci.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]] == [
            version_id
        ]
        assert ci.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read() == BODY, kind
        error = _denied(
            aws, "ci", lambda s3, b=bucket, k=key, v=version_id: s3.delete_object(Bucket=b, Key=k, VersionId=v)
        )
        assert error.denial.action == "s3:DeleteObjectVersion", kind
        assert error.denial.resource == f"arn:aws:s3:::{bucket}/{key}", kind
        assert _version_ids(aws, bucket, key) == [version_id], f"{kind}: still there"
    _roles(aws).denials.clear()


def test_the_operator_role_files_requests_and_reads_audits_only(aws: LocalAws):
    """make erase acts as the CI role: it may file a request and read an audit record, never delete or rewrite what
    names a fan (a raw object, a request), nor read a request back (it names the fans in clear)."""
    admin = aws.client("s3")
    raw_bucket, raw_key = _place(aws, "events")
    admin.put_object(Bucket=raw_bucket, Key=raw_key, Body=BODY)
    error = _denied(aws, "ci", lambda s3: s3.delete_object(Bucket=raw_bucket, Key=raw_key))
    assert (error.denial.action, error.denial.resource) == ("s3:DeleteObject", f"arn:aws:s3:::{raw_bucket}/{raw_key}")
    assert admin.get_object(Bucket=raw_bucket, Key=raw_key)["Body"].read() == BODY, "the raw object is still there"
    bucket, request_key = _place(aws, "erasure requests")
    aws.client("s3", role="ci").put_object(Bucket=bucket, Key=request_key, Body=BODY, IfNoneMatch="*")
    for call in (
        lambda s3: s3.delete_object(Bucket=bucket, Key=request_key),
        lambda s3: s3.get_object(Bucket=bucket, Key=request_key),
    ):
        assert _denied(aws, "ci", call).denial.resource == f"arn:aws:s3:::{bucket}/{request_key}"
    _, audit_key = _place(aws, "erasure audit")
    admin.put_object(Bucket=bucket, Key=audit_key, Body=b"{}")
    assert aws.client("s3", role="ci").get_object(Bucket=bucket, Key=audit_key)["Body"].read() == b"{}"
    _roles(aws).denials.clear()


def test_the_mapping_fails_naming_the_action_without_its_stream_reads(aws: LocalAws):
    with _roles(aws).without_statement("processor", "ReadChangeStream"), pytest.raises(PolicyDeniedError) as caught:
        aws.pipeline()
    assert caught.value.denial.action == "kinesis:ListShards"
    assert caught.value.denial.resource == aws.outputs.stream_arn
    _roles(aws).denials.clear()


def _remove_requests(aws: LocalAws) -> None:
    admin, bucket = aws.client("s3"), aws.outputs.bucket_name
    for item in admin.list_objects_v2(Bucket=bucket, Prefix="erasure/").get("Contents", []):
        admin.delete_object(Bucket=bucket, Key=item["Key"])


def test_make_erase_files_counts_and_lists_as_the_ci_role_with_nothing_denied(aws: LocalAws, tmp_path, capsys):
    """ops.erase on the local AWS: the local CI role assumed with the administrator's key, the program's CI policy
    enforced. Its dry run reads every place (the curated tables through Glue, the failure bucket's records), filing
    writes one request, and the status lists it; nothing it does is refused."""
    from ops import erase  # noqa: PLC0415

    key = _raw_object(aws, generated_rows(20, seed=11))
    fan = "fan-of-the-iam-test"
    fans = tmp_path / "fans.txt"
    fans.write_text(f"{fan}\n")
    _roles(aws).denials.clear()
    admin, bucket = aws.client("s3"), aws.outputs.bucket_name
    _remove_requests(aws)  # earlier tests of the module filed some (one dated 2026-01-01: overdue), and audits
    try:
        assert erase.main(["dev1", "--fans", str(fans), "--dry-run"]) == 0
        dry = capsys.readouterr().out.splitlines()
        assert erase.main(["dev1", "--fans", str(fans)]) == 0
        filed = capsys.readouterr().out.splitlines()
        assert erase.main(["dev1", "--status"]) == 0
        status = capsys.readouterr().out.splitlines()
    finally:  # the module's later tests run the curator: no request or raw object of this test is left for it
        admin.delete_object(Bucket=bucket, Key=key)
        _remove_requests(aws)

    assert _roles(aws).denials == []
    assert dry[0].endswith("acting as the local CI role prd3292-dev1-gitlab-ci; rows the erasure would remove:")
    assert [line.split()[0] for line in dry[1:7]] == [
        "registration_changes",
        "registrations",
        "raw_events",
        "snapshots",
        "quarantine",
        "failures",
    ]
    assert filed[1] == "acting as the local CI role prd3292-dev1-gitlab-ci"
    request_id = filed[2].removeprefix("filed erasure request ")
    assert filed[0].endswith(f"file an erasure request for 1 fans at s3://{bucket}/erasure/requests/{request_id}.json")
    assert any(line.startswith(f"pending    {request_id}  filed ") for line in status)


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def _curator_as_its_role(aws: LocalAws, **erasure: Any) -> Curator:
    """The curator over the stack's raw prefix and Glue database, acting as the local curator role (as Lambda
    gives the function its role): pyiceberg's Glue and S3 clients and the raw store all use its credentials."""
    credentials = _roles(aws).credentials["curator"]
    catalog = glue_catalog(
        aws.region,
        endpoint_url=aws.endpoint_url,
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
    )
    layout = aws.names.prefixes
    settings = CuratorSettings(
        bucket=aws.outputs.bucket_name,
        raw_prefix=layout.events,
        database=aws.names.glue_database,
        tables_prefix=layout.curated,
        delete_grace=timedelta(0),
        **erasure,
    )
    s3 = aws.client("s3", role="curator")
    store = S3Store(aws.outputs.bucket_name, client=s3)
    failure_store = S3Store(aws.outputs.failure_bucket_name, client=s3)
    return Curator(
        catalog=catalog,
        store=store,
        settings=settings,
        clock=lambda: HOUR + timedelta(hours=2),
        failure_store=failure_store,
    )


def _raw_object(aws: LocalAws, rows: Any, hour: datetime = HOUR) -> str:
    key = partition_prefix(aws.names.prefixes.events, hour) + object_name(rows)
    aws.client("s3").put_object(Bucket=aws.outputs.bucket_name, Key=key, Body=encode_parquet(rows))
    return key


def test_the_curator_runs_as_its_role_with_nothing_denied(aws: LocalAws):
    """Everything one run does (create both tables in the declared database, write and commit their files, delete
    the raw object, clean up), with the program's curator policy enforced: no action is missing from it."""
    rows = generated_rows(40)
    key = _raw_object(aws, rows)
    _roles(aws).denials.clear()

    result = _curator_as_its_role(aws).run()

    assert _roles(aws).denials == []
    assert (result.raw_objects_read, result.changes_added, result.raw_deleted) == (1, 40, 1)
    assert result.conflict is None
    assert result.unreadable == []
    glue = aws.client("glue")
    tables = glue.get_tables(DatabaseName=aws.names.glue_database)["TableList"]
    iceberg = sorted(t["Name"] for t in tables if t.get("Parameters", {}).get("table_type", "").upper() == "ICEBERG")
    assert iceberg == ["registration_changes", "registrations"]
    curated = aws.client("s3").list_objects_v2(Bucket=aws.outputs.bucket_name, Prefix=aws.names.prefixes.curated)
    assert curated["KeyCount"] > 0
    assert all(item["Key"].startswith(aws.names.prefixes.curated) for item in curated["Contents"])
    assert "Contents" not in aws.client("s3").list_objects_v2(Bucket=aws.outputs.bucket_name, Prefix=key)


def test_the_curator_purges_an_expired_export_as_its_role_with_nothing_denied(aws: LocalAws):
    """An export past its retention whose snapshot holds it, one data file rewritten once (an old version): the
    curator acting as its role lists the export's versions and the snapshot's counts and purges every version."""
    admin, bucket, layout = aws.client("s3"), aws.outputs.bucket_name, aws.names.prefixes
    folder = f"{layout.exports}{HOUR - timedelta(days=30):{REQUEST_TIME_FORMAT}}/"
    export = f"{folder}AWSDynamoDB/01700000000000-abcdef99/"
    for key in (f"{export}data/a.json.gz", f"{export}data/a.json.gz", f"{export}manifest-files.json"):
        admin.put_object(Bucket=bucket, Key=key, Body=BODY)
    counts = f"{layout.snapshots}export_id=01700000000000-abcdef99/_a.counts.json"
    admin.put_object(Bucket=bucket, Key=counts, Body=BODY)
    assert len(admin.list_object_versions(Bucket=bucket, Prefix=folder)["Versions"]) == 3
    _roles(aws).denials.clear()

    result = _curator_as_its_role(aws).run()

    assert _roles(aws).denials == []
    assert (result.exports_expired, result.export_versions_purged) == ([folder], 3)
    listed = admin.list_object_versions(Bucket=bucket, Prefix=folder)
    assert "Versions" not in listed
    assert "DeleteMarkers" not in listed


def _purge_everything(aws: LocalAws, bucket: str, prefix: str) -> None:
    admin = aws.client("s3")
    listed = admin.list_object_versions(Bucket=bucket, Prefix=prefix)
    for item in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
        admin.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])


def test_an_erasure_runs_as_the_curator_role_with_nothing_denied_and_purges_the_old_versions(aws: LocalAws):
    """A fan's raw object curated and deleted (its noncurrent version left on the versioned data bucket) and a
    failed batch a replay deleted, then an erasure request carried out by the curator acting as its role: every
    call it makes (versions listed, read, purged; tables rewritten; the request purged) is allowed."""
    admin, bucket, failures = aws.client("s3"), aws.outputs.bucket_name, aws.outputs.failure_bucket_name
    fan = "fan-erased-as-role"
    renamed: list[str] = []
    raw_keys = []
    for offset, count in enumerate((12, 7, 5)):  # three hours: three files of registration_changes hold the fan
        rows = generated_rows(count, hour=HOUR + timedelta(hours=offset), seed=41 + offset)
        first = rows.column("fan_id")[0].as_py()
        index = rows.schema.get_field_index("fan_id")
        fans = [fan if value == first else value for value in rows.column("fan_id").to_pylist()]
        rows = rows.set_column(index, rows.schema.field(index), pa.array(fans, rows.schema.field(index).type))
        renamed.extend(fans)
        raw_keys.append(_raw_object(aws, rows, HOUR + timedelta(hours=offset)))
    # curated, then deleted: only their old versions are left
    assert _curator_as_its_role(aws).run().raw_deleted == len(raw_keys)
    # Earlier tests left objects no erasure can read in the failure bucket ("{}"): this test's batch is alone there.
    _purge_everything(aws, failures, "")
    batch = "aws/lambda/replayed/batch"
    admin.put_object(Bucket=failures, Key=batch, Body=failed_batch((fan, 41)))
    admin.delete_object(Bucket=failures, Key=batch)
    # an export data file naming the fan among another fan's item, rewritten in place
    layout = aws.names.prefixes
    exports = f"{layout.exports}erasure-as-role/"
    export_key = f"{exports}20260101T000000Z/AWSDynamoDB/01700000000000-abcdef12/data/a.json.gz"
    items = [json.dumps({"Item": {"sk": {"S": f"FAN#{who}"}}}).encode() + b"\n" for who in (fan, "fan-kept")]
    admin.put_object(Bucket=bucket, Key=export_key, Body=gzip.compress(b"".join(items)))
    request = ErasureRequest.new((fan,), now=HOUR)
    admin.put_object(Bucket=bucket, Key=request.key, Body=request.to_json(), IfNoneMatch="*")
    _roles(aws).denials.clear()
    places = {
        "erasure_salt": "local-salt",
        "failure_bucket": failures,
        # places of their own: earlier tests left unreadable objects ("{}") in the shared ones
        "snapshot_prefix": f"{layout.snapshots}erasure-as-role/",
        "quarantine_prefix": f"{layout.quarantine}erasure-as-role/",
        "exports_prefix": exports,
    }
    # Two runs that look at one file each keep the look between them (created write-once, read back, the older
    # copy deleted), then a run with the default shares completes the request (and deletes the kept look).
    for _ in range(2):
        looking = _curator_as_its_role(aws, **places, erasure_look_rows_per_run=1).run()
        assert looking.erasure.data_files_left > 0
        assert len(_keys(admin, bucket, "erasure/progress/look-")) == 1

    result = _curator_as_its_role(aws, **places).run()

    assert _roles(aws).denials == []
    # the erasure's own progress objects are gone (other tests of the module leave objects of theirs there)
    assert _keys(admin, bucket, "erasure/progress/look-") == []
    assert _keys(admin, bucket, f"erasure/progress/{request.request_id}") == []
    assert result.erasure.objects_unreadable == []
    assert result.erasure.requests_completed == [request.request_id]
    assert result.erasure.rows_removed["registration_changes"] == renamed.count(fan)
    assert result.erasure.versions_purged["raw_events"] == len(raw_keys)
    assert result.erasure.versions_purged["failures"] == 1
    assert result.erasure.versions_purged["registration_changes"] > 0  # the data file rewritten without the fan
    assert (result.erasure.rows_removed["exports"], result.erasure.versions_purged["exports"]) == (1, 1)
    listed = admin.list_object_versions(Bucket=bucket, Prefix=export_key)
    assert [item["IsLatest"] for item in listed.get("Versions", [])] == [True]  # the old bytes purged
    assert gzip.decompress(admin.get_object(Bucket=bucket, Key=export_key)["Body"].read()) == items[1]
    for where, key in (*((bucket, raw_key) for raw_key in raw_keys), (failures, batch), (bucket, request.key)):
        listed = admin.list_object_versions(Bucket=where, Prefix=key)
        assert [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])] == [], key


def test_the_curator_fails_naming_the_action_without_its_table_commits(aws: LocalAws):
    _raw_object(aws, generated_rows(10, seed=8))
    with _roles(aws).without_statement("curator", "CommitCuratedTables"), pytest.raises(ClientError) as caught:
        _curator_as_its_role(aws).run()
    message = str(caught.value)
    assert "assumed-role/prd3292-dev1-demand-curator/local is not authorized to perform: glue:GetTable" in message
    assert f"table/{aws.names.glue_database}/registration_changes" in message


def test_the_backfill_fails_naming_the_action_without_its_snapshot_writes(aws: LocalAws):
    TableWriter(aws.client("dynamodb"), aws.outputs.table_name).apply(list(workload(4, seed=5, poison=0)))
    dropped = _roles(aws).without_statement("backfill", "WriteSnapshotsAndQuarantine")
    with aws.pipeline(), dropped:  # the cutover checks want the streaming destination and the mapping
        report = run_export(
            aws.outputs,
            "dev1",
            workers=1,
            session=aws.session(),
            function_credentials=aws.credentials("backfill"),
            lead=timedelta(0),
        )
    errors = " ".join(str(outcome.error) for outcome in report.files)
    assert report.problems, "an incomplete backfill"
    # its first call reads back the data file's counts object (a re-run's check), under the snapshot prefix
    assert "assumed-role/prd3292-dev1-demand-backfill/local is not authorized to perform: s3:GetObject" in errors
    assert f"on resource: arn:aws:s3:::{aws.outputs.bucket_name}/{aws.names.prefixes.snapshots}" in errors


def test_the_e2e_suite_fails_naming_the_action_when_ci_may_not_write_test_changes(aws: LocalAws):
    with aws.pipeline() as pipe:
        target = LocalTarget(aws, pipe)
        dropped = _roles(aws).without_statement("ci", "WriteAndReadTestChanges")
        with dropped, pytest.raises(PolicyDeniedError) as caught:
            target.write(list(workload(2, seed=1, poison=0)))
    assert caught.value.denial.role == "prd3292-dev1-gitlab-ci"
    assert caught.value.denial.action == "dynamodb:BatchWriteItem"
    assert str(caught.value).startswith("AccessDenied: role prd3292-dev1-gitlab-ci may not dynamodb:BatchWriteItem on")
    _roles(aws).denials.clear()


def test_the_demo_fails_naming_role_action_and_resource_without_a_statement(capsys: pytest.CaptureFixture[str]):
    status = demo.main(["--events", "30", "--poison", "0", "--drop-statement", "processor:WriteEventsAndQuarantine"])
    printed = " ".join(capsys.readouterr().out.split())
    assert status == 1
    assert "role prd3292-dev1-demand-processor may not s3:PutObject on arn:aws:s3:::" in printed
    assert "Summary" not in printed


def test_removing_an_unknown_statement_names_the_roles_statements(aws: LocalAws):
    expected = r"role ci has no statement 'Nope' \(it has: .*ReadLake"
    with pytest.raises(UnknownStatementError, match=expected), _roles(aws).without_statement("ci", "Nope"):
        pass


def test_every_role_is_provisioned_and_assumed(aws: LocalAws):
    assert set(_roles(aws).credentials) == set(ROLES)
    identity = aws.client("sts", role="ci").get_caller_identity()
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/prd3292-dev1-gitlab-ci/local"


# -- where moto is more lenient than IAM: the documents themselves --------------------------------------------
def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_the_curator_lists_only_the_prefixes_it_reads():
    """moto ignores ``s3:prefix``: the condition that keeps the curator's listing to its prefixes is checked here."""
    statements = _by_sid(
        curator_policy(
            bucket_arn="arn:aws:s3:::b",
            events_prefix="demand/events/",
            curated_prefix="curated/",
            snapshot_prefix="demand/snapshots/",
            quarantine_prefix="demand/quarantine/",
            failure_bucket_arn="arn:aws:s3:::f",
            database_arn="arn:aws:glue:us-east-1:123456789012:database/d",
            log_group_arn="g",
        )
    )
    condition = statements["ListRawCuratedAndSnapshots"]["Condition"]
    prefixes = [
        "demand/events/*",
        "curated/*",
        "demand/snapshots/*",
        "demand/quarantine/*",
        "demand/exports/*",
        "erasure/*",
    ]
    assert condition == {"StringLike": {"s3:prefix": prefixes}}


def test_the_backfill_may_list_every_prefix_it_reads_its_own_writes_back_from():
    """moto answers 404 for a missing key either way; S3 answers 403 unless the caller may list the prefix, and the
    backfill reads back (maybe missing) counts and quarantine objects on a re-run."""
    statements = _by_sid(
        backfill_function_policy(
            bucket_arn="arn:aws:s3:::b",
            exports_prefix="demand/exports/",
            snapshot_prefix="demand/snapshots/",
            quarantine_snapshots_prefix="demand/quarantine/snapshots/",
            log_group_arn="g",
        )
    )
    listable = statements["ListSnapshots"]["Condition"]["StringLike"]["s3:prefix"]
    read_back = [arn.removeprefix("arn:aws:s3:::b/") for arn in statements["WriteSnapshotsAndQuarantine"]["Resource"]]
    assert "s3:GetObject" in statements["WriteSnapshotsAndQuarantine"]["Action"]
    assert sorted(read_back) == sorted(listable) == ["demand/quarantine/snapshots/*", "demand/snapshots/*"]
