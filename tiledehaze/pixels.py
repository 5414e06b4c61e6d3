"""Conversions between stored pixels and what models see.

Models see float32 RGB in [0, 1]. Stored images may be gray, gray+alpha, RGB or RGBA in
uint8, uint16, float32 or float64; channel order is always RGB(A) here (readers convert
OpenCV's BGR at the door). Gray is replicated to RGB for the model and averaged back; alpha
never reaches the model and is passed through untouched. Multi-band rasters name the one or
three bands the model sees (:attr:`Layout.bands`); every other band passes through bit for
bit. A :class:`ValueRange` maps data that uses part of its type's range (12-bit sensors,
reflectance x 10000) onto [0, 1] and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


@dataclass(frozen=True)
class Layout:
    """Channel layout of a stored image: (H, W) or (H, W, C) with C in 1..4."""

    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, or any number of bands with ``bands`` set
    squeeze: bool  # stored as (H, W) without a channel axis
    bands: tuple[int, ...] | None = None  # 0-based bands the model sees (1 or 3); None: by channel count

    @property
    def model_bands(self) -> tuple[int, ...]:
        if self.bands is not None:
            return self.bands
        return (0,) if self.channels <= 2 else (0, 1, 2)

    @property
    def color(self) -> int:
        return len(self.model_bands)

    @property
    def has_alpha(self) -> bool:
        """Whether some band passes through untouched (alpha or any band the model does not see)."""
        return self.channels > self.color

    @property
    def passthrough(self) -> tuple[int, ...]:
        return tuple(b for b in range(self.channels) if b not in self.model_bands)

    def select(self, px: np.ndarray) -> np.ndarray:
        """The model bands of ``px`` (..., C): a view when they are consecutive, else a copy."""
        b = self.model_bands
        if b == tuple(range(b[0], b[0] + len(b))):
            return px[..., b[0]:b[0] + len(b)]
        return px[..., list(b)]

    @classmethod
    def of(cls, shape: tuple[int, ...], dtype) -> "Layout":
        check_dtype(dtype)
        if len(shape) in (2, 3) and 0 in shape[:2]:
            raise InputError(f"image has no pixels (shape {shape})")
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


#: how far float pixels may stray outside [0, 1] (rounding in the caller's arithmetic) before they are refused
RANGE_SLACK = 1e-4


def check_unit_range(pixels: np.ndarray) -> None:
    """Refuse finite float pixels outside [0, 1] (beyond rounding slack) in one line."""
    if pixels.size == 0:
        return
    lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        raise InputError(f"float pixels must lie in [0, 1], found values from {lo:g} to {hi:g}; scale the image "
                         "(8-bit values / 255, 16-bit / 65535), pass it as uint8 or uint16, or give its range "
                         "(input_range=(low, high), or --input-range LOW,HIGH)")


def scale_of(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1.0


@dataclass(frozen=True)
class ValueRange:
    """Stored values ``low`` .. ``high`` are what the model sees as 0 .. 1."""

    low: float
    high: float

    @classmethod
    def full(cls, dtype) -> "ValueRange":
        return cls(0.0, scale_of(dtype))

    def __str__(self) -> str:
        return f"{self.low:g},{self.high:g}"


def to_unit_rgb(pixels: np.ndarray, layout: Layout, out: np.ndarray | None = None, *,
                scale: ValueRange | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Stored pixels (h, w[, C]) -> float32 RGB (h, w, 3) in [0, 1], written into ``out`` if given.

    ``scale`` says which stored values become 0 and 1 (default: the dtype's full scale, [0, 1]
    for floats). Where ``valid`` is False the pixels are nodata: they may hold anything (NaN
    included) and come out as 0, for the caller to fill.
    """
    px = pixels[..., None] if layout.squeeze else pixels
    color = layout.select(px)
    if out is None:
        out = np.empty(px.shape[:2] + (3,), np.float32)
    dst = out[..., :1] if layout.color == 1 else out
    scale = scale or ValueRange.full(px.dtype)
    if px.dtype.kind == "f":
        finite = np.isfinite(color)
        if not finite.all():
            if valid is None or not finite[valid].all():
                raise InputError("image contains NaN or infinite values; declare them as nodata or replace them "
                                 "before dehazing")
            color = np.where(finite, color, scale.low)
        if scale == ValueRange.full(px.dtype):
            check_unit_range(color if valid is None else color[valid])
    if scale.low:
        np.subtract(color, np.float32(scale.low), out=dst, casting="unsafe")
        dst *= np.float32(1.0 / (scale.high - scale.low))
    else:
        np.multiply(color, np.float32(1.0 / scale.high), out=dst, casting="unsafe")
    if px.dtype.kind == "f" or scale != ValueRange.full(px.dtype):
        np.clip(dst, 0.0, 1.0, out=dst)
    if valid is not None:
        dst[~valid] = 0.0
    if layout.color == 1:
        out[..., 1:] = dst
    return out


