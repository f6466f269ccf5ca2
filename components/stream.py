"""The change stream: the demand table's Kinesis stream, looked up or (when the stack names none) created."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.stream_key import AWS_MANAGED_KINESIS_KEY, stream_key

__all__ = ["ChangeStream", "ChangeStreamArgs"]

# Created streams keep a week of changes, so a broken consumer can be fixed and replayed without loss.
RETENTION_HOURS = 168


@dataclass(frozen=True)
class ChangeStreamArgs:
    """Which table, and which stream (None: create ``created_stream_name`` and the streaming destination)."""

    table_name: str
    stream_name: str | None
    created_stream_name: str
    change_time_precision: str
    kms_key_arn: str | None = None  # overrides the key the stream lookup reports


class ChangeStream(pulumi.ComponentResource):
    """The Kinesis stream carrying the demand table's changes."""

    stream_arn: pulumi.Output[str]
    """ARN of the stream the processor reads."""
    stream_name: pulumi.Output[str]
    """Name of that stream."""
    table_name: pulumi.Output[str]
    """Name of the demand table."""
    table_arn: pulumi.Output[str]
    """ARN of the demand table."""
    kms_key_arn: pulumi.Output[str | None]
    """Customer managed key the stream's readers must decrypt with (None: unencrypted or AWS managed)."""

    def __init__(self, name: str, args: ChangeStreamArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:ChangeStream", name, None, opts)
        self._name = name
        table = aws.dynamodb.get_table_output(name=args.table_name, opts=pulumi.InvokeOptions(parent=self))
        self.table_name = table.name
        self.table_arn = table.arn
        if args.stream_name is None:
            self._create_stream(args)
        else:
            self._look_up_stream(args.stream_name, args.kms_key_arn)
        if args.kms_key_arn is not None:
            self.kms_key_arn = pulumi.Output.from_input(args.kms_key_arn)
        self.register_outputs(
            {
                "stream_arn": self.stream_arn,
                "stream_name": self.stream_name,
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "kms_key_arn": self.kms_key_arn,
            }
        )

    def _look_up_stream(self, stream_name: str, override: str | None) -> None:
        existing = aws.kinesis.get_stream_output(name=stream_name, opts=pulumi.InvokeOptions(parent=self))
        self.stream_arn = existing.arn
        self.stream_name = existing.name
        if override is None:
            self.kms_key_arn = pulumi.Output.all(existing.encryption_type, existing.kms_key_id, existing.arn).apply(
                lambda reported: self._key_to_grant(*reported)
            )

    def _key_to_grant(self, encryption_type: str, key_id: str, stream_arn: str) -> pulumi.Input[str | None]:
        key = stream_key(encryption_type, key_id, stream_arn)
        if key.alias_name is None:
            return key.key_arn
        # IAM grants on key ARNs only: the alias's target key, looked up in the stream's account.
        alias = aws.kms.get_alias_output(name=key.alias_name, opts=pulumi.InvokeOptions(parent=self))
        return alias.target_key_arn

    def _create_stream(self, args: ChangeStreamArgs) -> None:
        stream = aws.kinesis.Stream(
            f"{self._name}-stream",
            name=args.created_stream_name,
            stream_mode_details={"stream_mode": "ON_DEMAND"},
            encryption_type="KMS",
            kms_key_id=AWS_MANAGED_KINESIS_KEY,
            retention_period=RETENTION_HOURS,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.dynamodb.KinesisStreamingDestination(
            f"{self._name}-table-destination",
            table_name=args.table_name,
            stream_arn=stream.arn,
            approximate_creation_date_time_precision=args.change_time_precision,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.stream_arn = stream.arn
        self.stream_name = stream.name
        self.kms_key_arn = pulumi.Output.from_input(None)  # AWS managed: no grant needed
