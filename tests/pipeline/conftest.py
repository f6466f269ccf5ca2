"""Fixtures for the handler tests: moto S3, the handler reloaded with a test environment, event factories."""

from __future__ import annotations

import base64
import gzip
import importlib
import importlib.util
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from pipeline.config import Settings
from sandbox.changes import DemandGenerator, changes_event

EVENTS = Path(__file__).resolve().parents[1] / "events"
HANDLER_FILE = Path(__file__).resolve().parents[2] / "pipeline" / "handler.py"
BUCKET = "dmd-test-lake"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/demand-changes"


def load_event(name: str) -> dict[str, Any]:
    """A Lambda event from tests/events/."""
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def payloads(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The change records inside an event, decoded with the standard library only."""
    return [json.loads(base64.b64decode(record["kinesis"]["data"])) for record in event["Records"]]


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no endpoint override, so moto answers and nothing real is reached."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(aws_credentials: None) -> Iterator[Any]:
    """A moto S3 client with the output bucket created."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def settings() -> Settings:
    return Settings(output_bucket=BUCKET)


@pytest.fixture
def handler_module(s3: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``pipeline.handler`` imported afresh with the test environment, writing through the moto client.

    Its log lines go to ``handler_module.log_stream``; the EMF metrics are printed to stdout (use ``capsys``).
    """
    monkeypatch.setenv("OUTPUT_BUCKET", BUCKET)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "dmd-pipeline-test")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "DmdPipelineTest")
    # the local AWS of other suites in this worker may have left the stack's handler environment behind
    for name in ("OUTPUT_PREFIX", "QUARANTINE_PREFIX", "CHANGE_TIME_PRECISION", "LOG_LEVEL", "SOURCE_TABLE_NAME"):
        monkeypatch.delenv(name, raising=False)
    module = fresh_handler_module()
    module.processor.store.client = s3
    # Powertools keeps the first handler of a service's logger across reloads: give it this test's own stream.
    module.log_stream = io.StringIO()  # type: ignore[attr-defined]
    for handler in logging.getLogger(module.logger.service).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.stream = module.log_stream
    return module


def fresh_handler_module() -> ModuleType:
    """A new instance of ``pipeline/handler.py``, as a cold start would import it.

    It is not put in ``sys.modules``: other suites that imported ``pipeline.handler`` keep their own instance.
    """
    spec = importlib.util.spec_from_file_location("pipeline_handler_under_test", HANDLER_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    """Factory: ``make_event(count, seed=..., **changes_event_options)`` -> a Lambda event of generated changes."""

    def make(count: int, seed: int = 7, **options: Any) -> dict[str, Any]:
        return changes_event(list(DemandGenerator(seed=seed).changes(count)), **options)

    return make


def list_keys(s3: Any, prefix: str = "") -> list[str]:
    """Every key under ``prefix``, sorted."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def read_rows(s3: Any, prefix: str = "demand/events/") -> list[dict[str, Any]]:
    """Every Parquet row under ``prefix``, read back with pyarrow."""
    rows: list[dict[str, Any]] = []
    for key in list_keys(s3, prefix):
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        rows.extend(pq.read_table(io.BytesIO(body)).to_pylist())
    return rows


def read_quarantine(s3: Any, prefix: str = "demand/quarantine/") -> list[dict[str, Any]]:
    """Every quarantine line under ``prefix``."""
    lines: list[dict[str, Any]] = []
    for key in list_keys(s3, prefix):
        body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        lines.extend(json.loads(line) for line in body.decode("utf-8").splitlines())
    return lines


def invocation_logs(output: str) -> list[dict[str, Any]]:
    """The handler's 'batch processed' log lines in captured stdout."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "batch processed"]


def emf_metrics(output: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format blobs in captured stdout."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]
