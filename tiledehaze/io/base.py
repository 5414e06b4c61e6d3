"""Reader and writer interfaces: rows in, rows out.

A reader knows the image's shape, dtype and metadata and returns any band of full-width
rows on request; a writer consumes an iterator of ``(y0, rows, valid)`` bands in order. Neither
holds more of the image than its format forces it to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..pixels import Layout
from .nodata import valid_of

#: ``(y0, rows, valid)``: full-width rows from row ``y0`` and which pixels hold data (None: all)
Band = tuple[int, np.ndarray, np.ndarray | None]


@dataclass
class ImageInfo:
    """What a writer needs to know about the source: a profile it can copy and adjust."""

    height: int
    width: int
    channels: int
    squeeze: bool
    dtype: np.dtype
    format: str  # 'tiff', 'jpeg', 'png', 'webp', 'bmp' or 'array'
    metadata: dict[str, Any] = field(default_factory=dict)
    bands: tuple[int, ...] | None = None  # 0-based bands the model sees; None: by channel count
    nodata: float | None = None  # the value of pixels that hold no data (NaN for float rasters)
    bits: int | None = None  # significant bits per sample when fewer than the dtype's (an NBITS tag)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.squeeze else (self.height, self.width, self.channels)

    @property
    def layout(self) -> Layout:
        return Layout(self.channels, self.squeeze, self.bands)

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


class Reader(ABC):
    info: ImageInfo

    @abstractmethod
    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` at full width, in stored dtype and channel layout (RGB order)."""

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)``; formats that can decode less than full rows override this."""
        return self.read(y0, y1)[:, x0:x1]

    def valid(self, y0: int, rows: np.ndarray) -> np.ndarray | None:
        """Which pixels of ``rows`` (read from row ``y0``) hold data: (h, w) bool, or None when all do."""
        return valid_of(rows, self.info.layout, self.info.nodata)

    def overview(self, max_side: int = 2048) -> tuple[np.ndarray, np.ndarray | None]:
        """A strided, downscaled copy of the whole image and its valid mask (for image-wide statistics)."""
        info = self.info
        step = max(1, -(-max(info.height, info.width) // max_side))
        band = max(step, (64 << 20) // max(1, info.width * max(info.channels, 1) * info.dtype.itemsize) // step * step)
        parts, masks = [], []
        for y in range(0, info.height, band):
            rows = self.read(y, min(y + band, info.height))
            valid = self.valid(y, rows)
            parts.append(rows[::step, ::step])
            masks.append(None if valid is None else valid[::step, ::step])
        if all(m is None for m in masks):
            return np.concatenate(parts, axis=0), None
        masks = [np.ones(p.shape[:2], bool) if m is None else m for p, m in zip(parts, masks)]
        return np.concatenate(parts, axis=0), np.concatenate(masks, axis=0)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayReader(Reader):
    """An in-memory array as a reader."""

    def __init__(self, array: np.ndarray, fmt: str = "array", metadata: dict | None = None):
        layout = Layout.of(array.shape, array.dtype)
        self.array = array
        self.info = ImageInfo(array.shape[0], array.shape[1], layout.channels, layout.squeeze,
                              array.dtype, fmt, metadata or {})

    def read(self, y0: int, y1: int) -> np.ndarray:
        return self.array[y0:y1]


class Writer(ABC):
    @abstractmethod
    def write(self, path, info: ImageInfo, bands: Iterator[Band]) -> None:
        """Consume all bands and write the image to ``path``."""


def collect(info: ImageInfo, bands: Iterator[Band]) -> np.ndarray:
    """Assemble bands into one array (for formats that are encoded whole)."""
    out = np.empty(info.shape, info.dtype)
    for y0, rows, _ in bands:
        out[y0:y0 + rows.shape[0]] = rows
    return out
