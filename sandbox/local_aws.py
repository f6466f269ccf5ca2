"""The embedded local AWS: a moto server on 127.0.0.1 with one stack's resources, usable as a library.

    with local_aws("dev1") as aws:
        aws.endpoint_url            # http://127.0.0.1:<port>, also in $AWS_ENDPOINT_URL inside the block
        aws.outputs                 # ops.outputs.StackOutputs of the local stack
        aws.outputs_file            # the same as JSON; $STACK_OUTPUTS_FILE names it inside the block
        with aws.pipeline() as pipe:   # the bridge and the event source mapping, invoking the handler
            ...

Inside the block the process environment points boto3 (and the handler, and pyarrow) at the local endpoint with
fake credentials; on exit the environment is restored and the server stopped.
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
from sandbox.provision import DEFAULT_SHARDS, LocalNames, local_names, provision
from sandbox.server import FaultRule, MotoProcess

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
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class LocalAws:
    """A running local AWS holding one stack's resources."""

    endpoint_url: str
    settings: Settings
    names: LocalNames
    outputs: StackOutputs
    outputs_file: Path
    server: MotoProcess

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def environment(self) -> dict[str, str]:
        """The handler's environment variables (what the Pulumi program sets on the function)."""
        return lambda_environment(self.settings, self.outputs.bucket_name, self.names.prefixes)

    def session(self) -> boto3.Session:
        return _session(self.region)

    def client(self, service: str) -> Any:
        """A boto3 client on the local endpoint."""
        return self.session().client(service, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    def filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem on the local endpoint."""
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow's S3 support initialises on first use

        scheme, _, address = self.endpoint_url.partition("://")
        return pafs.S3FileSystem(
            access_key=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=self.region,
            endpoint_override=address,
            scheme=scheme,
            allow_bucket_creation=False,
        )

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


@contextlib.contextmanager
def local_aws(
    stack: str = DEFAULT_STACK,
    *,
    outputs_file: Path | None = None,
    shards: int = DEFAULT_SHARDS,
    settings: Settings | None = None,
) -> Iterator[LocalAws]:
    """Start a moto server, create ``stack``'s resources in it, and point this process's environment at it."""
    settings = settings or settings_from_stack_file(stack)
    with contextlib.ExitStack() as stack_of_exits:
        server = stack_of_exits.enter_context(MotoProcess())
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
        outputs = provision(_session(settings.region), settings, shards=shards)
        outputs_file.write_text(json.dumps(outputs.as_dict(), indent=2) + "\n", encoding="utf-8")
        aws = LocalAws(server.endpoint_url, settings, names, outputs, outputs_file, server)
        stack_of_exits.enter_context(patched_environment({OUTPUTS_FILE_VARIABLE: str(outputs_file), **aws.environment}))
        yield aws
