"""The stack's CloudWatch dashboard: what an operator looks at first, built as plain data by a pure function."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

__all__ = ["DashboardMetric", "PipelineDashboard", "PipelineDashboardArgs", "dashboard_body"]

PERIOD_SECONDS = 300
_WIDTH, _HEIGHT, _COLUMNS = 12, 6, 2


@dataclass(frozen=True)
class DashboardMetric:
    """One CloudWatch metric series: namespace, name, dimensions, statistic and legend label."""

    namespace: str
    metric_name: str
    dimensions: dict[str, str]
    stat: str
    label: str

    def row(self) -> list[Any]:
        """The series in the dashboard body's ``metrics`` form: namespace, name, dimension pairs, options."""
        pairs = [part for name, value in self.dimensions.items() for part in (name, value)]
        return [self.namespace, self.metric_name, *pairs, {"stat": self.stat, "label": self.label}]


@dataclass(frozen=True)
class PipelineDashboardArgs:
    """What the dashboard shows: names of the stream, function and handler metrics, the failure destination."""

    dashboard_name: str
    region: str
    stream_name: str
    function_name: str
    metrics_namespace: str
    service_name: str
    # The on-failure destination's arrivals, by metric: whichever destination the stack has (queue or bucket).
    failure_arrivals: DashboardMetric
    alarm_arns: pulumi.Input[list[str]] = field(default_factory=list)


def _graph(title: str, metrics: list[DashboardMetric], region: str, *, left_label: str) -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {
            "title": title,
            "view": "timeSeries",
            "stacked": False,
            "region": region,
            "period": PERIOD_SECONDS,
            "metrics": [metric.row() for metric in metrics],
            "yAxis": {"left": {"label": left_label, "showUnits": False}},
        },
    }


def _placed(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two widgets per row, in order."""
    return [
        {
            **widget,
            "x": (index % _COLUMNS) * _WIDTH,
            "y": (index // _COLUMNS) * _HEIGHT,
            "width": _WIDTH,
            "height": _HEIGHT,
        }
        for index, widget in enumerate(widgets)
    ]


def dashboard_body(args: PipelineDashboardArgs, alarm_arns: list[str]) -> dict[str, Any]:
    """The dashboard body (CloudWatch's JSON structure): alarms first, then the flow from stream to lake."""
    if not alarm_arns:
        raise ValueError("the dashboard's alarm widget needs at least one alarm ARN")
    handler = {"service": args.service_name}

    def emf(metric_name: str, stat: str, label: str) -> DashboardMetric:
        return DashboardMetric(args.metrics_namespace, metric_name, handler, stat, label)

    function = {"FunctionName": args.function_name}
    widgets = [
        {
            "type": "alarm",
            "properties": {"title": "Alarms", "alarms": sorted(alarm_arns), "sortBy": "stateUpdatedTimestamp"},
        },
        _graph(
            "Iterator age (oldest unprocessed record)",
            [DashboardMetric("AWS/Lambda", "IteratorAge", function, "Maximum", "IteratorAge (ms)")],
            args.region,
            left_label="milliseconds",
        ),
        _graph(
            "Records: received, rows written, quarantined, failed",
            [
                DashboardMetric("AWS/Kinesis", "IncomingRecords", {"StreamName": args.stream_name}, "Sum", "On stream"),
                emf("RecordsReceived", "Sum", "Received"),
                emf("RowsWritten", "Sum", "Rows written"),
                emf("RecordsQuarantined", "Sum", "Quarantined"),
                emf("RecordsFailed", "Sum", "Failed"),
            ],
            args.region,
            left_label="records",
        ),
        _graph(
            "Freshness (age of the newest change written)",
            [emf("Freshness", "Maximum", "Freshness (s)")],
            args.region,
            left_label="seconds",
        ),
        _graph(
            "Objects written to the lake",
            [emf("ObjectsWritten", "Sum", "Objects")],
            args.region,
            left_label="objects",
        ),
        _graph(
            "Failure destination arrivals (batches given up)",
            [args.failure_arrivals],
            args.region,
            left_label="arrivals",
        ),
    ]
    return {"widgets": _placed(widgets)}


class PipelineDashboard(pulumi.ComponentResource):
    """One CloudWatch dashboard per stack."""

    dashboard_name: pulumi.Output[str]
    """Name of the dashboard."""

    def __init__(self, name: str, args: PipelineDashboardArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:PipelineDashboard", name, None, opts)
        body = pulumi.Output.from_input(args.alarm_arns).apply(
            lambda arns: json.dumps(dashboard_body(args, list(arns)), sort_keys=True)
        )
        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=args.dashboard_name,
            dashboard_body=body,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"dashboard_name": self.dashboard_name})