def from_unit_rgb(rgb: np.ndarray, source: np.ndarray, layout: Layout, *, inplace: bool = False,
                  scale: ValueRange | None = None) -> np.ndarray:
    """float32 RGB (h, w, 3) -> stored pixels like ``source`` (same dtype and channels).

    Bands the model does not see (alpha, near infrared, ...) are copied from ``source``; gray
    is the mean of the three model channels; 0 .. 1 maps back onto ``scale``. With
    ``inplace=True`` ``rgb`` is used as scratch space, so converting a band costs no float
    temporaries beyond a few rows.
    """
    dtype = source.dtype
    scale = scale or ValueRange.full(dtype)
    out = np.empty(source.shape, dtype)
    view = out[..., None] if layout.squeeze else out
    src = source[..., None] if layout.squeeze else source
    bands = layout.model_bands
    for b in layout.passthrough:
        view[..., b] = src[..., b]
    top = scale_of(dtype) if dtype.kind in "ui" else np.inf
    step = max(1, (8 << 20) // max(1, rgb.shape[1] * 12))  # rows per chunk: ~8 MB of float32
    for y in range(0, rgb.shape[0], step):
        chunk = rgb[y:y + step] if inplace else rgb[y:y + step].copy()
        if layout.color == 1:
            chunk = chunk.mean(axis=2, keepdims=True)
        np.clip(chunk, 0.0, 1.0, out=chunk)
        if scale.high - scale.low != 1.0:
            chunk *= np.float32(scale.high - scale.low)
        if scale.low:
            chunk += np.float32(scale.low)
        if dtype.kind in "ui":
            chunk += np.float32(0.5)
            np.clip(chunk, 0.0, top, out=chunk)
        for k, b in enumerate(bands):
            view[y:y + step, :, b] = chunk[..., k]
    return out


#: share of a scene's sampled values that may lie outside a range given by the user
OUTSIDE_TOLERANCE = 0.001


def parse_range(text: str) -> ValueRange | None:
    """``auto`` (None) or ``LOW,HIGH`` as given to ``--input-range``."""
    if text.strip().lower() == "auto":
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--input-range takes 'auto' or LOW,HIGH, not {text!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"--input-range {text}: LOW must be below HIGH")
    return ValueRange(low, high)


def needs_sample(dtype, bits: int | None, choice: ValueRange | None) -> bool:
    """Whether choosing or checking the input range needs a look at the scene's values."""
    return choice is not None or (np.dtype(dtype) != np.uint8 and bits is None)


def input_range(dtype, *, choice: ValueRange | None = None, bits: int | None = None,
                sample: np.ndarray | None = None) -> ValueRange:
    """The stored values that map onto the model's 0 .. 1.

    ``choice`` is the user's range (checked against ``sample``: a range that would clip
    the scene is refused). Otherwise: uint8 uses its full scale; integers with fewer
    significant ``bits`` (an NBITS tag) use ``0 .. 2**bits - 1``; uint16 scenes that use only
    part of their range (reflectance x 10000, 12-bit sensors without a tag) and float scenes
    beyond 1 use ``0 ..`` the largest sampled value plus 5 % headroom.
    """
    dtype = np.dtype(dtype)
    sample = np.empty(0) if sample is None else np.asarray(sample).ravel()
    if choice is not None:
        outside = np.count_nonzero((sample < choice.low) | (sample > choice.high)) if sample.size else 0
        if outside > OUTSIDE_TOLERANCE * sample.size:
            raise InputError(f"{100 * outside / sample.size:.1f} % of the image's values lie outside --input-range "
                             f"{choice} (they span {sample.min():g} to {sample.max():g}); widen it or use auto")
        return choice
    full = ValueRange.full(dtype)
    if dtype.kind in "ui" and bits is not None and bits < 8 * dtype.itemsize:
        return ValueRange(0.0, float(2 ** bits - 1))
    if dtype == np.uint8 or not sample.size:
        return full
    top = float(sample.max())
    if dtype.kind == "f":
        return full if top <= 1.0 else ValueRange(0.0, top * 1.05)
    if top <= 0 or top * 1.05 >= full.high:
        return full
    return ValueRange(0.0, float(np.ceil(top * 1.05)))
