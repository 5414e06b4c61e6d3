"""JPEG, PNG, WebP and BMP: formats that are decoded and encoded whole.

Pillow reads the header first, so a declared size above the pixel limit is refused before
any memory is spent. JPEG EXIF orientation is applied on read (and reset in the copied EXIF),
ICC profiles, EXIF and resolution are carried to the output. 16-bit PNGs go through OpenCV,
whose BGR order is converted at the door.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ConfigError, InputError
from ..pixels import Layout
from .base import ArrayReader, Band, ImageInfo, Writer, collect

#: default limit on decoded size for whole-image formats; TILEDEHAZE_MAX_PIXELS or --max-pixels raise it
DEFAULT_MAX_PIXELS = 500_000_000
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "MPO": "jpeg"}
Image.MAX_IMAGE_PIXELS = None  # we apply our own, clearer limit
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # decode failures become InputError, not stderr noise


def max_pixels(limit: int | None = None) -> int:
    if limit is not None:
        return limit
    return int(os.environ.get("TILEDEHAZE_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 else 8


def read_raster(path: str | Path, *, pixel_limit: int | None = None) -> ArrayReader:
    path = Path(path)
    with _open(path) as im:
        fmt, meta = _header(path, im)
        w, h = im.size
        limit = max_pixels(pixel_limit)
        if w * h > limit:
            raise InputError(f"{path}: declares {w}x{h} = {w * h / 1e6:.0f} MP, above the limit of {limit / 1e6:.0f} MP "
                             "for formats decoded whole; raise it with --max-pixels or TILEDEHAZE_MAX_PIXELS, "
                             "or convert to tiled TIFF")
        try:
            if fmt == "png" and _png_bit_depth(path) == 16:
                pixels = _read_png16(path)
            else:
                if fmt == "jpeg":
                    im = ImageOps.exif_transpose(im)
                pixels = _pil_to_array(im)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: cannot decode image ({type(exc).__name__}: {str(exc)[:120]})") from None
    return ArrayReader(pixels, fmt, {"raster": meta})


def probe_raster(path: str | Path) -> ImageInfo:
    """The :class:`ImageInfo` :func:`read_raster` would give, from the header alone (no pixels decoded)."""
    path = Path(path)
    with _open(path) as im:
        fmt, meta = _header(path, im)
        w, h = im.size
        if fmt == "jpeg" and im.getexif().get(0x0112) in (5, 6, 7, 8):
            w, h = h, w  # read_raster turns these upright
        mode = _decoded_mode(im)
        if fmt == "png" and _png_bit_depth(path) == 16:
            dtype = np.dtype(np.uint16)
        else:
            dtype = np.dtype({"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I": np.uint16,
                              "F": np.float32}.get(mode, np.uint8))
        bands = Image.getmodebands(mode) if mode in ("LA", "RGB", "RGBA") else 1
        shape = (h, w) if bands == 1 else (h, w, bands)
        layout = Layout.of(shape, dtype)
        return ImageInfo(h, w, layout.channels, layout.squeeze, dtype, fmt, {"raster": meta})


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown format, or a damaged header)") from None
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise InputError(f"{path}: truncated or damaged image header ({type(exc).__name__}"
                         f"{': ' + text[0][:120] if text else ''})") from None


def _header(path: Path, im: Image.Image) -> tuple[str, dict]:
    """The format and the metadata to carry over, from an opened image; refuses what we cannot restore."""
    fmt = FORMATS.get(im.format or "")
    if fmt is None:
        raise InputError(f"{path}: {im.format} images are not supported (use TIFF, JPEG, PNG, WebP or BMP)")
    if 0 in im.size:
        raise InputError(f"{path}: image has no pixels")
    meta = {"icc_profile": im.info.get("icc_profile"), "dpi": im.info.get("dpi")}
    if fmt == "jpeg":
        exif = im.getexif()
        if exif:
            orientation = exif.get(0x0112)
            exif[0x0112] = 1  # orientation is applied on read
            meta["exif"] = exif.tobytes()
            if orientation is None:  # the image's own EXIF still decides how it is turned upright
                del exif[0x0112]
            else:
                exif[0x0112] = orientation
    return fmt, meta


def _decoded_mode(im: Image.Image) -> str:
    """The Pillow mode :func:`_pil_to_array` converts ``im`` to before taking its pixels."""
    mode = im.mode
    if mode == "1":
        return "L"
    if mode == "La":
        return "LA"
    if mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "PA"):
        return "RGBA" if "transparency" in im.info or mode in ("RGBa", "PA") else "RGB"
    return mode


def _pil_to_array(im: Image.Image) -> np.ndarray:
    mode = _decoded_mode(im)
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16).copy()
    if mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32).copy()
    return np.array(im if mode == im.mode else im.convert(mode))


def _read_png16(path: Path) -> np.ndarray:
    """16-bit PNG in RGB(A) order (Pillow would cut it to 8 bits); libpng errors become InputError."""
    import imagecodecs

    try:
        return imagecodecs.png_decode(path.read_bytes())
    except Exception as exc:
        raise InputError(f"{path}: cannot decode PNG ({str(exc)[:120]})") from None


class RasterWriter(Writer):
    """Collects the bands (these formats are encoded whole) and encodes with Pillow or OpenCV."""

    def __init__(self, fmt: str, quality: int = 95):
        self.fmt = fmt
        self.quality = quality

    def write(self, path, info: ImageInfo, bands: Iterator[Band]) -> None:
        check_writable(self.fmt, info)
        pixels = collect(info, bands)
        if pixels.dtype == np.uint16:  # 16-bit PNG
            bgr = pixels if pixels.ndim == 2 else cv2.cvtColor(
                pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".png", bgr)
            if not ok:
                raise OSError("PNG encoding failed")
            Path(path).write_bytes(buf.tobytes())
            return
        meta = info.metadata.get("raster", {})
        im = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
        options: dict = {}
        if meta.get("icc_profile") and self.fmt != "bmp":
            options["icc_profile"] = meta["icc_profile"]
        if meta.get("dpi"):
            options["dpi"] = meta["dpi"]
        if meta.get("exif") and self.fmt in ("jpeg", "webp", "png"):
            options["exif"] = meta["exif"]
        if self.fmt == "jpeg":
            options.update(quality=self.quality, subsampling=0)
        elif self.fmt == "webp":
            options.update(quality=self.quality)
        im.save(path, format=self.fmt.upper(), **options)


def check_writable(fmt: str, info: ImageInfo) -> None:
    """Refuse combinations a format cannot store, before any work is done."""
    dtype = np.dtype(info.dtype)
    if info.channels > 4 or (info.bands is not None and info.channels > 1):
        raise ConfigError(f"{fmt.upper()} cannot store {info.channels} bands; write a .tif output instead")
    if dtype.kind == "f":
        raise ConfigError(f"{fmt.upper()} cannot store {dtype} pixels; write a .tif output instead")
    if dtype == np.uint16 and fmt != "png":
        raise ConfigError(f"{fmt.upper()} cannot store 16-bit pixels; write a .png or .tif output instead")
    if fmt == "jpeg" and info.layout.has_alpha:
        raise ConfigError("JPEG cannot store an alpha channel; write a .png, .webp or .tif output instead")
