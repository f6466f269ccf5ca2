"""Settings: the four stack files parse, the seed's values land, and bad config fails naming key and stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.naming import Naming
from components.settings import (
    CONFIG_KEYS,
    PROJECT_ROOT,
    SECRET_CONFIG_KEYS,
    SettingsError,
    project_defaults,
    settings_from_stack_file,
)

STACKS = ("dev1", "qa1", "preprod1", "prod1")

SEED: dict[str, dict[str, Any]] = {
    "dev1": {
        "profile": "tm-nonprod-Ops-Techops",
        "account_tag": "tm-nonprod",
        "stream_name": "prd3292-dev1-dmnd-table-stream",
        "table_name": "prd3292-dev1-us-east-1-demand-table",
        "bucket_id": "prd3292.dev1.us-east-1.demand-capture.tmaws",
    },
    "prod1": {
        "profile": "tm-prod-Ops-Techops",
        "account_tag": "tm-prod",
        "stream_name": None,  # "TBD" in the seed: the stack creates the stream
        "table_name": "prd3292-prod1-us-east-1-demand-table",
        "bucket_id": "prd3292.prod1.us-east-1.demand-capture.tmaws",
    },
}


@pytest.mark.parametrize("stack", sorted(SEED))
def test_seed_values_land(stack: str) -> None:
    settings = settings_from_stack_file(stack)
    for field, expected in SEED[stack].items():
        assert getattr(settings, field) == expected, f"{stack}: {field}"
    assert settings.region == "us-east-1"
    assert settings.tags == {
        "Account": SEED[stack]["account_tag"],
        "Environment": stack,
        "ProductCode": "PRD3292",
        "InventoryCode": "dmnd-pipeline",
    }


@pytest.mark.parametrize("stack", ["qa1", "preprod1"])
def test_derived_stacks_follow_the_seed_pattern(stack: str) -> None:
    settings = settings_from_stack_file(stack)
    naming = Naming("PRD3292", stack, "us-east-1")
    assert settings.stream_name == naming.seed_stream_name()
    assert settings.table_name == naming.seed_table_name()
    assert settings.bucket_id == naming.seed_bucket_id()
    assert settings.account_tag == ("tm-nonprod" if stack == "qa1" else "tm-prod")


def test_seed_names_match_the_naming_helper() -> None:
    for stack in ("dev1", "prod1"):
        settings = settings_from_stack_file(stack)
        assert settings.table_name == settings.naming.seed_table_name()
        assert settings.bucket_id == settings.naming.seed_bucket_id()


def test_no_stack_file_claims_the_oidc_provider() -> None:
    """The account's OIDC provider belongs to the bootstrap project; the old ownership flag is an unknown key now."""
    for stack in STACKS:
        assert "createOidcProvider" not in (PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text(), stack


def test_only_qa1_trusts_branches_other_than_main() -> None:
    """qa1 is the one stack a branch pipeline deploys to and tests (.gitlab-ci.yml); the others run from main only."""
    trusts_main_only = {stack: settings_from_stack_file(stack).ci_main_branch_only for stack in STACKS}
    assert trusts_main_only == {"qa1": False, "dev1": True, "preprod1": True, "prod1": True}


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_disable_the_default_aws_provider(stack: str) -> None:
    """Anything not given the explicit provider (no default tags, possibly another profile) fails instead."""
    config = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert config["pulumi:disable-default-providers"] == ["aws"]
    assert settings_from_stack_file(stack).stack == stack  # engine keys are not program config


def test_only_prod1_creates_its_stream() -> None:
    assert [stack for stack in STACKS if settings_from_stack_file(stack).creates_stream] == ["prod1"]


def test_pulumi_yaml_documents_every_key_with_the_code_defaults() -> None:
    project = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "dmd-pipeline"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["toolchain"] == "uv"
    declared = project["config"]
    defaults = project_defaults(PROJECT_ROOT / "Pulumi.yaml")
    project_keys = [spec for spec in CONFIG_KEYS if not spec.key.startswith("aws:")]
    secrets = sorted(key.split(":", 1)[1] for key in SECRET_CONFIG_KEYS)
    assert sorted(declared) == sorted([*(spec.key.split(":", 1)[1] for spec in project_keys), *secrets])
    for name in secrets:  # documented, secret, and without a default: the program refuses to run without it
        assert declared[name]["secret"] is True, name
        assert "default" not in declared[name], name
        assert "pulumi config set --secret" in declared[name]["description"], name
    for spec in project_keys:
        name = spec.key.split(":", 1)[1]
        assert declared[name]["description"], name
        assert declared[name]["type"] == spec.kind, name
        if spec.required:
            assert "default" not in declared[name], name
        else:
            assert str(declared[name]["default"]).lower() == str(spec.default).lower(), name
            assert defaults[spec.key].lower() == str(spec.default).lower(), name
    text = (PROJECT_ROOT / "Pulumi.yaml").read_text()
    assert "aws:region" in text
    assert "aws:profile" in text


def _write_stack(tmp_path: Path, stack: str, drop: str | None = None, **overrides: str) -> Path:
    source = yaml.safe_load((PROJECT_ROOT / "Pulumi.qa1.yaml").read_text())["config"]
    config = {**source, "dmd-pipeline:environmentTag": stack}
    config.pop(drop or "", None)
    config.update({f"dmd-pipeline:{key}": value for key, value in overrides.items()})
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return tmp_path


@pytest.mark.parametrize("key", ["tableName", "bucketId", "accountTag", "environmentTag"])
def test_missing_required_key_names_key_and_stack(tmp_path: Path, key: str) -> None:
    path = _write_stack(tmp_path, "qa1", drop=f"dmd-pipeline:{key}")
    with pytest.raises(SettingsError, match=rf"^Pulumi\.qa1\.yaml: dmd-pipeline:{key} is required"):
        settings_from_stack_file("qa1", path)


def test_missing_region_names_key_and_stack(tmp_path: Path) -> None:
    path = _write_stack(tmp_path, "qa1", drop="aws:region")
    with pytest.raises(SettingsError, match=r"^Pulumi\.qa1\.yaml: aws:region is required"):
        settings_from_stack_file("qa1", path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batchSize": "lots"}, r"dmd-pipeline:batchSize must be an integer, got 'lots'"),
        ({"batchSize": "0"}, r"dmd-pipeline:batchSize must be an integer between 1 and 10000"),
        ({"parallelizationFactor": "11"}, r"dmd-pipeline:parallelizationFactor must be an integer between 1 and 10"),
        ({"maxRetryAttempts": "-1"}, r"dmd-pipeline:maxRetryAttempts must be an integer between 0 and 10000"),
        # The Athena API's minimum is 10,000,000 but the AWS provider rejects anything below 10485760 at preview.
        (
            {"athenaBytesScannedCutoff": "10000000"},
            r"dmd-pipeline:athenaBytesScannedCutoff must be an integer between 10485760 and",
        ),
        (
            {"changeTimePrecision": "SECOND"},
            r"dmd-pipeline:changeTimePrecision must be one of MILLISECOND, MICROSECOND",
        ),
        ({"logRetentionDays": "10"}, r"dmd-pipeline:logRetentionDays must be one of 1, 3, 5"),
        ({"accountTag": "tm-other"}, r"dmd-pipeline:accountTag must be one of tm-nonprod, tm-prod"),
        ({"createBucket": "yes"}, r"dmd-pipeline:createBucket must be true or false"),
        ({"bucketId": "Not_A_Bucket"}, r"dmd-pipeline:bucketId must be an S3 bucket name"),
        ({"logDestinationArn": "central-logs"}, r"dmd-pipeline:logDestinationArn must be an ARN"),
        ({"environmentTag": "dev1"}, r"dmd-pipeline:environmentTag must be the stack name 'qa1'"),
        ({"accountTag": "tm-prod", "ciMainBranchOnly": "false"}, r"ciMainBranchOnly must be true in the tm-prod"),
        ({"batchSzie": "10"}, r"unknown config key dmd-pipeline:batchSzie"),
    ],
)
def test_malformed_values_fail_naming_key_and_stack(tmp_path: Path, overrides: dict[str, str], message: str) -> None:
    path = _write_stack(tmp_path, "qa1", **overrides)
    with pytest.raises(SettingsError, match=r"^Pulumi\.qa1\.yaml: .*" + message):
        settings_from_stack_file("qa1", path)


