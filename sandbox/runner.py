"""The local pipeline: the bridge and the event source mapping, pumped by one background thread.

The function is ``pipeline.handler.handler`` unless another is given; tests swap it (and the mapping's
settings) for a while with ``using(...)`` to inject crashes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from sandbox.bridge import StreamBridge
from sandbox.mapping import Function, KinesisEventSourceMapping, MappingConfig
from sandbox.standins import record_mapping

if TYPE_CHECKING:
    from sandbox.local_aws import LocalAws

__all__ = ["LocalPipeline", "PipelineTimeoutError", "PolicyDeniedInPipelineError", "default_function"]

log = logging.getLogger(__name__)
# How long an idle pass waits before the next: Lambda polls a Kinesis shard about once a second, so a quarter of a
# second keeps the local pipeline as prompt as AWS's while sparing the local AWS most of the empty GetRecords calls.
_IDLE_SECONDS = 0.25


class PipelineTimeoutError(TimeoutError):
    """The pipeline did not settle in time; the message says what was still outstanding."""


class PolicyDeniedInPipelineError(RuntimeError):
    """A role's policy refused a call the pipeline made (its handler would retry it forever)."""

    def __init__(self, denials: list[str]) -> None:
        super().__init__("IAM denied: " + "; ".join(dict.fromkeys(denials)))
        self.denials = denials


def default_function(s3: Any = None) -> Function:
    """A cold start of ``pipeline.handler`` of its own, with this process's current environment.

    Lambda gives every execution environment its own import of the handler module; so does this. The module is
    executed afresh and kept out of ``sys.modules``: its settings (read at import) and its cached S3 client are
    this local AWS's, and no other test that reloads or patches ``pipeline.handler`` can change them. ``s3``: the
    client its writes use (one acting as the function's role), instead of one from the process's credentials.
    """
    spec = importlib.util.find_spec("pipeline.handler")
    if spec is None or spec.loader is None:
        raise ImportError("pipeline.handler is not importable")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if s3 is not None:
        module.processor.store.client = s3
    function: Function = module.handler
    return function


_FUNCTION_S3_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=16)
PROCESSOR_ROLE = "processor"


class LocalPipeline:
    """DynamoDB stream -> bridge -> Kinesis -> mapping -> function, in a background thread."""

    def __init__(
        self,
        aws: LocalAws,
        *,
        function: Function | None = None,
        config: MappingConfig,
        bridge: StreamBridge | None = None,
    ) -> None:
        self.aws = aws
        # As in AWS, the function and its event source mapping (reading the stream, writing discarded batches to
        # the failure bucket) act as the function's role; the bridge stands in for DynamoDB itself.
        role = PROCESSOR_ROLE if aws.roles is not None else None
        function_s3 = aws.session(role).client("s3", endpoint_url=aws.endpoint_url, config=_FUNCTION_S3_CONFIG)
        self.handler: Function = default_function(function_s3 if role else None)
        """This pipeline's own cold start of ``pipeline.handler.handler`` (what fault tests wrap)."""
        outputs = aws.outputs
        self.bridge = bridge or aws.bridge()
        self.mapping = KinesisEventSourceMapping(
            kinesis=aws.client("kinesis", role=role),
            s3=aws.client("s3", role=role),
            stream_name=outputs.stream_name,
            stream_arn=outputs.stream_arn,
            function=function or self.handler,
            function_name=outputs.function_name,
            function_arn=outputs.function_alias_arn,
            on_failure_bucket=outputs.failure_bucket_name,
            config=config,
            region=aws.region,
        )
        record_mapping(
            aws.client("kinesis"),
            outputs.stream_name,
            uuid=self.mapping.uuid,
            position=config.starting_position,
            timestamp=config.starting_position_timestamp,
            created=datetime.now(UTC),
        )
        self._denials_before = len(aws.denials())  # refusals before this pipeline existed are not its own
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> LocalPipeline:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="local-pipeline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                moved = self.step()
            except Exception as error:  # the loop must survive a hiccup of the local server
                log.exception("local pipeline step failed")
                self.errors.append(error)
                moved = 0
                self._stop.wait(0.5)
            if not moved:
                self._stop.wait(_IDLE_SECONDS)

    def step(self) -> int:
        """One pass: forward new table changes to Kinesis, then poll the shards; return what moved."""
        return self.bridge.pump() + self.mapping.poll()

    # -- swapping the function or settings for a while ---------------------------------------------------------
    @contextlib.contextmanager
    def using(self, function: Function | None = None, config: MappingConfig | None = None) -> Iterator[None]:
        """Invoke ``function`` and/or apply ``config`` inside the block, then restore the previous ones."""
        mapping = self.mapping
        saved = (mapping.function, mapping.config)
        with mapping._lock:
            mapping.function = function or mapping.function
            mapping.config = config or mapping.config
        try:
            yield
        finally:
            with mapping._lock:
                mapping.function, mapping.config = saved

    # -- waiting -----------------------------------------------------------------------------------------------
    @property
    def settled(self) -> int:
        """Records the mapping is done with: checkpointed after the function, or discarded."""
        stats = self.mapping.stats
        return stats.records_checkpointed + stats.records_discarded

    def wait_until(
        self,
        done: Callable[[], bool],
        *,
        timeout: float,
        what: Callable[[], str],
        progress: Callable[[], Any] | None = None,
    ) -> None:
        """Wait until ``done()``; after ``timeout`` s raise ``PipelineTimeoutError`` naming what is outstanding."""
        deadline = time.monotonic() + timeout
        while not done():
            denials = self.aws.denials()[self._denials_before :]
            if denials:
                raise PolicyDeniedInPipelineError(denials)
            if self.errors:
                raise RuntimeError(f"the local pipeline failed: {self.errors[-1]!r}") from self.errors[-1]
            if time.monotonic() > deadline:
                raise PipelineTimeoutError(f"not settled after {timeout:.0f} s: {what()}")
            if progress is not None:
                progress()
            time.sleep(0.05)
        if progress is not None:
            progress()

    def wait_for_changes(
        self,
        expected: int,
        *,
        timeout: float = 60.0,
        progress: Callable[[], Any] | None = None,
        unread: int = 0,
    ) -> None:
        """Wait until the bridge has streamed ``expected`` changes in all, and the mapping has settled them all.

        ``unread``: changes the bridge streamed before the mapping's starting position (AT_TIMESTAMP), which it
        never reads; ``expected`` does not count them.
        """

        def done() -> bool:
            streamed = self.bridge.forwarded - unread
            return streamed >= expected and self.settled >= streamed

        def what() -> str:
            return (
                f"{self.bridge.forwarded - unread}/{expected} changes streamed, {self.settled} settled by the mapping, "
                f"{self.mapping.pending_records()} pending"
            )

        self.wait_until(done, timeout=timeout, what=what, progress=progress)
