"""Where the built Lambda artifact lives, and its content digest (local files only, no cloud call)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from components.settings import PROJECT_ROOT

__all__ = ["CURATOR_LAYER_ZIP", "CURATOR_ZIP", "FUNCTION_ZIP", "LAYER_ZIP", "Artifact", "artifact", "file_digest"]

FUNCTION_ZIP = "function.zip"
LAYER_ZIP = "layer.zip"
# The curator's own code (curator/ and the pipeline/ contract it shares) and layer (pyiceberg and what it needs):
# the stream handler's function.zip and layer.zip stay as they are.
CURATOR_ZIP = "curator.zip"
CURATOR_LAYER_ZIP = "curator-layer.zip"


@dataclass(frozen=True)
class Artifact:
    """The zips ``make package`` builds, as paths relative to the project (what Pulumi assets take)."""

    function_zip: str
    layer_zip: str
    layer_digest: str | None  # base64 SHA-256 of layer.zip, None until it has been built
    function_digest: str | None = None  # base64 SHA-256 of function.zip, None until it has been built
    curator_zip: str = f"dist/{CURATOR_ZIP}"
    curator_layer_zip: str = f"dist/{CURATOR_LAYER_ZIP}"
    curator_digest: str | None = None
    curator_layer_digest: str | None = None


def file_digest(path: Path) -> str | None:
    """Base64 SHA-256 of a file (the form Lambda's ``source_code_hash`` uses), or None if it does not exist."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii")


def artifact(artifact_dir: str, root: Path = PROJECT_ROOT) -> Artifact:
    """The artifact under ``artifact_dir`` (relative to the project root)."""
    return Artifact(
        function_zip=f"{artifact_dir}/{FUNCTION_ZIP}",
        layer_zip=f"{artifact_dir}/{LAYER_ZIP}",
        layer_digest=file_digest(root / artifact_dir / LAYER_ZIP),
        function_digest=file_digest(root / artifact_dir / FUNCTION_ZIP),
        curator_zip=f"{artifact_dir}/{CURATOR_ZIP}",
        curator_layer_zip=f"{artifact_dir}/{CURATOR_LAYER_ZIP}",
        curator_digest=file_digest(root / artifact_dir / CURATOR_ZIP),
        curator_layer_digest=file_digest(root / artifact_dir / CURATOR_LAYER_ZIP),
    )
