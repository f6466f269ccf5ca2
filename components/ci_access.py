"""CI access: a role GitLab CI assumes through the account's GitLab OIDC provider (no stored keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.policies import ci_access_policy, ci_trust_policy

__all__ = ["CiAccess", "CiAccessArgs"]

MAX_SESSION_SECONDS = 3600


@dataclass(frozen=True)
class CiAccessArgs:
    """Who may assume the role (GitLab, project, branch), and the exact resources CI may use."""

    role_name: str
    gitlab_url: str
    issuer_url: str
    project_path: str
    main_branch_only: bool
    table_arn: pulumi.Input[str]
    stream_arn: pulumi.Input[str]
    function_arn: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    read_prefixes: tuple[str, ...]
    results_prefix: str
    results_bucket_arn: pulumi.Input[str]
    workgroup_arn: pulumi.Input[str]
    database_arn: pulumi.Input[str]
    table_glue_arn: pulumi.Input[str]
    snapshot_table_glue_arn: pulumi.Input[str]
    failure_bucket_arn: pulumi.Input[str]
    log_group_arn: pulumi.Input[str]
    alarm_arns: pulumi.Input[list[str]]
    bucket_kms_key_arn: str | None = None
    #: The curated Iceberg tables of the same database (the curator creates them): read like the others.
    curated_tables: tuple[str, ...] = ()


class CiAccess(pulumi.ComponentResource):
    """The GitLab CI role, trusted through the account's OIDC provider (the bootstrap project owns the provider)."""

    role_arn: pulumi.Output[str]
    """ARN of the role GitLab CI assumes."""
    oidc_provider_arn: pulumi.Output[str]
    """ARN of the account's GitLab OIDC provider."""

    def __init__(self, name: str, args: CiAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:CiAccess", name, None, opts)
        self._name = name
        self.oidc_provider_arn = self._oidc_provider(args)
        role = self._create_role(args)
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn, "oidc_provider_arn": self.oidc_provider_arn})

    def _oidc_provider(self, args: CiAccessArgs) -> pulumi.Output[str]:
        # Account-wide (IAM allows one provider per URL): created and protected by bootstrap/, only looked up here.
        existing = aws.iam.get_open_id_connect_provider_output(
            url=args.issuer_url, opts=pulumi.InvokeOptions(parent=self)
        )
        return existing.arn

    def _create_role(self, args: CiAccessArgs) -> aws.iam.Role:
        trust = self.oidc_provider_arn.apply(
            lambda provider_arn: json.dumps(
                ci_trust_policy(
                    provider_arn=provider_arn,
                    gitlab_url=args.gitlab_url,
                    issuer_url=args.issuer_url,
                    project_path=args.project_path,
                    main_branch_only=args.main_branch_only,
                )
            )
        )
        role = aws.iam.Role(
            f"{self._name}-role",
            name=args.role_name,
            description=f"GitLab CI of {args.project_path}: end-to-end tests, smoke checks and alias rollback.",
            assume_role_policy=trust,
            max_session_duration=MAX_SESSION_SECONDS,
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = pulumi.Output.all(
            table_arn=args.table_arn,
            stream_arn=args.stream_arn,
            function_arn=args.function_arn,
            bucket_arn=args.bucket_arn,
            results_bucket_arn=args.results_bucket_arn,
            workgroup_arn=args.workgroup_arn,
            database_arn=args.database_arn,
            table_glue_arn=args.table_glue_arn,
            snapshot_table_glue_arn=args.snapshot_table_glue_arn,
            failure_bucket_arn=args.failure_bucket_arn,
            log_group_arn=args.log_group_arn,
            alarm_arns=args.alarm_arns,
        ).apply(
            lambda arns: json.dumps(
                ci_access_policy(
                    **arns,
                    read_prefixes=args.read_prefixes,
                    curated_tables=args.curated_tables,
                    results_prefix=args.results_prefix,
                    bucket_kms_key_arn=args.bucket_kms_key_arn,
                )
            )
        )
        aws.iam.RolePolicy(
            f"{self._name}-policy",
            name="gitlab-ci",
            role=role.id,
            policy=policy,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role
