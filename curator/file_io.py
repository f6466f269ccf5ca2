"""The curator's FileIO: pyiceberg's pyarrow FileIO, with S3 writes of one request for a file smaller than a part."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiceberg.io.pyarrow import PyArrowFileIO

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

__all__ = ["SinglePutFileIO"]


class SinglePutFileIO(PyArrowFileIO):
    """pyiceberg's pyarrow FileIO whose S3 filesystem opens a file for writing only when its first part is ready
    (``allow_delayed_open``): a file smaller than one part is written with one PutObject instead of a multipart
    upload's three requests (create, part, complete). That is every metadata file, manifest and manifest list and
    the ``registrations`` event files a run writes (hundreds a run at the documented load), each one round trip
    instead of three. pyiceberg passes no such option, so the filesystem it builds is rebuilt with it, from the
    options pyarrow itself pickles it with."""

    def _initialize_s3_fs(self, netloc: str | None) -> FileSystem:
        built = super()._initialize_s3_fs(netloc)
        rebuild, (options,) = built.__reduce__()
        filesystem: FileSystem = rebuild({**options, "allow_delayed_open": True})
        return filesystem
