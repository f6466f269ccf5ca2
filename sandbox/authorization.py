"""IAM authorization in the local AWS's moto server: what moto checks, made closer to what IAM checks.

moto authorizes a request signed with an assumed role's temporary credentials against that role's policies once
its no-auth request count is used up (``/moto-api/reset-auth``). Out of the box it names a resource only for S3
(bucket and object ARNs); every other service is checked against the resource ``*``, which no statement scoped to
an exact ARN matches, so a role with ``kinesis:GetRecords`` on its stream would be refused. ``install()`` (run in
the server process only) adds what this pipeline's calls need:

- CloudWatch's actions named as IAM names them (``cloudwatch:``, not its signing name ``monitoring:``);
- the ARN a request acts on, for DynamoDB (table), Kinesis (stream), Glue (database, or table: ``CreateTable`` and
  ``UpdateTable`` name it in their ``TableInput``), Athena (workgroup),
  CloudWatch (alarm) and CloudWatch Logs (log group); an action of those services that names none of them is
  checked on its action alone;
- Lambda calls are authorized without checking their signature (moto computes it over another encoding of the
  path and would refuse every one); their access key is still checked;
- the local administrator may assume a role whose trust names only service principals (moto cannot evaluate
  one): it stands in for Lambda handing a function its role;
- AWS's own wording in a denial, ``User: <arn> is not authorized to perform: <action> on resource: <arn>``, as
  ``AccessDenied`` (XML services, S3) or ``AccessDeniedException`` (JSON services), so callers can name all three;
- in an identity policy, the ``Null`` operator on ``s3:if-none-match`` and ``s3:if-match``, the keys S3 sets from a
  request's ``If-None-Match`` and ``If-Match`` headers (``PutObject``; ``DeleteObject`` has ``s3:if-match`` only),
  with IAM's semantics: a statement whose condition does not hold does not apply (moto ignores conditions in
  identity policies, and where it evaluates one, a failed condition denies).

What stays more lenient than IAM (tests check the policy documents for these instead): every other condition in an
identity policy (``s3:prefix``, another operator on the two keys above...) is ignored, and so is every condition
key other than ``StringEquals`` on trust policies (``aws:SourceArn``...); S3 answers 404 for a missing key whatever
the caller may list; resource-based policies, KMS key policies and SCPs are not evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

__all__ = [
    "ADMIN_USER",
    "denial_message",
    "install",
    "null_conditions_hold",
    "request_condition_keys",
    "trusts_services_only",
]

ADMIN_USER = "local-admin"
"""The set-up identity (``sandbox/roles.py``); it also stands in for the services that hand a function its role."""

_JSON_TARGET_SERVICES = ("dynamodb", "kinesis", "glue", "athena", "logs")
# The condition keys S3 sets from a request's conditional headers, by the action the request is authorized as.
_HEADER_KEYS = {
    "s3:PutObject": {"if-none-match": "s3:if-none-match", "if-match": "s3:if-match"},
    "s3:DeleteObject": {"if-match": "s3:if-match"},
}
_EVALUATED_NULL_KEYS = frozenset(key for keys in _HEADER_KEYS.values() for key in keys.values())
# The condition keys of the request being authorized (set around moto's check; one request per thread).
_REQUEST_KEYS: ContextVar[Mapping[str, str] | None] = ContextVar("request_condition_keys", default=None)
# IAM's action prefix where it differs from the signing name moto takes it from.
_ACTION_PREFIXES = {"monitoring": "cloudwatch"}


def _is_json(headers: Any) -> bool:
    content_type = next((str(value) for name, value in headers.items() if name.lower() == "content-type"), "")
    return "json" in content_type


def denial_message(principal: str, action: str, resource: str) -> str:
    """The message AWS gives an identity-based denial."""
    return f"User: {principal} is not authorized to perform: {action} on resource: {resource}"


def _arn(response: Any, service: str, suffix: str) -> str:
    return f"arn:aws:{service}:{response.region}:{response.current_account}:{suffix}"


def _param(response: Any, name: str) -> str | None:
    try:
        value = response._get_param(name)
    except Exception:  # a body this parser cannot read names no resource
        return None
    return value if isinstance(value, str) and value else None


def _dynamodb_resource(response: Any) -> str:
    table = _param(response, "TableName")
    if table is None:
        items = response._get_param("RequestItems") if hasattr(response, "_get_param") else None
        table = next(iter(items), None) if isinstance(items, dict) else None
    if table is None:
        return "*"
    return table if table.startswith("arn:") else _arn(response, "dynamodb", f"table/{table}")


def _kinesis_resource(response: Any) -> str:
    arn = _param(response, "StreamARN")
    if arn:
        return arn
    name = _param(response, "StreamName")
    return _arn(response, "kinesis", f"stream/{name}") if name else "*"


def _table_input_name(response: Any) -> str | None:
    """``TableInput.Name`` of CreateTable and UpdateTable: the table they act on (IAM checks that table's ARN)."""
    try:
        table_input = response._get_param("TableInput")
    except Exception:  # a body this parser cannot read names no resource
        return None
    name = table_input.get("Name") if isinstance(table_input, dict) else None
    return name if isinstance(name, str) and name else None


def _glue_resource(response: Any) -> str:
    database = _param(response, "DatabaseName")
    table = _param(response, "TableName") or (
        (_param(response, "Name") or _table_input_name(response)) if database else None
    )
    if database and table:
        return _arn(response, "glue", f"table/{database}/{table}")
    database = database or _param(response, "Name")
    return _arn(response, "glue", f"database/{database}") if database else _arn(response, "glue", "catalog")


def _athena_resource(response: Any) -> str:
    workgroup = _param(response, "WorkGroup")
    return _arn(response, "athena", f"workgroup/{workgroup}") if workgroup else "*"


def _cloudwatch_resource(response: Any) -> str:
    # botocore sends CloudWatch's calls as JSON (AlarmNames a list); the AWS CLI v1 as a query (AlarmNames.member.1)
    try:
        names = response._get_param("AlarmNames")
    except Exception:  # a body this parser cannot read names no resource
        names = None
    listed = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    alarm = listed or _param(response, "AlarmNames.member.1") or _param(response, "AlarmName")
    return _arn(response, "cloudwatch", f"alarm:{alarm}") if alarm else "*"


def _logs_resource(response: Any) -> str:
    group = _param(response, "logGroupName")
    if not group:
        return "*"
    stream = _param(response, "logStreamName")
    return _arn(response, "logs", f"log-group:{group}:" + (f"log-stream:{stream}" if stream else "*"))


def request_condition_keys(action: str, headers: Any) -> dict[str, str]:
    """The condition keys (of those this server evaluates) a request sets: ``s3:if-none-match`` and ``s3:if-match``
    from its headers, for the actions S3 defines them on."""
    keys = _HEADER_KEYS.get(action, {})
    return {keys[name.lower()]: str(value) for name, value in headers.items() if name.lower() in keys}


def null_conditions_hold(condition: Mapping[str, Any], present: Mapping[str, str]) -> bool:
    """Whether a statement's ``Null`` conditions on the keys this server evaluates hold for a request setting the
    keys ``present``: ``"true"`` holds for a key the request does not set, ``"false"`` for one it does (a list of
    values: any of them). Other operators and keys are not evaluated here (they hold)."""
    nulls = condition.get("Null")
    if not isinstance(nulls, Mapping):
        return True
    for key, expected in nulls.items():
        if key not in _EVALUATED_NULL_KEYS:
            continue
        wanted = "false" if key in present else "true"
        values = expected if isinstance(expected, list) else [expected]
        if not any(str(value).lower() == wanted for value in values):
            return False
    return True


def trusts_services_only(document: Any) -> bool:
    """True when every principal a trust policy names is a service (Lambda, Step Functions, Scheduler)."""
    trust = json.loads(document) if isinstance(document, str) else document
    principals = [statement.get("Principal") for statement in trust.get("Statement", [])]
    return bool(principals) and all(isinstance(p, dict) and set(p) == {"Service"} for p in principals)


def _patch_statements(access_control: Any) -> None:
    """Statements name the resource they are checked on; an identity policy's statement evaluates ``Null`` on the
    conditional-write keys of the request being checked, and one on the resource ``*`` matches any resource."""
    base = access_control.IAMRequestBase
    check = base.check_action_permitted

    def check_action_permitted(self: Any, resource: str) -> None:
        self._sandbox_resource = resource
        token = _REQUEST_KEYS.set(request_condition_keys(self._action, self._headers))
        try:
            check(self, resource)
        finally:
            _REQUEST_KEYS.reset(token)

    base.check_action_permitted = check_action_permitted
    statement = access_control.IAMPolicyStatement
    permits = statement.is_action_permitted

    def is_action_permitted(
        self: Any,
        action: str,
        resource: str = "*",
        principal: str | None = None,
        incoming_condition_values: dict[str, str] | None = None,
    ) -> Any:
        # An identity policy's statement (moto passes no principal and no condition values for one) whose Null
        # condition on a conditional-write key does not hold does not apply: neither allows nor denies.
        condition = self._statement.get("Condition")
        identity = principal is None and incoming_condition_values is None
        present = _REQUEST_KEYS.get() or {}
        if identity and isinstance(condition, Mapping) and not null_conditions_hold(condition, present):
            return access_control.PermissionResult.NEUTRAL
        return permits(self, action, resource, principal, incoming_condition_values)

    statement.is_action_permitted = is_action_permitted
    matches = statement._check_element_matches

    def check_element_matches(self: Any, element: str, value: str) -> bool:
        # A request whose resource could not be named is checked on its action alone.
        if element == "Resource" and value == "*":
            return True
        return bool(matches(self, element, value))

    statement._check_element_matches = check_element_matches


def install() -> None:
    """Patch moto (in this process) as the module docstring says."""
    from moto.athena.responses import AthenaResponse  # noqa: PLC0415 - moto is heavy; only the server needs it
    from moto.cloudwatch.responses import CloudWatchResponse  # noqa: PLC0415
    from moto.core.exceptions import AccessDeniedError, JsonRESTError  # noqa: PLC0415
    from moto.dynamodb.responses import DynamoHandler  # noqa: PLC0415
    from moto.glue.responses import GlueResponse  # noqa: PLC0415
    from moto.iam import access_control  # noqa: PLC0415
    from moto.kinesis.responses import KinesisResponse  # noqa: PLC0415
    from moto.logs.responses import LogsResponse  # noqa: PLC0415
    from moto.s3.exceptions import S3ClientError  # noqa: PLC0415

    for response_class, resolve in (
        (DynamoHandler, _dynamodb_resource),
        (KinesisResponse, _kinesis_resource),
        (GlueResponse, _glue_resource),
        (AthenaResponse, _athena_resource),
        (CloudWatchResponse, _cloudwatch_resource),
        (LogsResponse, _logs_resource),
    ):
        setattr(response_class, "_determine_resource", resolve)  # noqa: B010 - moto looks it up by this name

    base = access_control.IAMRequestBase
    initialise = base.__init__

    def initialise_with_iam_prefix(self: Any, *args: Any, **kwargs: Any) -> None:
        initialise(self, *args, **kwargs)
        prefix, _, name = self._action.partition(":")
        self._action = f"{_ACTION_PREFIXES.get(prefix, prefix)}:{name}"

    base.__init__ = initialise_with_iam_prefix

    trusted = base._check_role_trust_relationship

    def check_role_trust_relationship(self: Any, role_arn: str) -> bool:
        # moto cannot evaluate a service principal in a trust policy (it fails on one). Lambda hands a function its
        # role; locally the administrator stands in for it, and for Step Functions and the Scheduler, on those
        # roles only: a command that runs a function's code acts as the function's role, as Lambda would.
        document = self.backend.get_role_by_arn(role_arn).assume_role_policy_document
        if self._access_key.arn.endswith(f":user/{ADMIN_USER}") and trusts_services_only(document):
            return True
        return bool(trusted(self, role_arn))

    base._check_role_trust_relationship = check_role_trust_relationship

    verify = base.check_signature

    def check_signature(self: Any) -> None:
        # moto recomputes Lambda's signature over a differently encoded path (``$LATEST``, ``:`` in ARNs) and
        # refuses every Lambda call: the key is still checked (an unknown one is refused), the signature is not.
        if self._service != "lambda":
            verify(self)

    base.check_signature = check_signature

    def message(self: Any) -> str:
        return denial_message(self._access_key.arn, self._action, getattr(self, "_sandbox_resource", "*"))

    def deny_s3(self: Any) -> None:
        raise S3ClientError("AccessDenied", message(self))

    def deny(self: Any) -> None:
        if self._service in _JSON_TARGET_SERVICES or _is_json(self._headers):  # CloudWatch: JSON or a query
            raise JsonRESTError("AccessDeniedException", message(self))
        resource = getattr(self, "_sandbox_resource", "*")
        raise AccessDeniedError(user_arn=self._access_key.arn, action=f"{self._action} on resource: {resource}")

    access_control.S3IAMRequest._raise_access_denied = deny_s3
    access_control.IAMRequest._raise_access_denied = deny

    _patch_statements(access_control)
