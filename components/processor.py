"""The stream processor: the Lambda function, its live alias, role, logs and Kinesis event source mapping.

Discarded batches go to the failure bucket (``components.failure_destination``), which the stack owns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.lambda_function import PipelineFunctionArgs, pipeline_function
from components.layer import RUNTIME
from components.naming import FUNCTION_ALIAS, log_group_name
from components.policies import lambda_trust_policy, processor_policy

__all__ = ["HANDLER", "RUNTIME", "StreamProcessor", "StreamProcessorArgs", "mapping_options"]

HANDLER = "pipeline.handler.handler"


@dataclass(frozen=True)
class StreamProcessorArgs:
    """Names, sizing, stream-reading settings, the code and layer, and the exact ARNs the function may touch."""

    function_name: str
    failure_bucket_arn: pulumi.Input[str]
    stream_arn: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    events_prefix: str
    quarantine_prefix: str
    layer_arn: pulumi.Input[str]
    environment: dict[str, str]
    memory_mb: int
    timeout_seconds: int
    batch_size: int
    batching_window_seconds: int
    parallelization_factor: int
    max_retry_attempts: int
    max_record_age_seconds: int
    log_retention_days: int
    function_zip: str
    function_digest: str | None = None
    log_destination_arn: str | None = None
    stream_kms_key_arn: pulumi.Input[str | None] | None = None
    bucket_kms_key_arn: str | None = None
    starting_position: str = "TRIM_HORIZON"
    starting_position_timestamp: str | None = None  # with AT_TIMESTAMP only
    central_logs_warning: str | None = None  # printed by every preview while no log destination is set
    description: str = field(default="Writes the demand table's changes to Parquet on S3.")


def mapping_options(parent: pulumi.Resource, role_policy: pulumi.Resource) -> pulumi.ResourceOptions:
    """Options of the stream mapping.

    Lambda checks the role can read the stream and write to the destination when the mapping is created, so it
    waits for the role policy. A changed starting position replaces the mapping (the cutover does): the old one is
    deleted first, so two mappings never read the stream into the same alias at once.
    """
    return pulumi.ResourceOptions(parent=parent, depends_on=[role_policy], delete_before_replace=True)


class StreamProcessor(pulumi.ComponentResource):
    """The Lambda function reading the change stream through its ``live`` alias."""

    function_name: pulumi.Output[str]
    """Name of the function."""
    function_arn: pulumi.Output[str]
    """Unqualified ARN of the function."""
    alias_name: pulumi.Output[str]
    """Name of the alias the event source mapping invokes (rollback: point it at an earlier version)."""
    alias_arn: pulumi.Output[str]
    """ARN of that alias."""
    function_version: pulumi.Output[str]
    """Version the alias points at."""
    code_sha256: pulumi.Output[str]
    """Base64 SHA-256 of the deployed code package (Lambda's CodeSha256; compare with the built function.zip)."""
    log_group_name: pulumi.Output[str]
    """The function's log group."""
    log_group_arn: pulumi.Output[str]
    """ARN of that log group."""

    def __init__(self, name: str, args: StreamProcessorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:StreamProcessor", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        log_group = self._create_log_group(args)
        role, role_policy = self._create_role(args, log_group)
        function = self._create_function(args, role, log_group)
        alias = aws.lambda_.Alias(
            f"{name}-alias",
            name=FUNCTION_ALIAS,
            function_name=function.name,
            function_version=function.version,
            description="What the event source mapping invokes; roll back by pointing it at an earlier version.",
            opts=self._child,
        )
        self._create_event_source_mapping(args, alias, role_policy)
        self._create_log_subscription(args, log_group)
        self.function_name = function.name
        self.function_arn = function.arn
        self.alias_name = alias.name
        self.alias_arn = alias.arn
        self.function_version = alias.function_version
        self.code_sha256 = function.code_sha256
        self.log_group_name = log_group.name
        self.log_group_arn = log_group.arn
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "alias_name": self.alias_name,
                "alias_arn": self.alias_arn,
                "function_version": self.function_version,
                "code_sha256": self.code_sha256,
                "log_group_name": self.log_group_name,
                "log_group_arn": self.log_group_arn,
            }
        )

    def _create_log_group(self, args: StreamProcessorArgs) -> aws.cloudwatch.LogGroup:
        # Created before the function so Lambda never creates it with infinite retention.
        return aws.cloudwatch.LogGroup(
            f"{self._name}-logs",
            name=log_group_name(args.function_name),
            retention_in_days=args.log_retention_days,
            opts=self._child,
        )

    def _create_role(
        self, args: StreamProcessorArgs, log_group: aws.cloudwatch.LogGroup
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        role = aws.iam.Role(
            f"{self._name}-role",
            name=args.function_name,
            assume_role_policy=json.dumps(lambda_trust_policy()),
            opts=self._child,
        )
        policy = pulumi.Output.all(
            stream_arn=args.stream_arn,
            bucket_arn=args.bucket_arn,
            failure_bucket_arn=args.failure_bucket_arn,
            log_group_arn=log_group.arn,
            stream_kms_key_arn=args.stream_kms_key_arn,
        ).apply(
            lambda arns: json.dumps(
                processor_policy(
                    stream_arn=arns["stream_arn"],
                    bucket_arn=arns["bucket_arn"],
                    events_prefix=args.events_prefix,
                    quarantine_prefix=args.quarantine_prefix,
                    failure_bucket_arn=arns["failure_bucket_arn"],
                    log_group_arn=arns["log_group_arn"],
                    stream_kms_key_arn=arns["stream_kms_key_arn"],
                    bucket_kms_key_arn=args.bucket_kms_key_arn,
                )
            )
        )
        role_policy = aws.iam.RolePolicy(
            f"{self._name}-policy", name="stream-processor", role=role.id, policy=policy, opts=self._child
        )
        return role, role_policy

    def _create_function(
        self,
        args: StreamProcessorArgs,
        role: aws.iam.Role,
        log_group: aws.cloudwatch.LogGroup,
    ) -> aws.lambda_.Function:
        return pipeline_function(
            self._name,
            self,
            PipelineFunctionArgs(
                function_name=args.function_name,
                description=args.description,
                handler=HANDLER,
                memory_mb=args.memory_mb,
                timeout_seconds=args.timeout_seconds,
                environment=args.environment,
                function_zip=args.function_zip,
                function_digest=args.function_digest,
                layer_arn=args.layer_arn,
                publish=True,
            ),
            role=role,
            log_group=log_group,
            depends_on=[log_group],
        )

    def _create_event_source_mapping(
        self,
        args: StreamProcessorArgs,
        alias: aws.lambda_.Alias,
        role_policy: aws.iam.RolePolicy,
    ) -> aws.lambda_.EventSourceMapping:
        return aws.lambda_.EventSourceMapping(
            f"{self._name}-stream-mapping",
            event_source_arn=args.stream_arn,
            function_name=alias.arn,
            starting_position=args.starting_position,
            starting_position_timestamp=args.starting_position_timestamp,
            batch_size=args.batch_size,
            maximum_batching_window_in_seconds=args.batching_window_seconds,
            parallelization_factor=args.parallelization_factor,
            maximum_retry_attempts=args.max_retry_attempts,
            maximum_record_age_in_seconds=args.max_record_age_seconds,
            bisect_batch_on_function_error=True,
            function_response_types=["ReportBatchItemFailures"],
            destination_config={"on_failure": {"destination_arn": args.failure_bucket_arn}},
            opts=mapping_options(self, role_policy),
        )

    def _create_log_subscription(self, args: StreamProcessorArgs, log_group: aws.cloudwatch.LogGroup) -> None:
        if args.log_destination_arn is None:
            if args.central_logs_warning is not None:
                pulumi.log.warn(args.central_logs_warning, resource=self)
            return
        aws.cloudwatch.LogSubscriptionFilter(
            f"{self._name}-log-subscription",
            name=f"{args.function_name}-central-logs",
            log_group=log_group.name,
            destination_arn=args.log_destination_arn,
            filter_pattern="",
            opts=self._child,
        )
