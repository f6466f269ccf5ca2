"""The on-failure destination: a bucket the stack owns, where Lambda keeps every batch the mapping discards.

An S3 destination receives the whole invocation record (the event with its records, not only the shard and
sequence range an SQS destination gets), so a replay does not depend on the stream's retention. Lambda names
each object ``aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<UUID>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.bucket_controls import harden_bucket

__all__ = [
    "FAILURE_KEY_PREFIX",
    "METRIC_FILTER_ID",
    "NONCURRENT_VERSION_DAYS",
    "FailureDestination",
    "FailureDestinationArgs",
]

# Where Lambda writes its invocation records (the request metrics count PUTs under it).
FAILURE_KEY_PREFIX = "aws/lambda/"
#: The request-metrics filter counting PUTs under that prefix: its PutRequests are the discarded batches.
METRIC_FILTER_ID = "discarded-batches"
# A replayed record deleted from a versioned bucket stays this long as a noncurrent version.
NONCURRENT_VERSION_DAYS = 7


@dataclass(frozen=True)
class FailureDestinationArgs:
    """The bucket's name, how long records stay, whether earlier versions are kept, and the KMS key if any."""

    bucket_name: str
    retention_days: int
    versioning: bool
    kms_key_arn: str | None = None


class FailureDestination(pulumi.ComponentResource):
    """The failure bucket: encrypted, private, TLS only, expiring, with request metrics for the alarm."""

    bucket_name: pulumi.Output[str]
    """Name of the failure bucket."""
    bucket_arn: pulumi.Output[str]
    """ARN of the failure bucket (the event source mapping's on-failure destination)."""
    metric_filter_id: pulumi.Output[str]
    """FilterId dimension of the bucket's request metrics (PutRequests counts discarded batches)."""

    def __init__(self, name: str, args: FailureDestinationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:FailureDestination", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(f"{name}-bucket", bucket=args.bucket_name, opts=self._child)
        self._harden(args, bucket)
        metric = aws.s3.BucketMetric(
            f"{name}-put-metrics",
            bucket=bucket.id,
            name=METRIC_FILTER_ID,
            filter={"prefix": FAILURE_KEY_PREFIX},
            opts=self._child,
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.metric_filter_id = metric.name
        self.register_outputs(
            {"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "metric_filter_id": self.metric_filter_id}
        )

    def _harden(self, args: FailureDestinationArgs, bucket: aws.s3.Bucket) -> None:
        harden_bucket(self._name, self, bucket, args.kms_key_arn)
        depends: list[pulumi.Resource] = [bucket]
        noncurrent = None
        if args.versioning:
            # AWS recommends versioning on an S3 on-failure destination; a replay's delete then stays undoable.
            versioning = aws.s3.BucketVersioning(
                f"{self._name}-versioning",
                bucket=bucket.id,
                versioning_configuration={"status": "Enabled"},
                opts=self._child,
            )
            depends.append(versioning)
            noncurrent = aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=NONCURRENT_VERSION_DAYS
            )
        rule = aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-discarded-batches",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.retention_days),
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=1
            ),
            noncurrent_version_expiration=noncurrent,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{self._name}-lifecycle",
            bucket=bucket.id,
            rules=[rule],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
