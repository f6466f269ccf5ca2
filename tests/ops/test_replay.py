"""Replay from the command line: wrong arguments are refused in one line; the Lambda invoker keeps logs in a file."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ops import replay

STREAM = "prd3292-qa1-dmnd-table-stream"


def test_a_prefix_outside_the_quarantine_prefix_is_refused_without_a_traceback(aws, outputs_file, capsys):
    argv = ["quarantine", "qa1", "--outputs-file", str(outputs_file), "--prefix", "demand/events/", "--dry-run"]

    assert replay.main(argv) == 2

    err = capsys.readouterr().err
    assert err == (
        "python -m ops.replay: error: --prefix 'demand/events/' is not under the quarantine prefix "
        "'demand/quarantine/'\n"
    )


class _Payload:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def read(self) -> bytes:
        return self._body


class _LambdaClient:
    """Answers Invoke as Lambda does with LogType=Tail: the payload, the log tail, FunctionError on a crash."""

    def __init__(self, payload: dict[str, Any], error: str | None = None) -> None:
        self.payload, self.error = payload, error
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        response = {
            "Payload": _Payload(json.dumps(self.payload).encode()),
            "LogResult": base64.b64encode(b"START RequestId: 1\nbatch processed\nEND RequestId: 1\n").decode(),
        }
        return response | ({"FunctionError": self.error} if self.error else {})


def test_lambda_invoker_writes_the_log_tail_to_the_log_file(tmp_path):
    client = _LambdaClient({"batchItemFailures": [{"itemIdentifier": "7"}]})
    log = tmp_path / "replay.log"
    invoke = replay.lambda_invoker("arn:aws:lambda:us-east-1:123456789012:function:f:live", client, log)

    assert invoke({"Records": []}) == {"batchItemFailures": [{"itemIdentifier": "7"}]}

    assert client.calls[0]["LogType"] == "Tail"
    assert client.calls[0]["FunctionName"].endswith(":live")
    assert "batch processed" in log.read_text(encoding="utf-8")


def test_lambda_invoker_raises_on_a_function_error():
    client = _LambdaClient({"errorMessage": "boom"}, error="Unhandled")
    invoke = replay.lambda_invoker("arn:aws:lambda:us-east-1:123456789012:function:f:live", client)

    with pytest.raises(replay.ReplayError, match="failed: boom"):
        invoke({"Records": []})
