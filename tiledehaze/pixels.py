"""Conversions between stored pixels and what models see.

Models see float32 RGB in [0, 1]. Stored images may be gray, gray+alpha, RGB or RGBA in
uint8, uint16, float32 or float64; channel order is always RGB(A) here (readers convert
OpenCV's BGR at the door). Gray is replicated to RGB for the model and averaged back; alpha
never reaches the model and is passed through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


@dataclass(frozen=True)
class Layout:
    """Channel layout of a stored image: (H, W) or (H, W, C) with C in 1..4."""

    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    squeeze: bool  # stored as (H, W) without a channel axis

    @property
    def color(self) -> int:
        return 1 if self.channels <= 2 else 3

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @classmethod
    def of(cls, shape: tuple[int, ...], dtype) -> "Layout":
        check_dtype(dtype)
        if len(shape) == 2:
            return cls(1, True)
        if len(shape) == 3 and 1 <= shape[2] <= 4:
            return cls(shape[2], False)
        if len(shape) == 3:
            raise InputError(f"{shape[2]} channels are not supported (expected gray, gray+alpha, RGB or RGBA)")
        raise InputError(f"an image of shape {shape} is not a 2-D picture")


def check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.type not in SUPPORTED_DTYPES:
        raise InputError(f"pixel type {dtype} is not supported (use uint8, uint16, float32 or float64)")
    return dtype


def scale_of(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1.0


def to_unit_rgb(pixels: np.ndarray, layout: Layout, out: np.ndarray | None = None) -> np.ndarray:
    """Stored pixels (h, w[, C]) -> float32 RGB (h, w, 3) in [0, 1], written into ``out`` if given."""
    px = pixels[..., None] if layout.squeeze else pixels
    color = px[..., : layout.color]
    if out is None:
        out = np.empty(px.shape[:2] + (3,), np.float32)
    dst = out[..., :1] if layout.color == 1 else out
    if px.dtype.kind == "f":
        if not np.isfinite(color).all():
            raise InputError("image contains NaN or infinite values; replace them before dehazing")
        np.clip(color, 0.0, 1.0, out=dst, casting="same_kind")
    else:
        np.multiply(color, np.float32(1.0 / scale_of(px.dtype)), out=dst, casting="unsafe")
    if layout.color == 1:
        out[..., 1:] = dst
    return out


def from_unit_rgb(rgb: np.ndarray, source: np.ndarray, layout: Layout, *, inplace: bool = False) -> np.ndarray:
    """float32 RGB (h, w, 3) -> stored pixels like ``source`` (same dtype and channels).

    Alpha (if any) is copied from ``source``; gray is the mean of the three model channels.
    With ``inplace=True`` ``rgb`` is used as scratch space, so converting a band costs no
    float temporaries beyond a few rows.
    """
    dtype = source.dtype
    out = np.empty(source.shape, dtype)
    view = out[..., None] if layout.squeeze else out
    step = max(1, (8 << 20) // max(1, rgb.shape[1] * 12))  # rows per chunk: ~8 MB of float32
    for y in range(0, rgb.shape[0], step):
        chunk = rgb[y:y + step] if inplace else rgb[y:y + step].copy()
        if layout.color == 1:
            chunk = chunk.mean(axis=2, keepdims=True)
        if dtype.kind == "f":
            np.clip(chunk, 0.0, 1.0, out=chunk)
        else:
            scale = scale_of(dtype)
            chunk *= np.float32(scale)
            chunk += np.float32(0.5)
            np.clip(chunk, 0.0, scale, out=chunk)
        view[y:y + step, :, : layout.color] = chunk
    if layout.has_alpha:
        src = source[..., None] if layout.squeeze else source
        view[..., layout.color:] = src[..., layout.color:]
    return out
