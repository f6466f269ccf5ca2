"""The GitLab pipeline: valid for GitLab, and the replaced system's stages, triggers, tags and gates, with Pulumi."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from tests.ops import gitlab_ci
from tests.ops.gitlab_ci import PlannedJob

ROOT = Path(__file__).resolve().parents[2]
SEED_STAGES = [
    "build",
    "test",
    "deploy-qa1",
    "e2e-test-qa1",
    "deploy-dev1",
    "e2e-test-dev1",
    "deploy-preprod",
    "e2e-test-preprod",
    "deploy-prod",
]
STACKS = ("qa1", "dev1", "preprod1", "prod1")  # the seed's stage order
NONPROD, PROD = ("qa1", "dev1"), ("preprod1", "prod1")
DEPLOY_STAGE = {"qa1": "deploy-qa1", "dev1": "deploy-dev1", "preprod1": "deploy-preprod", "prod1": "deploy-prod"}
TEST_STAGE = {"qa1": "e2e-test-qa1", "dev1": "e2e-test-dev1", "preprod1": "e2e-test-preprod"}
TEST_TAGS = {
    "qa1": ["tm-nonprod", "cicd", "test"],
    "dev1": ["tm-nonprod", "cicd", "test"],
    "preprod1": ["tm-nonprod-preprod", "cicd", "test"],
}
DEPLOY_TAGS = {stack: ["tm-nonprod", "terraformer"] for stack in NONPROD} | {
    stack: ["tm-prod", "terraformer"] for stack in PROD
}
# Read-only work (previews, preflights) runs on the `cicd test` runners of the stack's tests (prod1: the prod ones).
READ_ONLY_TAGS = TEST_TAGS | {"prod1": ["tm-prod", "cicd", "test"]}

MAIN_PUSH = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_NAME": "main"}
FEATURE_PUSH = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "feature/x", "CI_COMMIT_REF_NAME": "feature/x"}
FEATURE_PUSH_WITH_MR = FEATURE_PUSH | {"CI_OPEN_MERGE_REQUESTS": "demand-capture/data-pipeline!7"}
MERGE_REQUEST = {
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_COMMIT_REF_NAME": "feature/x",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
}


@pytest.fixture(scope="module")
def config():
    return gitlab_ci.load()


@pytest.fixture(scope="module")
def jobs(config):
    return gitlab_ci.jobs(config)


def _script(job) -> str:
    parts = [*job.get("before_script", []), *job.get("script", []), *job.get("after_script", [])]
    return "\n".join(line if isinstance(line, str) else "\n".join(line) for line in parts)


def _steps(job, key: str) -> list[str]:
    """A script section as GitLab runs it: nested lists (from YAML anchors) flattened."""

    def flat(items) -> list[str]:
        return [line for item in items for line in (flat(item) if isinstance(item, list) else [item])]

    return flat(job.get(key, []))


def _minutes(duration: str) -> int:
    """A GitLab duration such as ``45 minutes`` or ``1h 30m`` in minutes."""
    total = 0
    for number, unit in re.findall(r"(\d+)\s*(h|hours?|m|minutes?)\b", duration):
        total += int(number) * (60 if unit.startswith("h") else 1)
    assert total, f"unreadable duration {duration!r}"
    return total


def _needs(job) -> dict[str, bool]:
    """needs as {job: artifacts downloaded}."""
    return {
        need if isinstance(need, str) else need["job"]: True if isinstance(need, str) else need.get("artifacts", True)
        for need in job.get("needs", [])
    }


# ---------------------------------------------------------------- the file is what GitLab accepts


def test_file_is_valid_against_gitlab_ci_schema_vendored_by_check_jsonschema(config):
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("gitlab-ci.json")
    schema = json.loads(vendored.read_text(encoding="utf-8"))

    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(config), key=lambda error: list(error.path))

    assert [f"{list(error.path)}: {error.message}" for error in errors] == []


def test_schema_rejects_a_broken_file(config):
    """Guards the test above: the schema really constrains jobs (a misspelt keyword fails)."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("gitlab-ci.json")
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    broken = dict(config) | {"build": dict(config["build"]) | {"stagee": "build"}}

    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_extends_and_needs_and_stage_resolves(config, jobs):
    stages = config["stages"]
    for name, job in jobs.items():
        assert job["stage"] in stages, f"{name}: stage {job['stage']!r} not declared"
        for needed in _needs(job):
            assert needed in jobs, f"{name} needs unknown job {needed}"
            assert stages.index(jobs[needed]["stage"]) <= stages.index(job["stage"]), f"{name} needs a later job"
        assert job.get("script"), f"{name} has no script"


