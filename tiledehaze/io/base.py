"""Reader and writer interfaces: rows in, rows out.

A reader knows the image's shape, dtype and metadata and returns any band of full-width
rows on request; a writer consumes an iterator of ``(y0, rows)`` bands in order. Neither
holds more of the image than its format forces it to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..pixels import Layout

Band = tuple[int, np.ndarray]


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

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.squeeze else (self.height, self.width, self.channels)

    @property
    def layout(self) -> Layout:
        return Layout(self.channels, self.squeeze)

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

    def overview(self, max_side: int = 2048) -> np.ndarray:
        """A strided, downscaled copy of the whole image (for image-wide statistics)."""
        info = self.info
        step = max(1, -(-max(info.height, info.width) // max_side))
        band = max(step, (64 << 20) // max(1, info.width * max(info.channels, 1) * info.dtype.itemsize) // step * step)
        parts = [self.read(y, min(y + band, info.height))[::step, ::step] for y in range(0, info.height, band)]
        return np.concatenate(parts, axis=0)

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
    for y0, rows in bands:
        out[y0:y0 + rows.shape[0]] = rows
    return out
