"""Cloud-Optimized GeoTIFF, written in one streamed pass over the restored rows.

A COG holds every IFD (image, mask, overviews) at the start of the file and the tile data
after them, smallest overview first (what ``rio cogeo validate`` and GDAL check). tifffile
writes each page's IFD next to its data, so the file is built in three steps:

1. the restored rows are encoded into tiles as they stream, one temporary part file per
   pyramid level (and mask level); each overview level is the nodata-aware 2x2 average of
   the level above, computed from the same rows, so only a tile row per level is held;
2. tifffile writes the header and all IFDs with empty tiles (so the tags, GeoTIFF keys and
   GDAL metadata are its own);
3. the tile offsets and byte counts are patched into those IFDs and the parts are appended
   smallest level first.

Peak memory grows with the width (a tile row per level), never with the height.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import tifffile

from .base import Band, ImageInfo
from .tiff import CLASSIC_LIMIT, TiffWriter, profile_tags, resolve_compression, sample_options

log = logging.getLogger(__name__)

#: tifffile compression names -> TIFF codes; the ones a COG can hold tile by tile
CODES = {"zlib": 8, "zstd": 50000, "lzw": 5, "lzma": 34925}
#: rows averaged at a time when building an overview (bounds the float32 scratch)
CHUNK_ROWS = 64
_FORMATS = {3: "H", 4: "I", 16: "Q"}


def pyramid(height: int, width: int, tile: tuple[int, int], overviews: int | None) -> list[tuple[int, int]]:
    """Level sizes: the image, then ``overviews`` halvings (None: until a level fits in one tile)."""
    levels = [(height, width)]

    def more() -> bool:
        h, w = levels[-1]
        if min(h, w) <= 1:
            return False
        return len(levels) <= overviews if overviews is not None else h > tile[0] or w > tile[1]

    while more():
        h, w = levels[-1]
        levels.append((math.ceil(h / 2), math.ceil(w / 2)))
    return levels


def _codec(compression: Any, predictor: bool, dtype: np.dtype) -> tuple[int, int]:
    """(compression, predictor) TIFF codes for tiles encoded here; JPEG, WebP and PackBits become deflate."""
    code = 1 if compression is None else CODES.get(compression) if isinstance(compression, str) else int(compression)
    if code not in (1, 5, 8, 32946, 34925, 50000):
        log.info("COG tiles are written with deflate (the source's compression %s is not kept)", compression)
        code, predictor = 8, True
    return code, (3 if dtype.kind == "f" else 2) if predictor and code != 1 else 1


def _encoder(code: int, predictor: int, bilevel: bool = False) -> Callable[[np.ndarray], bytes]:
    """Tile (th, tw, C) -> the bytes tifffile would write for it."""
    compress = None if code == 1 else tifffile.TIFF.COMPRESSORS[code]
    predict = tifffile.TIFF.PREDICTORS[predictor] if predictor > 1 and not bilevel else None

    def encode(tile: np.ndarray) -> bytes:
        data = np.packbits(tile, axis=1) if bilevel else tile
        if predict is not None:
            data = predict(data, axis=-2)
        return bytes(compress(data)) if compress is not None else np.ascontiguousarray(data).tobytes()

    return encode


class TilePart:
    """One pyramid level's tiles, encoded in raster order into a temporary file as rows arrive."""

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype, tile: tuple[int, int],
                 encode: Callable[[np.ndarray], bytes], pool: ThreadPoolExecutor):
        self.path, self.width, self.tile, self.encode, self.pool = path, shape[1], tile, encode, pool
        self.buf = np.zeros((tile[0], shape[1], shape[2]), dtype)
        self.filled = 0
        self.counts: list[int] = []
        self.file = open(path, "wb")

    def add(self, rows: np.ndarray) -> None:
        pos = 0
        while pos < rows.shape[0]:
            take = min(self.tile[0] - self.filled, rows.shape[0] - pos)
            self.buf[self.filled:self.filled + take] = rows[pos:pos + take]
            self.filled += take
            pos += take
            if self.filled == self.tile[0]:
                self._emit()

    def _emit(self) -> None:
        th, tw = self.tile
        self.buf[self.filled:] = 0
        tiles = []
        for x in range(0, self.width, tw):
            t = np.zeros((th, tw, self.buf.shape[2]), self.buf.dtype)
            t[:, : min(tw, self.width - x)] = self.buf[:, x:x + tw]
            tiles.append(t)
        for data in self.pool.map(self.encode, tiles):
            self.file.write(data)
            self.counts.append(len(data))
        self.filled = 0

    def close(self) -> None:
        if self.filled:
            self._emit()
        self.file.close()


