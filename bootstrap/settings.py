"""Settings of the bootstrap project: the only place that reads its config, validated into ``BootstrapSettings``.

Like ``components.settings`` there are two readers sharing one parser: ``load_bootstrap_settings()`` inside the
Pulumi program and ``bootstrap_settings_from_stack_file(stack)`` for tests and ops commands (no Pulumi needed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from components.settings import ACCOUNT_TAGS

__all__ = [
    "BOOTSTRAP_CONFIG_KEYS",
    "BOOTSTRAP_PROJECT",
    "BOOTSTRAP_ROOT",
    "BootstrapSettings",
    "BootstrapSettingsError",
    "bootstrap_settings_from_stack_file",
    "bootstrap_stack_config",
    "load_bootstrap_settings",
    "parse_secrets_provider",
    "parse_state_backend",
    "parse_thumbprints",
]

BOOTSTRAP_PROJECT = "dmd-pipeline-bootstrap"
BOOTSTRAP_ROOT = Path(__file__).resolve().parent
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_URL = re.compile(r"^https://[a-z0-9.-]+(:\d+)?$")
_PROJECT_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
_THUMBPRINT = re.compile(r"^[0-9a-f]{40}$")
# IAM keeps at most five thumbprints per OIDC provider.
MAX_THUMBPRINTS = 5

# key (namespace:name) -> (default or None when required, description)
BOOTSTRAP_CONFIG_KEYS: dict[str, tuple[str | None, str]] = {
    "aws:region": (None, "AWS region of the account's bootstrap resources."),
    "aws:profile": (None, "AWS CLI profile a person runs the bootstrap with (an account administrator)."),
    f"{BOOTSTRAP_PROJECT}:accountTag": (None, "The account (tm-nonprod or tm-prod); equals the stack name."),
    f"{BOOTSTRAP_PROJECT}:productCode": ("PRD3292", "Product code tag (ProductCode)."),
    f"{BOOTSTRAP_PROJECT}:inventoryCode": ("dmnd-pipeline", "Inventory code tag (InventoryCode)."),
    f"{BOOTSTRAP_PROJECT}:gitlabUrl": ("https://git.tmaws.io", "GitLab issuing CI ID tokens (the provider's URL)."),
    f"{BOOTSTRAP_PROJECT}:oidcIssuerUrl": (
        "",
        "Issuer of GitLab's CI ID tokens (gitlab.rb ci_id_tokens issuer_url) when it is not gitlabUrl: the OIDC"
        " provider's URL (empty: gitlabUrl).",
    ),
    f"{BOOTSTRAP_PROJECT}:oidcThumbprints": (
        "",
        "SHA-1 thumbprints (40 hex digits, comma-separated) of the CA of the issuer's JWKS endpoint, needed only"
        " when its certificate does not chain to a CA AWS trusts (a private CA); empty otherwise.",
    ),
    f"{BOOTSTRAP_PROJECT}:gitlabProjectPath": (
        "demand-capture/data-pipeline",
        "GitLab project whose merge request pipelines may assume the preview role.",
    ),
    f"{BOOTSTRAP_PROJECT}:previewRoleName": ("dmd-pipeline-preview", "Name of the read-only preview role."),
    f"{BOOTSTRAP_PROJECT}:stateBackendUrl": (
        None,
        "The account's Pulumi state backend (s3://<bucket>/<prefix>?region=...), as PULUMI_BACKEND_URL_<ACCOUNT>.",
    ),
    f"{BOOTSTRAP_PROJECT}:secretsProvider": (
        None,
        "The account's secrets provider (awskms://alias/<name>?region=...), as every stack file's secretsprovider.",
    ),
}


class BootstrapSettingsError(ValueError):
    """A bootstrap stack's configuration is missing a required key or holds a malformed value."""


@dataclass(frozen=True)
class BootstrapSettings:
    """Validated settings of one account's bootstrap stack."""

    stack: str
    region: str
    profile: str
    account_tag: str
    product_code: str
    inventory_code: str
    gitlab_url: str
    oidc_issuer_url: str  # gitlab_url unless GitLab issues its ID tokens under another URL
    oidc_thumbprints: tuple[str, ...]
    gitlab_project_path: str
    preview_role_name: str
    state_backend_url: str
    state_bucket: str
    state_prefix: str  # "" or ends with "/"
    secrets_provider: str
    secrets_key_alias: str

    @property
    def tags(self) -> dict[str, str]:
        """Default tags of the bootstrap's provider (Environment is the account: nothing here is per stack)."""
        return {
            "Account": self.account_tag,
            "Environment": self.account_tag,
            "ProductCode": self.product_code,
            "InventoryCode": self.inventory_code,
        }


