"""The controls every bucket the stack creates carries: encryption, no public access, TLS only."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.policies import tls_only_bucket_policy

__all__ = ["harden_bucket"]


def harden_bucket(
    name: str, parent: pulumi.Resource, bucket: aws.s3.Bucket, kms_key_arn: str | None = None
) -> aws.s3.BucketPublicAccessBlock:
    """Encrypt ``bucket`` (SSE-S3, or SSE-KMS with an S3 Bucket Key when ``kms_key_arn`` is set), block public
    access and deny requests without TLS, as children ``<name>-encryption``, ``-public-access`` and ``-tls-only``
    of ``parent``. Returns the public access block, which later bucket configuration should wait for."""
    child = pulumi.ResourceOptions(parent=parent)
    encryption = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
        sse_algorithm="aws:kms" if kms_key_arn else "AES256",
        kms_master_key_id=kms_key_arn,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        rules=[
            aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=encryption,
                bucket_key_enabled=bool(kms_key_arn),  # S3 Bucket Keys exist for SSE-KMS only
            )
        ],
        opts=child,
    )
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    aws.s3.BucketPolicy(
        f"{name}-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[public_access]),
    )
    return public_access
