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
from tests.curator.conftest import RawLake, change_ids, generated_rows, new_catalog
from tests.ops.conftest import outputs_values

FUNCTION = "prd3292-qa1-demand-curator"
BUCKET = outputs_values()["bucket_name"]
DATABASE = outputs_values()["athena_database_name"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "compact: the following arguments are required: stack"),
        (["qa9"], "compact: argument stack: unknown stack 'qa9' (stacks: dev1, preprod1, prod1, qa1)"),
        (["qa1", "--hour", "2026-03-31T23"], "compact: unrecognized arguments: --hour 2026-03-31T23"),
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
    code = compact.main(["qa1", "--outputs-file", str(tmp_path / "none.json")])

    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("compact: cannot read stack outputs of 'qa1'")
    assert err.count("\n") == 1


def test_a_run_is_described_in_a_few_lines() -> None:
    summary = {
        "raw_objects_read": 721,
        "rows_read": 3_600_050,
        "changes_added": 3_600_000,
        "hours_written": ["2026-03-31T22", "2026-03-31T23"],
        "changes_snapshot": 11,
        "registrations_snapshot": 12,
        "state_changes_applied": 90_000,
        "raw_deleted": 700,
        "raw_pending_deletion": 21,
        "conflict": None,
        "unreadable": [],
        "seconds": 41.25,
    }

    assert compact.describe_result(summary, "by f") == [
        "curated by f in 41.2 s",
        "  raw objects read 721 (3,600,050 rows); changes added 3,600,000; hours written 2: 2026-03-31T22, "
        "2026-03-31T23",
        "  snapshots: registration_changes 11, registrations 12 (90,000 changes applied)",
        "  raw deleted 700, waiting for the grace period 21",
    ]
    conflicted = compact.describe_result(
        summary
        | {"changes_snapshot": None, "registrations_snapshot": None, "state_changes_applied": 0, "conflict": "moved"},
        "by f",
    )
    assert conflicted[2] == (
        "  snapshots: registration_changes none (nothing new), registrations none (nothing new) (0 changes applied)"
    )
    assert conflicted[-1] == "  conflict: moved; nothing changed, the next run retries"


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

    def no_local_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the command must not run the curator with the operator's credentials")

    monkeypatch.setattr(compact, "local_invoker", no_local_run)


