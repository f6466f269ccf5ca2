"""Alarms on the flow of records, by metric math: the mapping stopped reading, or the handler quarantines too much.

Neither shows in the function's own health metrics: a disabled mapping (or one KMS denies) simply stops invoking,
and a wrong ``changeTimePrecision`` quarantines every record while every batch "succeeds".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.naming import alarm_name

__all__ = ["FLOW_WINDOW", "FlowAlarms", "FlowAlarmsArgs"]

# Five-minute periods, three in a row: the condition has held for 15 minutes.
FLOW_WINDOW = (300, 3)


@dataclass(frozen=True)
class FlowAlarmsArgs:
    """The stream, the function and alias, the handler's metrics, the quarantine threshold, and who to tell."""

    name_prefix: str
    stream_name: pulumi.Input[str]
    function_name: pulumi.Input[str]
    alias_name: str
    metrics_namespace: str
    service_name: str
    quarantine_rate_percent: int
    topic_arn: pulumi.Input[str]


def _metric(
    query_id: str, namespace: str, metric_name: str, dimensions: Mapping[str, pulumi.Input[str]]
) -> dict[str, Any]:
    period, _ = FLOW_WINDOW
    return {
        "id": query_id,
        "return_data": False,
        "metric": {
            "namespace": namespace,
            "metric_name": metric_name,
            "dimensions": dimensions,
            "stat": "Sum",
            "period": period,
        },
    }


class FlowAlarms(pulumi.ComponentResource):
    """Stalled mapping (records arrive, the alias is not invoked) and quarantine rate (share of records set aside)."""

    stalled_mapping_alarm_name: pulumi.Output[str]
    """Name of the stalled-mapping alarm."""
    quarantine_rate_alarm_name: pulumi.Output[str]
    """Name of the quarantine-rate alarm."""
    alarm_arns: pulumi.Output[list[str]]
    """ARNs of both alarms."""

    def __init__(self, name: str, args: FlowAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:FlowAlarms", name, None, opts)
        self._name = name
        self._args = args
        alias_dimensions = {
            "FunctionName": args.function_name,
            "Resource": pulumi.Output.concat(args.function_name, ":", args.alias_name),
        }
        stalled = self._alarm(
            "stalled-mapping",
            "Records arrive on the stream but the live alias is not invoked: the event source mapping is disabled,"
            " deleted or denied (stream KMS key, role).",
            expression="IF(FILL(incoming, 0) > 0 AND FILL(invocations, 0) == 0, 1, 0)",
            label="Stream has records, alias not invoked (1 = stalled)",
            metrics=[
                _metric("incoming", "AWS/Kinesis", "IncomingRecords", {"StreamName": args.stream_name}),
                _metric("invocations", "AWS/Lambda", "Invocations", alias_dimensions),
            ],
            threshold=1,
            comparison="GreaterThanOrEqualToThreshold",
        )
        service = {"service": args.service_name}
        quarantine = self._alarm(
            "quarantine-rate",
            f"More than {args.quarantine_rate_percent}% of received records are quarantined: a producer change or a"
            " wrong changeTimePrecision (batches still succeed).",
            expression="IF(FILL(received, 0) > 0, 100 * FILL(quarantined, 0) / received, 0)",
            label="Records quarantined (% of received)",
            metrics=[
                _metric("received", args.metrics_namespace, "RecordsReceived", service),
                _metric("quarantined", args.metrics_namespace, "RecordsQuarantined", service),
            ],
            threshold=args.quarantine_rate_percent,
            comparison="GreaterThanThreshold",
        )
        self.stalled_mapping_alarm_name = stalled.name
        self.quarantine_rate_alarm_name = quarantine.name
        self.alarm_arns = pulumi.Output.all(stalled.arn, quarantine.arn)
        self.register_outputs(
            {
                "stalled_mapping_alarm_name": self.stalled_mapping_alarm_name,
                "quarantine_rate_alarm_name": self.quarantine_rate_alarm_name,
                "alarm_arns": self.alarm_arns,
            }
        )

    def _alarm(
        self,
        role: str,
        description: str,
        *,
        expression: str,
        label: str,
        metrics: list[Any],
        threshold: int,
        comparison: str,
    ) -> aws.cloudwatch.MetricAlarm:
        _, periods = FLOW_WINDOW
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-{role}",
            name=alarm_name(self._args.name_prefix, role),
            alarm_description=description,
            metric_queries=[{"id": "result", "expression": expression, "label": label, "return_data": True}, *metrics],
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            threshold=threshold,
            comparison_operator=comparison,
            treat_missing_data="notBreaching",
            alarm_actions=[self._args.topic_arn],
            ok_actions=[self._args.topic_arn],
            opts=pulumi.ResourceOptions(parent=self),
        )
