"""The stack's IAM roles in the local AWS, from the program's own policy builders, and sessions that act as them.

Each role gets the documents ``components.policies`` builds for the deployed stack (the arguments ``__main__.py``
and ``bootstrap/__main__.py`` pass, with the local ARNs), is assumed once, and then enforced: after
``enforce()`` the moto server checks every request signed with a role's temporary credentials against that role's
policies (``sandbox/authorization.py`` says how closely). Set-up stays with an administrator user created first.

A denied call raises ``PolicyDeniedError`` naming the role, the action and the resource, and is recorded in
``RoleSessions.denials`` so the local pipeline (whose handler turns a failed write into a retry) fails at once.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from components.naming import account_data_bucket_patterns
from components.policies import (
    CURATED_TABLES,
    backfill_function_policy,
    backfill_state_machine_policy,
    ci_access_policy,
    curator_policy,
    lambda_trust_policy,
    preview_access_policy,
    processor_policy,
    state_machine_arn,
    states_trust_policy,
)
from components.settings import Settings
from ops.outputs import StackOutputs
from sandbox.authorization import ADMIN_USER

if TYPE_CHECKING:
    from sandbox.provision import LocalNames

__all__ = [
    "ADMIN_USER",
    "ROLES",
    "Denial",
    "PolicyDeniedError",
    "RoleDocuments",
    "RoleSessions",
    "UnknownStatementError",
    "assume_roles",
    "enforce",
    "local_role_documents",
    "provision_roles",
]

ROLE_SESSION = "local"
# The local stand-in for AWS's managed ReadOnlyAccess (moto does not load managed policies by default): the
# Get/List/Describe of the services this pipeline uses, which the preview role's explicit denies must override.
READ_ONLY_STANDIN = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "ReadOnlyAccessStandIn",
            "Effect": "Allow",
            "Action": [
                "athena:Get*",
                "athena:List*",
                "cloudwatch:Describe*",
                "cloudwatch:Get*",
                "dynamodb:Describe*",
                "dynamodb:Get*",
                "dynamodb:Query",
                "dynamodb:Scan",
                "glue:Get*",
                "kinesis:Describe*",
                "kinesis:Get*",
                "kinesis:List*",
                "logs:Describe*",
                "logs:FilterLogEvents",
                "logs:Get*",
                "s3:Get*",
                "s3:List*",
            ],
            "Resource": "*",
        }
    ],
}
PREVIEW_ROLE = "prd3292-pulumi-preview"  # bootstrap/ names it per account (previewRoleName)
LOCAL_STATE_BUCKET = "prd3292-pulumi-state-local"
LOCAL_SECRETS_KEY = "arn:aws:kms:{region}:{account}:key/00000000-0000-0000-0000-000000000000"
# Web identity (GitLab's OIDC token) stands in as an assumption by the administrator: moto checks no token.
_CI_TRUST_STANDIN = "administrator"


@dataclass(frozen=True)
class RoleDocuments:
    """One role: its name, trust policy and inline policies (name -> document)."""

    name: str
    trust: dict[str, Any]
    policies: dict[str, dict[str, Any]]


ROLES = ("processor", "curator", "backfill", "backfill_states", "ci", "preview")
"""The roles the local AWS provisions and enforces (keys of ``local_role_documents``)."""


def _local_arns(settings: Settings, names: LocalNames, outputs: StackOutputs, account: str) -> dict[str, str]:
    region = settings.region
    return {
        "bucket": f"arn:aws:s3:::{names.bucket}",
        "failure_bucket": f"arn:aws:s3:::{names.failure_bucket}",
        "results_bucket": f"arn:aws:s3:::{names.results_bucket}",
        "stream": outputs.stream_arn,
        "table": f"arn:aws:dynamodb:{region}:{account}:table/{names.table}",
        "function": f"arn:aws:lambda:{region}:{account}:function:{names.function}",
        "log_group": f"arn:aws:logs:{region}:{account}:log-group:{names.log_group}",
        "curator_log_group": f"arn:aws:logs:{region}:{account}:log-group:{names.curator_log_group}",
        "workgroup": f"arn:aws:athena:{region}:{account}:workgroup/{names.workgroup}",
        "database": f"arn:aws:glue:{region}:{account}:database/{names.glue_database}",
        "glue_table": f"arn:aws:glue:{region}:{account}:table/{names.glue_database}/{names.glue_table}",
    }


def local_role_documents(
    settings: Settings, names: LocalNames, outputs: StackOutputs, account: str
) -> dict[str, RoleDocuments]:
    """Every enforced role's documents, built by the program's builders with the arguments the program passes."""
    arns = _local_arns(settings, names, outputs, account)
    layout = names.prefixes
    created = settings.naming.resources()
    backfill_log_group = f"arn:aws:logs:{settings.region}:{account}:log-group:/aws/lambda/{created.backfill_function}"
    machine = state_machine_arn(region=settings.region, account_id=account, name=created.backfill_state_machine)
    lambda_trust = lambda_trust_policy()
    return {
        "processor": RoleDocuments(
            created.function,
            lambda_trust,
            {
                "processor": processor_policy(
                    stream_arn=arns["stream"],
                    bucket_arn=arns["bucket"],
                    events_prefix=layout.events,
                    quarantine_prefix=layout.quarantine,
                    failure_bucket_arn=arns["failure_bucket"],
                    log_group_arn=arns["log_group"],
                )
            },
        ),
        "curator": RoleDocuments(
            created.curator_function,
            lambda_trust,
            {
                "curator": curator_policy(
                    bucket_arn=arns["bucket"],
                    events_prefix=layout.events,
                    curated_prefix=layout.curated,
                    snapshot_prefix=layout.snapshots,
                    quarantine_prefix=layout.quarantine,
                    exports_prefix=layout.exports,
                    failure_bucket_arn=arns["failure_bucket"],
                    database_arn=arns["database"],
                    log_group_arn=arns["curator_log_group"],
                )
            },
        ),
        "backfill": RoleDocuments(
            created.backfill_function,
            lambda_trust,
            {
                "backfill": backfill_function_policy(
                    bucket_arn=arns["bucket"],
                    exports_prefix=layout.exports,
                    snapshot_prefix=layout.snapshots,
                    quarantine_snapshots_prefix=f"{layout.quarantine}snapshots/",
                    log_group_arn=backfill_log_group,
                )
            },
        ),
        "backfill_states": RoleDocuments(
            created.backfill_state_machine_role,
            states_trust_policy(state_machine_arn=machine),
            {
                "backfill-states": backfill_state_machine_policy(
                    state_machine_arn=machine,
                    function_arn=f"arn:aws:lambda:{settings.region}:{account}:function:{created.backfill_function}",
                    bucket_arn=arns["bucket"],
                    exports_prefix=layout.exports,
                    results_bucket_arn=arns["results_bucket"],
                    results_prefix="backfill/",
                )
            },
        ),
        "ci": RoleDocuments(
            names.ci_role,
            _assumable_by_admin(account),
            {
                "gitlab-ci": ci_access_policy(
                    table_arn=arns["table"],
                    stream_arn=arns["stream"],
                    function_arn=arns["function"],
                    bucket_arn=arns["bucket"],
                    read_prefixes=(layout.events, layout.quarantine, layout.snapshots, layout.curated, layout.exports),
                    curated_tables=CURATED_TABLES,
                    results_prefix=layout.athena_results,
                    results_bucket_arn=arns["results_bucket"],
                    workgroup_arn=arns["workgroup"],
                    database_arn=arns["database"],
                    table_glue_arn=arns["glue_table"],
                    failure_bucket_arn=arns["failure_bucket"],
                    log_group_arn=arns["log_group"],
                    alarm_arns=_stack_alarm_arns(settings, account),
                )
            },
        ),
        "preview": RoleDocuments(
            PREVIEW_ROLE,
            _assumable_by_admin(account),
            {
                "read-only-access": READ_ONLY_STANDIN,
                "pulumi-preview": preview_access_policy(
                    state_bucket_arn=f"arn:aws:s3:::{LOCAL_STATE_BUCKET}",
                    state_prefix="",
                    secrets_key_arn=LOCAL_SECRETS_KEY.format(region=settings.region, account=account),
                    data_prefixes=(layout.events, layout.quarantine, layout.exports, layout.snapshots, layout.curated),
                    data_bucket_patterns=account_data_bucket_patterns(settings.product_code),
                ),
            },
        ),
    }


def _stack_alarm_arns(settings: Settings, account: str) -> list[str]:
    """The six stream and flow alarms ``__main__.py`` gives the CI role (the ones the smoke check describes)."""
    from components.naming import alarm_name  # noqa: PLC0415
    from ops.smoke import ALARM_ROLES  # noqa: PLC0415 - the roles of components.alarms and components.flow_alarms

    prefix = settings.naming.resources().alarm_prefix
    return [f"arn:aws:cloudwatch:{settings.region}:{account}:alarm:{alarm_name(prefix, role)}" for role in ALARM_ROLES]


def _assumable_by_admin(account: str) -> dict[str, Any]:
    """Locally the administrator assumes the CI and preview roles (GitLab's web identity has no local stand-in)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "LocalAdministrator",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:user/{ADMIN_USER}"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


@dataclass(frozen=True)
class Denial:
    """A call the local AWS refused: which role, which action, on which resource."""

    role: str
    action: str
    resource: str
    operation: str

    def describe(self) -> str:
        return f"role {self.role} may not {self.action} on {self.resource} ({self.operation})"


class UnknownStatementError(LookupError):
    """A statement asked to be removed that the role's policy does not have."""


class PolicyDeniedError(ClientError):
    """A call refused by the role's policy in the local AWS; the message names role, action and resource."""

    def __init__(self, denial: Denial, error_response: Any, operation_name: str) -> None:
        super().__init__(error_response, operation_name)
        self.denial = denial

    def __str__(self) -> str:
        return f"AccessDenied: {self.denial.describe()}"


_DENIAL = re.compile(r"perform: (?P<action>\S+) on resource: (?P<resource>\S+)")


@dataclass
class RoleSessions:
    """Credentials of each assumed role, and boto3 sessions made from them (one per role, cached)."""

    endpoint_url: str
    region: str
    admin: Mapping[str, str]
    credentials: Mapping[str, Mapping[str, str]]
    documents: Mapping[str, RoleDocuments]
    denials: list[Denial] = field(default_factory=list)
    _sessions: dict[str, boto3.Session] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def role_names(self) -> dict[str, str]:
        return {key: role.name for key, role in self.documents.items()}

    @contextlib.contextmanager
    def without_statement(self, role: str, sid: str) -> Iterator[None]:
        """Inside the block ``role``'s policy lacks the statement ``sid`` (as if the program had dropped it)."""
        documents = self.documents[role]
        iam = self.admin_session().client("iam", endpoint_url=self.endpoint_url)
        changed = {
            name: {**document, "Statement": [s for s in document["Statement"] if s.get("Sid") != sid]}
            for name, document in documents.policies.items()
            if any(statement.get("Sid") == sid for statement in document["Statement"])
        }
        if not changed:
            sids = sorted(str(s.get("Sid")) for d in documents.policies.values() for s in d["Statement"])
            raise UnknownStatementError(f"role {role} has no statement {sid!r} (it has: {', '.join(sids)})")
        for name, document in changed.items():
            iam.put_role_policy(RoleName=documents.name, PolicyName=name, PolicyDocument=json.dumps(document))
        try:
            yield
        finally:
            for name in changed:
                original = json.dumps(documents.policies[name])
                iam.put_role_policy(RoleName=documents.name, PolicyName=name, PolicyDocument=original)

    def environment(self, role: str) -> dict[str, str]:
        """The ``AWS_*`` credential variables of ``role`` (what Lambda puts in a function's environment)."""
        creds = self.credentials[role]
        return {
            "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"],
        }

    def admin_session(self) -> boto3.Session:
        return boto3.Session(
            region_name=self.region,
            aws_access_key_id=self.admin["AccessKeyId"],
            aws_secret_access_key=self.admin["SecretAccessKey"],
        )

    def session(self, role: str) -> boto3.Session:
        """A session acting as ``role``; a denied call raises ``PolicyDeniedError`` and is recorded."""
        with self._lock:
            if role not in self._sessions:
                creds = self.credentials[role]
                session = boto3.Session(
                    region_name=self.region,
                    aws_access_key_id=creds["AccessKeyId"],
                    aws_secret_access_key=creds["SecretAccessKey"],
                    aws_session_token=creds["SessionToken"],
                )
                self.watch(session.events, role)
                self._sessions[role] = session
            return self._sessions[role]

    def watch(self, events: Any, role: str) -> None:
        """Raise ``PolicyDeniedError`` (and record it) for every call refused to ``role`` through ``events``."""
        role_name = self.role_names.get(role, role)

        def after_call(parsed: Mapping[str, Any], model: Any, **_: Any) -> None:
            error = parsed.get("Error") or {}
            if error.get("Code") not in ("AccessDenied", "AccessDeniedException"):
                return
            match = _DENIAL.search(str(error.get("Message", "")))
            action, resource = (match["action"], match["resource"]) if match else ("?", "?")
            denial = Denial(role_name, action, resource, model.name)
            self.denials.append(denial)
            raise PolicyDeniedError(denial, dict(parsed), model.name)

        events.register("after-call.*.*", after_call)


