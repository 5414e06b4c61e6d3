"""Reading and writing images of any size; see :mod:`.base` for the interfaces."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, InputError
from .base import ArrayReader, Band, ImageInfo, Reader, Writer, collect
from .raster import RasterWriter, check_writable, probe_raster, read_raster
from .cog import CogWriter
from .tiff import TiffReader, TiffWriter

EXTENSIONS = {
    ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png",
    ".webp": "webp", ".bmp": "bmp",
}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def format_of_path(path: str | Path) -> str:
    fmt = EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: unknown output format {Path(path).suffix!r}; "
                          f"use one of {', '.join(sorted(EXTENSIONS))}")
    return fmt


def open_image(path: str | Path, *, pixel_limit: int | None = None, bands: tuple[int, ...] | None = None) -> Reader:
    """Open an image for band reads; the format is taken from its content, not its name.

    ``bands`` (1-based) names the one or three bands of a multi-band TIFF the model sees.
    """
    if _is_tiff(path):
        return TiffReader(path, bands=bands)
    if bands is not None:
        raise ConfigError(f"{path}: --bands applies to TIFF inputs")
    return read_raster(path, pixel_limit=pixel_limit)


def probe(path: str | Path) -> ImageInfo:
    """The :class:`ImageInfo` :func:`open_image` would give, from the header: no pixels are decoded.

    Raises :class:`InputError` as :func:`open_image` does (except for the pixel limit).
    """
    if _is_tiff(path):
        with TiffReader(path, warn=False) as reader:
            return reader.info
    return probe_raster(path)


def _is_tiff(path: str | Path) -> bool:
    """Whether the file holds a TIFF (by its content); :class:`InputError` when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror})") from None
    if not head:
        raise InputError(f"{path}: file is empty")
    return head in _TIFF_MAGIC


def writer_for(path: str | Path, info: ImageInfo, *, compression: str | None = None,
               quality: int = 95, cog: bool = False) -> Writer:
    """The writer for ``path``'s format; a COG when asked, or when the source has overviews or a mask."""
    fmt = format_of_path(path)
    meta = info.metadata.get("tiff", {})
    if fmt == "tiff" and (cog or meta.get("overviews") or meta.get("mask")):
        # a source's overviews are rebuilt as many as it had; --cog alone makes GDAL's count
        return CogWriter(compression=compression, overviews=meta.get("overviews") or (None if cog else 0))
    if cog:
        raise ConfigError(f"--cog writes a TIFF; {path} is a {fmt.upper()} output")
    if fmt == "tiff":
        return TiffWriter(compression=compression)
    if compression not in (None, "keep"):
        raise ConfigError(f"--compression applies to TIFF outputs, not {fmt.upper()}")
    check_writable(fmt, info)
    return RasterWriter(fmt, quality=quality)


__all__ = ["ArrayReader", "Band", "ImageInfo", "Reader", "Writer", "collect", "format_of_path",
           "open_image", "probe", "writer_for", "TiffReader", "TiffWriter"]
