"""The sandbox creates the snapshot table and current_registrations from the same builders as the program."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components.catalog import named_queries, snapshot_table_input
from components.current_state import PublishedSnapshot
from components.settings import Settings, settings_from_stack_file
from sandbox.provision import provision


def _catalog(settings: Settings) -> tuple[dict[str, Any], dict[str, str]]:
    with mock_aws():
        session = boto3.Session(region_name=settings.region)
        outputs = provision(session, settings, shards=1)
        glue, athena = session.client("glue"), session.client("athena")
        table = glue.get_table(DatabaseName=outputs.athena_database_name, Name=f"{outputs.glue_table_name}_snapshots")
        queries = {}
        for query_id in athena.list_named_queries(WorkGroup=outputs.athena_workgroup_name)["NamedQueryIds"]:
            query = athena.get_named_query(NamedQueryId=query_id)["NamedQuery"]
            queries[query["Name"]] = query["QueryString"]
        found: dict[str, Any] = dict(table["Table"])
        return found, queries


@pytest.fixture(autouse=True)
def _in_process_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto in this process: no endpoint, profile or credentials of a local server or a real account leak in."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.mark.parametrize("published", [False, True])
def test_sandbox_catalog_matches_the_program_builders(published: bool) -> None:
    settings = settings_from_stack_file("qa1")
    snapshot = PublishedSnapshot("01764201600000-a1b2c3d4", datetime(2026, 11, 30, 9, 5, tzinfo=UTC))
    if published:
        settings = dataclasses.replace(
            settings, snapshot_export_id=snapshot.export_id, snapshot_export_time="2026-11-30T09:05:00Z"
        )
    table, queries = _catalog(settings)
    expected_table = snapshot_table_input(
        table_name="prd3292_qa1_demand_changes_snapshots",
        location=f"s3://{settings.bucket_id}/demand/snapshots/",
    )
    assert table["Name"] == expected_table["Name"]
    assert table["PartitionKeys"] == expected_table["PartitionKeys"]
    assert table["Parameters"] == expected_table["Parameters"]
    assert table["StorageDescriptor"]["Location"] == f"s3://{settings.bucket_id}/demand/snapshots/"
    assert table["StorageDescriptor"]["Columns"] == expected_table["StorageDescriptor"]["Columns"]
    expected = {
        query.name: query.sql
        for query in named_queries(
            "prd3292_qa1_demand",
            "prd3292_qa1_demand_changes",
            window_days=settings.athena_query_window_days,
            snapshot=snapshot if published else None,
        )
    }
    assert queries == expected
    # with or without a published snapshot, current state is a read of the curated registrations table
    assert 'FROM "prd3292_qa1_demand"."registrations"' in queries["current_registrations"]
