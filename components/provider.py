"""The stack's AWS provider: region and profile from settings, the four tags as default tags."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.settings import Settings

__all__ = ["aws_provider"]


def aws_provider(name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> aws.Provider:
    """An explicit provider so every resource and lookup uses the stack's region, profile and default tags."""
    return aws.Provider(
        name,
        region=settings.region,
        profile=settings.profile,
        default_tags={"tags": settings.tags},
        opts=opts,
    )
