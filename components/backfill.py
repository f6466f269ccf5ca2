"""Backfill: the function that turns one export data file into snapshot rows, and the state machine that fans it
out over a whole export (a Step Functions Distributed Map reading the export's ``manifest-files.json``).

Each has its own least-privilege role and log group. The map runs at most ``max_concurrency`` invocations at once,
a bound the settings keep below what the stream function needs (``backfillMaxConcurrency``); an execution that
fails (any data file failing, or disagreeing with its manifest's ``itemCount``) notifies the alarm topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.backfill_definition import state_machine_definition
from components.lambda_function import PipelineFunctionArgs, pipeline_function
from components.naming import alarm_name, log_group_name
from components.policies import (
    backfill_function_policy,
    backfill_state_machine_policy,
    lambda_trust_policy,
    state_machine_arn,
    states_trust_policy,
)

__all__ = [
    "BACKFILL_HANDLER",
    "BACKFILL_MEMORY_MB",
    "BACKFILL_TIMEOUT_SECONDS",
    "RESULTS_PREFIX",
    "UNSUCCESSFUL_EXECUTION_METRICS",
    "Backfill",
    "BackfillArgs",
]

BACKFILL_HANDLER = "pipeline.backfill.handler"
# One full vCPU: a 100 MB data file is about 45 CPU seconds (docs/backfill.md), peak memory about 190 MB.
BACKFILL_MEMORY_MB = 1769
BACKFILL_TIMEOUT_SECONDS = 900
#: Where the Distributed Map's ResultWriter puts each run's results (in the data bucket).
RESULTS_PREFIX = "demand/backfill-results/"
FAILED_EXECUTIONS_WINDOW = (300, 1)
#: (metric query id, AWS/States metric) of the executions that ended without success.
UNSUCCESSFUL_EXECUTION_METRICS = (
    ("failed", "ExecutionsFailed"),
    ("aborted", "ExecutionsAborted"),
    ("timedout", "ExecutionsTimedOut"),
)


@dataclass(frozen=True)
class BackfillArgs:
    """Names, the code and layer, the prefixes it reads and writes, the map's concurrency and the alarm topic."""

    function_name: str
    state_machine_name: str
    state_machine_role_name: str
    state_machine_log_group_name: str
    region: str
    bucket_name: str
    bucket_arn: pulumi.Input[str]
    exports_prefix: str
    snapshot_prefix: str
    quarantine_prefix: str
    layer_arn: pulumi.Input[str]
    environment: dict[str, str]
    max_concurrency: int
    log_retention_days: int
    function_zip: str
    function_digest: str | None = None
    bucket_kms_key_arn: str | None = None
    topic_arn: pulumi.Input[str] | None = None