# ---------------------------------------------------------------- stages and triggers


def test_stages_are_the_seed_stages_in_order_plus_a_preview_after_test(config):
    assert [stage for stage in config["stages"] if stage != "preview"] == SEED_STAGES
    assert config["stages"].index("preview") == config["stages"].index("test") + 1


def test_main_push_runs_every_stage_automatically_up_to_a_blocking_manual_prod_deploy(config, jobs):
    pipeline = gitlab_ci.plan_pipeline(config, MAIN_PUSH)

    assert pipeline.created
    stages_with_jobs = {jobs[name]["stage"] for name in pipeline.names()}
    assert stages_with_jobs == set(SEED_STAGES)
    automatic = {name for name, job in pipeline.jobs.items() if job.when == "on_success"}
    assert {"build", "unit-tests", "lint", "deploy-qa1", "deploy-dev1", "deploy-preprod1"} <= automatic
    for stack in TEST_STAGE:
        assert {f"integration-test-{stack}", f"e2e-test-{stack}"} <= automatic
    assert pipeline.jobs["deploy-prod1"] == PlannedJob("deploy-prod1", "manual", allow_failure=False)
    assert not any(name.startswith("preview-") for name in pipeline.names())


def test_feature_branch_builds_tests_and_offers_qa1_only_as_an_optional_manual_deploy(config):
    pipeline = gitlab_ci.plan_pipeline(config, FEATURE_PUSH)

    assert {"build", "unit-tests", "lint"} <= pipeline.names()
    assert pipeline.jobs["deploy-qa1"] == PlannedJob("deploy-qa1", "manual", allow_failure=True)
    for stack in ("dev1", "preprod1", "prod1"):
        assert f"deploy-{stack}" not in pipeline.names()
    assert not any(name.endswith(("-dev1", "-preprod1", "-prod1")) for name in pipeline.names())


def test_branch_with_an_open_merge_request_runs_one_pipeline_not_two(config):
    assert not gitlab_ci.plan_pipeline(config, FEATURE_PUSH_WITH_MR).created
    assert gitlab_ci.plan_pipeline(config, MERGE_REQUEST, changed=["README.md"]).created


@pytest.mark.parametrize(
    ("changed", "previewed"),
    [
        (["Pulumi.qa1.yaml"], {"qa1"}),
        (["Pulumi.prod1.yaml", "Pulumi.preprod1.yaml"], {"preprod1", "prod1"}),
        (["components/stream.py"], set(STACKS)),
        (["pipeline/handler.py"], set(STACKS)),
        (["uv.lock"], set(STACKS)),
        (["docs/runbook.md", "tests/ops/test_smoke.py"], set()),
    ],
)
def test_merge_request_previews_exactly_the_stacks_the_change_touches(config, changed, previewed):
    pipeline = gitlab_ci.plan_pipeline(config, MERGE_REQUEST, changed=changed)

    assert {name.removeprefix("preview-") for name in pipeline.names() if name.startswith("preview-")} == previewed
    assert {"build", "unit-tests", "lint"} <= pipeline.names()
    assert pipeline.jobs["deploy-qa1"].when == "manual"
    assert "deploy-prod1" not in pipeline.names()


def test_previews_run_pulumi_preview_refresh_diff_and_publish_a_report_on_the_merge_request(jobs):
    for stack in STACKS:
        job = jobs[f"preview-{stack}"]
        assert job["stage"] == "preview"
        assert job["variables"]["STACK"] == stack
        assert "pulumi preview --refresh --diff --non-interactive" in _script(job)
        assert "ops.preview_note" in _script(job)
        assert job["artifacts"]["expose_as"] == f"pulumi preview {stack}"
        assert job["artifacts"]["paths"] == [f"reports/preview-{stack}.md"]
        assert job["artifacts"]["when"] == "always"
        assert _needs(job) == {"build": True}, "the preview sees the same artifact the deploy will ship"


def test_previews_run_on_cicd_test_runners_with_the_read_only_preview_role_never_a_deploy_role(jobs):
    previews = {name: job for name, job in jobs.items() if name.startswith("preview-")}

    assert sorted(previews) == sorted(f"preview-{stack}" for stack in STACKS)
    for stack in STACKS:
        job = previews[f"preview-{stack}"]
        account = "NONPROD" if stack in NONPROD else "PROD"
        assert job["tags"] == READ_ONLY_TAGS[stack], f"preview-{stack} runs branch code: never on terraformer runners"
        assert "terraformer" not in job["tags"]
        assert job["variables"]["AWS_ROLE_ARN"] == f"$PREVIEW_ROLE_ARN_{account}"
        assert job["variables"]["PULUMI_BACKEND_URL"] == f"$PULUMI_BACKEND_URL_{account}"
    for name, job in jobs.items():
        role = job.get("variables", {}).get("AWS_ROLE_ARN", "")
        if role.startswith("$DEPLOY_ROLE_ARN"):
            assert name.startswith("deploy-"), f"{name} holds a deploy role"
            assert "terraformer" in job["tags"], name
            assert "pulumi preview" not in _script(job), name
    # Merge request pipelines get no job holding a deploy role except the manual, optional qa1 deploy.
    pipeline = gitlab_ci.plan_pipeline(gitlab_ci.load(), MERGE_REQUEST, changed=["components/stream.py"])
    holding_deploy_roles = [
        name
        for name in pipeline.names()
        if jobs[name].get("variables", {}).get("AWS_ROLE_ARN", "").startswith("$DEPLOY")
    ]
    assert holding_deploy_roles == ["deploy-qa1"]
    assert pipeline.jobs["deploy-qa1"] == PlannedJob("deploy-qa1", "manual", allow_failure=True)


# ---------------------------------------------------------------- build and test


def test_build_type_checks_and_packages_once_on_the_build_runners_keeping_dist_30_days(jobs):
    build = jobs["build"]
    script = _script(build)

    assert build["tags"] == ["tm-prod", "cicd", "build"]
    assert "make typecheck" in script
    assert "make package" in script
    assert build["artifacts"]["paths"] == ["dist/"]
    assert build["artifacts"]["expire_in"] == "30 days", "a late prod approval still finds this pipeline's dist/"
    assert [name for name, job in jobs.items() if "make package" in _script(job) or "ops.package" in _script(job)] == [
        "build"
    ]


def test_python_jobs_use_python_312_and_a_uv_cache_keyed_on_the_lock_file(config, jobs):
    for name in ("build", "unit-tests", "lint", "e2e-test-qa1", "smoke-dev1", "preflight-qa1"):
        job = jobs[name]
        image = job["image"].replace("$PYTHON_IMAGE", config["variables"]["PYTHON_IMAGE"])
        assert re.fullmatch(r"python:3\.12\.\d+-bookworm", image), f"{name}: {image} (pinned to a patch release)"
        assert job["cache"]["key"]["files"] == ["uv.lock"], name
        assert config["variables"]["UV_CACHE_DIR"].endswith(job["cache"]["paths"][0].rstrip("/")), name


def test_pulumi_jobs_use_the_pulumi_python_image_matching_the_locked_sdk(config, jobs):
    image = config["variables"]["PULUMI_IMAGE"]
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    locked = re.search(r'name = "pulumi"\nversion = "([^"]+)"', lock)

    assert locked is not None
    assert image == f"pulumi/pulumi-python-3.12:{locked.group(1)}"
    for name, job in jobs.items():
        if name.startswith(("deploy-", "preview-")):
            assert job["image"] == "$PULUMI_IMAGE", name
            assert "uv==$UV_VERSION" in _script(job), f"{name} installs uv"


def test_unit_tests_and_lint_run_on_every_branch_on_nonprod_test_runners_with_junit(config, jobs):
    for variables in (MAIN_PUSH, FEATURE_PUSH, MERGE_REQUEST):
        names = gitlab_ci.plan_pipeline(config, variables, changed=["README.md"]).names()
        assert {"build", "unit-tests", "lint"} <= names
    for name in ("unit-tests", "lint"):
        assert jobs[name]["stage"] == "test"
        assert jobs[name]["tags"] == ["tm-nonprod", "cicd", "test"]
        assert jobs[name]["artifacts"]["when"] == "always"
    assert jobs["unit-tests"]["artifacts"]["reports"]["junit"] == "reports/junit-unit.xml"
    assert "--junitxml=reports/junit-unit.xml" in _script(jobs["unit-tests"])
    assert "make lint" in _script(jobs["lint"])
    assert jobs["lint"]["artifacts"]["reports"]["junit"] == "reports/junit-lint.xml"


