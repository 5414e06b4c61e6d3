"""Where tiles go: a geometry object that holds no pixels.

Tiles of a fixed size are spread evenly along each axis so that the first starts at 0 and
the last ends exactly at the image edge: edge tiles are shifted inside the image, never
zero-padded, and every tile has the same shape (which suits batching and TensorRT
profiles). Neighbours overlap by at least ``overlap`` pixels. An axis shorter than the tile
becomes a single tile of that length. Models that downsample (a U-Net) need tile origins on
multiples of their ``align``: starts are then rounded to it, and the tile size is chosen so that
the last tile, which still ends at the image edge, starts on a multiple too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ConfigError

Span = tuple[int, int]


def split_axis(length: int, tile: int, overlap: int, align: int = 1) -> list[Span]:
    """Evenly spaced ``[start, stop)`` spans of one size, at most ``tile``, covering ``length``.

    The fewest spans that fit are used, each shrunk to the smallest size that still overlaps
    its neighbours by ``overlap``: no pixel is computed more often than it must be. With
    ``align`` > 1 every start is a multiple of ``align`` (the size then has the remainder of
    ``length``, so that the last span ends at the edge) and the span may grow by up to
    ``align`` pixels past ``tile``.
    """
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    while True:
        size = math.ceil((length + (n - 1) * overlap) / n)
        size += (length - size) % align  # the last start, length - size, becomes a multiple of align
        starts = [round(i * (length - size) / (n - 1) / align) * align for i in range(n)]
        if all(b - a <= size - overlap for a, b in zip(starts, starts[1:])):
            return [(s, s + size) for s in starts]
        n += 1  # rounding to the alignment left a gap narrower than the overlap


def feather_weights(spans: list[Span], length: int, halo: int, overlap: int) -> list[np.ndarray]:
    """1-D blending weights per span that sum to one at every position of the axis.

    Inside a span the raw weight is 0 for the ``halo`` pixels next to an interior edge (their
    output saw padded context), then ramps linearly to 1 across the rest of the overlap. Edges
    that lie on the image border keep weight 1, so the border is never darkened. Dividing by
    the sum over spans makes the weights a partition of unity on the real, uneven grid.
    """
    ramp = max(1, overlap - 2 * halo)
    raw = []
    for start, stop in spans:
        pos = np.arange(stop - start, dtype=np.float64)
        d_start = pos if start > 0 else np.full_like(pos, np.inf)
        d_stop = (stop - start - 1 - pos) if stop < length else np.full_like(pos, np.inf)
        d = np.minimum(d_start, d_stop)
        raw.append(np.clip((d - halo + 1) / (ramp + 1), 0.0, 1.0))
    total = np.zeros(length)
    for (start, stop), w in zip(spans, raw):
        total[start:stop] += w
    if not np.all(total > 0):  # guarded by TilePlan's checks; a bug if it happens
        raise AssertionError("tile weights leave a gap")
    return [(w / total[start:stop]).astype(np.float32) for (start, stop), w in zip(spans, raw)]


@dataclass(frozen=True)
class Tile:
    index: int
    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int


@dataclass(frozen=True)
class TilePlan:
    """Tiles for an image of ``height`` x ``width``.

    >>> plan = TilePlan(3000, 5000, tile=1024, overlap=32, halo=7)
    >>> plan.grid, plan[0]
    ((3, 6), Tile(index=0, row=0, col=0, y0=0, y1=1022, x0=0, x1=860))
    """

    height: int
    width: int
    tile: int = 1024
    overlap: int = 32
    halo: int = 0
    #: tile origins lie on multiples of this (1: anywhere)
    align: int = 1

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"image has no pixels ({self.height}x{self.width})")
        if self.overlap < 2 * self.halo + 1:
            raise ConfigError(
                f"overlap {self.overlap} is too small for a model whose halo is {self.halo} px: "
                f"use at least {2 * self.halo + 1}")
        if self.tile <= self.overlap:
            raise ConfigError(f"tile {self.tile} must be larger than the overlap {self.overlap} (the model's halo is "
                              f"{self.halo} px): use at least {self.overlap + 2 * self.align}")
        if self.align < 1 or (self.align > 1 and self.tile - self.overlap < 2 * self.align):
            raise ConfigError(f"tile {self.tile} is too small for a model whose tiles start on multiples of "
                              f"{self.align}: use at least {self.overlap + 2 * self.align}")

    @cached_property
    def rows(self) -> list[Span]:
        return split_axis(self.height, self.tile, self.overlap, self.align)

    @cached_property
    def cols(self) -> list[Span]:
        return split_axis(self.width, self.tile, self.overlap, self.align)

    @cached_property
    def row_weights(self) -> list[np.ndarray]:
        return feather_weights(self.rows, self.height, self.halo, self.overlap)

    @cached_property
    def col_weights(self) -> list[np.ndarray]:
        return feather_weights(self.cols, self.width, self.halo, self.overlap)

    @property
    def grid(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.rows[0][1] - self.rows[0][0], self.cols[0][1] - self.cols[0][0]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __getitem__(self, index: int) -> Tile:
        """Where tile ``index`` (raster order) lies."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        r, c = divmod(index, len(self.cols))
        (y0, y1), (x0, x1) = self.rows[r], self.cols[c]
        return Tile(index, r, c, y0, y1, x0, x1)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def rows_covering(self, y0: int, y1: int) -> list[int]:
        """Indices of the tile rows that touch image rows ``[y0, y1)``."""
        return [i for i, (s, e) in enumerate(self.rows) if s < y1 and e > y0]

    def final_after_row(self, r: int) -> int:
        """Image rows below this bound are complete once tile row ``r`` has been blended."""
        return self.rows[r + 1][0] if r + 1 < len(self.rows) else self.height

    def __str__(self) -> str:
        th, tw = self.tile_shape
        return (f"TilePlan({self.height}x{self.width}: {self.grid[0]}x{self.grid[1]} tiles of "
                f"{th}x{tw}, overlap >= {self.overlap}, halo {self.halo})")