class Backfill(pulumi.ComponentResource):
    """The backfill function and state machine, their roles and log groups, and the failed-executions alarm."""

    function_name: pulumi.Output[str]
    """Name of the backfill function."""
    function_arn: pulumi.Output[str]
    """ARN of the backfill function."""
    log_group_name: pulumi.Output[str]
    """The backfill function's log group."""
    state_machine_arn: pulumi.Output[str]
    """ARN of the state machine ``make backfill`` starts."""
    failed_executions_alarm_arn: pulumi.Output[str]
    """ARN of the alarm on failed executions."""

    def __init__(self, name: str, args: BackfillArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:Backfill", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        function_logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=log_group_name(args.function_name),
            retention_in_days=args.log_retention_days,
            opts=self._child,
        )
        function = self._create_function(args, function_logs)
        machine = self._create_state_machine(args, function)
        alarm = self._create_failed_executions_alarm(args, machine)
        self.function_name = function.name
        self.function_arn = function.arn
        self.log_group_name = function_logs.name
        self.state_machine_arn = machine.arn
        self.failed_executions_alarm_arn = alarm.arn
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "log_group_name": self.log_group_name,
                "state_machine_arn": self.state_machine_arn,
                "failed_executions_alarm_arn": self.failed_executions_alarm_arn,
            }
        )

    def _create_function(self, args: BackfillArgs, log_group: aws.cloudwatch.LogGroup) -> aws.lambda_.Function:
        role = aws.iam.Role(
            f"{self._name}-role",
            name=args.function_name,
            description="The backfill function: read export data files, write snapshot objects.",
            assume_role_policy=json.dumps(lambda_trust_policy()),
            opts=self._child,
        )
        policy = pulumi.Output.all(bucket_arn=args.bucket_arn, log_group_arn=log_group.arn).apply(
            lambda arns: json.dumps(
                backfill_function_policy(
                    bucket_arn=arns["bucket_arn"],
                    exports_prefix=args.exports_prefix,
                    snapshot_prefix=args.snapshot_prefix,
                    quarantine_snapshots_prefix=f"{args.quarantine_prefix}snapshots/",
                    log_group_arn=arns["log_group_arn"],
                    bucket_kms_key_arn=args.bucket_kms_key_arn,
                )
            )
        )
        role_policy = aws.iam.RolePolicy(
            f"{self._name}-policy", name="backfill", role=role.id, policy=policy, opts=self._child
        )
        return pipeline_function(
            self._name,
            self,
            PipelineFunctionArgs(
                function_name=args.function_name,
                description="Writes one DynamoDB export data file as write-once snapshot Parquet (the backfill).",
                handler=BACKFILL_HANDLER,
                memory_mb=BACKFILL_MEMORY_MB,
                timeout_seconds=BACKFILL_TIMEOUT_SECONDS,
                environment=args.environment,
                function_zip=args.function_zip,
                function_digest=args.function_digest,
                layer_arn=args.layer_arn,
            ),
            role=role,
            log_group=log_group,
            depends_on=[log_group, role_policy],
        )

    def _create_state_machine(self, args: BackfillArgs, function: aws.lambda_.Function) -> aws.sfn.StateMachine:
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-states-logs",
            name=args.state_machine_log_group_name,
            retention_in_days=args.log_retention_days,
            opts=self._child,
        )
        # The role names the state machine before it exists: its ARN is known from region, account and name.
        account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        machine_arn = account_id.apply(
            lambda account: state_machine_arn(region=args.region, account_id=account, name=args.state_machine_name)
        )
        role = aws.iam.Role(
            f"{self._name}-states-role",
            name=args.state_machine_role_name,
            description=f"Step Functions: run {args.state_machine_name}, invoking {args.function_name} only.",
            assume_role_policy=machine_arn.apply(lambda arn: json.dumps(states_trust_policy(state_machine_arn=arn))),
            opts=self._child,
        )
        policy = pulumi.Output.all(machine=machine_arn, function=function.arn, bucket=args.bucket_arn).apply(
            lambda arns: json.dumps(
                backfill_state_machine_policy(
                    state_machine_arn=arns["machine"],
                    function_arn=arns["function"],
                    bucket_arn=arns["bucket"],
                    exports_prefix=args.exports_prefix,
                    results_bucket_arn=arns["bucket"],
                    results_prefix=RESULTS_PREFIX,
                    bucket_kms_key_arn=args.bucket_kms_key_arn,
                )
            )
        )
        role_policy = aws.iam.RolePolicy(
            f"{self._name}-states-policy", name="backfill-states", role=role.id, policy=policy, opts=self._child
        )
        definition = pulumi.Output.json_dumps(
            state_machine_definition(
                function.arn,
                max_concurrency=args.max_concurrency,
                results_bucket=args.bucket_name,
                results_prefix=RESULTS_PREFIX,
            )
        )
        return aws.sfn.StateMachine(
            f"{self._name}-state-machine",
            name=args.state_machine_name,
            type="STANDARD",
            role_arn=role.arn,
            definition=definition,
            logging_configuration={
                "level": "ERROR",
                "include_execution_data": False,
                "log_destination": log_group.arn.apply(lambda arn: f"{arn}:*"),
            },
            # The role's policy first: creating a logged state machine checks the role may deliver logs.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, role_policy]),
        )

    def _create_failed_executions_alarm(
        self, args: BackfillArgs, machine: aws.sfn.StateMachine
    ) -> aws.cloudwatch.MetricAlarm:
        period, periods = FAILED_EXECUTIONS_WINDOW
        actions = [args.topic_arn] if args.topic_arn else []
        # Every way an execution ends without a complete snapshot: failed, aborted (stopped) or timed out.
        queries: list[aws.cloudwatch.MetricAlarmMetricQueryArgs] = [
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=metric_id,
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace="AWS/States",
                    metric_name=metric,
                    dimensions={"StateMachineArn": machine.arn},
                    period=period,
                    stat="Sum",
                ),
            )
            for metric_id, metric in UNSUCCESSFUL_EXECUTION_METRICS
        ]
        expression = " + ".join(f"FILL({metric_id},0)" for metric_id, _ in UNSUCCESSFUL_EXECUTION_METRICS)
        queries.insert(
            0,
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="unsuccessful", expression=expression, label="Executions not succeeded", return_data=True
            ),
        )
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-failed-executions",
            name=alarm_name(args.state_machine_name, "failed-executions"),
            alarm_description="A backfill execution failed, timed out or was aborted: the snapshot is incomplete and"
            " must not be published.",
            metric_queries=queries,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=actions,
            ok_actions=actions,
            opts=self._child,
        )
