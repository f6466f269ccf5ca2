"""The role an ops command acts as on the local AWS, assumed with the administrator's key in the environment.

On AWS, a CI job gets the stack's CI role through GitLab's OIDC exchange and a function's code gets its role from
Lambda. On the local AWS (``AWS_ENDPOINT_URL`` on 127.0.0.1, the key ``make demo ARGS=--keep`` prints) a command
that stands in for CI or for a function assumes the local role of the same name with that key, as the local
administrator may (``sandbox/roles.py``): the local AWS then authorizes its calls against the program's own policy
documents, and a refused call raises ``sandbox.roles.PolicyDeniedError`` naming role, action and resource.

    roles = assume_local_role("ci", "dev1", outputs)
    roles.session("ci").client("cloudwatch")     # acts as the stack's CI role
    roles.environment("curator")                 # AWS_* variables, as Lambda gives a function (another role)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import boto3

from ops.outputs import StackOutputs
from sandbox.roles import ROLE_SESSION, RoleSessions, local_role_documents

__all__ = ["LOCAL_HOSTS", "assume_local_role", "local_endpoint"]

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def local_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The local AWS's endpoint when ``AWS_ENDPOINT_URL`` points at it, else None (a deployed stack)."""
    endpoint = (os.environ if environ is None else environ).get("AWS_ENDPOINT_URL", "")
    return endpoint if any(f"//{host}" in endpoint for host in LOCAL_HOSTS) else None


def assume_local_role(
    role: str, stack: str, outputs: StackOutputs, session: boto3.Session | None = None
) -> RoleSessions:
    """Assume ``role`` (a key of ``sandbox.roles.ROLES``) of the local ``stack`` with ``session``'s credentials
    (default: the environment's, the local administrator's); the sessions hold that one role.

    The role's name comes from the builders that created it (``local_role_documents``), its account from the
    outputs. Raises ``botocore`` errors when the local AWS cannot be reached or refuses the assumption.
    """
    from components.settings import settings_from_stack_file  # noqa: PLC0415 - only the local AWS needs them
    from sandbox.provision import ACCOUNT_ID, local_names  # noqa: PLC0415

    endpoint = local_endpoint()
    if endpoint is None:
        raise ValueError("the local roles exist only on the local AWS (AWS_ENDPOINT_URL on 127.0.0.1)")
    settings = settings_from_stack_file(stack)
    account = outputs.account_id or ACCOUNT_ID
    documents = local_role_documents(settings, local_names(settings), outputs, account)
    chosen = documents[role]
    session = session or boto3.Session(region_name=outputs.region)
    response = session.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{chosen.name}", RoleSessionName=ROLE_SESSION
    )
    credentials = response["Credentials"]
    own = session.get_credentials()
    admin = {"AccessKeyId": own.access_key, "SecretAccessKey": own.secret_key} if own is not None else {}
    return RoleSessions(
        endpoint,
        outputs.region,
        admin,
        {role: {name: credentials[name] for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")}},
        {role: chosen},
    )
