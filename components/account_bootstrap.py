"""What one AWS account holds once for every stack: the GitLab OIDC provider and the read-only preview role."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.ci_access import MAX_SESSION_SECONDS
from components.policies import ci_trust_policy, preview_access_policy

__all__ = ["READ_ONLY_POLICY", "AccountBootstrap", "AccountBootstrapArgs", "oidc_provider_options"]

# AWS's managed read-only policy: Get/List/Describe on every service, what `pulumi preview --refresh` reads.
READ_ONLY_POLICY = "arn:aws:iam::aws:policy/ReadOnlyAccess"


@dataclass(frozen=True)
class AccountBootstrapArgs:
    """The GitLab instance and project, the preview role's name, and the state backend and secrets key it reads."""

    gitlab_url: str
    project_path: str
    preview_role_name: str
    state_bucket: str
    state_prefix: str
    secrets_key_alias: str
    data_prefixes: tuple[str, ...]
    data_buckets: tuple[str, ...] = ()


def oidc_provider_options(parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """The provider is the account's CI lifeline: `pulumi destroy` must neither delete it nor drop it silently.

    ``protect`` makes the engine refuse to delete it; ``retain_on_delete`` keeps it in AWS even when someone
    unprotects it and removes it from the program (every stack's CI role trusts it).
    """
    return pulumi.ResourceOptions(parent=parent, protect=True, retain_on_delete=True)


class AccountBootstrap(pulumi.ComponentResource):
    """The account's GitLab OIDC provider and the read-only role merge request previews run as."""

    oidc_provider_arn: pulumi.Output[str]
    """ARN of the account's GitLab OIDC provider (the app stacks look it up by URL)."""
    preview_role_arn: pulumi.Output[str]
    """ARN of the read-only preview role (PREVIEW_ROLE_ARN_<ACCOUNT> in GitLab)."""
    secrets_key_arn: pulumi.Output[str]
    """ARN of the KMS key behind the secrets provider's alias."""

    def __init__(self, name: str, args: AccountBootstrapArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:AccountBootstrap", name, None, opts)
        self._name = name
        provider = self._create_oidc_provider(args)
        self.oidc_provider_arn = provider.arn
        self.secrets_key_arn = aws.kms.get_alias_output(
            name=args.secrets_key_alias, opts=pulumi.InvokeOptions(parent=self)
        ).target_key_arn
        self.preview_role_arn = self._create_preview_role(args).arn
        self.register_outputs(
            {
                "oidc_provider_arn": self.oidc_provider_arn,
                "preview_role_arn": self.preview_role_arn,
                "secrets_key_arn": self.secrets_key_arn,
            }
        )

    def _create_oidc_provider(self, args: AccountBootstrapArgs) -> aws.iam.OpenIdConnectProvider:
        # No thumbprint: IAM verifies the issuer's certificate against its trusted CAs (pulumi-aws v7 makes
        # thumbprintLists optional for that reason).
        return aws.iam.OpenIdConnectProvider(
            f"{self._name}-gitlab-oidc",
            url=args.gitlab_url,
            client_id_lists=[args.gitlab_url],
            opts=oidc_provider_options(self),
        )

    def _create_preview_role(self, args: AccountBootstrapArgs) -> aws.iam.Role:
        # GitLab's sub claim names project, ref type and ref, not the pipeline source: the role trusts every
        # branch pipeline of this project (pipelines of forks carry the fork's project path and are refused).
        trust = self.oidc_provider_arn.apply(
            lambda provider_arn: json.dumps(
                ci_trust_policy(
                    provider_arn=provider_arn,
                    gitlab_url=args.gitlab_url,
                    project_path=args.project_path,
                    main_branch_only=False,
                )
            )
        )
        role = aws.iam.Role(
            f"{self._name}-preview-role",
            name=args.preview_role_name,
            description=f"Read-only: pulumi preview --refresh of {args.project_path} in merge request pipelines.",
            assume_role_policy=trust,
            max_session_duration=MAX_SESSION_SECONDS,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicyAttachment(
            f"{self._name}-preview-read-only",
            role=role.name,
            policy_arn=READ_ONLY_POLICY,
            opts=pulumi.ResourceOptions(parent=role),
        )
        policy = self.secrets_key_arn.apply(
            lambda key_arn: json.dumps(
                preview_access_policy(
                    state_bucket_arn=f"arn:aws:s3:::{args.state_bucket}",
                    state_prefix=args.state_prefix,
                    secrets_key_arn=key_arn,
                    data_prefixes=args.data_prefixes,
                    data_buckets=args.data_buckets,
                )
            )
        )
        aws.iam.RolePolicy(
            f"{self._name}-preview-policy",
            name="pulumi-preview",
            role=role.id,
            policy=policy,
            opts=pulumi.ResourceOptions(parent=role),
        )
        return role
