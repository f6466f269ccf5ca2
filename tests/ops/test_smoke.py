"""The smoke check passes on a healthy stack and names exactly what is wrong on an unhealthy one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import boto3
import pytest

from ops import smoke
from ops.outputs import StackOutputs
from tests.ops.conftest import FUNCTION, REGION, outputs_values

NOW = datetime.now(UTC)
DIMENSIONS: list[Any] = [{"Name": "FunctionName", "Value": FUNCTION}, {"Name": "Resource", "Value": f"{FUNCTION}:live"}]
# The IteratorAge alarm watches the function's series (components.alarms), the others the alias's.
FUNCTION_DIMENSIONS: list[Any] = [{"Name": "FunctionName", "Value": FUNCTION}]
THRESHOLD_MS = 300_000.0


def _metric(name: str, value: float, minutes_ago: int = 2) -> None:
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": FUNCTION_DIMENSIONS if name == "IteratorAge" else DIMENSIONS,
                "Timestamp": NOW - timedelta(minutes=minutes_ago),
                "Value": value,
                "Unit": "Milliseconds" if name == "IteratorAge" else "Count",
            }
        ],
    )


def _alarm(name: str, metric: str, threshold: float) -> None:
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/Lambda",
        MetricName=metric,
        Dimensions=FUNCTION_DIMENSIONS if metric == "IteratorAge" else DIMENSIONS,
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=threshold,
        ComparisonOperator="GreaterThanThreshold",
    )


@pytest.fixture
def deployed(aws):
    """The stack's alarms, bucket and workgroup as deployed, with no traffic yet."""
    values = outputs_values()
    _alarm(values["iterator_age_alarm_name"], "IteratorAge", THRESHOLD_MS)
    _alarm("prd3292-qa1-errors", "Errors", 1)
    _alarm("prd3292-qa1-throttles", "Throttles", 1)
    _alarm("prd3292-qa1-failed-batches", "PutRequests", 1)
    _alarm("prd3292-qa1-stalled-mapping", "IncomingRecords", 1)
    _alarm("prd3292-qa1-quarantine-rate", "RecordsQuarantined", 5)
    _alarm("prd3292-dev1-errors", "Errors", 1)  # another stack's alarm: not ours to judge
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName="prd3292-dev1-errors", StateValue="ALARM", StateReason="not this stack"
    )
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=values["bucket_name"])
    boto3.client("athena", region_name=REGION).create_work_group(Name=values["athena_workgroup_name"])


@pytest.fixture
def traffic(deployed):
    """A healthy quarter hour: invocations, no errors, a young iterator, a fresh Parquet object."""
    _metric("Invocations", 40)
    _metric("Invocations", 35, minutes_ago=6)
    _metric("Errors", 0)
    _metric("IteratorAge", 1_200)
    key = f"demand/events/dt={NOW:%Y-%m-%d}/hour={NOW:%H}/stream-shard-000001.parquet"
    boto3.client("s3", region_name=REGION).put_object(Bucket=outputs_values()["bucket_name"], Key=key, Body=b"PAR1")


def _run(outputs, **kwargs):
    clients = smoke.SmokeClients.for_region(REGION)
    results = smoke.run_checks(outputs, clients, now=NOW, sleep=lambda _: None, **kwargs)
    return {result.name: result for result in results}


def test_healthy_stack_passes_every_check(traffic, outputs):
    results = _run(outputs)

    assert list(results) == ["invocations", "errors", "iterator age", "alarms", "new objects", "athena"]
    assert all(result.passed for result in results.values()), smoke.render_table(list(results.values()))
    assert results["invocations"].observed == "75"
    assert results["iterator age"].expected == "< 300000 ms"
    assert results["iterator age"].observed == "1200 ms"
    assert results["alarms"].observed == "6 alarms, none in ALARM"
    assert results["new objects"].observed.startswith("1, newest ")


def test_idle_stack_fails_on_invocations_and_new_objects_only(deployed, outputs):
    results = _run(outputs)

    assert {name for name, result in results.items() if not result.passed} == {"invocations", "new objects"}
    assert results["invocations"].observed == "0"
    assert results["new objects"].observed == "none"
    assert results["iterator age"].observed == "no data (no batch read)"


def test_failing_stack_names_errors_backlog_and_firing_alarm(traffic, outputs):
    _metric("Errors", 3)
    _metric("IteratorAge", 900_000)
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName="prd3292-qa1-iterator-age", StateValue="ALARM", StateReason="backlog"
    )

    results = _run(outputs)

    assert {name for name, result in results.items() if not result.passed} == {"errors", "iterator age", "alarms"}
    assert results["errors"].observed == "3"
    assert results["iterator age"].observed == "900000 ms"
    assert results["alarms"].observed == "in ALARM: prd3292-qa1-iterator-age"


def test_old_objects_do_not_count_as_new(deployed, outputs):
    old_hour = NOW - timedelta(hours=3)
    key = f"demand/events/dt={old_hour:%Y-%m-%d}/hour={old_hour:%H}/old.parquet"
    boto3.client("s3", region_name=REGION).put_object(Bucket=outputs.bucket_name, Key=key, Body=b"PAR1")

    assert _run(outputs)["new objects"].passed is False