def test_environment_making_an_invalid_aws_name_is_rejected(tmp_path: Path) -> None:
    stack = "e" * 40  # prd3292-<40>-demand-processor: 65 characters, over Lambda's and IAM's 64
    path = _write_stack(tmp_path, stack)
    with pytest.raises(SettingsError, match=rf"dmd-pipeline:environmentTag '{stack}': function name .* AWS allows 64"):
        settings_from_stack_file(stack, path)
    path = _write_stack(tmp_path, "QA1")  # Glue keeps names in lower case: a diff on every preview
    with pytest.raises(SettingsError, match=r"dmd-pipeline:environmentTag 'QA1': glue_database name .* lower-case"):
        settings_from_stack_file("QA1", path)


def test_athena_cutoff_accepts_the_provider_minimum(tmp_path: Path) -> None:
    path = _write_stack(tmp_path, "qa1", athenaBytesScannedCutoff="10485760")
    assert settings_from_stack_file("qa1", path).athena_bytes_scanned_cutoff == 10 * 1024**2


def test_defaults_come_from_pulumi_yaml(tmp_path: Path) -> None:
    path = _write_stack(tmp_path, "qa1")
    text = (tmp_path / "Pulumi.yaml").read_text().replace("default: 10000", "default: 250", 1)
    (tmp_path / "Pulumi.yaml").write_text(text)
    assert settings_from_stack_file("qa1", path).batch_size == 250
    assert settings_from_stack_file("qa1", path / "Pulumi.qa1.yaml").batch_size == 250


@pytest.mark.parametrize("value", ["TBD", ""])
def test_tbd_or_empty_stream_means_create(tmp_path: Path, value: str) -> None:
    path = _write_stack(tmp_path, "qa1", streamName=value)
    assert settings_from_stack_file("qa1", path).stream_name is None


def test_missing_stack_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"Pulumi\.nope\.yaml: no such stack file"):
        settings_from_stack_file("nope", tmp_path)