def test_deployed_stack_invokes_its_curator_function(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    summary = {
        "raw_objects_read": 721,
        "rows_read": 3_600_050,
        "changes_added": 3_600_000,
        "hours_written": ["2026-03-31T23"],
        "changes_snapshot": 5_199_814_288_068_993_362,
        "registrations_snapshot": 787_418_404_596_785_102,
        "state_changes_applied": 90_000,
        "raw_deleted": 0,
        "raw_pending_deletion": 721,
        "conflict": None,
        "unreadable": [],
        "seconds": 180.5,
    }
    client = _Lambda(summary)
    _deployed(monkeypatch, client, curator_function_name=FUNCTION)

    code = compact.main(["qa1"])

    assert code == 0
    assert client.calls == [{"FunctionName": FUNCTION, "InvocationType": "RequestResponse", "Payload": "{}"}]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("account 123456789012, stack qa1, region us-east-1: curate s3://")
    assert f"into registration_changes and registrations of Glue database {DATABASE} by {FUNCTION}" in out[0]
    assert out[1:] == compact.describe_result(summary, f"by {FUNCTION}")
    assert out[2] == "  raw objects read 721 (3,600,050 rows); changes added 3,600,000; hours written 1: 2026-03-31T23"


def test_deployed_function_error_exits_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    error = {"errorMessage": "1 raw object(s) unreadable: demand/events/x", "errorType": "CurationFailedError"}
    client = _Lambda(error, "Unhandled")
    _deployed(monkeypatch, client, curator_function_name=FUNCTION)

    assert compact.main(["qa1"]) == 1
    assert client.calls[0]["Payload"] == "{}"
    assert capsys.readouterr().err == f"compact: {FUNCTION} failed: 1 raw object(s) unreadable: demand/events/x\n"


def test_a_stack_without_the_curator_function_is_refused(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    client = _Lambda({})
    _deployed(monkeypatch, client)
    values = outputs_values()
    del values["curator_function_name"]  # a stack deployed before the curator existed
    outputs = StackOutputs.from_mapping

    monkeypatch.setattr(
        compact, "bind_stack", lambda stack, outputs_file=None: BoundStack(stack, outputs(values, source="qa1"), None)
    )

    assert compact.main(["qa1"]) == 2
    assert client.calls == []
    assert capsys.readouterr().err == "compact: qa1: missing stack output(s) curator_function_name\n"


def test_a_dry_run_says_what_and_where_and_invokes_nothing(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    client = _Lambda({})
    _deployed(monkeypatch, client, curator_function_name=FUNCTION)

    assert compact.main(["qa1", "--dry-run"]) == 0

    assert client.calls == []
    assert capsys.readouterr().out == (
        f"dry run: would curate the raw objects under s3://{BUCKET}/demand/events/ that no committed snapshot covers "
        f"into registration_changes and registrations of Glue database {DATABASE}, by {FUNCTION}; nothing changed\n"
    )


# -- the local AWS ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_s3() -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


def test_local_aws_runs_the_curator_in_process(local_s3: MotoProcess, tmp_path: Path, monkeypatch, capsys) -> None:
    bucket = f"compact-{uuid.uuid4().hex[:12]}"
    database = f"compact_{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=local_s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    lake = RawLake(client, bucket)
    rows = generated_rows(120)
    for start in range(0, 120, 40):
        lake.write(rows.slice(start, 40))
    lake.write(rows.slice(20, 40))  # a batch delivered twice: 40 rows again, in an object of its own
    outputs_file = tmp_path / "outputs-qa1.json"
    outputs_file.write_text(json.dumps(outputs_values(bucket_name=bucket, athena_database_name=database)))
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

    assert compact.main(["qa1", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert dry.startswith(f"dry run: would curate the raw objects under s3://{bucket}/demand/events/ that no")
    assert dry.endswith(f"in-process on the local AWS ({local_s3.endpoint_url}); nothing changed\n")

    assert compact.main(["qa1"]) == 0
    first = capsys.readouterr().out.splitlines()
    assert compact.main(["qa1"]) == 0  # nothing new: no snapshot
    second = capsys.readouterr().out.splitlines()

    where = f"in-process on the local AWS ({local_s3.endpoint_url})"
    assert first[1] == "acting as the local curator role prd3292-qa1-demand-curator"
    assert first[2].startswith(f"curated {where} in ")
    assert first[3] == "  raw objects read 4 (160 rows); changes added 120; hours written 1: 2026-03-31T23"
    assert first[5] == "  raw deleted 0, waiting for the grace period 4"  # the stack's grace period: 15 minutes
    assert second[3] == "  raw objects read 0 (0 rows); changes added 0; hours written 0"
    assert "registration_changes none (nothing new), registrations none (nothing new)" in second[4]
    changes = new_catalog(local_s3.endpoint_url).load_table((database, "registration_changes")).scan().to_arrow()
    assert change_ids(changes) == change_ids(rows)  # each change once
    assert len(lake.names()) == 4  # covered, and kept for the grace period
    assert os.environ.get("OUTPUT_BUCKET") != bucket  # the function environment was restored


def test_the_local_environment_is_the_programs_with_quieter_logs() -> None:
    from components.function_environment import curator_environment as program_environment  # noqa: PLC0415
    from components.naming import prefixes  # noqa: PLC0415
    from components.settings import settings_from_stack_file  # noqa: PLC0415

    outputs = StackOutputs.from_mapping(outputs_values(events_prefix="lake/events/"), source="test")
    settings = settings_from_stack_file("qa1")
    program = program_environment(settings, outputs.bucket_name, prefixes(), outputs.athena_database_name)

    local = compact.curator_environment(outputs, "qa1")

    assert local == program | {
        "FAILURE_BUCKET": "prd3292-qa1-us-east-1-demand-processor-failures",
        "QUARANTINE_PREFIX": "demand/quarantine/",
        "EXPORTS_PREFIX": "demand/exports/",
        "ERASURE_ROWS_PER_RUN": str(settings.erasure_rows_per_run),
        "ERASURE_SALT": compact.LOCAL_ERASURE_SALT,
        "OUTPUT_PREFIX": "lake/events/",
        "LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    assert local["CURATION_DELETE_GRACE_MINUTES"] == "15"  # the stack file's settings, not the handler's defaults
    assert local["GLUE_DATABASE"] == outputs.athena_database_name
