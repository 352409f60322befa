"""Where inputs come from: a local path, or a URL (``https://``, ``s3://``, ``gs://``) or GDAL
virtual path (``/vsicurl/…``, ``/vsizip/…``) kept exactly as given.

``pathlib.Path("https://host/a.tif")`` becomes ``https:/host/a.tif``; a :class:`RemoteSource`
is the string itself, with the few path-like attributes the pipeline asks of an input (its
name for messages and output names, whether it exists) so local and remote inputs flow
through the same code. rasterio and fiona open both (a URL through GDAL's ``/vsicurl/``,
``/vsis3/``, ``/vsigs/``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import TypeAlias
from urllib.parse import urlsplit

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class RemoteSource(str):
    """A URL or GDAL virtual path, kept as given; path-like where the pipeline needs it."""

    @property
    def _path(self) -> PurePosixPath:
        return PurePosixPath(urlsplit(self).path if SCHEME.match(self) else str(self))

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def stem(self) -> str:
        return self._path.stem

    @property
    def suffix(self) -> str:
        return self._path.suffix

    def exists(self) -> bool:
        """Remote inputs are not looked for here: opening them says whether they exist."""
        return True

    def is_dir(self) -> bool:
        return False

    def resolve(self) -> RemoteSource:
        return self

    def __fspath__(self) -> str:
        return str(self)


Source: TypeAlias = "Path | RemoteSource"


def is_remote(value: str | os.PathLike) -> bool:
    text = os.fspath(value)
    return bool(SCHEME.match(text)) or text.startswith("/vsi")


def as_source(value: str | os.PathLike) -> Source:
    """A local input as a :class:`Path`; a URL or ``/vsi…`` path as a :class:`RemoteSource`."""
    if isinstance(value, RemoteSource):
        return value
    text = os.fspath(value)
    return RemoteSource(text) if is_remote(text) else Path(text)
