"""The moto server of the local AWS, in its own process, with a switch to make requests fail on purpose.

moto keeps its state in module-level backends, which ``mock_aws`` in any other test of the same process would
reset; running the server as a child process keeps the local AWS's state its own (and off the handler's GIL).

``python -m sandbox.server`` binds 127.0.0.1 on an ephemeral port, prints ``{"port": N}`` on one line, and
serves until stdin closes or it is terminated. A control path, ``/_sandbox/faults``, sets fault rules: requests
of a service, method and path fragment answered with an error for a number of requests or seconds, as AWS does
when it throttles or an outage starts. Underscores are not valid in bucket names, so the path cannot clash.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, Any

__all__ = [
    "FAULTS_PATH",
    "FaultRule",
    "MotoProcess",
    "answer_items_as_json",
    "list_moto_modules_once",
    "list_versions_without_copying_bodies",
    "moto_server",
    "refuse_stale_glue_table_versions",
    "reuse_servers",
    "serve",
]

FAULTS_PATH = "/_sandbox/faults"
LOOPBACK = "127.0.0.1"
_SERVICE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_STARTUP_SECONDS = 60.0

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class FaultRule:
    """Answer matching requests with an error: ``count`` times (0 = no limit) or for ``seconds`` (0 = no limit)."""

    service: str
    method: str = "PUT"
    path_contains: str = ""
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    count: int = 0
    seconds: float = 0.0
    hits: int = 0
    started: float = field(default_factory=time.monotonic)

    def active(self, now: float) -> bool:
        if self.count and self.hits >= self.count:
            return False
        return not (self.seconds and now - self.started >= self.seconds)

    def matches(self, service: str, method: str, path: str) -> bool:
        return service == self.service and method == self.method and self.path_contains in path


class FaultInjector:
    """WSGI middleware: answers the control path, and fails the requests that an active rule matches."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == FAULTS_PATH:
            return self._control(environ, start_response)
        match = _SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if match and self._rules:
            rule = self._matching_rule(match.group(1), environ.get("REQUEST_METHOD", ""), path)
            if rule is not None:
                return self._error(rule, start_response)
        return self._app(environ, start_response)

    def _matching_rule(self, service: str, method: str, path: str) -> FaultRule | None:
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.active(now) and rule.matches(service, method, path):
                    rule.hits += 1
                    return rule
        return None

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        with self._lock:
            if method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                self._rules = [FaultRule(**{k: v for k, v in rule.items() if k != "started"}) for rule in body["rules"]]
            elif method == "DELETE":
                self._rules = []
            payload = json.dumps({"rules": [asdict(rule) for rule in self._rules]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    @staticmethod
    def _error(rule: FaultRule, start_response: StartResponse) -> Iterable[bytes]:
        request_id = uuid.uuid4().hex
        if rule.service == "s3":
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{rule.code}</Code>'
                f"<Message>{rule.message}</Message><RequestId>{request_id}</RequestId></Error>"
            ).encode()
            content_type = "application/xml"
        else:
            body = json.dumps({"__type": rule.code, "message": rule.message}).encode()
            content_type = "application/x-amz-json-1.1"
        start_response(
            f"{rule.status} {rule.code}",
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("x-amz-request-id", request_id)],
        )
        return [body]