class Halver:
    """Halves a stream of rows in both directions: nodata-aware 2x2 averages, an odd last row kept for the end."""

    def __init__(self, dtype, nodata: float | None):
        self.dtype, self.nodata = np.dtype(dtype), nodata
        self.carry: tuple | None = None

    def add(self, rows: np.ndarray, mask: np.ndarray | None) -> tuple | None:
        if self.carry is not None:
            rows = np.concatenate([self.carry[0], rows])
            mask = None if mask is None else np.concatenate([self.carry[1], mask])
            self.carry = None
        even = rows.shape[0] - rows.shape[0] % 2
        if even < rows.shape[0]:
            self.carry = (rows[even:].copy(), None if mask is None else mask[even:].copy())
        if not even:
            return None
        spans = [(y, min(y + CHUNK_ROWS, even)) for y in range(0, even, CHUNK_ROWS)]
        parts = [self._halve(rows[a:b], None if mask is None else mask[a:b], 2) for a, b in spans]
        return np.concatenate([p[0] for p in parts]), None if mask is None else np.concatenate([p[1] for p in parts])

    def flush(self) -> tuple | None:
        if self.carry is None:
            return None
        rows, mask = self.carry
        self.carry = None
        return self._halve(rows, mask, 1)

    def _halve(self, rows: np.ndarray, mask: np.ndarray | None, gy: int) -> tuple:
        n, w, c = rows.shape
        w2 = -(-w // 2)
        weight = np.ones(rows.shape, np.float32) if self.nodata is None else \
            (~np.isnan(rows) if math.isnan(self.nodata) else rows != rows.dtype.type(self.nodata)).astype(np.float32)
        if mask is not None:
            weight *= mask[..., None]
        values = np.nan_to_num(rows.astype(np.float32)) * weight
        if w % 2:
            values = np.concatenate([values, np.zeros((n, 1, c), np.float32)], axis=1)
            weight = np.concatenate([weight, np.zeros((n, 1, c), np.float32)], axis=1)
        shape = (n // gy, gy, w2, 2, c)
        total = values.reshape(shape).sum(axis=(1, 3))
        count = weight.reshape(shape).sum(axis=(1, 3))
        mean = total / np.maximum(count, 1)
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            mean = np.clip(np.rint(mean), info.min, info.max)
        out = mean.astype(self.dtype)
        out[count == 0] = 0 if self.nodata is None else self.nodata
        small = None
        if mask is not None:
            m = np.concatenate([mask, np.zeros((n, 1), bool)], axis=1) if w % 2 else mask
            small = m.reshape(n // gy, gy, w2, 2).any(axis=(1, 3))
        return out, small


def _empty_tiles() -> Iterator[tuple[bytes, int]]:
    return itertools.repeat((b"", 0))


class CogWriter(TiffWriter):
    """A Cloud-Optimized GeoTIFF (or, without overviews, the same layout with a mask page)."""

    def __init__(self, compression: str | None = "keep", *, overviews: int | None = None,
                 tile: tuple[int, int] | None = None):
        """``overviews``: how many (None: halve until one tile holds the smallest, 0: none)."""
        super().__init__(compression, tile)
        self.overviews = overviews

    def write(self, path, info: ImageInfo, bands: Iterator[Band]) -> None:
        meta = info.metadata.get("tiff", {})
        tile = self.tile_of(info)
        code, predictor = _codec(*resolve_compression(self.compression, info), info.dtype)
        levels = pyramid(info.height, info.width, tile, self.overviews)
        has_mask = bool(meta.get("mask"))
        path = Path(path)
        with tempfile.TemporaryDirectory(prefix=".tiledehaze-cog-", dir=path.parent) as tmp, \
                ThreadPoolExecutor(2, thread_name_prefix="tiledehaze-cog") as pool:
            images = [TilePart(Path(tmp) / f"image{i}", (h, w, info.channels), info.dtype, tile,
                               _encoder(code, predictor), pool) for i, (h, w) in enumerate(levels)]
            masks = [TilePart(Path(tmp) / f"mask{i}", (h, w, 1), bool, tile, _encoder(code, 1, bilevel=True), pool)
                     for i, (h, w) in enumerate(levels)] if has_mask else []
            halvers = [Halver(info.dtype, info.nodata) for _ in levels[1:]]
            try:
                for _, rows, valid in bands:
                    rows = rows[..., None] if rows.ndim == 2 else rows
                    if has_mask and valid is None:
                        valid = np.ones(rows.shape[:2], bool)
                    self._feed(0, rows, valid, images, masks, halvers)
                for level, halver in enumerate(halvers):
                    rest = halver.flush()
                    if rest is not None:
                        self._feed(level + 1, *rest, images, masks, halvers)
            finally:
                for part in images + masks:
                    part.close()
            self._assemble(path, info, levels, tile, code, predictor, images, masks)

    def _feed(self, level: int, rows: np.ndarray, valid, images, masks, halvers) -> None:
        images[level].add(rows)
        if masks:
            masks[level].add(valid[..., None])
        if level < len(halvers):
            half = halvers[level].add(rows, valid if masks else None)
            if half is not None:
                self._feed(level + 1, *half, images, masks, halvers)

    def _assemble(self, path: Path, info: ImageInfo, levels, tile, code, predictor, images, masks) -> None:
        meta = info.metadata.get("tiff", {})
        data_bytes = sum(p.path.stat().st_size for p in images + masks)
        bigtiff = bool(meta.get("bigtiff")) or data_bytes > CLASSIC_LIMIT
        common = dict(tile=tile, compression=code, metadata=None)
        image_kw: dict[str, Any] = dict(common, dtype=info.dtype, predictor=predictor if predictor > 1 else None,
                                        **sample_options(info))
        first = profile_tags(info)
        pages = []  # (part, page index) in IFD order
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
            for i, (h, w) in enumerate(levels):
                shape = (h, w) if info.squeeze else (h, w, info.channels)
                tw.write(_empty_tiles(), shape=shape, subfiletype=0 if i == 0 else 1,
                         **image_kw, **(first if i == 0 else {}))
                pages.append(images[i])
                if masks:
                    tw.write(_empty_tiles(), shape=(h, w), dtype=bool, photometric=4, subfiletype=4 if i == 0 else 5,
                             **common)
                    pages.append(masks[i])
        order = [p for i in reversed(range(len(levels))) for p in ([images[i]] + ([masks[i]] if masks else []))]
        start = path.stat().st_size
        offsets = {}
        for part in order:
            offsets[id(part)] = start + np.concatenate([[0], np.cumsum(part.counts)[:-1]]).astype(np.int64)
            start += sum(part.counts)
        with tifffile.TiffFile(path) as tif:
            slots = [(tif.pages[k].tags[324], tif.pages[k].tags[325]) for k in range(len(pages))]
            byteorder = tif.byteorder
        with open(path, "r+b") as f:
            for part, (offset_tag, count_tag) in zip(pages, slots):
                for tag, values in ((offset_tag, offsets[id(part)]), (count_tag, part.counts)):
                    f.seek(tag.valueoffset)
                    f.write(struct.pack(f"{byteorder}{len(values)}{_FORMATS[int(tag.dtype)]}", *map(int, values)))
            f.seek(0, 2)
            for part in order:
                with open(part.path, "rb") as src:
                    shutil.copyfileobj(src, f, 16 << 20)
