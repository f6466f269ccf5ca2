"""The account bootstrap, one stack per account: load settings, build the account's resources, export outputs."""

import sys
from pathlib import Path

# Pulumi runs this program from bootstrap/; the shared components and policy builders live one level up.
_REPOSITORY = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY not in sys.path:
    sys.path.insert(0, _REPOSITORY)

import pulumi  # noqa: E402
import pulumi_aws as aws  # noqa: E402

from bootstrap.settings import load_bootstrap_settings  # noqa: E402
from components.account_bootstrap import AccountBootstrap, AccountBootstrapArgs  # noqa: E402
from components.naming import account_data_bucket_patterns, prefixes  # noqa: E402

settings = load_bootstrap_settings()
layout = prefixes()
provider = aws.Provider("aws", region=settings.region, profile=settings.profile, default_tags={"tags": settings.tags})
account = AccountBootstrap(
    "account",
    AccountBootstrapArgs(
        gitlab_url=settings.gitlab_url,
        issuer_url=settings.oidc_issuer_url,
        thumbprints=settings.oidc_thumbprints,
        project_path=settings.gitlab_project_path,
        preview_role_name=settings.preview_role_name,
        state_bucket=settings.state_bucket,
        state_prefix=settings.state_prefix,
        secrets_key_alias=settings.secrets_key_alias,
        # the raw table (exports) and its back-filled snapshots are data too
        data_prefixes=(layout.events, layout.quarantine, layout.exports, layout.snapshots, layout.curated),
        # every object of these is data: discarded batches' whole change images, and query results
        data_bucket_patterns=account_data_bucket_patterns(settings.product_code),
    ),
    pulumi.ResourceOptions(providers=[provider]),
)

pulumi.export("oidc_provider_arn", account.oidc_provider_arn)
pulumi.export("preview_role_arn", account.preview_role_arn)
pulumi.export("secrets_key_arn", account.secrets_key_arn)
pulumi.export("state_backend_url", settings.state_backend_url)
