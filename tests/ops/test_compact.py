"""`make compact`: arguments, the local AWS (handler in-process), and a deployed stack (its function invoked)."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ops import compact
from ops.outputs import BoundStack, StackOutputs
from sandbox.server import MotoProcess
from tests.compaction.conftest import HOUR, SHARD, TAG, LocalLake, change_ids, generated_rows
from tests.ops.conftest import outputs_values

FUNCTION = "prd3292-qa1-demand-compaction"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "compact: the following arguments are required: stack"),
        (["qa1", "--hour", "2026-3-31T23"], "compact: argument --hour: hour '2026-3-31T23' is not in the form"),
        (["qa1", "--hour", "2026-03-31T25"], "compact: argument --hour: hour '2026-03-31T25' is not a real date"),
        (["qa1", "--delete-grace-minutes", "-1"], "compact: argument --delete-grace-minutes: '-1' is not a whole"),
        (["qa1", "--hours", "2026-03-31T23"], "compact: unrecognized arguments: --hours"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compact.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_missing_outputs_are_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    code = compact.main(["qa1", "--hour", "2026-03-31T23", "--outputs-file", str(tmp_path / "none.json")])

    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("compact: cannot read stack outputs of 'qa1'")
    assert err.count("\n") == 1


def test_events() -> None:
    assert compact.build_event([], None) == {}
    assert compact.build_event(["2026-03-31T23"], 0) == {"hours": ["2026-03-31T23"], "delete_grace_minutes": 0}


# -- a deployed stack -------------------------------------------------------------------------------------------
class _Lambda:
    def __init__(self, payload: dict[str, Any], error: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.payload = payload
        self.error = error

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.payload).encode())}
        if self.error:
            response["FunctionError"] = self.error
        return response


def _deployed(monkeypatch: pytest.MonkeyPatch, client: _Lambda, **extra: str) -> None:
    outputs = StackOutputs.from_mapping(outputs_values(**extra), source="test")
    monkeypatch.setattr(
        compact, "bind_stack", lambda stack, outputs_file=None: BoundStack(stack, outputs, outputs.account_id)
    )
    monkeypatch.setattr(compact, "_lambda_client", lambda region: client)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    def no_s3(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the command must not touch S3 with the operator's credentials")

    monkeypatch.setattr("pipeline.compactor.S3CompactionStore._client", no_s3)


def test_deployed_stack_invokes_its_curator_function(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    summary = {
        "hours": ["2026-03-31T23"],
        "objects_in": 721,
        "objects_out": 1,
        "rows_in": 3_600_050,
        "rows_out": 3_600_000,
        "duplicates_removed": 50,
        "objects_deleted": 720,
        "objects_pending_deletion": 0,
        "conflicts": 0,
        "failures": [],
        "deferred_hours": [],
    }
    client = _Lambda(summary)
    _deployed(monkeypatch, client, curator_function_name=FUNCTION)

    code = compact.main(["qa1", "--hour", "2026-03-31T23", "--delete-grace-minutes", "0"])

    assert code == 0
    assert client.calls == [
        {
            "FunctionName": FUNCTION,
            "InvocationType": "RequestResponse",
            "Payload": json.dumps({"hours": ["2026-03-31T23"], "delete_grace_minutes": 0}),
        }
    ]
    out = capsys.readouterr().out
    assert out.startswith("account 123456789012, stack qa1, region us-east-1: compact 2026-03-31T23 under s3://")
    assert f"compacted 1 hour(s) by {FUNCTION}: 2026-03-31T23" in out
    assert "rows 3,600,050 in -> 3,600,000 out (50 duplicates removed)" in out


def test_deployed_function_error_exits_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    client = _Lambda({"errorMessage": "1 shard-hour(s) failed: ...", "errorType": "CompactionFailedError"}, "Unhandled")
    _deployed(monkeypatch, client, curator_function_name=FUNCTION)

    assert compact.main(["qa1"]) == 1
    assert client.calls[0]["Payload"] == "{}"
    assert capsys.readouterr().err == f"compact: {FUNCTION} failed: 1 shard-hour(s) failed: ...\n"


def test_a_stack_without_the_curator_function_is_refused(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    client = _Lambda({})
    _deployed(monkeypatch, client)
    values = outputs_values()
    del values["curator_function_name"]  # a stack deployed before compaction existed
    outputs = StackOutputs.from_mapping

    monkeypatch.setattr(
        compact, "bind_stack", lambda stack, outputs_file=None: BoundStack(stack, outputs(values, source="qa1"), None)
    )

    assert compact.main(["qa1", "--hour", "2026-03-31T23"]) == 2
    assert client.calls == []
    assert capsys.readouterr().err == "compact: qa1: missing stack output(s) curator_function_name\n"


def test_a_dry_run_says_what_and_where_and_invokes_nothing(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    client = _Lambda({})
    _deployed(monkeypatch, client, curator_function_name=FUNCTION)

    assert compact.main(["qa1", "--hour", "2026-03-31T23", "--delete-grace-minutes", "0", "--dry-run"]) == 0

    assert client.calls == []
    assert capsys.readouterr().out == (
        f"dry run: would compact 2026-03-31T23 by {FUNCTION} with the event "
        '{"hours": ["2026-03-31T23"], "delete_grace_minutes": 0}; nothing changed\n'
    )


# -- the local AWS ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_s3() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


def test_local_aws_runs_the_handler_in_process(local_s3: MotoProcess, tmp_path: Path, monkeypatch, capsys) -> None:
    bucket = f"compact-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=local_s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    lake = LocalLake(client, bucket)
    rows = generated_rows(120)
    for start in range(0, 120, 40):
        lake.write(rows.slice(start, 40))
    lake.write(rows.slice(20, 40))
    outputs_file = tmp_path / "outputs-qa1.json"
    outputs_file.write_text(json.dumps(outputs_values(bucket_name=bucket)))
    for name, value in {
        "AWS_ENDPOINT_URL": local_s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STACK_OUTPUTS_FILE": str(outputs_file),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(compact, "_lambda_client", lambda region: pytest.fail("no Lambda call against the local AWS"))

    code = compact.main(["qa1", "--hour", HOUR.strftime("%Y-%m-%dT%H"), "--delete-grace-minutes", "0"])

    assert code == 0
    out = capsys.readouterr().out
    assert f"compacted 1 hour(s) in-process on the local AWS ({local_s3.endpoint_url}): 2026-03-31T23" in out
    assert "objects 4 in -> 1 out; rows 160 in -> 120 out (40 duplicates removed)" in out
    assert "inputs deleted 4" in out
    assert lake.names() == [f"{TAG}-{SHARD}-compacted.parquet"]
    assert change_ids(lake.read(f"{TAG}-{SHARD}-compacted.parquet")) == change_ids(rows)
    assert os.environ.get("OUTPUT_BUCKET") != bucket  # the function environment was restored


def test_the_local_environment_is_the_programs_with_quieter_logs() -> None:
    from components.function_environment import curator_environment as program_environment  # noqa: PLC0415
    from components.naming import prefixes  # noqa: PLC0415
    from components.settings import settings_from_stack_file  # noqa: PLC0415

    outputs = StackOutputs.from_mapping(outputs_values(events_prefix="lake/events/"), source="test")
    settings = settings_from_stack_file("qa1")
    program = program_environment(settings, outputs.bucket_name, prefixes(), outputs.athena_database_name)

    local = compact.compaction_environment(outputs, "qa1")

    assert local == program | {
        "OUTPUT_PREFIX": "lake/events/",
        "LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    assert local["CURATION_DELETE_GRACE_MINUTES"] == "15"  # the stack file's settings, not the handler's defaults
    assert local["GLUE_DATABASE"] == outputs.athena_database_name
