"""Display tiles of images of any size, read lazily: a DeepZoom-style pyramid without a pyramid file.

Level ``k`` shows the image downscaled by ``2**k`` (level 0 is full resolution), cut into
``TILE`` x ``TILE`` PNG tiles. Fine levels are read region by region from the image's reader
(a TIFF decodes only the tiles a region touches) and box-averaged; levels of ``OVERVIEW``
times and coarser come from one box-averaged overview built band by band in the background,
so no request ever decodes the whole image.
"""

from __future__ import annotations

import functools
import math
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..io import ImageInfo, open_image
from ..pixels import to_unit_rgb

#: tile side in display pixels
TILE = 256
#: downscale factor of the in-memory overview; finer levels read regions of at most TILE * OVERVIEW / 2
OVERVIEW = 16
#: decoded rows per band while the overview is built (a multiple of common TIFF tile heights)
OVERVIEW_BAND = 512


def levels(height: int, width: int) -> int:
    """Number of levels: the last one shows the whole image in a single tile."""
    return max(0, math.ceil(math.log2(max(height, width) / TILE))) + 1


def shrink(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average stored ``pixels`` (any dtype, 2-D or H x W x C) to ``height`` x ``width``."""
    if pixels.shape[:2] == (height, width):
        return pixels
    small = cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=cv2.INTER_AREA)
    return small.reshape((height, width) + pixels.shape[2:])


def display(pixels: np.ndarray, layout) -> np.ndarray:
    """Stored pixels of any dtype and layout -> 8-bit RGB for the browser (alpha dropped)."""
    rgb = to_unit_rgb(np.ascontiguousarray(pixels), layout)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def box_overview(info: ImageInfo, read: Callable[[int, int], np.ndarray], factor: int) -> np.ndarray:
    """The whole image area-averaged by ``factor``, as 8-bit RGB, from ``read(y0, y1)`` bands of bounded size."""
    height, width = -(-info.height // factor), -(-info.width // factor)
    out = np.empty((height, width, 3), np.uint8)
    band = max(factor, OVERVIEW_BAND // factor * factor)
    for y in range(0, info.height, band):
        rows = read(y, min(y + band, info.height))
        h = -(-rows.shape[0] // factor)
        out[y // factor:y // factor + h] = display(shrink(rows, h, width), info.layout)
    return out


class NotReady(Exception):
    """The overview that coarse levels come from is still being built."""


class TileSource:
    """Tiles of one image file: a reader kept open, an overview for the coarse levels, a tile cache.

    Opening reads only the header (and whole-decoded formats); :meth:`prepare` builds the
    overview, reading the image once, band by band. Until then fine levels are served and
    coarse ones raise :class:`NotReady`.
    """

    def __init__(self, path: str | Path, *, pixel_limit: int | None = None):
        self.path = Path(path)
        self.reader = open_image(self.path, pixel_limit=pixel_limit)
        info = self.reader.info
        self.height, self.width = info.height, info.width
        self.levels = levels(self.height, self.width)
        self._lock = threading.Lock()  # one decoder per file at a time
        self.overview: np.ndarray | None = None
        self.ready = self.levels <= 4  # every level is read region by region
        self.tile = functools.lru_cache(maxsize=256)(self._tile)

    def prepare(self, before_band: Callable[[], None] | None = None) -> None:
        """Build the overview of the coarse levels (reads the whole image once, in bands).

        ``before_band()`` is called before each band is read; it may raise to abandon the work.
        """
        def read_rows(y0: int, y1: int) -> np.ndarray:
            if before_band is not None:
                before_band()
            with self._lock:
                return self.reader.read(y0, y1)

        if not self.ready:
            self.overview = box_overview(self.reader.info, read_rows, OVERVIEW)
            self.ready = True

    def tiles(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        f = 1 << level
        return -(-self.width // (TILE * f)), -(-self.height // (TILE * f))

    def _tile(self, level: int, x: int, y: int) -> bytes:
        """PNG bytes of tile (x, y) at ``level``; edge tiles are smaller than TILE."""
        f = 1 << level
        y0, x0 = y * TILE * f, x * TILE * f
        y1, x1 = min(self.height, y0 + TILE * f), min(self.width, x0 + TILE * f)
        out_h, out_w = -(-(y1 - y0) // f), -(-(x1 - x0) // f)
        if f >= OVERVIEW:
            if self.overview is None:
                raise NotReady
            region = self.overview[y0 // OVERVIEW:-(-y1 // OVERVIEW), x0 // OVERVIEW:-(-x1 // OVERVIEW)]
            return encode_png(shrink(region, out_h, out_w))
        with self._lock:
            region = self.reader.read_region(y0, y1, x0, x1)
        return encode_png(display(shrink(region, out_h, out_w), self.reader.info.layout))

    def close(self) -> None:
        self.reader.close()
