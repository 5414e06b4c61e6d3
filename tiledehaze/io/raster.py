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
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown format, or a damaged header)") from None
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise InputError(f"{path}: truncated or damaged image header ({type(exc).__name__}"
                         f"{': ' + text[0][:120] if text else ''})") from None
    with im:
        fmt = FORMATS.get(im.format or "")
        if fmt is None:
            raise InputError(f"{path}: {im.format} images are not supported (use TIFF, JPEG, PNG, WebP or BMP)")
        w, h = im.size
        limit = max_pixels(pixel_limit)
        if w * h > limit:
            raise InputError(f"{path}: declares {w}x{h} = {w * h / 1e6:.0f} MP, above the limit of {limit / 1e6:.0f} MP "
                             "for formats decoded whole; raise it with --max-pixels or TILEDEHAZE_MAX_PIXELS, "
                             "or convert to tiled TIFF")
        if w == 0 or h == 0:
            raise InputError(f"{path}: image has no pixels")
        meta = {"icc_profile": im.info.get("icc_profile"), "dpi": im.info.get("dpi")}
        try:
            if fmt == "png" and _png_bit_depth(path) == 16:
                pixels = _read_png16(path)
            else:
                if fmt == "jpeg":
                    exif = im.getexif()
                    im = ImageOps.exif_transpose(im)
                    if exif:
                        exif[0x0112] = 1  # orientation has been applied
                        meta["exif"] = exif.tobytes()
                pixels = _pil_to_array(im)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: cannot decode image ({type(exc).__name__}: {str(exc)[:120]})") from None
    return ArrayReader(pixels, fmt, {"raster": meta})


def _pil_to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or mode in ("RGBa", "PA") else "RGB") \
            if mode not in ("1", "La") else im.convert("L" if mode == "1" else "LA")
    elif mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16).copy()
    elif mode == "I":
        arr = np.asarray(im)
        return np.clip(arr, 0, 65535).astype(np.uint16)
    elif mode == "F":
        return np.asarray(im, dtype=np.float32).copy()
    return np.array(im)


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
    if dtype.kind == "f":
        raise ConfigError(f"{fmt.upper()} cannot store {dtype} pixels; write a .tif output instead")
    if dtype == np.uint16 and fmt != "png":
        raise ConfigError(f"{fmt.upper()} cannot store 16-bit pixels; write a .png or .tif output instead")
    if fmt == "jpeg" and info.layout.has_alpha:
        raise ConfigError("JPEG cannot store an alpha channel; write a .png, .webp or .tif output instead")
