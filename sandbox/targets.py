"""Where the end-to-end and integration suites run: the embedded local AWS, or a deployed stack.

``TEST_ENV`` unset or ``local``: the local AWS (moto, the bridge and the local event source mapping, DuckDB for
queries). ``dev1``, ``qa1``, ``preprod1``: the deployed stack named by ``ops.outputs.load_outputs`` (Pulumi CLI
or ``$STACK_OUTPUTS_FILE``) with real DynamoDB, S3 and Athena. Both answer the same questions, so one suite
asserts the same things everywhere. A deployed target that cannot be reached raises ``TargetUnavailableError``
with what is missing; the suites turn that into a failure, never a skip.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config

from components.settings import Settings, settings_from_stack_file
from ops.compact import CURATOR_ROLE, curator_environment, local_invoker
from ops.outputs import OutputsError, StackOutputs, load_outputs
from sandbox.changes import Change
from sandbox.curated import local_catalog
from sandbox.lake import Lake
from sandbox.local_aws import LocalAws
from sandbox.runner import LocalPipeline
from sandbox.workload import TableWriter

__all__ = [
    "DEPLOYED_STACKS",
    "TEST_ENV_VARIABLE",
    "AthenaQueryError",
    "DeployedTarget",
    "LocalTarget",
    "Target",
    "TargetUnavailableError",
    "deployed_target",
    "selected_environment",
]

TEST_ENV_VARIABLE = "TEST_ENV"
DEPLOYED_STACKS = ("dev1", "qa1", "preprod1")
_deserializer = TypeDeserializer()
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)


class TargetUnavailableError(RuntimeError):
    """The named target cannot be used: no outputs, no credentials, or it does not answer."""


class AthenaQueryError(RuntimeError):
    """An Athena query failed or was cancelled; the message holds Athena's reason."""


def selected_environment() -> str:
    """``local`` or a deployed stack name, from ``$TEST_ENV``; anything else is an error naming the choices."""
    value = os.environ.get(TEST_ENV_VARIABLE, "").strip() or "local"
    if value != "local" and value not in DEPLOYED_STACKS:
        raise TargetUnavailableError(
            f"{TEST_ENV_VARIABLE}={value!r} is not a test target: expected local (or unset) or one of "
            f"{', '.join(DEPLOYED_STACKS)} (prod1 is never a test target)"
        )
    return value


class Target(Protocol):
    """What the suites need from an environment."""

    name: str
    outputs: StackOutputs
    settings: Settings
    poll_seconds: float
    settle_timeout: float

    def client(self, service: str) -> Any: ...

    def write(self, changes: Iterable[Change]) -> int: ...

    def query(self, athena_sql: str) -> list[dict[str, Any]]: ...

    def curate(self) -> None:
        """One curator run now (the curated tables then hold every change landed so far)."""
        ...


