"""The curator's IAM policy document: least privilege, checked on the document itself (moto ignores conditions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.policies import CURATED_TABLES, curator_policy, glue_table_arn
from tests.infra.iam_lint import lint_identity_policy

BUCKET = "arn:aws:s3:::prd3292.qa1.us-east-1.demand-capture.tmaws"
DATABASE = "arn:aws:glue:us-east-1:123456789012:database/prd3292_qa1_demand"
LOG_GROUP = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/prd3292-qa1-demand-curator"
FAILURES = "arn:aws:s3:::prd3292-qa1-us-east-1-demand-processor-failures"


def _document(**extra: Any) -> dict[str, Any]:
    return curator_policy(
        bucket_arn=BUCKET,
        events_prefix="demand/events/",
        curated_prefix="curated/",
        snapshot_prefix="demand/snapshots/",
        quarantine_prefix="demand/quarantine/",
        failure_bucket_arn=FAILURES,
        database_arn=DATABASE,
        log_group_arn=LOG_GROUP,
        **extra,
    )


def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_the_curator_policy_passes_the_lint() -> None:
    assert lint_identity_policy(_document()) == []
    assert lint_identity_policy(_document(bucket_kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k")) == []


def test_raw_objects_are_read_and_deleted_and_written_only_where_an_erasure_rewrites() -> None:
    statements = _by_sid(_document())
    assert statements["ReadAndDeleteRawEvents"]["Action"] == ["s3:DeleteObject", "s3:GetObject"]
    assert statements["ReadAndDeleteRawEvents"]["Resource"] == [f"{BUCKET}/demand/events/*"]
    writes = {s["Sid"]: s["Resource"] for s in statements.values() if "s3:PutObject" in s["Action"]}
    assert writes == {
        "CreateWriteOnceObjects": [
            f"{BUCKET}/demand/events/*",
            f"{BUCKET}/demand/snapshots/*",
            f"{BUCKET}/demand/quarantine/*",
            f"{BUCKET}/erasure/audit/*",
            f"{BUCKET}/erasure/progress/*",
            f"{FAILURES}/*",
        ],
        "OverwriteExportDataFiles": [f"{BUCKET}/demand/exports/*"],
        "WriteCuratedTables": [f"{BUCKET}/curated/*"],
    }


def test_every_put_outside_the_curated_tables_is_conditional() -> None:
    statements = _by_sid(_document())
    conditions = {s["Sid"]: s.get("Condition") for s in statements.values() if "s3:PutObject" in s["Action"]}
    assert conditions == {
        # write-once: a create (If-None-Match: *) never replaces an object
        "CreateWriteOnceObjects": {"Null": {"s3:if-none-match": "false"}},
        # an export data file is only overwritten as it was read (If-Match: its ETag), never created
        "OverwriteExportDataFiles": {"Null": {"s3:if-match": "false"}},
        # pyiceberg writes the tables' files (and their multipart uploads) without a condition
        "WriteCuratedTables": None,
    }
    # a conditional statement grants nothing else: a GET or DELETE carries no such header
    assert statements["CreateWriteOnceObjects"]["Action"] == ["s3:PutObject"]
    assert statements["OverwriteExportDataFiles"]["Action"] == ["s3:PutObject"]
    conditioned = [s["Sid"] for s in statements.values() if "Condition" in s]
    assert conditioned == [
        "ListRawCuratedAndSnapshots",
        "CreateWriteOnceObjects",
        "OverwriteExportDataFiles",
        "ListVersionsToErase",
    ]


def test_the_curator_policy_fits_a_roles_inline_policy_limit() -> None:
    # IAM: a role's inline policies together at most 10,240 characters (whitespace not counted); the role has one.
    longest = curator_policy(
        bucket_arn="arn:aws:s3:::prd3292.preprod1.us-east-1.demand-capture.tmaws",
        events_prefix="demand/events/",
        curated_prefix="demand/curated/",
        snapshot_prefix="demand/snapshots/",
        quarantine_prefix="demand/quarantine/",
        exports_prefix="demand/exports/",
        failure_bucket_arn="arn:aws:s3:::prd3292-preprod1-us-east-1-demand-processor-failures",
        database_arn="arn:aws:glue:us-east-1:123456789012:database/prd3292_preprod1_demand",
        log_group_arn="arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/prd3292-preprod1-demand-curator",
        bucket_kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab",
    )
    assert len(json.dumps(longest)) < 10_240


def test_erasure_reaches_every_place_a_fan_is_kept_and_the_requests() -> None:
    statements = _by_sid(_document())
    deletes = {s["Sid"]: s["Resource"] for s in statements.values() if "s3:DeleteObject" in s["Action"]}
    assert deletes == {
        "ReadAndDeleteRawEvents": [f"{BUCKET}/demand/events/*"],
        "EraseFromSnapshots": [f"{BUCKET}/demand/snapshots/*"],
        "EraseFromQuarantine": [f"{BUCKET}/demand/quarantine/*"],
        "WriteCuratedTables": [f"{BUCKET}/curated/*"],
        "TrackErasureProgress": [f"{BUCKET}/erasure/progress/*"],
        "EraseFromFailedBatches": [f"{FAILURES}/*"],
    }
    # a request is removed by purging its version, never by a delete that would leave it readable
    assert statements["CarryOutErasureRequests"]["Action"] == ["s3:GetObject"]
    assert statements["ListFailedBatches"] == {
        "Sid": "ListFailedBatches",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": [FAILURES],
    }


def test_the_curated_prefix_is_written_and_cleaned_and_the_snapshots_only_read() -> None:
    statements = _by_sid(_document())
    assert statements["WriteCuratedTables"]["Action"] == [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:PutObject",
    ]
    assert statements["ReadPublishedSnapshots"] == {
        "Sid": "ReadPublishedSnapshots",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": [f"{BUCKET}/demand/snapshots/*"],
    }


def test_listing_is_narrowed_to_the_prefixes_it_reads() -> None:
    listing = _by_sid(_document())["ListRawCuratedAndSnapshots"]
    assert listing["Action"] == ["s3:ListBucket"]
    assert listing["Resource"] == [BUCKET]
    assert listing["Condition"] == {
        "StringLike": {
            "s3:prefix": [
                "demand/events/*",
                "curated/*",
                "demand/snapshots/*",
                "demand/quarantine/*",
                "demand/exports/*",
                "erasure/*",
            ]
        }
    }


def test_glue_reaches_the_two_curated_tables_only_and_never_deletes() -> None:
    glue = _by_sid(_document())["CommitCuratedTables"]
    assert glue["Action"] == [
        "glue:CreateTable",
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:GetTables",
        "glue:UpdateTable",
    ]
    assert glue["Resource"] == [
        "arn:aws:glue:us-east-1:123456789012:catalog",
        DATABASE,
        "arn:aws:glue:us-east-1:123456789012:table/prd3292_qa1_demand/registration_changes",
        "arn:aws:glue:us-east-1:123456789012:table/prd3292_qa1_demand/registrations",
    ]
    actions = {action for statement in _document()["Statement"] for action in statement["Action"]}
    assert not actions & {"glue:DeleteTable", "glue:CreateDatabase", "glue:DeleteDatabase", "s3:PutObjectAcl"}


def test_logs_and_the_bucket_key_as_the_other_functions_have_them() -> None:
    statements = _by_sid(_document(bucket_kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k"))
    assert statements["WriteOwnLogs"]["Resource"] == [f"{LOG_GROUP}:log-stream:*"]
    assert statements["ReadAndWriteEncryptedObjects"]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "ReadAndWriteEncryptedObjects" not in _by_sid(_document())


def test_curated_tables_are_the_curators_two() -> None:
    from curator.tables import CHANGES_TABLE, REGISTRATIONS_TABLE  # noqa: PLC0415 - pyiceberg only for this check

    assert CURATED_TABLES == (CHANGES_TABLE, REGISTRATIONS_TABLE) == ("registration_changes", "registrations")
    with pytest.raises(ValueError, match="not a Glue database ARN"):
        glue_table_arn("arn:aws:glue:us-east-1:123456789012:catalog", "registrations")


PLACES = [
    f"{BUCKET}/demand/events/*",
    f"{BUCKET}/demand/snapshots/*",
    f"{BUCKET}/demand/quarantine/*",
    f"{BUCKET}/demand/exports/*",
    f"{FAILURES}/*",
]


def test_old_versions_are_listed_read_and_purged_only_where_erasure_searches() -> None:
    statements = _by_sid(_document())
    versions = {
        action: {sid: s["Resource"] for sid, s in statements.items() if action in s["Action"]}
        for action in ("s3:ListBucketVersions", "s3:GetObjectVersion", "s3:DeleteObjectVersion")
    }
    assert versions == {
        "s3:ListBucketVersions": {"ListVersionsToErase": [BUCKET], "ListFailedBatchVersions": [FAILURES]},
        "s3:GetObjectVersion": {"ReadOldVersionsToErase": PLACES},
        # the tables' deleted files are purged unread; a request is purged once its audit is durable
        "s3:DeleteObjectVersion": {
            "PurgeErasedVersions": [*PLACES, f"{BUCKET}/curated/*", f"{BUCKET}/erasure/requests/*"]
        },
    }
    assert statements["ListVersionsToErase"]["Condition"] == statements["ListRawCuratedAndSnapshots"]["Condition"]


def test_export_data_files_are_read_overwritten_and_purged_never_deleted() -> None:
    statements = _by_sid(_document())
    on_exports = {
        action
        for statement in statements.values()
        for action in statement["Action"]
        if f"{BUCKET}/demand/exports/*" in statement["Resource"]
    }
    # the overwrite is a PutObject on the data file's own key; its old bytes are purged as a version
    assert on_exports == {"s3:GetObject", "s3:PutObject", "s3:GetObjectVersion", "s3:DeleteObjectVersion"}
    assert statements["OverwriteExportDataFiles"]["Condition"] == {"Null": {"s3:if-match": "false"}}
