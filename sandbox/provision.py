"""Create one stack's resources in the local AWS, from the same settings and builders the Pulumi program uses.

Names come from ``components.naming`` and the stack file (``components.settings``); the Glue table, workgroup and
named queries from ``components.catalog``; the handler's environment from ``components.function_environment``.
What the Pulumi program does not own (the table, the bucket) is created here because moto starts empty; so is the
failure bucket it does own (the local event source mapping writes discarded batches there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.artifacts import artifact
from components.catalog import glue_table_input, named_queries, snapshot_table_input, workgroup_configuration
from components.current_state import published_snapshot
from components.naming import FUNCTION_ALIAS, Prefixes, prefixes
from components.settings import Settings
from components.storage import NONCURRENT_VERSION_DAYS
from ops.outputs import StackOutputs

__all__ = ["ACCOUNT_ID", "LocalNames", "local_names", "provision"]

ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_SHARDS = 3
LOCAL_FUNCTION_VERSION = "$LATEST"
UNPACKAGED_CODE_SHA256 = "not-packaged"  # function.zip not built (make package)


@dataclass(frozen=True)
class LocalNames:
    """Physical names of the stack's resources: the names ``__main__.py`` gives the same resources."""

    table: str
    stream: str
    bucket: str
    results_bucket: str
    function: str
    failure_bucket: str
    curator_function: str
    curator_log_group: str
    backfill_state_machine: str
    glue_snapshot_table: str
    glue_database: str
    glue_table: str
    workgroup: str
    log_group: str
    iterator_age_alarm: str
    ci_role: str
    prefixes: Prefixes


def local_names(settings: Settings) -> LocalNames:
    """The stack's resource names, from the same naming helper the Pulumi program uses."""
    created = settings.naming.resources()
    return LocalNames(
        table=settings.table_name,
        stream=settings.stream_name or settings.naming.seed_stream_name(),
        bucket=settings.bucket_id,
        results_bucket=created.results_bucket,
        function=created.function,
        failure_bucket=created.failure_bucket,
        curator_function=created.curator_function,
        curator_log_group=created.curator_log_group,
        backfill_state_machine=created.backfill_state_machine,
        glue_snapshot_table=created.glue_snapshot_table,
        glue_database=created.glue_database,
        glue_table=created.glue_table,
        workgroup=created.workgroup,
        log_group=created.log_group,
        iterator_age_alarm=created.iterator_age_alarm,
        ci_role=created.ci_role,
        prefixes=prefixes(),
    )


def _create_table(dynamodb: Any, name: str) -> None:
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    # point-in-time recovery, which a table export needs (make backfill checks it on a deployed table)
    dynamodb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )


def _create_stream(kinesis: Any, name: str, shards: int) -> str:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    description = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return str(description["StreamARN"])


def _create_catalog(glue: Any, athena: Any, settings: Settings, names: LocalNames) -> None:
    location = f"s3://{names.bucket}/{names.prefixes.events}"
    glue.create_database(
        DatabaseInput={"Name": names.glue_database, "Description": "Demand pipeline (local)"}, Tags=settings.tags
    )
    glue.create_table(
        DatabaseName=names.glue_database, TableInput=glue_table_input(table_name=names.glue_table, location=location)
    )
    glue.create_table(
        DatabaseName=names.glue_database,
        TableInput=snapshot_table_input(
            table_name=names.glue_snapshot_table, location=f"s3://{names.bucket}/{names.prefixes.snapshots}"
        ),
    )
    athena.create_work_group(
        Name=names.workgroup,
        Description="Demand analytics (local)",
        Configuration=workgroup_configuration(
            results_location=f"s3://{names.results_bucket}/{names.prefixes.athena_results}",
            bytes_scanned_cutoff=settings.athena_bytes_scanned_cutoff,
        ),
        Tags=[{"Key": key, "Value": value} for key, value in settings.tags.items()],
    )
    # The same queries as the program's: current_registrations from the published snapshot when the config names one.
    snapshot = published_snapshot(settings.snapshot_export_id, settings.snapshot_export_time)
    for query in named_queries(
        names.glue_database, names.glue_table, window_days=settings.athena_query_window_days, snapshot=snapshot
    ):
        athena.create_named_query(
            Name=query.name,
            Description=query.description,
            Database=names.glue_database,
            QueryString=query.sql,
            WorkGroup=names.workgroup,
        )


def provision(session: Any, settings: Settings, *, shards: int = DEFAULT_SHARDS) -> StackOutputs:
    """Create the stack's resources through ``session`` (a boto3 session on the local endpoint); return outputs."""
    names = local_names(settings)
    region = settings.region
    _create_table(session.client("dynamodb"), names.table)
    stream_arn = _create_stream(session.client("kinesis"), names.stream, shards)
    s3 = session.client("s3")
    for bucket in (names.bucket, names.results_bucket, names.failure_bucket):
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    # Versioned as the program makes them: the data bucket it creates (components/storage.py, whose old versions
    # expire after 30 days) and the failure bucket (components/failure_destination.py, private too); an erasure
    # purges their old versions holding the erased fans.
    for versioned in (names.bucket, names.failure_bucket):
        s3.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    layout = prefixes()
    s3.put_bucket_lifecycle_configuration(
        Bucket=names.bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": f"noncurrent-versions-{place.rstrip('/')}",
                    "Status": "Enabled",
                    "Filter": {"Prefix": place},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
                }
                for place in (layout.root, layout.curated)
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=names.failure_bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    # Tagged like the provider's default tags: the preflight recognises them as this stack's own.
    tag_set = [{"Key": key, "Value": value} for key, value in settings.tags.items()]
    for bucket in (names.results_bucket, names.failure_bucket):
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set})
    _create_catalog(session.client("glue"), session.client("athena"), settings, names)
    # What the account bootstrap (bootstrap/) creates once per account: the GitLab OIDC provider.
    session.client("iam").create_open_id_connect_provider(Url=settings.gitlab_url, ClientIDList=[settings.gitlab_url])
    function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{names.function}"
    return StackOutputs(
        athena_database_name=names.glue_database,
        athena_workgroup_name=names.workgroup,
        ci_iam_role_arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{names.ci_role}",
        stream_arn=stream_arn,
        stream_name=names.stream,
        table_name=names.table,
        function_name=names.function,
        function_alias_name=FUNCTION_ALIAS,
        function_alias_arn=f"{function_arn}:{FUNCTION_ALIAS}",
        bucket_name=names.bucket,
        events_prefix=names.prefixes.events,
        quarantine_prefix=names.prefixes.quarantine,
        athena_results_prefix=names.prefixes.athena_results,
        failure_bucket_name=names.failure_bucket,
        glue_table_name=names.glue_table,
        log_group_name=names.log_group,
        iterator_age_alarm_name=names.iterator_age_alarm,
        region=region,
        # The handler runs in-process here: no published version, and the code is the working tree's.
        function_alias_version=LOCAL_FUNCTION_VERSION,
        function_code_sha256=artifact(settings.artifact_dir).function_digest or UNPACKAGED_CODE_SHA256,
        athena_results_bucket_name=names.results_bucket,
        curator_function_name=names.curator_function,
        curator_log_group_name=names.curator_log_group,
        # moto runs no Distributed Map: make backfill runs the handler per file locally (ops/backfill.py).
        backfill_state_machine_arn=f"arn:aws:states:{region}:{ACCOUNT_ID}:stateMachine:{names.backfill_state_machine}",
        stack_name=settings.stack,
    )