def _plain_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def table_items(target: Target, pk: str) -> list[dict[str, Any]]:
    """Every item of the table under partition key ``pk`` (strongly consistent), as plain values."""
    dynamodb = target.client("dynamodb")
    items: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {
        "TableName": target.outputs.table_name,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**arguments)
        items.extend(_plain_item(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def quarantined_records(target: Target, containing: str, days: int = 2) -> list[dict[str, Any]]:
    """Quarantine lines of the last ``days`` UTC days whose original payload contains ``containing``."""
    s3 = target.client("s3")
    outputs = target.outputs
    today = datetime.now(UTC).date()
    found: list[dict[str, Any]] = []
    for day in (today - timedelta(days=offset) for offset in range(days)):
        prefix = f"{outputs.quarantine_prefix}dt={day:%Y-%m-%d}/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outputs.bucket_name, Prefix=prefix):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=outputs.bucket_name, Key=item["Key"])["Body"].read()
                text = gzip.decompress(body).decode("utf-8") if item["Key"].endswith(".gz") else body.decode()
                for line in text.splitlines():
                    record = json.loads(line)
                    payload = base64.b64decode(record.get("data") or "").decode("utf-8", "replace")
                    if containing in payload:
                        found.append(record)
    return found


def named_query_sql(target: Target, name: str) -> str:
    """The SQL of the workgroup's named query ``name``, as the workgroup holds it."""
    athena = target.client("athena")
    ids: list[str] = []
    for page in athena.get_paginator("list_named_queries").paginate(WorkGroup=target.outputs.athena_workgroup_name):
        ids.extend(page.get("NamedQueryIds", []))
    for query_id in ids:  # one by one: moto has no BatchGetNamedQuery, and a workgroup holds a handful
        query = athena.get_named_query(NamedQueryId=query_id)["NamedQuery"]
        if query["Name"] == name:
            return str(query["QueryString"])
    raise LookupError(f"workgroup {target.outputs.athena_workgroup_name} has no named query {name!r}")


def recent_days(days: int = 2) -> list[str]:
    """``dt`` values of the last ``days`` UTC days (partition pruning for queries on deployed tables)."""
    today: date = datetime.now(UTC).date()
    return [f"{today - timedelta(days=offset):%Y-%m-%d}" for offset in range(days)]


def _text(value: Any) -> Any:
    """Query values as Athena returns them through the API: text (or None), so both targets compare alike."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


CI_ROLE = "ci"


class LocalTarget:
    """The embedded local AWS with its pipeline running."""

    poll_seconds = 0.2
    settle_timeout = 60.0

    def __init__(self, aws: LocalAws, pipeline: LocalPipeline) -> None:
        self.aws = aws
        self.pipeline = pipeline
        self.name = "local"
        self.outputs = aws.outputs
        self.settings = aws.settings
        # As on a deployed stack, the suite acts as the stack's CI role (when the local AWS enforces IAM).
        self.role = CI_ROLE if aws.roles is not None else None
        self.lake = Lake(
            aws.outputs,
            s3=aws.client("s3", role=self.role),
            filesystem=aws.filesystem(self.role),
            catalog=local_catalog(aws, self.role),
        )

    def client(self, service: str) -> Any:
        return self.aws.client(service, role=self.role)

    def write(self, changes: Iterable[Change]) -> int:
        return TableWriter(self.client("dynamodb"), self.outputs.table_name).apply(changes)

    def curate(self) -> None:
        """One curator run now, as the schedule runs it on a deployed stack (the local curator role's)."""
        credentials = self.aws.credentials(CURATOR_ROLE) if self.aws.roles else {}
        local_invoker({**curator_environment(self.outputs, self.settings.stack), **credentials})({})

    def query(self, athena_sql: str) -> list[dict[str, Any]]:
        rows = self.lake.query(athena_sql).to_pylist()
        return [{name: _text(value) for name, value in row.items()} for row in rows]


class DeployedTarget:
    """A deployed stack reached with the caller's AWS credentials; queries run in the stack's workgroup."""

    poll_seconds = 10.0
    settle_timeout = 600.0

    def __init__(self, name: str, outputs: StackOutputs, settings: Settings, session: boto3.Session) -> None:
        self.name = name
        self.outputs = outputs
        self.settings = settings
        self._session = session

    def client(self, service: str) -> Any:
        return self._session.client(service, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    def write(self, changes: Iterable[Change]) -> int:
        return TableWriter(self.client("dynamodb"), self.outputs.table_name).apply(changes)

    def curate(self) -> None:
        """Invoke the stack's curator function once and wait for it (what ``make compact`` does)."""
        response = self.client("lambda").invoke(FunctionName=self.outputs.curator_function_name, Payload=b"{}")
        if response.get("FunctionError"):
            raise RuntimeError(f"{self.outputs.curator_function_name} failed: {response['Payload'].read()[:500]!r}")

    def query(self, athena_sql: str, timeout: float = 300.0) -> list[dict[str, Any]]:
        athena = self.client("athena")
        execution = athena.start_query_execution(
            QueryString=athena_sql,
            WorkGroup=self.outputs.athena_workgroup_name,
            QueryExecutionContext={"Database": self.outputs.athena_database_name},
        )["QueryExecutionId"]
        deadline = time.monotonic() + timeout
        while True:
            status = athena.get_query_execution(QueryExecutionId=execution)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                break
            if status["State"] in ("FAILED", "CANCELLED"):
                raise AthenaQueryError(f"Athena query {execution} {status['State']}: {status.get('StateChangeReason')}")
            if time.monotonic() > deadline:
                athena.stop_query_execution(QueryExecutionId=execution)
                raise AthenaQueryError(f"Athena query {execution} still {status['State']} after {timeout:.0f} s")
            time.sleep(1.0)
        return list(self._results(athena, execution))

    @staticmethod
    def _results(athena: Any, execution: str) -> Iterator[dict[str, Any]]:
        header: list[str] | None = None
        for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution):
            for row in page["ResultSet"]["Rows"]:
                values = [cell.get("VarCharValue") for cell in row["Data"]]
                if header is None:
                    header = [str(value) for value in values]
                    continue
                yield dict(zip(header, values, strict=True))


def deployed_target(stack: str) -> DeployedTarget:
    """The deployed ``stack``; raises ``TargetUnavailableError`` saying what is missing."""
    try:
        outputs = load_outputs(stack)
    except OutputsError as error:
        raise TargetUnavailableError(
            f"TEST_ENV={stack}: cannot read the stack's outputs ({error}). Log in to Pulumi for the stack, or set "
            "STACK_OUTPUTS_FILE to a JSON file of `pulumi stack output --json`."
        ) from error
    settings = settings_from_stack_file(stack)
    session = boto3.Session(region_name=os.environ.get("AWS_REGION") or outputs.region)
    try:
        identity = session.client("sts", config=_CLIENT_CONFIG).get_caller_identity()
        session.client("dynamodb", config=_CLIENT_CONFIG).describe_table(TableName=outputs.table_name)
    except Exception as error:
        raise TargetUnavailableError(
            f"TEST_ENV={stack}: AWS is not reachable with the current credentials ({type(error).__name__}: {error}). "
            "Assume the stack's CI role or set AWS_PROFILE, and AWS_REGION."
        ) from error
    if identity.get("Account") and outputs.function_alias_arn.split(":")[4] not in ("", identity["Account"]):
        raise TargetUnavailableError(
            f"TEST_ENV={stack}: credentials are for account {identity['Account']}, the stack is in "
            f"{outputs.function_alias_arn.split(':')[4]}"
        )
    return DeployedTarget(stack, outputs, settings, session)
