"""Nodata: which pixels hold no data, how the model is kept from seeing them, and how they are put back.

A pixel is nodata when any band the model sees equals the raster's nodata value (NaN for
float rasters declared so), or when the raster's mask page says so. The model never sees
nodata as image content: each tile's nodata pixels are filled from their nearest valid
pixel, so valid pixels next to a nodata border get no rim. After restoration the nodata
pixels are copied back from the source, bit for bit.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..pixels import Layout


def valid_of(pixels: np.ndarray, layout: Layout, nodata: float | None) -> np.ndarray | None:
    """True where the model bands of ``pixels`` (h, w[, C]) hold data; None when every pixel does."""
    if nodata is None:
        return None
    px = layout.select(pixels[..., None] if layout.squeeze else pixels)
    invalid = np.isnan(px) if math.isnan(nodata) else px == px.dtype.type(nodata)
    return ~invalid.any(axis=-1)


def combine(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Valid in both masks (None means all valid)."""
    if a is None or b is None:
        return b if a is None else a
    return a & b


def fill_invalid(rgb: np.ndarray, valid: np.ndarray | None) -> None:
    """Give every nodata pixel of ``rgb`` (h, w, 3) the value of its nearest valid pixel, in place."""
    if valid is None or valid.all() or not valid.any():
        return
    _, labels = cv2.distanceTransformWithLabels((~valid).view(np.uint8), cv2.DIST_L2, 3,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    # OpenCV numbers the zero (valid) pixels in raster order, starting at 1
    sources = np.flatnonzero(valid)
    targets = np.flatnonzero(~valid)
    flat = rgb.reshape(-1, rgb.shape[-1])
    flat[targets] = flat[sources[labels.ravel()[targets] - 1]]


def restore_invalid(out: np.ndarray, source: np.ndarray, valid: np.ndarray | None, layout: Layout,
                    nodata: float | None) -> None:
    """Put the source's nodata pixels back into ``out`` exactly (all bands).

    A restored pixel that happens to land on the nodata value is moved one step off it, so
    that no valid pixel turns into nodata for the readers of the output.
    """
    if valid is not None and not valid.all():
        out[~valid] = source[~valid]
    if nodata is None or math.isnan(nodata):
        return
    view = out[..., None] if layout.squeeze else out
    dtype = out.dtype
    step = dtype.type(1) if dtype.kind in "ui" else np.finfo(dtype).eps * max(1.0, abs(nodata))
    low = dtype.kind in "ui" and nodata == np.iinfo(dtype).max
    for b in layout.model_bands:
        band = view[..., b]
        hit = band == dtype.type(nodata)
        if valid is not None:
            hit &= valid
        if hit.any():
            band[hit] = dtype.type(nodata) - step if low else dtype.type(nodata) + step


def parse_nodata(text: str, dtype: np.dtype) -> float | None:
    """GDAL's nodata tag (ASCII) as a value of ``dtype``, or None when the type cannot hold it."""
    try:
        value = float(text.strip().rstrip("\x00"))
    except ValueError:
        return None
    if math.isnan(value):
        return value if dtype.kind == "f" else None
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if value != int(value) or not info.min <= value <= info.max:
            return None
    return value
