"""pyiceberg's Glue catalog for the stack's database, on AWS or on the local AWS (an endpoint override)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.catalog.glue import GlueCatalog

__all__ = ["glue_catalog"]


def glue_catalog(
    region: str,
    *,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
) -> GlueCatalog:
    """A Glue catalog whose tables' files go through pyarrow's S3 filesystem in ``region`` (``curator.file_io``).

    ``endpoint_url`` (the local AWS) sends both Glue and S3 there; credentials default to the environment's (a role's
    temporary credentials come with their ``session_token``).
    """
    from pyiceberg.catalog.glue import GlueCatalog  # noqa: PLC0415 - a 1.5-2 s import: only the curator pays it

    properties = {
        "glue.region": region,
        "s3.region": region,
        "py-io-impl": "curator.file_io.SinglePutFileIO",
    }
    if endpoint_url:
        properties.update(
            {"glue.endpoint": endpoint_url, "s3.endpoint": endpoint_url, "s3.force-virtual-addressing": "false"}
        )
    if access_key_id and secret_access_key:
        properties.update(
            {
                "glue.access-key-id": access_key_id,
                "glue.secret-access-key": secret_access_key,
                "s3.access-key-id": access_key_id,
                "s3.secret-access-key": secret_access_key,
            }
        )
        if session_token:
            properties.update({"glue.session-token": session_token, "s3.session-token": session_token})
    catalog: GlueCatalog = GlueCatalog("curated", None, **properties)
    return catalog
