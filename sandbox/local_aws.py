"""The embedded local AWS: a moto server on 127.0.0.1 with one stack's resources, usable as a library.

    with local_aws("dev1") as aws:
        aws.endpoint_url            # http://127.0.0.1:<port>, also in $AWS_ENDPOINT_URL inside the block
        aws.outputs                 # ops.outputs.StackOutputs of the local stack
        aws.outputs_file            # the same as JSON; $STACK_OUTPUTS_FILE names it inside the block
        with aws.pipeline() as pipe:   # the bridge and the event source mapping, invoking the handler
            ...

Inside the block the process environment points boto3 (and the handler, and pyarrow) at the local endpoint with
the local administrator's credentials; on exit the environment is restored and the server stopped.

IAM is enforced (``enforce_iam=True``, the default): the stack's roles are created from the program's policy
builders (``sandbox/roles.py``) and every request is authorized. ``aws.client(service)`` is the administrator (set-up,
inspection); ``aws.client(service, role="ci")`` and ``aws.roles.session(role)`` act as a role: the pipeline runs the
handler and the event source mapping as the processor role, the demo and the e2e suite act as the CI role.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from components.function_environment import lambda_environment
from components.settings import Settings, settings_from_stack_file
from ops.outputs import OUTPUTS_FILE_VARIABLE, StackOutputs
from sandbox.provision import ACCOUNT_ID, DEFAULT_SHARDS, LocalNames, local_names, provision
from sandbox.roles import RoleSessions, assume_roles, enforce, local_role_documents, provision_roles
from sandbox.server import FaultRule, MotoProcess, moto_server

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from sandbox.bridge import StreamBridge
    from sandbox.mapping import Function, MappingConfig
    from sandbox.runner import LocalPipeline

__all__ = ["DEFAULT_STACK", "FAKE_CREDENTIALS", "LocalAws", "local_aws", "patched_environment"]

DEFAULT_STACK = "dev1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Variables that would send boto3 elsewhere (a profile, a session token, SSO): removed inside the block.
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE")
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)


@contextlib.contextmanager
def patched_environment(values: Mapping[str, str], cleared: tuple[str, ...] = ()) -> Iterator[None]:
    """Set ``values`` and remove ``cleared`` in ``os.environ``; restore exactly what was there on exit."""
    saved = {name: os.environ.get(name) for name in (*values, *cleared)}
    try:
        for name in cleared:
            os.environ.pop(name, None)
        os.environ.update(values)
        # boto3's default session keeps the credentials it first resolved (each local AWS has its own keys)
        boto3.DEFAULT_SESSION = None
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        boto3.DEFAULT_SESSION = None


@dataclass
class LocalAws:
    """A running local AWS holding one stack's resources."""

    endpoint_url: str
    settings: Settings
    names: LocalNames
    outputs: StackOutputs
    outputs_file: Path
    server: MotoProcess
    roles: RoleSessions | None = None
    """The enforced roles' sessions (None when IAM is not enforced)."""

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def environment(self) -> dict[str, str]:
        """The handler's environment variables (what the Pulumi program sets on the function)."""
        return lambda_environment(self.settings, self.outputs.bucket_name, self.names.prefixes)

    def session(self, role: str | None = None) -> boto3.Session:
        """The administrator's session, or ``role``'s (the same administrator when IAM is not enforced)."""
        if self.roles is None:
            return _session(self.region)
        return self.roles.session(role) if role else self.roles.admin_session()

    def client(self, service: str, role: str | None = None) -> Any:
        """A boto3 client on the local endpoint, as the administrator or as ``role``."""
        return self.session(role).client(service, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    def credentials(self, role: str | None = None) -> dict[str, str]:
        """The ``AWS_*`` credential variables of the administrator or of ``role``."""
        if self.roles is None:
            return dict(FAKE_CREDENTIALS)
        if role is None:
            admin = self.roles.admin
            return {"AWS_ACCESS_KEY_ID": admin["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": admin["SecretAccessKey"]}
        return self.roles.environment(role)

    def filesystem(self, role: str | None = None) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem on the local endpoint, as the administrator or as ``role``."""
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow's S3 support initialises on first use

        scheme, _, address = self.endpoint_url.partition("://")
        credentials = self.credentials(role)
        return pafs.S3FileSystem(
            access_key=credentials["AWS_ACCESS_KEY_ID"],
            secret_key=credentials["AWS_SECRET_ACCESS_KEY"],
            session_token=credentials.get("AWS_SESSION_TOKEN"),
            region=self.region,
            endpoint_override=address,
            scheme=scheme,
            allow_bucket_creation=False,
        )

    def denials(self) -> list[str]:
        """Calls the local AWS refused to a role so far, each naming role, action and resource."""
        return [] if self.roles is None else [denial.describe() for denial in self.roles.denials]

    def faults(self, *rules: FaultRule) -> contextlib.AbstractContextManager[MotoProcess]:
        """Make the server fail requests by ``rules`` inside a ``with`` block."""
        return self.server.faults(*rules)

    def mapping_config(self, **overrides: Any) -> MappingConfig:
        """The stack's event source mapping settings, with local overrides (e.g. a shorter batching window)."""
        from sandbox.mapping import MappingConfig  # noqa: PLC0415

        return MappingConfig.from_settings(self.settings, **overrides)

    def bridge(self) -> StreamBridge:
        """The stand-in for the table's streaming destination, active from now on (recorded on the stream)."""
        from datetime import UTC, datetime  # noqa: PLC0415

        from sandbox.bridge import StreamBridge  # noqa: PLC0415
        from sandbox.standins import record_destination  # noqa: PLC0415

        outputs = self.outputs
        bridge = StreamBridge(
            table_name=outputs.table_name,
            stream_name=outputs.stream_name,
            region=self.region,
            precision=self.settings.change_time_precision,
            dynamodb=self.client("dynamodb"),
            dynamodbstreams=self.client("dynamodbstreams"),
            kinesis=self.client("kinesis"),
        )
        record_destination(self.client("kinesis"), outputs.stream_name, datetime.now(UTC))
        return bridge

    def pipeline(
        self, function: Function | None = None, config: MappingConfig | None = None, bridge: StreamBridge | None = None
    ) -> LocalPipeline:
        """The bridge (``bridge``, or a new one) and the event source mapping for this stack (created now, not
        started: use it as a context manager)."""
        from sandbox.runner import LocalPipeline  # noqa: PLC0415

        return LocalPipeline(self, function=function, config=config or self.mapping_config(), bridge=bridge)


def _session(region: str) -> boto3.Session:
    return boto3.Session(
        region_name=region,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def _enforced_roles(setup: boto3.Session, aws: LocalAws) -> RoleSessions:
    """Create the administrator and the roles, assume each role once, then turn authorization on."""
    documents = local_role_documents(aws.settings, aws.names, aws.outputs, ACCOUNT_ID)
    admin = provision_roles(setup, documents, aws.settings.tags)
    credentials = assume_roles(setup, documents, ACCOUNT_ID)
    enforce(aws.endpoint_url)
    return RoleSessions(aws.endpoint_url, aws.region, admin, credentials, documents)


@contextlib.contextmanager
def local_aws(
    stack: str = DEFAULT_STACK,
    *,
    outputs_file: Path | None = None,
    shards: int = DEFAULT_SHARDS,
    settings: Settings | None = None,
    enforce_iam: bool = True,
) -> Iterator[LocalAws]:
    """Start a moto server, create ``stack``'s resources in it, and point this process's environment at it.

    With ``enforce_iam`` the stack's roles are created and assumed, and from then on every request is authorized;
    the environment then holds the administrator's credentials."""
    settings = settings or settings_from_stack_file(stack)
    with contextlib.ExitStack() as stack_of_exits:
        server = stack_of_exits.enter_context(moto_server())
        if outputs_file is None:
            folder = Path(stack_of_exits.enter_context(tempfile.TemporaryDirectory(prefix="dmd-local-aws-")))
            outputs_file = folder / f"outputs-{settings.stack}.json"
        names = local_names(settings)
        base = {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_DEFAULT_REGION": settings.region,
            "AWS_REGION": settings.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        stack_of_exits.enter_context(patched_environment(base, _CLEARED))
        setup = _session(settings.region)
        outputs = provision(setup, settings, shards=shards)
        outputs_file.write_text(json.dumps(outputs.as_dict(), indent=2) + "\n", encoding="utf-8")
        aws = LocalAws(server.endpoint_url, settings, names, outputs, outputs_file, server)
        if enforce_iam:
            aws.roles = _enforced_roles(setup, aws)
            stack_of_exits.enter_context(patched_environment(aws.credentials()))
        stack_of_exits.enter_context(patched_environment({OUTPUTS_FILE_VARIABLE: str(outputs_file), **aws.environment}))
        yield aws
