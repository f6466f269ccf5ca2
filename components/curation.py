"""Curation: the curator function, the only writer of the curated Iceberg tables, run every few minutes.

One writer by construction: the function's reserved concurrency is 1 (a second invocation waits, it never runs
beside the first), its timeout is below the schedule's interval (settings refuse anything else), and every path
that writes (the schedule, ``make compact``) invokes this one function. A run that meets a conflict anyway
abandons and changes nothing; the next run retries.

EventBridge Scheduler invokes it (asynchronously) through a role of its own that may invoke this one function:
no resource-based policy on the function, a retry policy for delivery, and the schedule's time zone explicit.
The schedule lives in the stack's own schedule group, which the role's trust names (Scheduler presents the group's
ARN as ``aws:SourceArn``); an invocation Scheduler cannot deliver goes to a dead-letter queue, and an alarm watches
that queue and the group's dropped and undeliverable invocations, so a schedule that never reaches the function is
not silent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.function_environment import ERASURE_METRIC, ERASURE_SALT_VARIABLE, METRICS_NAMESPACE
from components.lambda_function import PipelineFunctionArgs, pipeline_function
from components.naming import alarm_name, log_group_name
from components.policies import (
    curator_policy,
    lambda_trust_policy,
    schedule_group_arn,
    scheduler_invoke_policy,
    scheduler_trust_policy,
)
from components.settings import CURATOR_CONCURRENCY

__all__ = [
    "CURATOR_HANDLER",
    "EPHEMERAL_STORAGE_MB",
    "RESERVED_CONCURRENCY",
    "SCHEDULED_EVENT",
    "Curation",
    "CurationArgs",
    "schedule_expression",
]

CURATOR_HANDLER = "curator.handler.handler"
# One run at a time: the single writer of the curated tables (components.settings.CURATOR_CONCURRENCY).
RESERVED_CONCURRENCY = CURATOR_CONCURRENCY
# /tmp holds the rows a run spills past the spill's memory: its raw rows and the committed rows of the hours it
# rewrites, about 175 bytes a row (docs/curation.md "Scale": the hour's last run at nine shards spills 5.7 GB).
# Lambda's most; billed per GB-second beyond 512 MB, a few cents a month at one run per 15 minutes.
EPHEMERAL_STORAGE_MB = 10_240
# The scheduled event: the curator takes no input, each run curates whatever raw objects are new.
SCHEDULED_EVENT: dict[str, str] = {}
SCHEDULE_RETRY_ATTEMPTS = 3
ERRORS_WINDOW = (300, 1)
ERASURE_ALARM_PERIOD = 3600  # the oldest pending request's age, in hours: an hour's maximum is fine-grained enough
# Undelivered invocations are kept for the SQS maximum, 14 days: long enough to see what was missed.
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600


def schedule_expression(interval_minutes: int) -> str:
    """``rate(<n> minutes)``: Scheduler wants the unit singular for 1 only, and settings allow 2 or more."""
    if interval_minutes < 2:
        raise ValueError(f"curationIntervalMinutes must be 2 or more, got {interval_minutes}")
    return f"rate({interval_minutes} minutes)"


@dataclass(frozen=True)
class CurationArgs:
    """Names, sizing and interval, the curator's code and layer, what it may read and write, and the alarms."""

    function_name: str
    schedule_name: str
    scheduler_role_name: str
    schedule_group_name: str
    dead_letter_queue_name: str
    bucket_arn: pulumi.Input[str]
    events_prefix: str
    curated_prefix: str
    snapshot_prefix: str
    quarantine_prefix: str
    exports_prefix: str
    failure_bucket_arn: pulumi.Input[str]
    database_arn: pulumi.Input[str]
    layer_arn: pulumi.Input[str]
    environment: dict[str, str]
    memory_mb: int
    timeout_seconds: int
    interval_minutes: int
    log_retention_days: int
    function_zip: str
    errors_threshold: int
    erasure_salt: pulumi.Input[str]  # secret (dmd-pipeline:erasureSalt): the function's ERASURE_SALT
    erasure_deadline_days: int
    function_digest: str | None = None
    bucket_kms_key_arn: str | None = None
    topic_arn: pulumi.Input[str] | None = None


