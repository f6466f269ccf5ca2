"""The one way the stack declares a function of the pipeline: the shared artifact and layer, JSON logs to its own
log group at the handler's level, arm64 and the layer's Python."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.layer import ARCHITECTURE, RUNTIME

__all__ = ["LAMBDA_LOG_LEVELS", "PipelineFunctionArgs", "pipeline_function"]

#: Python level names (LOG_LEVEL) -> Lambda advanced logging levels.
LAMBDA_LOG_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "FATAL"}


@dataclass(frozen=True)
class PipelineFunctionArgs:
    """What differs between the pipeline's functions: name, handler, sizing and environment."""

    function_name: str
    description: str
    handler: str
    memory_mb: int
    timeout_seconds: int
    environment: dict[str, str]
    function_zip: str
    function_digest: str | None
    layer_arn: pulumi.Input[str]
    publish: bool = False


def pipeline_function(
    name: str,
    parent: pulumi.Resource,
    args: PipelineFunctionArgs,
    *,
    role: aws.iam.Role,
    log_group: aws.cloudwatch.LogGroup,
    depends_on: list[pulumi.Resource],
) -> aws.lambda_.Function:
    """The function ``<name>-function``, child of ``parent``, created after ``depends_on`` (its log group, and a
    role policy it needs from its first run)."""
    return aws.lambda_.Function(
        f"{name}-function",
        name=args.function_name,
        description=args.description,
        role=role.arn,
        handler=args.handler,
        runtime=RUNTIME,
        architectures=[ARCHITECTURE],
        memory_size=args.memory_mb,
        timeout=args.timeout_seconds,
        code=pulumi.FileArchive(args.function_zip),
        # Base64 SHA-256 of the deterministic zip: the same sources give the same value, so no update (and no
        # new published version) unless the code changed.
        source_code_hash=args.function_digest,
        layers=[args.layer_arn],
        publish=args.publish or None,
        environment={"variables": args.environment},
        # JSON platform logs; Lambda filters application logs at the handler's own level (LOG_LEVEL).
        logging_config={
            "log_format": "JSON",
            "log_group": log_group.name,
            "application_log_level": LAMBDA_LOG_LEVELS[args.environment.get("LOG_LEVEL", "INFO")],
            "system_log_level": "INFO",
        },
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )
