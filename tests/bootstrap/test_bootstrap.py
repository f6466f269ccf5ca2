"""The account bootstrap project (bootstrap/): its settings, and its program under mocks for each account."""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml

from bootstrap.settings import (
    BOOTSTRAP_PROJECT,
    BOOTSTRAP_ROOT,
    BootstrapSettingsError,
    bootstrap_settings_from_stack_file,
    bootstrap_stack_config,
    parse_secrets_provider,
    parse_state_backend,
)
from components.account_bootstrap import READ_ONLY_POLICY, oidc_provider_options
from components.naming import Naming, account_data_bucket_patterns
from components.settings import PROJECT_ROOT, settings_from_stack_file
from ops.mocks import ACCOUNT_ID
from ops.program import ProgramRun, run_program
from tests.infra.iam_lint import lint_identity_policy

ACCOUNTS = ("tm-nonprod", "tm-prod")
APP_STACKS = ("dev1", "qa1", "preprod1", "prod1")
OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
ROLE = "aws:iam/role:Role"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@cache
def bootstrap_run(account: str) -> ProgramRun:
    return run_program(account, root=BOOTSTRAP_ROOT, config=bootstrap_stack_config(account), project=BOOTSTRAP_PROJECT)


@pytest.fixture(params=ACCOUNTS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return bootstrap_run(str(request.param))


def _policy(run: ProgramRun) -> dict:
    return json.loads(run.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])


# ---------------------------------------------------------------- the program under mocks