def test_missing_iterator_age_alarm_fails_both_alarm_checks(aws, outputs):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=outputs.bucket_name)

    results = _run(outputs)

    assert results["iterator age"].observed == "not found"
    assert results["alarms"].observed == (
        "missing: prd3292-qa1-iterator-age, prd3292-qa1-errors, prd3292-qa1-throttles, prd3292-qa1-failed-batches, "
        "prd3292-qa1-stalled-mapping, prd3292-qa1-quarantine-rate"
    )
    assert results["alarms"].passed is False


def test_alarm_names_follow_the_iterator_age_alarm():
    values = outputs_values(iterator_age_alarm_name="prd3292-prod1-demand-processor-iterator-age")
    names = smoke.stack_alarm_names(StackOutputs.from_mapping(values, source="test"))

    assert names == [
        "prd3292-prod1-demand-processor-iterator-age",
        "prd3292-prod1-demand-processor-errors",
        "prd3292-prod1-demand-processor-throttles",
        "prd3292-prod1-demand-processor-failed-batches",
        "prd3292-prod1-demand-processor-stalled-mapping",
        "prd3292-prod1-demand-processor-quarantine-rate",
    ]


def test_athena_query_reads_only_recent_partitions(outputs):
    query = smoke.athena_query(outputs, datetime(2026, 3, 1, 0, 30, tzinfo=UTC))

    assert query == ('SELECT count(*) AS records FROM "prd3292_qa1_demand"."demand_events" WHERE dt >= \'2026-02-28\'')


class FakeAthena:
    """Athena answering with scripted states (moto's Athena always succeeds)."""

    def __init__(self, states: list[str], reason: str = "") -> None:
        self.states = states
        self.reason = reason
        self.started: list[dict] = []
        self.stopped: list[str] = []

    def start_query_execution(self, **kwargs):
        self.started.append(kwargs)
        return {"QueryExecutionId": "q-1"}

    def get_query_execution(self, QueryExecutionId):  # noqa: N803 - boto3's parameter name
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        status = {"State": state} | ({"StateChangeReason": self.reason} if self.reason else {})
        return {"QueryExecution": {"Status": status}}

    def stop_query_execution(self, QueryExecutionId):  # noqa: N803
        self.stopped.append(QueryExecutionId)


def test_failed_athena_query_reports_the_reason(outputs):
    athena = FakeAthena(["QUEUED", "RUNNING", "FAILED"], reason="TABLE_NOT_FOUND: demand_events")

    result = smoke.check_athena(athena, outputs, NOW, sleep=lambda _: None)  # type: ignore[arg-type]

    assert result == smoke.CheckResult(
        "athena", "query SUCCEEDED in prd3292-qa1-demand", "FAILED: TABLE_NOT_FOUND: demand_events", False
    )
    assert athena.started[0]["WorkGroup"] == "prd3292-qa1-demand"
    assert athena.started[0]["QueryExecutionContext"] == {"Database": "prd3292_qa1_demand"}


def test_slow_athena_query_is_stopped_at_the_timeout(outputs):
    athena = FakeAthena(["RUNNING"])
    slept: list[float] = []

    result = smoke.check_athena(athena, outputs, NOW, timeout_seconds=6, poll_seconds=2, sleep=slept.append)  # type: ignore[arg-type]

    assert result.passed is False
    assert result.observed == "RUNNING after 6 s (stopped)"
    assert athena.stopped == ["q-1"]
    assert slept == [2, 2, 2]


def test_command_exits_non_zero_with_a_table_and_a_junit_report(deployed, outputs_file, tmp_path, capsys):
    junit = tmp_path / "reports" / "junit-smoke-qa1.xml"

    status = smoke.main(
        ["qa1", "--outputs-file", str(outputs_file), "--junitxml", str(junit), "--athena-timeout", "5"], now=NOW
    )

    assert status == 1
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "expected" in line)
    assert header.split() == ["check", "expected", "observed"]
    failing = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert any("invocations" in line and ">= 1 in 15 min" in line for line in failing)
    assert "FAILED: invocations, new objects" in out
    suite = ElementTree.fromstring(junit.read_text()).find("testsuite")  # noqa: S314 - our own report
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("6", "2")
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["invocations", "new objects"]


def test_command_passes_on_a_healthy_stack(traffic, outputs_file, capsys):
    # the metrics were put minutes before NOW, which is when the command looks (however long the suite has run)
    assert smoke.main(["qa1", "--outputs-file", str(outputs_file)], now=NOW) == 0
    assert "all 6 checks passed" in capsys.readouterr().out


def test_unreadable_outputs_exit_2(tmp_path, capsys):
    assert smoke.main(["qa1", "--outputs-file", str(tmp_path / "none.json")]) == 2
    assert "cannot read stack outputs" in capsys.readouterr().err