def parse_state_backend(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix?region=...`` -> (bucket, ``prefix/``); raises naming the URL when it is not one."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not _BUCKET.match(parsed.netloc or ""):
        raise ValueError(f"not an S3 state backend URL (s3://<bucket>/<prefix>?region=...): {url!r}")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def parse_secrets_provider(provider: str) -> tuple[str, str]:
    """``awskms://alias/<name>?region=<region>`` -> (alias, region); raises naming the value otherwise."""
    parsed = urlparse(provider)
    alias = f"{parsed.netloc}{parsed.path}"
    regions = parse_qs(parsed.query).get("region", [])
    if parsed.scheme != "awskms" or not _ALIAS.match(alias) or len(regions) != 1 or not _REGION.match(regions[0]):
        raise ValueError(f"not an AWS KMS secrets provider (awskms://alias/<name>?region=<region>): {provider!r}")
    return alias, regions[0]


def parse_thumbprints(text: str) -> tuple[str, ...] | None:
    """``"ab12...,cd34..."`` -> lower-case thumbprints; None when one is not 40 hex digits or there are too many."""
    thumbprints = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if len(thumbprints) > MAX_THUMBPRINTS or not all(_THUMBPRINT.match(thumbprint) for thumbprint in thumbprints):
        return None
    return thumbprints


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _build(stack: str, raw: Mapping[str, str], where: str) -> BootstrapSettings:  # noqa: PLR0912
    unknown = sorted(key for key in raw if key.startswith(f"{BOOTSTRAP_PROJECT}:") and key not in BOOTSTRAP_CONFIG_KEYS)
    if unknown:
        raise BootstrapSettingsError(f"{where}: unknown config key {unknown[0]}")
    values: dict[str, str] = {}
    for key, (default, description) in BOOTSTRAP_CONFIG_KEYS.items():
        value = (raw.get(key) or "").strip()
        if not value:
            if default is None:
                raise BootstrapSettingsError(f"{where}: {key} is required ({description})")
            value = default
        values[key.split(":", 1)[1]] = value

    def bad(key: str, expected: str) -> BootstrapSettingsError:
        return BootstrapSettingsError(f"{where}: {key} must be {expected}, got {values[key.split(':', 1)[1]]!r}")

    ns = BOOTSTRAP_PROJECT
    if not _REGION.match(values["region"]):
        raise bad("aws:region", "an AWS region")
    if values["accountTag"] not in ACCOUNT_TAGS:
        raise bad(f"{ns}:accountTag", "one of " + ", ".join(ACCOUNT_TAGS))
    if values["accountTag"] != stack:
        raise bad(f"{ns}:accountTag", f"the stack name {stack!r}")
    if not _URL.match(values["gitlabUrl"]):
        raise bad(f"{ns}:gitlabUrl", "an https URL")
    if values["oidcIssuerUrl"] and not _URL.match(values["oidcIssuerUrl"]):
        raise bad(f"{ns}:oidcIssuerUrl", "an https URL or empty")
    thumbprints = parse_thumbprints(values["oidcThumbprints"])
    if thumbprints is None:
        raise bad(f"{ns}:oidcThumbprints", f"up to {MAX_THUMBPRINTS} SHA-1 thumbprints (40 hex digits) by commas")
    if not _PROJECT_PATH.match(values["gitlabProjectPath"]):
        raise bad(f"{ns}:gitlabProjectPath", "a GitLab project path group/project")
    if not _ROLE_NAME.match(values["previewRoleName"]):
        raise bad(f"{ns}:previewRoleName", "an IAM role name")
    try:
        bucket, prefix = parse_state_backend(values["stateBackendUrl"])
        alias, key_region = parse_secrets_provider(values["secretsProvider"])
    except ValueError as error:
        raise BootstrapSettingsError(f"{where}: {error}") from None
    if key_region != values["region"]:
        raise bad(f"{ns}:secretsProvider", f"a key in the stack's region {values['region']}")
    return BootstrapSettings(
        stack=stack,
        region=values["region"],
        profile=values["profile"],
        account_tag=values["accountTag"],
        product_code=values["productCode"],
        inventory_code=values["inventoryCode"],
        gitlab_url=values["gitlabUrl"],
        oidc_issuer_url=values["oidcIssuerUrl"] or values["gitlabUrl"],
        oidc_thumbprints=thumbprints,
        gitlab_project_path=values["gitlabProjectPath"],
        preview_role_name=values["previewRoleName"],
        state_backend_url=values["stateBackendUrl"],
        state_bucket=bucket,
        state_prefix=prefix,
        secrets_provider=values["secretsProvider"],
        secrets_key_alias=alias,
    )


def load_bootstrap_settings() -> BootstrapSettings:
    """Settings of the running bootstrap stack, from ``pulumi.Config``."""
    import pulumi  # noqa: PLC0415 - only the program needs Pulumi

    stack = pulumi.get_stack()
    raw: dict[str, str] = {}
    for key in BOOTSTRAP_CONFIG_KEYS:
        namespace, name = key.split(":", 1)
        value = pulumi.Config(namespace).get(name)
        if value is not None:
            raw[key] = value
    return _build(stack, raw, f"bootstrap/Pulumi.{stack}.yaml")


def _stack_document(stack: str, root: Path) -> dict[str, Any]:
    path = root / f"Pulumi.{stack}.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise BootstrapSettingsError(f"bootstrap/{path.name}: no such stack file in {root}") from None
    if not isinstance(document, dict):
        raise BootstrapSettingsError(f"bootstrap/{path.name}: expected a YAML mapping")
    return document


def bootstrap_stack_config(stack: str, root: Path = BOOTSTRAP_ROOT) -> dict[str, str]:
    """The config the CLI gives the bootstrap program: the stack file's values (keys namespaced), as text."""
    config = _stack_document(stack, root).get("config") or {}
    return {
        (key if ":" in key else f"{BOOTSTRAP_PROJECT}:{key}"): _text(value)
        for key, value in config.items()
        if not str(key).startswith("pulumi:")
    }


def bootstrap_settings_from_stack_file(stack: str, root: Path = BOOTSTRAP_ROOT) -> BootstrapSettings:
    """Settings of ``stack`` from ``bootstrap/Pulumi.<stack>.yaml``, without Pulumi."""
    where = f"bootstrap/Pulumi.{stack}.yaml"
    settings = _build(stack, bootstrap_stack_config(stack, root), where)
    declared = _stack_document(stack, root).get("secretsprovider")
    if declared != settings.secrets_provider:
        raise BootstrapSettingsError(
            f"{where}: secretsprovider {declared!r} must equal {BOOTSTRAP_PROJECT}:secretsProvider "
            f"{settings.secrets_provider!r}"
        )
    return settings
