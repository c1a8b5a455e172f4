"""Open images from untrusted files with a named error for anything PIL cannot or should not decode.

PIL refuses images over twice ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb guard: a few kB of
PNG can declare gigapixels) and only warns between one and two times; here both are refused, as are
files PIL cannot identify and truncated or corrupt data, each as an :class:`EmtbenchError` naming the
file. PIL's own limit is used (not a new one), so a user who raises ``Image.MAX_IMAGE_PIXELS`` for
huge scans raises it here too.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

BOMB_FIX = "replace the image; if it really is that large, raise PIL.Image.MAX_IMAGE_PIXELS before running"


def _source(image: str | Path | bytes) -> Any:
    return io.BytesIO(image) if isinstance(image, bytes | bytearray) else image


def _check_size(image: Any, where: str) -> None:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise EmtbenchError(
            f"image of {width}×{height} pixels is over PIL's decompression-bomb limit of {limit:,} pixels",
            where=where,
            fix=BOMB_FIX,
        )


def _named(error: Exception, where: str) -> EmtbenchError:
    from PIL import Image

    if isinstance(error, Image.DecompressionBombError):
        return EmtbenchError(f"decompression bomb: {error}", where=where, fix=BOMB_FIX)
    return EmtbenchError(
        f"cannot decode the image ({type(error).__name__}: {error})",
        where=where,
        fix="replace or delete the file (it is not an image PIL can read, or it is truncated)",
    )


_DECODE_ERRORS = Exception
"""PIL's decoders raise many types on hostile data (OSError, SyntaxError, struct.error, IndexError,
ZeroDivisionError, DecompressionBombError...): each means "not an image we can use"."""


def check_image(image: str | Path | bytes, where: str) -> None:
    """Cheap check that an image can be decoded: its header, its declared size, and PIL's verify()."""
    from PIL import Image

    try:
        with Image.open(_source(image)) as opened:
            _check_size(opened, where)
            opened.verify()
    except EmtbenchError:
        raise
    except _DECODE_ERRORS as error:
        raise _named(error, where) from None


def open_image(image: str | Path | bytes, where: str):
    """The decoded image (pixels loaded, file closed), or a named error."""
    from PIL import Image

    try:
        with Image.open(_source(image)) as opened:
            _check_size(opened, where)
            opened.load()
            return opened.copy()  # closing the file would free the pixels of `opened` itself
    except EmtbenchError:
        raise
    except _DECODE_ERRORS as error:
        raise _named(error, where) from None


def check_encoded_images(cells: Iterable[dict[str, Any] | None], where: str) -> None:
    """Check a ``datasets.Image(decode=False)`` column: each cell holds ``bytes`` or a ``path``."""
    for row, cell in enumerate(cells):
        if cell is None or (cell.get("bytes") is None and not cell.get("path")):
            raise EmtbenchError(f"row {row} has no image", where=where, fix="give every row an image")
        name = cell.get("path") or f"in row {row}"
        try:
            check_image(cell["bytes"] if cell.get("bytes") is not None else cell["path"], where)
        except EmtbenchError as error:
            raise EmtbenchError(
                f"cannot read image {name} (row {row}: {error.problem})", where=where, fix=error.fix
            ) from None