class Curation(pulumi.ComponentResource):
    """The curator function (reserved concurrency 1), its role, logs, alarms and schedule."""

    function_name: pulumi.Output[str]
    """Name of the curator function (``make compact`` invokes it)."""
    function_arn: pulumi.Output[str]
    """ARN of the curator function."""
    log_group_name: pulumi.Output[str]
    """The curator function's log group."""
    errors_alarm_name: pulumi.Output[str]
    """Name of the alarm on the function's errors."""
    errors_alarm_arn: pulumi.Output[str]
    """ARN of that alarm."""
    schedule_alarm_arn: pulumi.Output[str]
    """ARN of the alarm on invocations the schedule could not deliver."""
    erasure_alarm_arn: pulumi.Output[str]
    """ARN of the alarm on an erasure request pending past the stack's deadline."""

    def __init__(self, name: str, args: CurationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.timeout_seconds >= args.interval_minutes * 60:
            raise ValueError(
                f"curator timeout {args.timeout_seconds} s must be below its interval ({args.interval_minutes} min)"
            )
        super().__init__("dmd-pipeline:index:Curation", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=log_group_name(args.function_name),
            retention_in_days=args.log_retention_days,
            opts=self._child,
        )
        role, role_policy = self._create_role(args, log_group)
        function = self._create_function(args, role, role_policy, log_group)
        self._limit_queued_invocations(args, function)
        alarm = self._create_errors_alarm(args, function)
        schedule_alarm = self._create_schedule(args, function)
        erasure_alarm = self._create_erasure_alarm(args)
        self.function_name = function.name
        self.function_arn = function.arn
        self.log_group_name = log_group.name
        self.errors_alarm_name = alarm.name
        self.errors_alarm_arn = alarm.arn
        self.schedule_alarm_arn = schedule_alarm.arn
        self.erasure_alarm_arn = erasure_alarm.arn
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "log_group_name": self.log_group_name,
                "errors_alarm_name": self.errors_alarm_name,
                "errors_alarm_arn": self.errors_alarm_arn,
                "schedule_alarm_arn": self.schedule_alarm_arn,
                "erasure_alarm_arn": self.erasure_alarm_arn,
            }
        )

    def _create_role(
        self, args: CurationArgs, log_group: aws.cloudwatch.LogGroup
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        role = aws.iam.Role(
            f"{self._name}-role",
            name=args.function_name,
            assume_role_policy=json.dumps(lambda_trust_policy()),
            opts=self._child,
        )
        policy = pulumi.Output.all(
            bucket_arn=args.bucket_arn,
            database_arn=args.database_arn,
            log_group_arn=log_group.arn,
            failure_bucket_arn=args.failure_bucket_arn,
        ).apply(
            lambda arns: json.dumps(
                curator_policy(
                    bucket_arn=arns["bucket_arn"],
                    events_prefix=args.events_prefix,
                    curated_prefix=args.curated_prefix,
                    snapshot_prefix=args.snapshot_prefix,
                    quarantine_prefix=args.quarantine_prefix,
                    exports_prefix=args.exports_prefix,
                    failure_bucket_arn=arns["failure_bucket_arn"],
                    database_arn=arns["database_arn"],
                    log_group_arn=arns["log_group_arn"],
                    bucket_kms_key_arn=args.bucket_kms_key_arn,
                )
            )
        )
        role_policy = aws.iam.RolePolicy(
            f"{self._name}-policy", name="curator", role=role.id, policy=policy, opts=self._child
        )
        return role, role_policy

    def _create_function(
        self,
        args: CurationArgs,
        role: aws.iam.Role,
        role_policy: aws.iam.RolePolicy,
        log_group: aws.cloudwatch.LogGroup,
    ) -> aws.lambda_.Function:
        return pipeline_function(
            self._name,
            self,
            PipelineFunctionArgs(
                function_name=args.function_name,
                description="The only writer of the curated Iceberg tables registration_changes and registrations.",
                handler=CURATOR_HANDLER,
                memory_mb=args.memory_mb,
                timeout_seconds=args.timeout_seconds,
                environment=args.environment,
                function_zip=args.function_zip,
                function_digest=args.function_digest,
                layer_arn=args.layer_arn,
                reserved_concurrency=RESERVED_CONCURRENCY,
                ephemeral_storage_mb=EPHEMERAL_STORAGE_MB,
                secret_environment={ERASURE_SALT_VARIABLE: pulumi.Output.secret(args.erasure_salt)},
            ),
            role=role,
            log_group=log_group,
            # The role's policy first: a scheduled run right after creation must be able to list and write.
            depends_on=[log_group, role_policy],
        )

    def _limit_queued_invocations(self, args: CurationArgs, function: aws.lambda_.Function) -> None:
        """A scheduled invocation that waits for the running one (reserved concurrency 1) is dropped once the next
        is due, and a failed run is not retried by Lambda: the next scheduled run starts from what is committed."""
        aws.lambda_.FunctionEventInvokeConfig(
            f"{self._name}-async",
            function_name=function.name,
            maximum_event_age_in_seconds=args.interval_minutes * 60,
            maximum_retry_attempts=0,
            opts=self._child,
        )

    def _create_errors_alarm(self, args: CurationArgs, function: aws.lambda_.Function) -> aws.cloudwatch.MetricAlarm:
        period, periods = ERRORS_WINDOW
        actions = [args.topic_arn] if args.topic_arn else []
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-errors",
            name=alarm_name(args.function_name, "errors"),
            alarm_description="A curator run failed (unreadable raw objects, memory, timeout): nothing it had not"
            " committed changed, and the next run retries. See docs/runbook.md.",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            period=period,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            threshold=args.errors_threshold,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=actions,
            ok_actions=actions,
            opts=self._child,
        )

    def _create_erasure_alarm(self, args: CurationArgs) -> aws.cloudwatch.MetricAlarm:
        """Fires when an erasure request has been pending longer than the stack's ``erasureDeadlineDays``.

        The curator publishes ``ERASURE_METRIC`` at the start of every run (0 when nothing is pending), so the
        alarm reads the hour's maximum. Missing data is not breaching: no data means no run (the errors and
        schedule alarms report a curator that fails or is not invoked), and a stack whose curator does not publish
        it yet has no request it could carry out either; a request already late keeps the alarm in ALARM for as
        long as runs report it.
        """
        actions = [args.topic_arn] if args.topic_arn else []
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-erasure-deadline",
            name=alarm_name(args.function_name, "erasure-deadline"),
            alarm_description=f"An erasure request is pending for more than {args.erasure_deadline_days} days"
            " (erasureDeadlineDays; the law allows a month): make erase-status lists it. See docs/runbook.md,"
            " Erasure.",
            namespace=METRICS_NAMESPACE,
            metric_name=ERASURE_METRIC,
            dimensions={"service": args.environment.get("POWERTOOLS_SERVICE_NAME", args.function_name)},
            statistic="Maximum",
            period=ERASURE_ALARM_PERIOD,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            threshold=args.erasure_deadline_days * 24,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=actions,
            ok_actions=actions,
            opts=self._child,
        )

    def _create_schedule(self, args: CurationArgs, function: aws.lambda_.Function) -> aws.cloudwatch.MetricAlarm:
        group = aws.scheduler.ScheduleGroup(
            f"{self._name}-schedule-group", name=args.schedule_group_name, opts=self._child
        )
        queue = aws.sqs.Queue(
            f"{self._name}-undelivered",
            name=args.dead_letter_queue_name,
            message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=self._child,
        )
        role = aws.iam.Role(
            f"{self._name}-scheduler-role",
            name=args.scheduler_role_name,
            description=f"EventBridge Scheduler: invoke {args.function_name} every {args.interval_minutes} minutes.",
            assume_role_policy=function.arn.apply(
                lambda arn: json.dumps(
                    scheduler_trust_policy(source_arn=schedule_group_arn(arn, args.schedule_group_name))
                )
            ),
            opts=self._child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{self._name}-scheduler-policy",
            name="invoke-curator",
            role=role.id,
            policy=pulumi.Output.all(function.arn, queue.arn).apply(
                lambda arns: json.dumps(scheduler_invoke_policy(function_arn=arns[0], dead_letter_queue_arn=arns[1]))
            ),
            opts=self._child,
        )
        aws.scheduler.Schedule(
            f"{self._name}-schedule",
            name=args.schedule_name,
            group_name=group.name,
            description="Curate the raw objects into the Iceberg tables (one run at a time).",
            schedule_expression=schedule_expression(args.interval_minutes),
            schedule_expression_timezone="UTC",
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=function.arn,
                role_arn=role.arn,
                input=json.dumps(SCHEDULED_EVENT),
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                    # a delivery later than the next run is useless: that run covers the same raw objects
                    maximum_event_age_in_seconds=args.interval_minutes * 60,
                    maximum_retry_attempts=SCHEDULE_RETRY_ATTEMPTS,
                ),
                dead_letter_config=aws.scheduler.ScheduleTargetDeadLetterConfigArgs(arn=queue.arn),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role_policy]),
        )
        return self._create_schedule_alarm(args, group, queue)

    def _create_schedule_alarm(
        self, args: CurationArgs, group: aws.scheduler.ScheduleGroup, queue: aws.sqs.Queue
    ) -> aws.cloudwatch.MetricAlarm:
        """Fires when the schedule's invocations do not reach the function (Scheduler's own metrics, AWS/Scheduler,
        by schedule group; the dead-letter queue's depth): the function's Errors alarm cannot see those."""
        period, periods = ERRORS_WINDOW
        actions = [args.topic_arn] if args.topic_arn else []

        def query(
            query_id: str, namespace: str, metric: str, dimensions: dict[str, pulumi.Input[str]], stat: str
        ) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=query_id,
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace=namespace, metric_name=metric, dimensions=dimensions, period=period, stat=stat
                ),
            )

        in_group: dict[str, pulumi.Input[str]] = {"ScheduleGroup": group.name}
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-schedule-failures",
            name=alarm_name(args.schedule_name, "failed-invocations"),
            alarm_description="The curation schedule could not invoke the curator (dropped after retries, or not"
            " even sent to its dead-letter queue): the curated tables are not advancing. Check the scheduler role's"
            " trust and policy, then read the dead-letter queue.",
            metric_queries=[
                query("dropped", "AWS/Scheduler", "InvocationDroppedCount", in_group, "Sum"),
                query("undeliverable", "AWS/Scheduler", "InvocationsFailedToBeSentToDeadLetterCount", in_group, "Sum"),
                query(
                    "deadletters", "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": queue.name}, "Maximum"
                ),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="failed",
                    label="Invocations not delivered",
                    return_data=True,
                    expression="FILL(dropped,0) + FILL(undeliverable,0) + FILL(deadletters,0)",
                ),
            ],
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=actions,
            ok_actions=actions,
            opts=self._child,
        )