def test_the_unit_job_prints_the_fifteen_slowest_tests(jobs):
    # GIVEN the unit job runs make unit, WHEN make shows the commands it would run
    assert "make unit " in _script(jobs["unit-tests"])
    shown = subprocess.run(
        ["make", "--no-print-directory", "-n", "unit", "PYTEST_ARGS=--junitxml=reports/junit-unit.xml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # THEN pytest is called once, on four workers (two cores: the tests that wait on the local AWS, the demo's
    # pauses and the commands' processes leave CPU to the others) keeping xdist groups together, with
    # --durations=15 (CI's log lists the slowest tests) and the job's arguments
    [pytest_line] = [line for line in shown if " pytest " in line]
    assert pytest_line.split()[-7:] == [
        "pytest",
        "-n",
        "4",
        "--dist",
        "loadgroup",
        "--durations=15",
        "--junitxml=reports/junit-unit.xml",
    ]


def test_the_crash_matrix_job_crashes_an_erasure_after_every_call_on_every_branch(config, jobs):
    for variables in (MAIN_PUSH, FEATURE_PUSH, MERGE_REQUEST):
        assert "crash-matrix" in gitlab_ci.plan_pipeline(config, variables, changed=["README.md"]).names()
    job = jobs["crash-matrix"]
    assert (job["stage"], job["tags"]) == ("test", ["tm-nonprod", "cicd", "test"])
    assert jobs["crash-matrix"]["artifacts"]["reports"]["junit"] == "reports/junit-crash-matrix.xml"
    shown = subprocess.run(
        ["make", "--no-print-directory", "-n", "crash-matrix"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    [line] = [line for line in shown.splitlines() if " pytest " in line]
    assert line.startswith("DMD_ERASURE_CRASH_EVERY_CALL=1 ")
    assert line.split()[-1] == "tests/curator/test_erasure_crashes.py"
    assert "make crash-matrix " in _script(job)


# ---------------------------------------------------------------- deploys


@pytest.mark.parametrize("stack", STACKS)
def test_deploy_ships_the_build_artifact_with_pulumi_up_refresh_never_retried_and_bounded(jobs, stack):
    job = jobs[f"deploy-{stack}"]
    script = _script(job)

    assert job["stage"] == DEPLOY_STAGE[stack]
    assert job["variables"]["STACK"] == stack
    assert 'pulumi up --refresh --yes --non-interactive --diff -s "$STACK"' in script
    assert [line for line in script.splitlines() if line.startswith("pulumi up")] == [
        'pulumi up --refresh --yes --non-interactive --diff -s "$STACK"'
    ]
    assert job["retry"] == 0, "a deploy is never retried automatically"
    assert _minutes(job["timeout"]) == 45
    assert _needs(job)["build"] is True
    assert "test -s dist/function.zip && test -s dist/layer.zip" in script
    assert "make package" not in script
    assert "ops.package" not in script
    assert job["tags"] == DEPLOY_TAGS[stack]
    assert job["resource_group"] == stack
    assert job["environment"]["name"] == stack
    assert job["interruptible"] is False
    assert job["artifacts"]["paths"] == ["outputs/"], "stack outputs for the tests after it"
    assert job["artifacts"]["expire_in"] == "30 days"
    assert 'pulumi stack output --json -s "$STACK" > "outputs/$STACK.json"' in script


def test_environments_tiers_and_resource_groups_are_one_per_stack(jobs):
    tiers = {stack: jobs[f"deploy-{stack}"]["environment"]["deployment_tier"] for stack in STACKS}

    assert tiers == {"qa1": "testing", "dev1": "development", "preprod1": "staging", "prod1": "production"}
    deploys = [job for name, job in jobs.items() if "environment" in job]
    assert sorted(job["environment"]["name"] for job in deploys) == sorted(STACKS)


def test_promotion_waits_for_the_previous_environment_tests(jobs):
    previous = {"dev1": "qa1", "preprod1": "dev1", "prod1": "preprod1"}
    for stack, before in previous.items():
        needs = _needs(jobs[f"deploy-{stack}"])
        assert {f"integration-test-{before}", f"e2e-test-{before}", f"smoke-{before}"} <= set(needs), stack
        assert not any(needs[name] for name in needs if name != "build"), f"deploy-{stack} downloads only dist/"
    for name in ("preflight-qa1", "deploy-qa1"):
        assert {"unit-tests", "crash-matrix", "lint"} <= set(_needs(jobs[name])), name


def test_prod_is_manual_blocking_confirmed_and_followed_by_no_automatic_job(config, jobs):
    prod = jobs["deploy-prod1"]

    assert prod["rules"] == [{"if": '$CI_COMMIT_BRANCH == "main"', "when": "manual", "allow_failure": False}]
    assert "prod1" in prod["manual_confirmation"]
    after = [name for name, job in jobs.items() if "deploy-prod1" in _needs(job)]
    pipeline = gitlab_ci.plan_pipeline(config, MAIN_PUSH)
    assert after == ["smoke-prod1"]
    assert pipeline.jobs["smoke-prod1"] == PlannedJob("smoke-prod1", "manual", allow_failure=True)
    assert jobs["smoke-prod1"]["tags"] == ["tm-prod", "cicd", "test"]
    assert not [name for name in jobs if name.startswith(("e2e-test-prod", "integration-test-prod"))]


# ---------------------------------------------------------------- tests after each non-prod deploy


@pytest.mark.parametrize("stack", list(TEST_STAGE))
@pytest.mark.parametrize("kind", ["integration", "e2e"])
def test_integration_and_e2e_follow_each_nonprod_deploy(jobs, stack, kind):
    job = jobs[f"{kind}-test-{stack}"]

    assert job["stage"] == TEST_STAGE[stack]
    assert job["variables"]["TEST_ENV"] == stack
    assert job["variables"]["AWS_REGION"] == "us-east-1"
    assert job["variables"]["STACK_OUTPUTS_FILE"] == "outputs/$TEST_ENV.json"
    assert job["tags"] == TEST_TAGS[stack]
    assert _needs(job) == {"build": True, f"deploy-{stack}": True}, "dist/ for the artifact check, outputs/"
    assert f"pytest tests/{kind} " in _script(job)
    assert f'--junitxml="reports/junit-{kind}-$TEST_ENV.xml"' in _script(job)
    assert job["artifacts"]["reports"]["junit"] == "reports/junit-*.xml"
    assert job["artifacts"]["when"] == "always"


# ---------------------------------------------------------------- credentials


def test_aws_jobs_exchange_a_gitlab_id_token_for_a_role(jobs):
    for name, job in jobs.items():
        if name in ("build", "unit-tests", "crash-matrix", "lint"):
            assert "id_tokens" not in job, f"{name} needs no AWS access"
            continue
        assert job["id_tokens"]["AWS_ID_TOKEN"]["aud"] == "$CI_SERVER_URL", name
        assert 'printf \'%s\' "$AWS_ID_TOKEN" > "$AWS_WEB_IDENTITY_TOKEN_FILE"' in _script(job), name


def test_tests_and_smoke_checks_act_as_the_stack_ci_role_from_the_deploy_outputs(jobs):
    checked = [name for name in jobs if name.startswith(("integration-test-", "e2e-test-", "smoke-"))]

    assert len(checked) == 10
    for name in checked:
        job = jobs[name]
        script = _script(job)
        assert "AWS_ROLE_ARN" not in job["variables"], f"{name}: the role comes from the stack, not a variable"
        assert 'export AWS_ROLE_ARN="$(python3 -c' in script, name
        assert '["ci_iam_role_arn"]' in script, name
        assert job["variables"]["STACK_OUTPUTS_FILE"] in ("outputs/$TEST_ENV.json", "outputs/$STACK.json"), name
        deploy = next(needed for needed in _needs(job) if needed.startswith("deploy-"))
        assert _needs(job)[deploy] is True, f"{name} downloads {deploy}'s outputs"


def test_each_account_has_its_own_deployment_role_and_state_backend(jobs):
    for stack in STACKS:
        account = "NONPROD" if stack in NONPROD else "PROD"
        for name in (f"deploy-{stack}", f"preview-{stack}", f"preflight-{stack}"):
            variables = jobs[name]["variables"]
            assert variables["PULUMI_BACKEND_URL"] == f"$PULUMI_BACKEND_URL_{account}", name
        assert jobs[f"deploy-{stack}"]["variables"]["AWS_ROLE_ARN"] == f"$DEPLOY_ROLE_ARN_{account}"
        assert "python -m ops.plan" in _script(jobs[f"preview-{stack}"]), "offline plan when no preview role is set"
    assert 'pulumi login "$PULUMI_BACKEND_URL"' in _script(jobs["deploy-prod1"])


def test_no_credential_or_account_id_is_written_in_the_file():
    text = gitlab_ci.CI_FILE.read_text(encoding="utf-8")

    assert "AWS_ACCESS_KEY_ID" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text
    assert not re.search(r"\b\d{12}\b", text), "no account id"
    assert "arn:aws" not in text


def test_ops_modules_the_pipeline_runs_exist(jobs):
    modules = {module for job in jobs.values() for module in re.findall(r"python -m (ops\.[a-z_]+)", _script(job))}

    assert {"ops.ci_aws_profile", "ops.preview_note", "ops.smoke", "ops.plan", "ops.verify_artifact"} <= modules
    for module in sorted(modules):
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.exists(), f"{module} is run by the pipeline but {path} is missing"


def test_piped_commands_keep_their_exit_status(jobs):
    checked = []
    for name, job in jobs.items():
        script = [line for line in job.get("script", []) if isinstance(line, str)]
        for index, line in enumerate(script):
            if " | tee " in line:
                assert any(earlier.startswith("set -o pipefail") for earlier in script[:index]), name
                checked.append(name)

    assert {f"preview-{stack}" for stack in STACKS} <= set(checked)


# ---------------------------------------------------------------- the simulator itself


@pytest.mark.parametrize(
    ("expression", "variables", "expected"),
    [
        ('$A == "x"', {"A": "x"}, True),
        ('$A == "x"', {}, False),
        ('$A != "x"', {}, True),
        ("$A && $B", {"A": "1", "B": ""}, False),
        ('$A || $B == "y"', {"B": "y"}, True),
        ('($A || $B) && $C == "z"', {"A": "1", "C": "z"}, True),
    ],
)
def test_rules_expressions_evaluate_like_gitlab(expression, variables, expected):
    assert gitlab_ci.evaluate(expression, variables) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("components/**/*", "components/stream.py", True),
        ("components/**/*", "components/sub/x.py", True),
        ("components/**/*", "componentsx/y.py", False),
        ("Pulumi.qa1.yaml", "Pulumi.qa1.yaml", True),
        ("Pulumi.qa1.yaml", "Pulumi.dev1.yaml", False),
        ("*.yaml", "a/b.yaml", False),
    ],
)
def test_changes_globs_match_like_gitlab(pattern, path, expected):
    assert gitlab_ci.glob_matches(pattern, path) is expected


# ---------------------------------------------------------------- issue 9: deploy safety


def _fake_pulumi(tmp_path: Path, exit_code: int) -> dict[str, str]:
    """A PATH whose `pulumi` records its arguments, logs in, and exits with ``exit_code`` otherwise."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "pulumi"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/calls"\n[ "$1" = login ] && exit 0\nexit {exit_code}\n')
    fake.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STACK": "qa1",
        "PULUMI_BACKEND_URL": "s3://state/dmd-pipeline",
        "AWS_ROLE_ARN": "arn-of-a-role",
    }


def _select_lines(job) -> list[str]:
    return [line for line in _steps(job, "before_script") if "pulumi stack select" in line]


def test_stacks_are_never_created_by_ci_and_a_missing_stack_fails_fast(jobs, tmp_path):
    text = yaml.safe_dump(gitlab_ci.load())  # what GitLab reads: comments may explain, never configure
    pulumi_jobs = {name: job for name, job in jobs.items() if name.startswith(("deploy-", "preview-"))}

    assert "--create" not in text
    assert "stack init" not in text
    assert "--secrets-provider" not in text
    assert "PASSPHRASE" not in text.upper()
    assert len(pulumi_jobs) == 8
    for name, job in pulumi_jobs.items():
        (line,) = _select_lines(job)
        assert 'pulumi stack select "$STACK" ||' in line, name
    # The select line as bash runs it: a missing stack stops the job with a message naming stack and backend.
    for name in ("deploy-qa1", "preview-qa1"):
        (line,) = _select_lines(jobs[name])
        missing = subprocess.run(
            ["bash", "-c", line], env=_fake_pulumi(tmp_path, 255), capture_output=True, text=True, check=False
        )
        assert missing.returncode == 1, name
        assert "stack qa1 not found in s3://state/dmd-pipeline; CI never creates stacks" in missing.stderr
        found = subprocess.run(
            ["bash", "-c", line], env=_fake_pulumi(tmp_path, 0), capture_output=True, text=True, check=False
        )
        assert found.returncode == 0, found.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "stack select qa1" in calls
    assert all("--create" not in call for call in calls)


def test_stack_files_name_a_kms_secrets_provider_and_no_passphrase():
    for stack in STACKS:
        document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
        assert document["secretsprovider"].startswith("awskms://alias/"), stack
        assert "encryptionsalt" not in document, stack


def test_every_job_has_a_timeout_and_only_deploys_never_retry(config, jobs):
    for name, job in jobs.items():
        timeout = job.get("timeout") or config["default"]["timeout"]
        assert 0 < _minutes(timeout) <= 60, f"{name}: {timeout}"
        assert "timeout" in job, f"{name} states its own timeout"
        if name.startswith("deploy-"):
            assert job["retry"] == 0, name
        else:
            assert job.get("retry", config["default"]["retry"]) != 0, name


@pytest.mark.parametrize("stack", STACKS)
def test_preflight_runs_right_before_each_deploy_read_only(config, jobs, stack):
    preflight = jobs[f"preflight-{stack}"]
    deploy = jobs[f"deploy-{stack}"]
    account = "NONPROD" if stack in NONPROD else "PROD"

    assert preflight["stage"] == deploy["stage"]
    assert preflight["variables"]["STACK"] == stack
    assert _steps(preflight, "script") == ['make preflight STACK="$STACK"']
    assert 'python -m ops.ci_aws_profile "$STACK"' in _script(preflight), "the stack's aws:profile for boto3"
    assert preflight["variables"]["AWS_ROLE_ARN"] == f"$PREVIEW_ROLE_ARN_{account}"
    assert preflight["tags"] == READ_ONLY_TAGS[stack]
    assert _needs(deploy)[f"preflight-{stack}"] is False, "the deploy waits for its preflight"
    deploy_waits_for = {name for name in _needs(deploy) if name not in ("build", f"preflight-{stack}")}
    assert set(_needs(preflight)) == deploy_waits_for, "the preflight runs when the deploy could, not earlier"
    for variables in (MAIN_PUSH, FEATURE_PUSH):
        pipeline = gitlab_ci.plan_pipeline(config, variables)
        if f"deploy-{stack}" in pipeline.names():
            assert pipeline.jobs[f"preflight-{stack}"].when == "on_success"
            assert pipeline.jobs[f"preflight-{stack}"].allow_failure is False
        else:
            assert f"preflight-{stack}" not in pipeline.names()


@pytest.mark.parametrize(
    "name",
    [f"{kind}-test-{stack}" for kind in ("e2e", "integration") for stack in TEST_STAGE]
    + [f"smoke-{stack}" for stack in STACKS],
)
def test_e2e_integration_and_smoke_first_check_the_live_alias_runs_this_pipelines_function_zip(jobs, name):
    job = jobs[name]
    script = _steps(job, "script")

    assert script[0] == 'python3 -m uv run --frozen python -m ops.verify_artifact "$STACK" --artifact dist/function.zip'
    assert _needs(job)["build"] is True, f"{name} downloads this pipeline's dist/"
    stack = job["variables"].get("STACK")
    assert stack in (*STACKS, "$TEST_ENV"), name


def test_the_oidc_token_and_aws_config_are_per_job_and_removed_after_it(config, jobs):
    variables = config["variables"]
    directory = variables["CI_AWS_DIR"]

    assert directory == "$CI_PROJECT_DIR/.ci-aws/$CI_JOB_ID"
    assert variables["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{directory}/web-identity-token"
    assert variables["AWS_CONFIG_FILE"] == f"{directory}/config"
    assert "/tmp/" not in gitlab_ci.CI_FILE.read_text(encoding="utf-8")
    with_tokens = [name for name, job in jobs.items() if "id_tokens" in job]
    assert len(with_tokens) == 4 + 4 + 4 + 10  # previews, preflights, deploys, tests and smoke checks
    for name in with_tokens:
        job = jobs[name]
        assert 'rm -rf "$CI_AWS_DIR"' in _steps(job, "after_script"), f"{name} removes its token and AWS config"
        writes = [line for line in _steps(job, "before_script") if "$AWS_WEB_IDENTITY_TOKEN_FILE" in line]
        assert writes == [
            '(umask 077 && mkdir -p "$CI_AWS_DIR" && printf \'%s\' "$AWS_ID_TOKEN" > "$AWS_WEB_IDENTITY_TOKEN_FILE")'
        ]
        for path in (*job.get("artifacts", {}).get("paths", []), *job.get("cache", {}).get("paths", [])):
            assert not path.startswith(".ci-aws"), f"{name} would keep {path}"


def test_the_token_write_and_removal_as_bash_runs_them(jobs, tmp_path):
    job = jobs["deploy-qa1"]
    environment = {
        "PATH": "/usr/bin:/bin",
        "CI_AWS_DIR": f"{tmp_path}/.ci-aws/77",
        "AWS_WEB_IDENTITY_TOKEN_FILE": f"{tmp_path}/.ci-aws/77/web-identity-token",
        "AWS_ID_TOKEN": "eyJ.token",
    }
    write = next(line for line in _steps(job, "before_script") if "$AWS_ID_TOKEN" in line)

    subprocess.run(["bash", "-c", write], env=environment, check=True)
    token = tmp_path / ".ci-aws" / "77" / "web-identity-token"
    assert token.read_text() == "eyJ.token"
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    (remove,) = [line for line in _steps(job, "after_script") if "$CI_AWS_DIR" in line]
    subprocess.run(["bash", "-c", remove], env=environment, check=True)
    assert not (tmp_path / ".ci-aws" / "77").exists()


def test_main_pipeline_runs_even_while_main_has_an_open_merge_request(config):
    pipeline = gitlab_ci.plan_pipeline(config, MAIN_PUSH | {"CI_OPEN_MERGE_REQUESTS": "demand-capture/data-pipeline!9"})

    assert pipeline.created
    assert {"build", "deploy-qa1", "deploy-prod1"} <= pipeline.names()
    assert not gitlab_ci.plan_pipeline(config, FEATURE_PUSH_WITH_MR).created, "other branches: one pipeline"


def test_caches_are_pull_only_except_in_build(jobs):
    cached = {name: job for name, job in jobs.items() if "cache" in job}

    assert len(cached) == len(jobs), "every job reads the uv cache"
    for name, job in cached.items():
        assert job["cache"]["policy"] == ("pull-push" if name == "build" else "pull"), name


def test_images_and_uv_are_pinned_exactly(config, jobs):
    variables = config["variables"]

    assert re.fullmatch(r"python:3\.12\.\d+-bookworm", variables["PYTHON_IMAGE"])
    assert re.fullmatch(r"pulumi/pulumi-python-3\.12:\d+\.\d+\.\d+", variables["PULUMI_IMAGE"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", variables["UV_VERSION"])
    install = 'python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"'
    for name, job in jobs.items():
        assert job["image"] in ("$PYTHON_IMAGE", "$PULUMI_IMAGE"), name
        steps = _steps(job, "before_script")
        assert install in steps, f"{name} installs the pinned uv"
        uses_uv = [index for index, line in enumerate(steps) if "make setup" in line or "uv sync" in line]
        assert uses_uv, name
        assert steps.index(install) < uses_uv[0], f"{name}: the pinned uv before anything installs another"


def test_stack_outputs_are_kept_30_days_and_reports_a_week(jobs):
    for stack in STACKS:
        assert jobs[f"deploy-{stack}"]["artifacts"]["expire_in"] == "30 days"
    assert jobs["build"]["artifacts"]["expire_in"] == "30 days"
    for name in ("unit-tests", "lint", "e2e-test-qa1", "smoke-prod1", "preview-qa1"):
        assert jobs[name]["artifacts"]["expire_in"] == "1 week", name


def test_every_preview_and_deploy_checks_the_stack_files_encryptedkey_before_any_pulumi_command(jobs):
    """Without encryptedkey Pulumi mints a data key (kms:Encrypt) each run: the job fails first, naming the fix."""
    check = 'python3 -m uv run --frozen python -m ops.preflight "$STACK" --stack-file'
    pulumi_jobs = {
        name: _steps(job, "before_script") + _steps(job, "script")
        for name, job in jobs.items()
        if any(
            step.lstrip().startswith(("pulumi preview", "pulumi up")) or "pulumi preview" in step
            for step in _steps(job, "script")
        )
    }

    assert {f"preview-{stack}" for stack in STACKS} | {f"deploy-{stack}" for stack in STACKS} <= set(pulumi_jobs)
    for name, steps in pulumi_jobs.items():
        assert check in steps, name
        first_pulumi = next(index for index, step in enumerate(steps) if "pulumi " in step and "ops." not in step)
        assert steps.index(check) < first_pulumi, name