def provision_roles(
    session: Any, documents: Mapping[str, RoleDocuments], tags: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Create the administrator user (returns its access key) and the roles, through ``session`` (no auth yet).

    The roles carry ``tags`` as the provider's default tags would (the preflight recognises them as the stack's)."""
    iam = session.client("iam")
    iam.create_user(UserName=ADMIN_USER)
    administrator = {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "SetUp", "Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=ADMIN_USER, PolicyName="administrator", PolicyDocument=json.dumps(administrator))
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    for role in documents.values():
        tag_list = [{"Key": key, "Value": value} for key, value in (tags or {}).items()]
        iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(role.trust), Tags=tag_list)
        for policy_name, document in role.policies.items():
            iam.put_role_policy(RoleName=role.name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def assume_roles(session: Any, documents: Mapping[str, RoleDocuments], account: str) -> dict[str, dict[str, str]]:
    """Assume every role once (before enforcement: moto cannot check a service principal's trust)."""
    sts = session.client("sts")
    credentials: dict[str, dict[str, str]] = {}
    for key, role in documents.items():
        response = sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/{role.name}", RoleSessionName=ROLE_SESSION, DurationSeconds=43200
        )
        creds = response["Credentials"]
        credentials[key] = {name: creds[name] for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    return credentials


def enforce(endpoint_url: str) -> None:
    """From now on the moto server authorizes every request (``INITIAL_NO_AUTH_ACTION_COUNT`` = 0)."""
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        f"{endpoint_url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()
