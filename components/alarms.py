"""CloudWatch alarms on the stream processor: falling behind, failing, throttled, or discarding batches."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.naming import alarm_name

__all__ = ["ProcessorAlarms", "ProcessorAlarmsArgs"]

# Iterator age must stay high for five straight minutes; counts alarm on one bad five-minute period.
SUSTAINED = (60, 5)
ANY_IN_FIVE_MINUTES = (300, 1)


@dataclass(frozen=True)
class ProcessorAlarmsArgs:
    """What to watch (function, alias, failure bucket), thresholds in their natural units, and who to tell."""

    name_prefix: str
    function_name: pulumi.Input[str]
    alias_name: str
    failure_bucket_name: pulumi.Input[str]
    failure_metric_filter_id: pulumi.Input[str]
    iterator_age_seconds: int
    errors_threshold: int
    throttles_threshold: int
    failed_batches_threshold: int
    topic_arn: pulumi.Input[str] | None = None


class ProcessorAlarms(pulumi.ComponentResource):
    """Four alarms: iterator age, errors, throttles, and discarded batches written to the failure bucket."""

    iterator_age_alarm_name: pulumi.Output[str]
    """Name of the iterator-age alarm (the pipeline's main health signal)."""
    alarm_names: pulumi.Output[list[str]]
    """Names of all four alarms."""
    alarm_arns: pulumi.Output[list[str]]
    """ARNs of all four alarms."""

    def __init__(self, name: str, args: ProcessorAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:ProcessorAlarms", name, None, opts)
        self._name = name
        self._args = args
        function_dimensions = {
            "FunctionName": args.function_name,
            "Resource": pulumi.Output.concat(args.function_name, ":", args.alias_name),
        }
        iterator_age = self._alarm(
            "iterator-age",
            "Oldest unprocessed change is older than the threshold: the processor is falling behind.",
            namespace="AWS/Lambda",
            metric_name="IteratorAge",
            # On the function, not the alias: Lambda documents its per-function metrics for every event source
            # mapping; only the alias's mapping invokes this function, so the two series are the same data.
            dimensions={"FunctionName": args.function_name},
            statistic="Maximum",
            # IteratorAge is reported in milliseconds.
            threshold=args.iterator_age_seconds * 1000,
            unit="Milliseconds",
            comparison="GreaterThanThreshold",
            window=SUSTAINED,
        )
        alarms = [
            iterator_age,
            self._alarm(
                "errors",
                "The processor's invocations fail.",
                namespace="AWS/Lambda",
                metric_name="Errors",
                dimensions=function_dimensions,
                statistic="Sum",
                threshold=args.errors_threshold,
            ),
            self._alarm(
                "throttles",
                "The processor is throttled.",
                namespace="AWS/Lambda",
                metric_name="Throttles",
                dimensions=function_dimensions,
                statistic="Sum",
                threshold=args.throttles_threshold,
            ),
            # S3 request metrics of the failure bucket: Lambda PUTs one object per discarded batch. The alarm
            # returns to OK after a quiet period; the objects stay in the bucket until replayed (runbook).
            self._alarm(
                "failed-batches",
                "Batches gave up after retries; their records wait in the failure bucket for replay.",
                namespace="AWS/S3",
                metric_name="PutRequests",
                dimensions={"BucketName": args.failure_bucket_name, "FilterId": args.failure_metric_filter_id},
                statistic="Sum",
                threshold=args.failed_batches_threshold,
            ),
        ]
        self.iterator_age_alarm_name = iterator_age.name
        self.alarm_names = pulumi.Output.all(*[alarm.name for alarm in alarms])
        self.alarm_arns = pulumi.Output.all(*[alarm.arn for alarm in alarms])
        self.register_outputs(
            {
                "iterator_age_alarm_name": self.iterator_age_alarm_name,
                "alarm_names": self.alarm_names,
                "alarm_arns": self.alarm_arns,
            }
        )

    def _alarm(
        self,
        role: str,
        description: str,
        *,
        namespace: str,
        metric_name: str,
        dimensions: dict[str, pulumi.Input[str]],
        statistic: str,
        threshold: int,
        unit: str | None = None,
        comparison: str = "GreaterThanOrEqualToThreshold",
        window: tuple[int, int] = ANY_IN_FIVE_MINUTES,
    ) -> aws.cloudwatch.MetricAlarm:
        period, periods = window
        actions = [self._args.topic_arn] if self._args.topic_arn else []
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-{role}",
            name=alarm_name(self._args.name_prefix, role),
            alarm_description=description,
            namespace=namespace,
            metric_name=metric_name,
            dimensions=dimensions,
            statistic=statistic,
            period=period,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            threshold=threshold,
            unit=unit,
            comparison_operator=comparison,
            treat_missing_data="notBreaching",
            alarm_actions=actions,
            ok_actions=actions,
            opts=pulumi.ResourceOptions(parent=self),
        )
