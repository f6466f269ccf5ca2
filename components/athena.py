"""The Athena objects: Glue database, events and snapshot tables (partition projection), workgroup (engine v3),
named queries over the curated Iceberg tables the curator writes in the same database (``registration_changes``,
``registrations``, ``components.catalog.named_queries``), and over the raw table for the minutes not yet curated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.catalog import (
    glue_table_input,
    named_queries,
    snapshot_table_input,
    snapshot_table_name,
    workgroup_configuration,
)
from components.current_state import PublishedSnapshot

__all__ = ["AthenaCatalog", "AthenaCatalogArgs"]


@dataclass(frozen=True)
class AthenaCatalogArgs:
    """Names (snake_case), where the events and results live, and the per-query scan limit."""

    database_name: str
    table_name: str
    workgroup_name: str
    bucket_name: str
    events_prefix: str
    results_prefix: str
    bytes_scanned_cutoff: int
    results_bucket_name: str
    query_window_days: int
    kms_key_arn: str | None = None
    snapshots_prefix: str = "demand/snapshots/"
    snapshot: PublishedSnapshot | None = None
    """The published snapshot ``registrations`` was seeded from (named in ``current_registrations``)."""


def _table_args(table_input: dict[str, Any]) -> dict[str, Any]:
    """boto3 ``TableInput`` -> ``aws.glue.CatalogTable`` keyword arguments."""
    descriptor = table_input["StorageDescriptor"]
    return {
        "name": table_input["Name"],
        "description": table_input["Description"],
        "table_type": table_input["TableType"],
        "parameters": table_input["Parameters"],
        "partition_keys": [
            {"name": key["Name"], "type": key["Type"], "comment": key["Comment"]}
            for key in table_input["PartitionKeys"]
        ],
        "storage_descriptor": {
            "location": descriptor["Location"],
            "input_format": descriptor["InputFormat"],
            "output_format": descriptor["OutputFormat"],
            "compressed": descriptor["Compressed"],
            "ser_de_info": {
                "serialization_library": descriptor["SerdeInfo"]["SerializationLibrary"],
                "parameters": descriptor["SerdeInfo"]["Parameters"],
            },
            "columns": [
                {"name": column["Name"], "type": column["Type"], "comment": column["Comment"]}
                for column in descriptor["Columns"]
            ],
        },
    }


def _workgroup_args(configuration: dict[str, Any]) -> aws.athena.WorkgroupConfigurationArgs:
    """boto3 ``WorkGroupConfiguration`` -> ``aws.athena.Workgroup`` ``configuration``."""
    results = configuration["ResultConfiguration"]
    encryption = results["EncryptionConfiguration"]
    return aws.athena.WorkgroupConfigurationArgs(
        bytes_scanned_cutoff_per_query=configuration["BytesScannedCutoffPerQuery"],
        enforce_workgroup_configuration=configuration["EnforceWorkGroupConfiguration"],
        publish_cloudwatch_metrics_enabled=configuration["PublishCloudWatchMetricsEnabled"],
        requester_pays_enabled=configuration["RequesterPaysEnabled"],
        engine_version=aws.athena.WorkgroupConfigurationEngineVersionArgs(
            selected_engine_version=configuration["EngineVersion"]["SelectedEngineVersion"]
        ),
        result_configuration=aws.athena.WorkgroupConfigurationResultConfigurationArgs(
            output_location=results["OutputLocation"],
            encryption_configuration=aws.athena.WorkgroupConfigurationResultConfigurationEncryptionConfigurationArgs(
                encryption_option=encryption["EncryptionOption"],
                kms_key_arn=encryption.get("KmsKey"),
            ),
        ),
    )


class AthenaCatalog(pulumi.ComponentResource):
    """What analysts query: the events table over the events prefix, a workgroup and saved queries (which read the
    curated tables; the curator creates those on its first run, so no query depends on a table resource)."""

    database_name: pulumi.Output[str]
    """Glue database (Athena database) name."""
    database_arn: pulumi.Output[str]
    """ARN of that database."""
    table_name: pulumi.Output[str]
    """Glue table of the events."""
    table_arn: pulumi.Output[str]
    """ARN of that table."""
    snapshot_table_name: pulumi.Output[str]
    """Glue table of the back-filled snapshots (``<table>_snapshots``)."""
    snapshot_table_arn: pulumi.Output[str]
    """ARN of that table (the CI role reads it once a snapshot is published)."""
    workgroup_name: pulumi.Output[str]
    """Athena workgroup to query with."""
    workgroup_arn: pulumi.Output[str]
    """ARN of that workgroup."""

    def __init__(self, name: str, args: AthenaCatalogArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:AthenaCatalog", name, None, opts)
        self._name = name
        child = pulumi.ResourceOptions(parent=self)
        database = aws.glue.CatalogDatabase(
            f"{name}-database",
            name=args.database_name,
            description="Fan demand registration changes, written by the demand pipeline.",
            opts=child,
        )
        table_input = glue_table_input(
            table_name=args.table_name,
            location=f"s3://{args.bucket_name}/{args.events_prefix}",
        )
        table = aws.glue.CatalogTable(
            f"{name}-events-table", database_name=database.name, **_table_args(table_input), opts=child
        )
        snapshots = aws.glue.CatalogTable(
            f"{name}-snapshots-table",
            database_name=database.name,
            **_table_args(
                snapshot_table_input(
                    table_name=snapshot_table_name(args.table_name),
                    location=f"s3://{args.bucket_name}/{args.snapshots_prefix}",
                )
            ),
            opts=child,
        )
        configuration = workgroup_configuration(
            results_location=f"s3://{args.results_bucket_name}/{args.results_prefix}",
            bytes_scanned_cutoff=args.bytes_scanned_cutoff,
            kms_key_arn=args.kms_key_arn,
        )
        workgroup = aws.athena.Workgroup(
            f"{name}-workgroup",
            name=args.workgroup_name,
            description="Demand pipeline queries: engine v3, enforced settings, encrypted results, scan limit.",
            configuration=_workgroup_args(configuration),
            opts=child,
        )
        for query in named_queries(
            args.database_name, args.table_name, window_days=args.query_window_days, snapshot=args.snapshot
        ):
            aws.athena.NamedQuery(
                f"{name}-query-{query.name.replace('_', '-')}",
                name=query.name,
                description=query.description,
                database=database.name,
                workgroup=workgroup.name,
                query=query.sql,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[table, snapshots]),
            )
        self.database_name = database.name
        self.database_arn = database.arn
        self.table_name = table.name
        self.table_arn = table.arn
        self.snapshot_table_name = snapshots.name
        self.snapshot_table_arn = snapshots.arn
        self.workgroup_name = workgroup.name
        self.workgroup_arn = workgroup.arn
        self.register_outputs(
            {
                "database_name": self.database_name,
                "database_arn": self.database_arn,
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "snapshot_table_name": self.snapshot_table_name,
                "snapshot_table_arn": self.snapshot_table_arn,
                "workgroup_name": self.workgroup_name,
                "workgroup_arn": self.workgroup_arn,
            }
        )