def test_one_gitlab_oidc_provider_for_the_gitlab_audience(run: ProgramRun) -> None:
    provider = run.one(OIDC)

    assert provider.inputs["url"] == "https://git.tmaws.io"
    assert provider.inputs["clientIdLists"] == ["https://git.tmaws.io"], "aud of the jobs' id_tokens ($CI_SERVER_URL)"
    assert run.outputs["oidc_provider_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/git.tmaws.io"


def test_preview_role_trusts_this_projects_pipelines_through_the_provider(run: ProgramRun) -> None:
    role = run.one(ROLE)
    trust = json.loads(role.inputs["assumeRolePolicy"])
    (statement,) = trust["Statement"]

    assert role.inputs["name"] == "dmd-pipeline-preview"
    assert statement["Principal"] == {"Federated": run.outputs["oidc_provider_arn"]}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {"git.tmaws.io:aud": "https://git.tmaws.io"},
        "StringLike": {"git.tmaws.io:sub": "project_path:demand-capture/data-pipeline:ref_type:*:ref:*"},
    }
    assert run.outputs["preview_role_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/dmd-pipeline-preview"


def test_preview_role_is_read_only_plus_state_and_secrets_and_denies_data_reads(run: ProgramRun) -> None:
    attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    policy = _policy(run)
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    bucket = f"{run.stack}-pulumi-state"

    assert attachment.inputs == {"role": "dmd-pipeline-preview", "policyArn": READ_ONLY_POLICY}
    assert set(statements) == {
        "ListPulumiState",
        "ReadPulumiState",
        "DecryptStackSecrets",
        "DenyDataReads",
        "DenyDataObjectReads",
    }
    assert statements["ListPulumiState"]["Resource"] == [f"arn:aws:s3:::{bucket}"]
    assert statements["ReadPulumiState"] == {
        "Sid": "ReadPulumiState",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/dmd-pipeline/*"],
    }
    assert statements["DecryptStackSecrets"]["Resource"] == [KEY_ARN], "the key behind the secrets provider's alias"
    assert run.outputs["secrets_key_arn"] == KEY_ARN
    assert ("aws:kms/getAlias:getAlias", {"name": "alias/dmd-pipeline-pulumi"}) in run.invokes
    allowed = {
        action for statement in policy["Statement"] if statement["Effect"] == "Allow" for action in statement["Action"]
    }
    assert not {action for action in allowed if not action.startswith(("s3:Get", "s3:List", "kms:D"))}
    assert {"dynamodb:GetItem", "dynamodb:Scan", "kinesis:GetRecords", "logs:GetLogEvents"} <= set(
        statements["DenyDataReads"]["Action"]
    )
    assert statements["DenyDataObjectReads"]["Resource"] == [
        "arn:aws:s3:::*/demand/events/*",
        "arn:aws:s3:::*/demand/quarantine/*",
        "arn:aws:s3:::*/demand/exports/*",
        "arn:aws:s3:::*/demand/snapshots/*",
        "arn:aws:s3:::*/curated/*",  # the curated Iceberg tables' data and metadata
        # every object of the failure bucket (whole change images) and of the Athena results bucket is data
        "arn:aws:s3:::prd3292-*-*-demand-processor-failures/*",
        "arn:aws:s3:::prd3292-*-*-demand-athena-results/*",
    ]
    assert lint_identity_policy(policy) == []


@pytest.mark.parametrize("stack", ["dev1", "qa1", "preprod1", "prod1"])
def test_the_preview_deny_patterns_cover_each_stacks_failure_and_results_buckets(stack: str) -> None:
    settings = settings_from_stack_file(stack)
    names = Naming(settings.product_code, settings.environment_tag, settings.region).resources()
    patterns = account_data_bucket_patterns(settings.product_code)

    for bucket in (names.failure_bucket, names.results_bucket):
        assert [pattern for pattern in patterns if fnmatch.fnmatchcase(bucket, pattern)], bucket
    assert not any(fnmatch.fnmatchcase(settings.bucket_id, pattern) for pattern in patterns)


def test_no_write_capable_policy_is_attached(run: ProgramRun) -> None:
    attachments = run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    inline = run.of_type("aws:iam/rolePolicy:RolePolicy")

    assert [attachment.inputs["policyArn"] for attachment in attachments] == [READ_ONLY_POLICY]
    assert len(inline) == 1
    write_verbs = ("Put", "Create", "Delete", "Update", "Attach", "Tag", "Encrypt", "GenerateDataKey")
    for statement in _policy(run)["Statement"]:
        if statement["Effect"] == "Allow":
            for action in statement["Action"]:
                assert not action.split(":")[1].startswith(write_verbs), action


def test_every_resource_uses_the_explicit_provider_with_the_account_tags(run: ProgramRun) -> None:
    provider = run.one("pulumi:providers:aws")
    custom = [resource for resource in run.declared if resource.custom and resource.type != "pulumi:providers:aws"]

    assert provider.inputs["region"] == "us-east-1"
    assert provider.inputs["profile"] == f"{run.stack}-Ops-Techops"
    assert json.loads(provider.inputs["defaultTags"])["tags"]["Account"] == run.stack
    assert sorted(resource.type for resource in custom) == sorted(
        [OIDC, ROLE, "aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment"]
    )
    for resource in custom:
        assert "pulumi:providers:aws::aws::" in (resource.provider or ""), resource.name
    assert run.invoke_providers
    assert all(provider for _, provider in run.invoke_providers)
    assert sorted(run.outputs) == ["oidc_provider_arn", "preview_role_arn", "secrets_key_arn", "state_backend_url"]


def test_the_oidc_provider_is_protected_and_retained_on_delete() -> None:
    """Mocks cannot see resource options: the options the component passes are asserted where they are built."""
    parent = object.__new__(pulumi.ComponentResource)  # an unregistered resource: only its identity matters
    options = oidc_provider_options(parent)

    assert options.protect is True
    assert options.retain_on_delete is True
    assert options.parent is parent
    # an imported account-wide provider keeps every team's audiences: ours are set on creation only
    assert options.ignore_changes == ["clientIdLists"]


def test_the_program_creates_the_provider_with_those_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program run again with a recording OpenIdConnectProvider: the options it really receives."""
    received: list[pulumi.ResourceOptions | None] = []
    original = aws.iam.OpenIdConnectProvider

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, resource_name: str, *args: Any, opts: pulumi.ResourceOptions | None = None, **kwargs: Any):
            received.append(opts)
            super().__init__(resource_name, *args, opts=opts, **kwargs)

    monkeypatch.setattr(aws.iam, "OpenIdConnectProvider", Recording)
    run = run_program(
        "tm-prod", root=BOOTSTRAP_ROOT, config=bootstrap_stack_config("tm-prod"), project=BOOTSTRAP_PROJECT
    )

    assert len(run.of_type(OIDC)) == 1
    (options,) = received
    assert options is not None
    assert options.protect is True
    assert options.retain_on_delete is True
    assert options.ignore_changes == ["clientIdLists"]
    assert options.parent is not None, "a child of the AccountBootstrap component"


def test_a_private_gitlab_names_its_issuer_and_thumbprints() -> None:
    """GitLab's ci_id_tokens issuer_url is the provider's URL and the trust's key prefix; the audience stays."""
    thumbprint = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
    config = {
        **bootstrap_stack_config("tm-nonprod"),
        f"{BOOTSTRAP_PROJECT}:oidcIssuerUrl": "https://oidc.tmaws.io",
        f"{BOOTSTRAP_PROJECT}:oidcThumbprints": thumbprint.upper(),
    }
    run = run_program("tm-nonprod", root=BOOTSTRAP_ROOT, config=config, project=BOOTSTRAP_PROJECT)
    provider = run.one(OIDC)
    (statement,) = json.loads(run.one(ROLE).inputs["assumeRolePolicy"])["Statement"]

    assert provider.inputs["url"] == "https://oidc.tmaws.io"
    assert provider.inputs["clientIdLists"] == ["https://git.tmaws.io"]
    assert provider.inputs["thumbprintLists"] == [thumbprint]
    assert statement["Condition"]["StringEquals"] == {"oidc.tmaws.io:aud": "https://git.tmaws.io"}
    assert set(statement["Condition"]["StringLike"]) == {"oidc.tmaws.io:sub"}


def test_a_public_gitlab_gets_no_thumbprint(run: ProgramRun) -> None:
    """IAM checks a JWKS endpoint whose certificate chains to a CA it trusts without thumbprints."""
    assert "thumbprintLists" not in run.one(OIDC).inputs


# ---------------------------------------------------------------- settings and stack files


@pytest.mark.parametrize("account", ACCOUNTS)
def test_stack_files_load_and_name_their_account(account: str) -> None:
    settings = bootstrap_settings_from_stack_file(account)

    assert settings.account_tag == account
    assert settings.state_bucket == f"{account}-pulumi-state"
    assert settings.state_prefix == "dmd-pipeline/"
    assert settings.secrets_key_alias == "alias/dmd-pipeline-pulumi"


@pytest.mark.parametrize("stack", APP_STACKS)
def test_app_stack_files_name_their_accounts_secrets_provider_and_no_passphrase(stack: str) -> None:
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    account = settings_from_stack_file(stack).account_tag

    assert document["secretsprovider"] == bootstrap_settings_from_stack_file(account).secrets_provider
    assert "encryptionsalt" not in document, "a passphrase secrets provider"


def test_no_stack_file_of_either_project_uses_a_passphrase() -> None:
    files = [*PROJECT_ROOT.glob("Pulumi.*.yaml"), *BOOTSTRAP_ROOT.glob("Pulumi.*.yaml")]

    assert len(files) == 6
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("secretsprovider: awskms://"), path.name
        assert "passphrase" not in text.lower(), path.name
        assert "encryptionsalt" not in text, path.name


def test_bootstrap_pulumi_yaml_declares_every_key_of_its_namespace() -> None:
    project = yaml.safe_load((BOOTSTRAP_ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    from bootstrap.settings import BOOTSTRAP_CONFIG_KEYS  # noqa: PLC0415

    declared = set(project["config"])
    own = {key.split(":", 1)[1] for key in BOOTSTRAP_CONFIG_KEYS if key.startswith(f"{BOOTSTRAP_PROJECT}:")}
    assert project["name"] == BOOTSTRAP_PROJECT
    assert declared == own
    for key, (default, _) in BOOTSTRAP_CONFIG_KEYS.items():
        name = key.split(":", 1)[1]
        if name in declared:
            assert project["config"][name].get("default") == default, key


def _write(tmp_path: Path, account: str = "tm-nonprod", **overrides: str | None) -> Path:
    document = yaml.safe_load((BOOTSTRAP_ROOT / f"Pulumi.{account}.yaml").read_text(encoding="utf-8"))
    for key, value in overrides.items():
        qualified = key if ":" in key else f"{BOOTSTRAP_PROJECT}:{key}"
        if value is None:
            document["config"].pop(qualified)
        else:
            document["config"][qualified] = value
    (tmp_path / f"Pulumi.{account}.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stateBackendUrl": None}, "dmd-pipeline-bootstrap:stateBackendUrl is required"),
        ({"secretsProvider": None}, "dmd-pipeline-bootstrap:secretsProvider is required"),
        ({"accountTag": "tm-prod"}, "accountTag must be the stack name 'tm-nonprod', got 'tm-prod'"),
        ({"accountTag": "tm-other"}, "accountTag must be one of tm-nonprod, tm-prod, got 'tm-other'"),
        ({"stateBackendUrl": "file:///tmp/state"}, "not an S3 state backend URL"),
        ({"gitlabUrl": "http://git.example"}, "gitlabUrl must be an https URL, got 'http://git.example'"),
        ({"unknownKey": "x"}, "unknown config key dmd-pipeline-bootstrap:unknownKey"),
        ({"oidcIssuerUrl": "http://oidc.example"}, "oidcIssuerUrl must be an https URL or empty"),
        ({"oidcThumbprints": "abc"}, "oidcThumbprints must be up to 5 SHA-1 thumbprints"),
        ({"oidcThumbprints": ",".join(["a" * 40] * 6)}, "oidcThumbprints must be up to 5 SHA-1 thumbprints"),
    ],
)
def test_bad_settings_name_the_key_and_the_value(tmp_path: Path, overrides: dict, message: str) -> None:
    root = _write(tmp_path, **overrides)

    with pytest.raises(BootstrapSettingsError, match=r"bootstrap/Pulumi\.tm-nonprod\.yaml") as raised:
        bootstrap_settings_from_stack_file("tm-nonprod", root)
    assert message in str(raised.value)


def test_secrets_provider_line_must_match_the_config(tmp_path: Path) -> None:
    root = _write(tmp_path, secretsProvider="awskms://alias/other?region=us-east-1")

    with pytest.raises(BootstrapSettingsError, match=r"secretsprovider .* must equal .*alias/other"):
        bootstrap_settings_from_stack_file("tm-nonprod", root)


def test_missing_stack_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BootstrapSettingsError, match=r"Pulumi\.tm-x\.yaml: no such stack file"):
        bootstrap_settings_from_stack_file("tm-x", tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://state-bucket/dmd-pipeline?region=us-east-1", ("state-bucket", "dmd-pipeline/")),
        ("s3://state-bucket", ("state-bucket", "")),
        ("s3://state-bucket/a/b/", ("state-bucket", "a/b/")),
    ],
)
def test_state_backend_urls_parse(url: str, expected: tuple[str, str]) -> None:
    assert parse_state_backend(url) == expected


@pytest.mark.parametrize(
    "provider",
    ["passphrase", "awskms://1234abcd?region=us-east-1", "awskms://alias/x", "awskms://alias/x?region=mars"],
)
def test_only_kms_alias_secrets_providers_are_accepted(provider: str) -> None:
    with pytest.raises(ValueError, match="not an AWS KMS secrets provider"):
        parse_secrets_provider(provider)