def list_moto_modules_once() -> None:
    """moto's server finds the backend of every request by listing its own package's folders (a ``listdir`` and an
    ``isdir`` per service, about a third of the CPU it spends on a request); the folders do not change while it
    runs, so the list is read once."""
    from moto import backends  # noqa: PLC0415 - moto's server is heavy; only this process needs it

    if getattr(backends.list_of_moto_modules, "listed_once", False):
        return
    modules = tuple(backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    list_of_moto_modules.listed_once = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = list_of_moto_modules


def answer_items_as_json() -> None:
    """Answer DynamoDB Streams ``GetRecords`` and DynamoDB ``Scan`` and ``Query`` with ``json.dumps`` of moto's
    answer, not its shape-walking serializer.

    moto's records and items are already DynamoDB JSON (``eventID``, ``dynamodb.NewImage``, ``Items`` and the rest,
    as the services return them); its serializer walks every attribute of every image against the service model,
    about 1 s of the server's CPU for 1,000 records: the largest single cost of the local AWS in the demo (every
    change the bridge forwards is read this way, and every current-state check scans the table). Only times and
    binary values need converting, as that serializer does."""
    from moto.core.responses import ActionResult  # noqa: PLC0415 - moto's server is heavy; only this process needs it
    from moto.core.serialize import TimestampSerializer  # noqa: PLC0415
    from moto.dynamodb.responses import DynamoHandler  # noqa: PLC0415
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler  # noqa: PLC0415

    def wire(value: Any) -> Any:
        """A time as moto's serializer writes one (epoch seconds to the millisecond); bytes as base64."""
        if isinstance(value, datetime):
            return TimestampSerializer._timestamp_unixtimestamp(value)
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        raise TypeError(f"an item or stream record holds a {type(value).__name__}: {value!r}")

    def as_json(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def answer_json(self: Any) -> Any:
            answer = original(self)
            if isinstance(answer, ActionResult) and isinstance(answer.result, dict):
                return json.dumps(answer.result, default=wire)
            return answer

        answer_json.answers_json = True  # type: ignore[attr-defined]
        return answer_json

    for handler, action in ((DynamoDBStreamsHandler, "get_records"), (DynamoHandler, "scan"), (DynamoHandler, "query")):
        original = getattr(handler, action)
        if not getattr(original, "answers_json", False):
            setattr(handler, action, as_json(original))


def list_versions_without_copying_bodies() -> None:
    """Make moto's ``ListObjectVersions`` copy each version's attributes, not its bytes.

    moto deep-copies every version of every key of the bucket on each listing (to mark which is latest on the
    copies), and a deep copy of a key reads its body and writes it to a new temporary file: each listing, even of
    one prefix, costs the whole bucket's bytes. Here, during a listing only (per thread: the server answers in
    threads), a key's or delete marker's copy has its attributes and no body; the listing reads only names, version
    ids, ETags, sizes and times."""
    from moto.s3.models import FakeDeleteMarker, FakeKey, S3Backend  # noqa: PLC0415 - only this process needs it

    original = S3Backend.list_object_versions
    if getattr(original, "copies_attributes", False):
        return
    listing = threading.local()

    def __deepcopy__(self: Any, memo: dict[int, Any]) -> Any:  # noqa: N807 - the copy protocol's name
        if getattr(listing, "active", False):
            clone = object.__new__(type(self))
            if isinstance(self, FakeKey):
                _ = self.etag  # computed from the body (and kept) on the original: the copy has no body
            clone.__dict__.update(self.__dict__)
            if isinstance(self, FakeKey):
                # No body of its own, and disposed already: its __del__ must not close the original's body.
                clone.__dict__.update(_value_buffer=None, multipart=None, disposed=True)
            return clone
        return copy._reconstruct(self, memo, *self.__reduce_ex__(4))  # type: ignore[attr-defined]  # the default

    def list_object_versions(self: Any, *args: Any, **kwargs: Any) -> Any:
        listing.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            listing.active = False

    for model in (FakeKey, FakeDeleteMarker):
        model.__deepcopy__ = __deepcopy__
    list_object_versions.copies_attributes = True  # type: ignore[attr-defined]
    S3Backend.list_object_versions = list_object_versions


def refuse_stale_glue_table_versions() -> None:
    """Make moto's Glue ``UpdateTable`` check ``VersionId`` as Glue does (moto ignores it).

    Iceberg's Glue catalog commits a table by ``UpdateTable`` with the version it read: a stale version must be
    refused with ``ConcurrentModificationException``, or two concurrent commits both "succeed" and one is lost.
    The check and the update run under one lock, so two requests cannot both pass the check.
    """
    from moto.glue.exceptions import GlueClientError  # noqa: PLC0415 - moto's server is heavy; only this process
    from moto.glue.responses import GlueResponse  # noqa: PLC0415

    class ConcurrentModificationError(GlueClientError):
        def __init__(self, message: str) -> None:
            super().__init__("ConcurrentModificationException", message)

    original = GlueResponse.update_table
    if getattr(original, "checks_version", False):
        return
    lock = threading.Lock()

    def update_table(self: Any) -> Any:
        version = self.parameters.get("VersionId")
        with lock:
            if version is not None:
                database = self.parameters.get("DatabaseName")
                name = (self.parameters.get("TableInput") or {}).get("Name")
                table = self.glue_backend.get_table(database, name)
                current = str(table._current_version)
                if str(version) != current:
                    raise ConcurrentModificationError(
                        f"Update table failed due to concurrent modifications: version {version} is not the "
                        f"table's current version {current}"
                    )
            return original(self)

    update_table.checks_version = True  # type: ignore[attr-defined]
    GlueResponse.update_table = update_table


def serve(port: int = 0, announce: IO[str] | None = None) -> None:
    """Serve moto with fault injection on 127.0.0.1 until stdin closes; announce the bound port as JSON."""
    from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 - moto's server is heavy; only this process needs it
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server  # noqa: PLC0415

    from sandbox.authorization import install as install_authorization  # noqa: PLC0415

    class QuietRequestHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """One line per request would drown the demo's output."""

    refuse_stale_glue_table_versions()
    list_moto_modules_once()
    answer_items_as_json()
    list_versions_without_copying_bodies()
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when this server stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    install_authorization()  # enforced once the local AWS turns authorization on (sandbox/roles.py)
    app = FaultInjector(DomainDispatcherApplication(create_backend_app))
    server = make_server(LOOPBACK, port, app, threaded=True, request_handler=QuietRequestHandler)
    out = announce or sys.stdout
    out.write(json.dumps({"port": server.server_port}) + "\n")
    out.flush()

    # The parent holds our stdin open; when it goes away (even killed), stop serving instead of lingering.
    def stop_when_orphaned() -> None:
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    server.serve_forever()


class MotoProcess:
    """A child process serving moto on 127.0.0.1; ``endpoint_url`` once started. Use as a context manager."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise RuntimeError("the moto server is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> MotoProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.pop(name, None)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._process.stdout is not None
        result: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: result.update(line=self._process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(_STARTUP_SECONDS)
        line = result.get("line") or ""
        if not line:
            self.stop()
            raise RuntimeError(f"the moto server did not announce its port within {_STARTUP_SECONDS:.0f} s")
        self.port = int(json.loads(line)["port"])
        return self

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the moto server is not started")
        return self._process.pid

    def alive(self) -> bool:
        """Whether the server process is running (False once it has exited or was killed)."""
        return self._process is not None and self._process.poll() is None

    def exit_status(self) -> int | None:
        """The server's exit status once it has exited (negative: killed by that signal), else None."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> MotoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to an empty server: no resources, no fault rules, requests no longer authorized."""
        self.clear_faults()
        for path, body in (("/moto-api/reset", b""), ("/moto-api/reset-auth", b"inf")):
            request = urllib.request.Request(  # noqa: S310 - our own loopback server
                self.endpoint_url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own loopback server
                response.read()

    def _control(self, method: str, payload: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.endpoint_url + FAULTS_PATH, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own loopback server
            rules: list[dict[str, Any]] = json.loads(response.read())["rules"]
        return rules

    def set_faults(self, *rules: FaultRule) -> None:
        """Replace the fault rules (an empty call clears them)."""
        payload = {"rules": [{k: v for k, v in asdict(rule).items() if k not in ("hits", "started")} for rule in rules]}
        self._control("POST", payload)

    def fault_hits(self) -> list[int]:
        """How many requests each current rule has failed."""
        return [int(rule["hits"]) for rule in self._control("GET")]

    def clear_faults(self) -> None:
        self._control("DELETE")

    @contextlib.contextmanager
    def faults(self, *rules: FaultRule) -> Iterator[MotoProcess]:
        """Fail requests by these rules inside the ``with`` block; clear them on the way out."""
        self.set_faults(*rules)
        try:
            yield self
        finally:
            self.clear_faults()


_idle: list[MotoProcess] = []
_idle_lock = threading.Lock()
_reuse = False


def reuse_servers() -> None:
    """From now on a server this process is done with is reset and kept for the next ``moto_server()``.

    For the test suite, where booting moto (about 2 s of CPU) for every local AWS adds up; a server's state never
    outlives its user: ``reset`` empties every backend before the server is kept.
    """
    global _reuse  # noqa: PLW0603 - one switch for the whole process
    _reuse = True


@contextlib.contextmanager
def moto_server() -> Iterator[MotoProcess]:
    """A started, empty moto server: a kept one (after ``reuse_servers()``), or a new one; stopped or kept after."""
    with _idle_lock:
        server = _idle.pop() if _idle else None
    if server is None or not server.alive():
        server = MotoProcess().start()
    try:
        yield server
    finally:
        _release(server)


def _release(server: MotoProcess) -> None:
    if _reuse and server.alive():
        try:
            server.reset()
        except OSError:
            pass
        else:
            with _idle_lock:
                _idle.append(server)
            return
    server.stop()


if __name__ == "__main__":
    serve()
