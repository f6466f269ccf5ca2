"""The dependency layer: the layer zip uploaded to the artifacts prefix and published as a Lambda layer version."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

__all__ = ["ARCHITECTURE", "RUNTIME", "DependencyLayer", "DependencyLayerArgs"]

RUNTIME = "python3.12"
ARCHITECTURE = "arm64"


@dataclass(frozen=True)
class DependencyLayerArgs:
    """Layer name, where the zip goes (bucket and key prefix), and the built zip with its digest."""

    layer_name: str
    bucket_name: pulumi.Input[str]
    key_prefix: str
    layer_zip: str
    layer_digest: str | None
    description: str = "Runtime dependencies of the stream processor (aws-lambda-powertools, pyarrow)."


class DependencyLayer(pulumi.ComponentResource):
    """Runtime dependencies as a Lambda layer for Python 3.12 on arm64 (the stream processor's, or the curator's)."""

    layer_arn: pulumi.Output[str]
    """ARN of the published layer version."""

    def __init__(self, name: str, args: DependencyLayerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:DependencyLayer", name, None, opts)
        # The zip is above Lambda's 50 MB direct-upload limit, so it goes through S3.
        layer_object = aws.s3.BucketObjectv2(
            f"{name}-zip",
            bucket=args.bucket_name,
            key=f"{args.key_prefix}{args.layer_name}.zip",
            source=pulumi.FileAsset(args.layer_zip),
            source_hash=args.layer_digest,
            content_type="application/zip",
            opts=pulumi.ResourceOptions(parent=self),
        )
        layer = aws.lambda_.LayerVersion(
            f"{name}-version",
            layer_name=args.layer_name,
            s3_bucket=layer_object.bucket,
            s3_key=layer_object.key,
            source_code_hash=args.layer_digest,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description=args.description,
            # Earlier versions stay, so rolling the alias back to an earlier function version keeps its layer.
            skip_destroy=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.layer_arn = layer.arn
        self.register_outputs({"layer_arn": self.layer_arn})
