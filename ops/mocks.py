"""Pulumi mocks for the demand pipeline: realistic outputs per AWS resource type and answers to its lookups.

Every resource the program declares is recorded (type, logical name, inputs, URN) so callers can assert on the
list after the program ran, instead of on Outputs that could silently never resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pulumi

__all__ = ["ACCOUNT_ID", "MOCK_CODE_SHA256", "AwsMocks", "Declared", "UnexpectedInvokeError"]

ACCOUNT_ID = "123456789012"
# CodeSha256 of a function whose zip has not been built (make package): a fixed stand-in.
MOCK_CODE_SHA256 = "bW9jayBjb2RlIHNoYTI1Ng=="
PARTITION = "aws"


class UnexpectedInvokeError(RuntimeError):
    """The program called a data source the mocks do not know: add it here rather than guessing."""


@dataclass(frozen=True)
class Declared:
    """One resource the program declared."""

    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    custom: bool
    provider: str | None
    secret_inputs: tuple[str, ...] = ()  # inputs the engine would store encrypted (recorded here unwrapped)


# How the engine hands a mock a secret value: {<special signature key>: <secret signature>, "value": ...}.
_SIGNATURE_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - a marker, not a password


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SIGNATURE_KEY) == _SECRET_SIGNATURE


def _unwrapped(value: Any) -> Any:
    return value["value"] if _is_secret(value) else value


@dataclass
class AwsMocks(pulumi.runtime.Mocks):
    """Mocks answering as an AWS account would, for one region."""

    region: str = "us-east-1"
    declared: list[Declared] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # (data source token, provider reference): which provider each lookup went through ("" = the default one).
    invoke_providers: list[tuple[str, str]] = field(default_factory=list)
    # What a looked-up stream reports as (EncryptionType, KeyId), and the account's KMS aliases -> key ARNs.
    stream_encryption: tuple[str, str] = ("KMS", "alias/aws/kinesis")
    alias_targets: dict[str, str] = field(default_factory=dict)

    def _arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return ":".join(
            ["arn", PARTITION, service, self.region if region else "", ACCOUNT_ID if account else "", resource]
        )

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = {key: _unwrapped(value) for key, value in dict(args.inputs).items()}
        secret = tuple(sorted(key for key, value in dict(args.inputs).items() if _is_secret(value)))
        resource_id, outputs = self._outputs(args.typ, args.name, inputs)
        self.declared.append(Declared(args.typ, args.name, inputs, outputs, bool(args.custom), args.provider, secret))
        return resource_id, outputs

    def _outputs(self, typ: str, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:  # noqa: PLR0911, PLR0912
        name = str(inputs.get("name") or f"{logical}-generated")
        state = {**inputs}
        if typ == "aws:kinesis/stream:Stream":
            return name, {**state, "arn": self._arn("kinesis", f"stream/{name}")}
        if typ == "aws:lambda/function:Function":
            arn = self._arn("lambda", f"function:{name}")
            # Lambda's CodeSha256 is the base64 SHA-256 of the zip: the digest the program passes, when built.
            code_sha256 = str(inputs.get("sourceCodeHash") or MOCK_CODE_SHA256)
            return name, {
                **state,
                "arn": arn,
                "version": "1",
                "qualifiedArn": f"{arn}:1",
                "invokeArn": f"{arn}/inv",
                "codeSha256": code_sha256,
            }
        if typ == "aws:lambda/alias:Alias":
            function = str(inputs["functionName"]).split(":")[-1]
            return name, {**state, "arn": self._arn("lambda", f"function:{function}:{name}")}
        if typ == "aws:lambda/layerVersion:LayerVersion":
            layer_arn = self._arn("lambda", f"layer:{inputs['layerName']}")
            return f"{layer_arn}:1", {**state, "arn": f"{layer_arn}:1", "layerArn": layer_arn, "version": "1"}
        if typ == "aws:sqs/queue:Queue":
            url = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{name}"
            return url, {**state, "arn": self._arn("sqs", name), "url": url}
        if typ == "aws:scheduler/scheduleGroup:ScheduleGroup":
            return name, {**state, "arn": self._arn("scheduler", f"schedule-group/{name}")}
        if typ == "aws:iam/role:Role":
            return name, {**state, "arn": self._arn("iam", f"role/{name}", region=False), "uniqueId": "AROAMOCK"}
        if typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            host = urlparse(str(inputs["url"])).netloc
            arn = self._arn("iam", f"oidc-provider/{host}", region=False)
            return arn, {**state, "arn": arn}
        if typ == "aws:cloudwatch/logGroup:LogGroup":
            return name, {**state, "arn": self._arn("logs", f"log-group:{name}")}
        if typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            return name, {**state, "arn": self._arn("cloudwatch", f"alarm:{name}")}
        if typ == "aws:athena/workgroup:Workgroup":
            return name, {**state, "arn": self._arn("athena", f"workgroup/{name}")}
        if typ == "aws:glue/catalogDatabase:CatalogDatabase":
            return f"{ACCOUNT_ID}:{name}", {**state, "arn": self._arn("glue", f"database/{name}")}
        if typ == "aws:glue/catalogTable:CatalogTable":
            database = inputs["databaseName"]
            return f"{ACCOUNT_ID}:{database}:{name}", {**state, "arn": self._arn("glue", f"table/{database}/{name}")}
        if typ == "aws:kms/key:Key":
            key_id = "0a1b2c3d-4e5f-4a6b-8c7d-mock00000001"
            return key_id, {**state, "arn": self._arn("kms", f"key/{key_id}"), "keyId": key_id}
        if typ == "aws:sns/topic:Topic":
            return self._arn("sns", name), {**state, "arn": self._arn("sns", name)}
        if typ == "aws:sfn/stateMachine:StateMachine":
            arn = self._arn("states", f"stateMachine:{name}")
            return arn, {**state, "arn": arn}
        if typ == "aws:cloudwatch/dashboard:Dashboard":
            dashboard = str(inputs["dashboardName"])
            return dashboard, {**state, "dashboardArn": self._arn("cloudwatch", f"dashboard/{dashboard}", region=False)}
        if typ == "aws:s3/bucket:Bucket":
            bucket = str(inputs["bucket"])
            return bucket, {**state, "arn": f"arn:{PARTITION}:s3:::{bucket}"}
        return f"{logical}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        arguments = dict(args.args)
        self.invokes.append((args.token, arguments))
        self.invoke_providers.append((args.token, args.provider or ""))
        answer = {
            "aws:kinesis/getStream:getStream": self._stream,
            "aws:dynamodb/getTable:getTable": self._table,
            "aws:s3/getBucket:getBucket": self._bucket,
            "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider": self._oidc_provider,
            "aws:index/getCallerIdentity:getCallerIdentity": self._caller_identity,
            "aws:index/getRegion:getRegion": self._region,
            "aws:index/getPartition:getPartition": self._partition,
            "aws:kms/getAlias:getAlias": self._kms_alias,
        }.get(args.token)
        if answer is None:
            raise UnexpectedInvokeError(f"no mock answer for data source {args.token} {arguments}")
        # The mock monitor expects (result, check failures); a data source found is no failure.
        return answer(arguments), []

    def _stream(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arn = self._arn("kinesis", f"stream/{arguments['name']}")
        return {
            "arn": arn,
            "id": arn,
            "name": arguments["name"],
            "status": "ACTIVE",
            "encryptionType": self.stream_encryption[0],
            "kmsKeyId": self.stream_encryption[1],
            "retentionPeriod": 24,
            "streamModeDetails": [{"streamMode": "ON_DEMAND"}],
        }

    def _table(self, arguments: dict[str, Any]) -> dict[str, Any]:
        name = arguments["name"]
        return {"arn": self._arn("dynamodb", f"table/{name}"), "id": name, "name": name, "hashKey": "pk"}

    def _bucket(self, arguments: dict[str, Any]) -> dict[str, Any]:
        bucket = arguments["bucket"]
        return {"arn": f"arn:{PARTITION}:s3:::{bucket}", "bucket": bucket, "id": bucket, "bucketRegion": self.region}

    def _oidc_provider(self, arguments: dict[str, Any]) -> dict[str, Any]:
        host = urlparse(arguments["url"]).netloc
        arn = self._arn("iam", f"oidc-provider/{host}", region=False)
        return {"arn": arn, "id": arn, "url": host, "clientIdLists": [arguments["url"]]}

    def _caller_identity(self, _: dict[str, Any]) -> dict[str, Any]:
        caller = self._arn("sts", "assumed-role/deployer/session", region=False)
        return {"accountId": ACCOUNT_ID, "arn": caller, "id": ACCOUNT_ID, "userId": "AROAMOCK:session"}

    def _region(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"name": self.region, "region": self.region, "id": self.region}

    def _partition(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"partition": PARTITION, "dnsSuffix": "amazonaws.com", "id": PARTITION}

    def _kms_alias(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """An alias of ``alias_targets`` points at its key; any other alias at one fixed key of the account."""
        name = arguments["name"]
        key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
        target = self.alias_targets.get(name)
        if target is not None:
            key_id = target.rsplit("/", 1)[-1]
        return {
            "arn": self._arn("kms", name),
            "id": name,
            "name": name,
            "targetKeyId": key_id,
            "targetKeyArn": target or self._arn("kms", f"key/{key_id}"),
        }
