"""botocore's models are parsed once per process: every session reads them through one loader."""

from __future__ import annotations

import boto3

from sandbox.models import share_loaded_models


def _session(secret: str) -> boto3.Session:
    return boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=secret, region_name="us-east-1")


def test_sessions_share_one_loader_and_keep_their_own_credentials() -> None:
    share_loaded_models()
    first, second = _session("first"), _session("second")
    assert first._session.get_component("data_loader") is second._session.get_component("data_loader")
    glue = second.client("glue")
    assert glue.meta.service_model.service_name == "glue"
    assert first.client("s3").meta.service_model.service_name == "s3"
    secrets = [getattr(session.get_credentials(), "secret_key", None) for session in (first, second)]
    assert secrets == ["first", "second"]
