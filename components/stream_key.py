"""Which KMS key the stream function must be allowed to decrypt with, from what the stream lookup reports.

Kinesis reports the ``KeyId`` it was given when encryption was started: a key ARN, a bare key id, an alias name or
an alias ARN. IAM grants ``kms:Decrypt`` on key ARNs only, so an alias is resolved to its key first (a Pulumi data
source, in the component), and a bare id is qualified with the stream's own region and account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AWS_MANAGED_KINESIS_KEY", "StreamKey", "StreamKeyError", "stream_key"]

# Kinesis's AWS managed key: its key policy already lets the account's principals use it through Kinesis.
AWS_MANAGED_KINESIS_KEY = "alias/aws/kinesis"
_STREAM_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):kinesis:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):stream/.+$"
)
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
_ALIAS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>alias/.+)$")
_KEY_ID = re.compile(r"^(mrk-)?[A-Za-z0-9-]{32,36}$")


class StreamKeyError(ValueError):
    """The stream lookup reported a key this program cannot turn into a key ARN: set streamKmsKeyArn."""


@dataclass(frozen=True)
class StreamKey:
    """What to grant: nothing, a key ARN, or the key behind an alias (resolved by the caller)."""

    key_arn: str | None = None
    alias_name: str | None = None  # "alias/..." in the stream's account and region

    @property
    def needs_grant(self) -> bool:
        return self.key_arn is not None or self.alias_name is not None


def stream_key(encryption_type: str | None, key_id: str | None, stream_arn: str) -> StreamKey:
    """The key to grant for a stream that reports ``encryption_type`` / ``key_id`` (as ``DescribeStream`` does)."""
    if (encryption_type or "NONE").upper() != "KMS" or not key_id:
        return StreamKey()
    stream = _STREAM_ARN.match(stream_arn)
    if stream is None:
        raise StreamKeyError(f"not a Kinesis stream ARN: {stream_arn!r}")
    if key_id == AWS_MANAGED_KINESIS_KEY or key_id.endswith(f":{AWS_MANAGED_KINESIS_KEY}"):
        return StreamKey()
    if _KEY_ARN.match(key_id):
        return StreamKey(key_arn=key_id)
    alias_arn = _ALIAS_ARN.match(key_id)
    if alias_arn is not None:
        if (alias_arn["region"], alias_arn["account"]) != (stream["region"], stream["account"]):
            raise StreamKeyError(
                f"stream {stream_arn} is encrypted with {key_id}, an alias of another account or region that cannot"
                " be resolved from here: set streamKmsKeyArn to the key's ARN"
            )
        return StreamKey(alias_name=alias_arn["name"])
    if key_id.startswith("alias/"):
        return StreamKey(alias_name=key_id)
    if _KEY_ID.match(key_id):
        return StreamKey(
            key_arn=f"arn:{stream['partition']}:kms:{stream['region']}:{stream['account']}:key/{key_id}",
        )
    raise StreamKeyError(
        f"stream {stream_arn} reports KMS key {key_id!r}, neither a key ARN, key id nor alias: set streamKmsKeyArn"
    )
