"""Uploaded images: check what they are, restore them with the engine, each in its own folder."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import tifffile
from PIL import Image, UnidentifiedImageError

from ..api import process_file
from ..errors import InputError
from ..io import open_image
from ..io.raster import FORMATS
from ..options import RunOptions
from .pyramid import box_overview, encode_png

#: file extension and media type of each format the engine reads
MEDIA = {
    "jpeg": (".jpg", "image/jpeg"), "png": (".png", "image/png"), "webp": (".webp", "image/webp"),
    "bmp": (".bmp", "image/bmp"), "tiff": (".tif", "image/tiff"),
}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class NotAnImage(InputError):
    """The upload is not an image in a format the engine reads."""


class TooLarge(InputError):
    """The upload holds more pixels than the server accepts."""


@dataclass(frozen=True)
class Restored:
    path: Path
    media_type: str
    filename: str


def safe_stem(filename: str | None) -> str:
    """A file name stem fit for a Content-Disposition header."""
    stem = Path(filename or "image").stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:100] or "image"


def sniff(path: Path, name: str, max_pixels: int) -> str:
    """The upload's format, from its header only; refuses non-images and images above ``max_pixels``."""
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head in _TIFF_MAGIC:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                width, height, fmt = page.imagewidth, page.imagelength, "tiff"
        else:
            with Image.open(path) as im:
                (width, height), fmt = im.size, FORMATS.get(im.format or "")
    except (UnidentifiedImageError, OSError, ValueError, IndexError, tifffile.TiffFileError):
        raise NotAnImage(f"{name}: not an image (use TIFF, JPEG, PNG, WebP or BMP)") from None
    if fmt is None:
        raise NotAnImage(f"{name}: this image format is not supported (use TIFF, JPEG, PNG, WebP or BMP)")
    if width * height > max_pixels:
        raise TooLarge(f"{name}: {width}x{height} pixels is above this server's limit of "
                       f"{max_pixels / 1e6:g} MP per upload")
    return fmt


class Workspace:
    """A private folder for one request, removed when the response has been sent."""

    def __init__(self, root: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="upload-", dir=root))

    def save(self, upload: IO[bytes], name: str) -> Path:
        path = self.dir / name
        with open(path, "wb") as f:
            shutil.copyfileobj(upload, f, 1 << 20)
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_facing(exc: InputError, path: Path, name: str) -> InputError:
    """The engine names the temporary file; the user knows the name they uploaded."""
    return type(exc)(str(exc).replace(str(path), name))


def restore_upload(work: Workspace, upload: IO[bytes], filename: str | None, *, max_pixels: int,
                   options: RunOptions) -> Restored:
    """Restore an uploaded image into the same format (metadata kept as ``tiledehaze process`` keeps it)."""
    name = Path(filename or "upload").name
    raw = work.save(upload, "upload")
    fmt = sniff(raw, name, max_pixels)
    ext, media_type = MEDIA[fmt]
    src = raw.rename(raw.with_suffix(ext))
    dst = work.dir / f"restored{ext}"
    try:
        process_file(src, dst, max_pixels=max_pixels, options=options)
    except InputError as exc:
        raise _user_facing(exc, src, name) from None
    return Restored(dst, media_type, f"{safe_stem(filename)}_dehazed{ext}")


def preview_upload(work: Workspace, upload: IO[bytes], filename: str | None, *, max_pixels: int,
                   max_side: int = 4096) -> bytes:
    """An 8-bit PNG of any image the engine reads (16-bit, float, TIFF), at most ``max_side`` wide."""
    name = Path(filename or "upload").name
    raw = work.save(upload, "upload")
    sniff(raw, name, max_pixels)
    try:
        with open_image(raw, pixel_limit=max_pixels) as reader:
            factor = max(1, -(-max(reader.info.height, reader.info.width) // max_side))
            return encode_png(box_overview(reader.info, reader.read, factor))
    except InputError as exc:
        raise _user_facing(exc, raw, name) from None
