"""The S3 layout: the data bucket (looked up, or created hardened) and the prefixes everything else uses."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.bucket_controls import harden_bucket
from components.naming import Prefixes

__all__ = ["NONCURRENT_VERSION_DAYS", "DataLayout", "DataLayoutArgs"]

# Days an overwritten or deleted object's previous version stays recoverable in a bucket the stack created.
NONCURRENT_VERSION_DAYS = 30


@dataclass(frozen=True)
class DataLayoutArgs:
    """The bucket id, whether to create it, its prefixes and how long Athena results live."""

    bucket_id: str
    create_bucket: bool
    prefixes: Prefixes
    athena_results_expiry_days: int
    kms_key_arn: str | None = None


class DataLayout(pulumi.ComponentResource):
    """The data bucket and its prefixes: events, quarantine, Athena results, deployment artifacts."""

    bucket_name: pulumi.Output[str]
    """Name of the data bucket."""
    bucket_arn: pulumi.Output[str]
    """ARN of the data bucket."""
    events_prefix: pulumi.Output[str]
    """Prefix of the Parquet events (the Glue table's location)."""
    quarantine_prefix: pulumi.Output[str]
    """Prefix of records the handler could not decode."""
    athena_results_prefix: pulumi.Output[str]
    """Prefix of Athena query results inside the stack's results bucket (components/query_results.py)."""
    artifacts_prefix: pulumi.Output[str]
    """Prefix of deployment artifacts (the dependency layer zip)."""

    def __init__(self, name: str, args: DataLayoutArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:DataLayout", name, None, opts)
        self._name = name
        if args.create_bucket:
            bucket_resource = self._create_bucket(args)
            self.bucket_name = bucket_resource.bucket
            self.bucket_arn = bucket_resource.arn
            self._create_lifecycle(args, [bucket_resource])
        else:
            # A looked-up bucket belongs to someone else: no configuration resource of any kind on it (S3 keeps one
            # lifecycle document per bucket, so declaring one would replace the owner's rules).
            existing = aws.s3.get_bucket_output(bucket=args.bucket_id, opts=pulumi.InvokeOptions(parent=self))
            self.bucket_name = existing.bucket
            self.bucket_arn = existing.arn
        self.events_prefix = pulumi.Output.from_input(args.prefixes.events)
        self.quarantine_prefix = pulumi.Output.from_input(args.prefixes.quarantine)
        self.athena_results_prefix = pulumi.Output.from_input(args.prefixes.athena_results)
        self.artifacts_prefix = pulumi.Output.from_input(args.prefixes.artifacts)
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "bucket_arn": self.bucket_arn,
                "events_prefix": self.events_prefix,
                "quarantine_prefix": self.quarantine_prefix,
                "athena_results_prefix": self.athena_results_prefix,
                "artifacts_prefix": self.artifacts_prefix,
            }
        )

    def _create_bucket(self, args: DataLayoutArgs) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(f"{self._name}-bucket", bucket=args.bucket_id, opts=child)
        harden_bucket(self._name, self, bucket, args.kms_key_arn)
        aws.s3.BucketVersioning(
            f"{self._name}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        return bucket

    def _create_lifecycle(self, args: DataLayoutArgs, depends: list[pulumi.Resource]) -> None:
        # Only on a bucket this stack created: this resource owns the bucket's whole lifecycle configuration.
        aws.s3.BucketLifecycleConfiguration(
            f"{self._name}-lifecycle",
            bucket=args.bucket_id,
            rules=[
                {
                    # Versioned, and compaction deletes the objects it merged: their old versions go after a while.
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    "filter": {"prefix": args.prefixes.root},
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
                },
                {
                    "id": "abort-incomplete-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": args.prefixes.root},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                },
                {
                    # The curated tables (outside the raw root): the curator deletes files no kept snapshot
                    # references, and pyiceberg writes large files as multipart uploads.
                    "id": "curated-noncurrent-versions-and-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": args.prefixes.curated},
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                },
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
