"""Define a stack's AWS CLI profile (``aws:profile`` in its stack file) as the CI job's GitLab web identity.

The stack files name the profile people deploy with (``tm-nonprod-Ops-Techops``); the Pulumi AWS provider
asks for that profile. In CI the same name becomes a profile that assumes ``$AWS_ROLE_ARN`` (the account's
deployment role) with the job's ID token, so the stack files stay as they are and no key is stored anywhere.
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from components.settings import settings_from_stack_file

__all__ = ["profile_values", "write_profile"]


def profile_values(*, role_arn: str, token_file: str, region: str, session_name: str) -> dict[str, str]:
    """The profile settings that make the AWS SDKs call AssumeRoleWithWebIdentity."""
    if not role_arn:
        raise ValueError(
            "no role to assume: AWS_ROLE_ARN is empty "
            "(set the DEPLOY_ROLE_ARN_<ACCOUNT> or PREVIEW_ROLE_ARN_<ACCOUNT> CI/CD variable)"
        )
    if not token_file:
        raise ValueError("no web identity token file: AWS_WEB_IDENTITY_TOKEN_FILE is empty")
    return {
        "role_arn": role_arn,
        "web_identity_token_file": token_file,
        "role_session_name": session_name,
        "region": region,
    }


def write_profile(config_file: Path, profile: str, values: Mapping[str, str]) -> None:
    """Add or replace ``[profile <profile>]`` in an AWS config file, keeping its other sections."""
    parser = configparser.ConfigParser(interpolation=None)
    if config_file.exists():
        parser.read(config_file, encoding="utf-8")
    section = "default" if profile == "default" else f"profile {profile}"
    if parser.has_section(section):
        parser.remove_section(section)
    parser.add_section(section)
    for key, value in values.items():
        parser.set(section, key, value)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    with config_file.open("w", encoding="utf-8") as handle:
        parser.write(handle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.ci_aws_profile", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack whose aws:profile is defined (dev1, qa1, preprod1, prod1)")
    parser.add_argument(
        "--config-file",
        type=Path,
        default=Path(os.environ.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config"),
        help="AWS config file to write (default: $AWS_CONFIG_FILE or ~/.aws/config)",
    )
    args = parser.parse_args(argv)
    settings = settings_from_stack_file(args.stack)
    try:
        values = profile_values(
            role_arn=os.environ.get("AWS_ROLE_ARN", ""),
            token_file=os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE", ""),
            region=settings.region,
            session_name=os.environ.get("AWS_ROLE_SESSION_NAME") or f"gitlab-ci-{args.stack}",
        )
    except ValueError as error:
        print(f"ci_aws_profile: {error}", file=sys.stderr)
        return 2
    write_profile(args.config_file, settings.profile, values)
    print(f"profile {settings.profile} -> {values['role_arn']} (web identity) in {args.config_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
