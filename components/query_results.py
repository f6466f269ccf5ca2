"""The Athena query results bucket: owned by the stack, so results never touch the data bucket it only looks up."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.bucket_controls import harden_bucket

__all__ = ["QueryResults", "QueryResultsArgs"]


@dataclass(frozen=True)
class QueryResultsArgs:
    """The bucket's name, the prefix the workgroup writes under and how long results live."""

    bucket_name: str
    results_prefix: str
    expiry_days: int


class QueryResults(pulumi.ComponentResource):
    """A private, encrypted, TLS-only bucket whose objects (query results) expire."""

    bucket_name: pulumi.Output[str]
    """Name of the results bucket."""
    bucket_arn: pulumi.Output[str]
    """ARN of the results bucket."""
    results_location: pulumi.Output[str]
    """``s3://<bucket>/<prefix>``: the workgroup's output location."""

    def __init__(self, name: str, args: QueryResultsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:QueryResults", name, None, opts)
        self._name = name
        child = pulumi.ResourceOptions(parent=self)
        # Results are disposable copies of query output: destroying the stack may empty the bucket.
        bucket = aws.s3.Bucket(f"{name}-bucket", bucket=args.bucket_name, force_destroy=True, opts=child)
        self._create_controls(bucket, args)
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.results_location = pulumi.Output.concat("s3://", bucket.bucket, "/", args.results_prefix)
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "bucket_arn": self.bucket_arn,
                "results_location": self.results_location,
            }
        )

    def _create_controls(self, bucket: aws.s3.Bucket, args: QueryResultsArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        harden_bucket(self._name, self, bucket)
        aws.s3.BucketOwnershipControls(
            f"{self._name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{self._name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-query-results",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "expiration": {"days": args.expiry_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                },
            ],
            opts=child,
        )
