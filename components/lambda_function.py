"""The one way the stack declares a function of the pipeline: the shared artifact and layer, JSON logs to its own
log group (the handler filters at its level, Lambda never drops the metrics), arm64 and the layer's Python."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.layer import ARCHITECTURE, RUNTIME

__all__ = ["LAMBDA_LOG_LEVELS", "PipelineFunctionArgs", "application_log_level", "pipeline_function"]

#: Python level names (LOG_LEVEL) -> Lambda advanced logging levels.
LAMBDA_LOG_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "FATAL"}


def application_log_level(log_level: str) -> str:
    """Lambda's application log level for a handler logging at ``log_level``: never above INFO.

    The handlers' EMF metric lines (Powertools ``Metrics``) are JSON without a ``level`` key, which Lambda's
    log-level filtering counts as INFO: filtering at WARN or above would drop every metric (the quarantine-rate
    alarm and the dashboard would go blank). The handlers' own loggers filter their lines at ``LOG_LEVEL``, so
    Lambda keeps INFO (DEBUG when the handler logs at DEBUG) and the metrics always reach CloudWatch.
    """
    if log_level not in LAMBDA_LOG_LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LAMBDA_LOG_LEVELS)}, got {log_level!r}")
    return "DEBUG" if log_level == "DEBUG" else "INFO"


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
    #: Executions reserved (and the most that run at once); None leaves the function on the account's pool.
    reserved_concurrency: int | None = None
    #: Size of /tmp in MB (Lambda: 512 to 10,240); None keeps Lambda's 512 MB.
    ephemeral_storage_mb: int | None = None
    #: Variables from secret config (secret Outputs, shown as [secret] in previews), added after ``environment``.
    secret_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


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
        reserved_concurrent_executions=args.reserved_concurrency,
        ephemeral_storage={"size": args.ephemeral_storage_mb} if args.ephemeral_storage_mb else None,
        environment={"variables": {**args.environment, **args.secret_environment}},
        # JSON platform logs; the handler filters its own lines at LOG_LEVEL, Lambda keeps INFO for the metrics.
        logging_config={
            "log_format": "JSON",
            "log_group": log_group.name,
            "application_log_level": application_log_level(args.environment.get("LOG_LEVEL", "INFO")),
            "system_log_level": "INFO",
        },
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )
