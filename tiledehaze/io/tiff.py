"""TIFF and BigTIFF: lazy band reads through zarr, streaming tiled writes.

Reading decodes only the TIFF tiles (or strips) a band touches. Writing turns the band
iterator into a raster-order tile iterator that tifffile encodes as it goes, so neither side
ever holds the whole image. The source's profile (tiling, compression, predictor, GeoTIFF
tags, ICC profile, resolution) is copied to the output.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tifffile
import zarr

from ..errors import ConfigError, InputError
from ..pixels import check_dtype
from .base import Band, ImageInfo, Reader, Writer
from .geotiff import GDAL_METADATA, GDAL_NODATA, clean_gdal_metadata, model_bands, page_roles, significant_bits
from .nodata import combine, parse_nodata, valid_of

log = logging.getLogger(__name__)

#: GeoTIFF (33550, 33922, 34264, 34735-34737), GDAL nodata (42113), and descriptive ASCII tags.
#: GDAL_METADATA (42112) is copied without its statistics, which are stale after restoration.
COPIED_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42113, 306, 315, 33432)
DEFAULT_TILE = (512, 512)
#: above this many raw bytes, classic TIFF's 32-bit offsets may overflow
CLASSIC_LIMIT = 2**32 - 2**28
#: source compressions that --compression keep writes again (others fall back to zlib)
KEEPABLE = {int(c) for c in (tifffile.COMPRESSION.NONE, tifffile.COMPRESSION.LZW, tifffile.COMPRESSION.ADOBE_DEFLATE,
                             tifffile.COMPRESSION.DEFLATE, tifffile.COMPRESSION.ZSTD, tifffile.COMPRESSION.LZMA,
                             tifffile.COMPRESSION.JPEG, tifffile.COMPRESSION.WEBP, tifffile.COMPRESSION.PACKBITS)}
PREDICTABLE = {tifffile.COMPRESSION.LZW, tifffile.COMPRESSION.ADOBE_DEFLATE, tifffile.COMPRESSION.DEFLATE,
               tifffile.COMPRESSION.ZSTD, tifffile.COMPRESSION.LZMA}
COMPRESSIONS = ("keep", "none", "zlib", "zstd", "lzw", "lzma", "jpeg", "webp", "packbits")


class TiffReader(Reader):
    """A TIFF's first image, read lazily; its overviews and mask page are recognised, not restored.

    ``bands`` (1-based, as GDAL counts) names the one or three bands the model sees; ``warn``
    says whether pages that are neither overviews nor masks are reported.
    """

    def __init__(self, path: str | Path, *, bands: tuple[int, ...] | None = None, warn: bool = True):
        self.path = Path(path)
        self.bands = bands
        self.warn = warn
        self.mask = None
        self.lock = threading.Lock()  # the engine reads pixels and mask rows from different threads
        try:
            self.tif = tifffile.TiffFile(self.path)
        except Exception as exc:
            raise InputError(f"{self.path}: not a readable TIFF ({_short(exc)})") from None
        try:
            if len(self.tif.pages) == 0:
                raise IndexError
            page = self.tif.pages.first
        except IndexError:
            self.tif.close()
            raise InputError(f"{self.path}: TIFF contains no images") from None
        except Exception as exc:
            self.tif.close()
            raise InputError(f"{self.path}: not a readable TIFF ({_short(exc)})") from None
        try:
            self._open(page)
        except InputError:
            self.tif.close()
            raise
        except Exception as exc:  # tifffile trips over inconsistent tags in many ways
            self.tif.close()
            raise InputError(f"{self.path}: damaged TIFF ({_short(exc)})") from None

    def _open(self, page) -> None:
        overviews, masks, others = page_roles(self.tif.pages)
        if self.warn and others:
            log.warning("%s holds %d images; only the first is restored", self.path, len(others) + 1)
        photometric = int(page.photometric)
        if photometric not in (0 + 1, 2, 6):  # MINISBLACK, RGB, YCBCR (decoded to RGB)
            name = tifffile.PHOTOMETRIC(photometric).name
            raise InputError(f"{self.path}: {name} TIFFs are not supported; convert to gray or RGB first")
        if page.axes not in ("YX", "YXS", "SYX"):
            raise InputError(f"{self.path}: TIFF image with axes {page.axes} is not a 2-D picture")
        if page.shape[0] == 0 or page.shape[-1] == 0 or 0 in page.shape:
            raise InputError(f"{self.path}: image has no pixels")
        _check_chunks(self.path, page)
        dtype = check_dtype(page.dtype)
        self.planar = page.axes == "SYX"
        h, w = (page.shape[1], page.shape[2]) if self.planar else page.shape[:2]
        channels = 1 if page.axes == "YX" else (page.shape[0] if self.planar else page.shape[2])
        profile = _profile(self.tif, page)
        bands = model_bands(self.path, channels, profile["photometric"], self.bands)
        nodata = None
        if GDAL_NODATA in page.tags:
            nodata = parse_nodata(str(page.tags[GDAL_NODATA].value), dtype)
            if nodata is None:
                log.warning("%s: nodata value %r does not fit %s pixels; ignored", self.path,
                            page.tags[GDAL_NODATA].value, dtype)
        mask = next((m for m in masks if m.shape[:2] == (h, w)), None)
        self.overviews, self.overview_masks = overviews, {m.shape[:2]: m for m in masks}
        profile.update(overviews=len(overviews), mask=mask is not None)
        self.info = ImageInfo(h, w, channels, page.axes == "YX", dtype, "tiff", {"tiff": profile},
                              bands=bands, nodata=nodata, bits=significant_bits(page, dtype))
        try:
            self.store = page.aszarr()
            self.array = zarr.open(self.store, mode="r")
            if mask is not None:
                self.mask_store = mask.aszarr()
                self.mask = zarr.open(self.mask_store, mode="r")
        except Exception as exc:
            raise InputError(f"{self.path}: cannot index TIFF data ({_short(exc)})") from None

    def overview(self, max_side: int = 2048) -> tuple[np.ndarray, np.ndarray | None]:
        """The smallest of the file's own overviews that is still at least 1024 px (or ``max_side``)
        across, read whole; a strided read of the image when the file has none that large."""
        need = min(max_side, 1024, max(self.info.height, self.info.width))
        pages = sorted((p for p in self.overviews if max(p.shape[:2] if p.axes[0] != "S" else p.shape[1:3]) >= need),
                       key=lambda p: p.shape[0] * p.shape[1])
        if not pages:
            return super().overview(max_side)
        page = pages[0]
        try:
            with self.lock:
                pixels = page.asarray()
                mask_page = self.overview_masks.get(pixels.shape[1:3] if page.axes[0] == "S" else pixels.shape[:2])
                mask = None if self.mask is None or mask_page is None else np.asarray(mask_page.asarray(), bool)
        except Exception as exc:
            raise InputError(f"{self.path}: damaged TIFF overview ({_short(exc)})") from None
        if page.axes[0] == "S":
            pixels = np.moveaxis(pixels, 0, -1)
        if self.info.squeeze and pixels.ndim == 3:
            pixels = pixels[..., 0]
        return pixels, combine(valid_of(pixels, self.info.layout, self.info.nodata), mask)

    def valid(self, y0: int, rows: np.ndarray) -> np.ndarray | None:
        """Valid where the mask page (if any) says so and the model bands are not nodata."""
        mask = None
        if self.mask is not None:
            try:
                with self.lock:
                    mask = np.asarray(self.mask[y0:y0 + rows.shape[0]], bool)
            except Exception as exc:
                raise InputError(f"{self.path}: damaged TIFF mask, cannot decode rows {y0}-{y0 + rows.shape[0]} "
                                 f"({_short(exc)})") from None
        return combine(valid_of(rows, self.info.layout, self.info.nodata), mask)

    def read(self, y0: int, y1: int) -> np.ndarray:
        try:
            with self.lock:
                rows = self.array[:, y0:y1, :] if self.planar else self.array[y0:y1]
        except Exception as exc:
            _settle_zarr_reads()
            raise InputError(f"{self.path}: damaged TIFF data, cannot decode rows {y0}-{y1} ({_short(exc)})") from None
        return np.moveaxis(rows, 0, -1) if self.planar else rows

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Decodes only the TIFF tiles (or strips) the region touches."""
        try:
            with self.lock:
                px = self.array[:, y0:y1, x0:x1] if self.planar else self.array[y0:y1, x0:x1]
        except Exception as exc:
            raise InputError(f"{self.path}: damaged TIFF data, cannot decode region "
                             f"{x0},{y0}-{x1},{y1} ({_short(exc)})") from None
        return np.moveaxis(px, 0, -1) if self.planar else px

    def close(self) -> None:
        for name in ("store", "mask_store"):
            store = getattr(self, name, None)
            if store is not None:
                store.close()
        self.tif.close()


def _settle_zarr_reads(timeout: float = 60.0) -> None:
    """Let the tile reads zarr still has in flight finish, and collect their errors.

    zarr decodes a band's tiles concurrently on its own event loop; when one fails, it leaves
    the others running. Left alone they outlive the file handle, fail on it, and at exit
    asyncio prints "Task was destroyed but it is pending" and their tracebacks.
    """
    import asyncio

    from zarr.core.sync import sync

    async def settle() -> None:
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            done, _ = await asyncio.wait(others, timeout=timeout)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: asyncio no longer reports it

    sync(settle())


def _check_chunks(path: Path, page) -> None:
    """Refuse TIFFs whose tile/strip table does not fit the image or the file, before any work is done."""
    expected = int(np.prod(page.chunked))
    if len(page.dataoffsets) != expected or len(page.databytecounts) != expected:
        raise InputError(f"{path}: damaged TIFF ({len(page.dataoffsets)} tiles or strips recorded, "
                         f"{expected} expected for {page.imagewidth}x{page.imagelength} pixels)")
    size = path.stat().st_size
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if count and offset + count > size:
            raise InputError(f"{path}: truncated or damaged TIFF (image data lies beyond the end of the file)")
    if page.compression == 1 and page.dtype is not None:
        raw = page.imagelength * page.imagewidth * page.samplesperpixel * page.dtype.itemsize
        if sum(page.databytecounts) < raw:
            raise InputError(f"{path}: truncated or damaged TIFF (uncompressed data is shorter than "
                             f"{page.imagewidth}x{page.imagelength} pixels)")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _rational(value) -> bool:
    """A usable resolution value: a positive (numerator, denominator) pair or number."""
    if isinstance(value, tuple):
        return len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)
    return isinstance(value, (int, float)) and value > 0


def _profile(tif: tifffile.TiffFile, page) -> dict[str, Any]:
    tags = page.tags
    extratags = []
    for code in COPIED_TAGS:
        tag = tags.get(code)
        if tag is not None and isinstance(tag.value, str) and not tag.value.isascii():
            log.warning("%s: tag %s is not 7-bit ASCII as TIFF requires; not copied", tif.filename, tag.name)
        elif tag is not None:
            extratags.append((code, int(tag.dtype), tag.count, tag.value, True))
    gdal = tags.get(GDAL_METADATA)
    if gdal is not None and isinstance(gdal.value, str) and gdal.value.isascii():
        cleaned = clean_gdal_metadata(gdal.value)
        if cleaned:
            extratags.append((GDAL_METADATA, 2, 0, cleaned, True))
    resolution = None
    if 282 in tags and 283 in tags and _rational(tags[282].value) and _rational(tags[283].value):
        resolution = (tags[282].value, tags[283].value)
    return {
        "compression": int(page.compression),
        "predictor": int(page.predictor),
        "tile": (page.tilelength, page.tilewidth) if page.is_tiled else None,
        "bigtiff": tif.is_bigtiff,
        "photometric": "minisblack" if int(page.photometric) in (0, 1) else "rgb",
        "extrasamples": tuple(int(x) for x in page.extrasamples),
        "extratags": extratags,
        "iccprofile": tags[34675].value if 34675 in tags else None,
        "resolution": resolution,
        "resolutionunit": int(tags[296].value) if 296 in tags and tags[296].value in (1, 2, 3) else None,
        "description": page.description if page.description and page.description.isascii()
        and not page.description.startswith("{") else None,
    }


def sample_options(info: ImageInfo) -> dict[str, Any]:
    """tifffile's page options for the source's samples: its colour interpretation and extra samples.

    Without a TIFF source: gray or RGB by channel count, and the band beyond them is alpha.
    """
    meta = info.metadata.get("tiff", {})
    return dict(
        photometric=meta.get("photometric") or ("minisblack" if info.layout.color == 1 else "rgb"),
        planarconfig=None if info.squeeze or info.channels == 1 else "contig",
        extrasamples=meta.get("extrasamples") or ((2,) if info.layout.has_alpha else ()) or None,
    )


def profile_tags(info: ImageInfo) -> dict[str, Any]:
    """tifffile's options for the tags copied from the source (first page only)."""
    meta = info.metadata.get("tiff", {})
    tags = dict(software="tiledehaze", extratags=list(meta.get("extratags", [])),
                iccprofile=meta.get("iccprofile"), description=meta.get("description"))
    if meta.get("resolution"):
        tags.update(resolution=meta["resolution"], resolutionunit=meta.get("resolutionunit"))
    return tags


def _tiles(bands: Iterator[Band], info: ImageInfo, tile: tuple[int, int]) -> Iterator[np.ndarray]:
    """Re-cut full-width bands of any height into raster-order tiles of ``tile`` rows.

    tifffile's threaded encoder holds on to several tiles before encoding them, so each tile
    row gets a fresh buffer rather than one that is refilled in place.
    """
    th, tw = tile
    shape = (th, info.width) + (() if info.squeeze else (info.channels,))
    buf = np.empty(shape, info.dtype)
    filled = 0
    for _, rows, _ in bands:
        pos = 0
        while pos < rows.shape[0]:
            take = min(th - filled, rows.shape[0] - pos)
            buf[filled:filled + take] = rows[pos:pos + take]
            filled += take
            pos += take
            if filled == th:
                yield from (buf[:, x:x + tw] for x in range(0, info.width, tw))
                buf = np.empty(shape, info.dtype)
                filled = 0
    if filled:
        yield from (buf[:filled, x:x + tw] for x in range(0, info.width, tw))


def resolve_compression(choice: str | None, info: ImageInfo) -> tuple[Any, bool]:
    """(tifffile compression, predictor) for a --compression choice; 'keep' copies the source."""
    meta = info.metadata.get("tiff", {})
    if choice in (None, "keep"):
        if meta.get("compression") not in KEEPABLE:  # none recorded, or one we can decode but not encode
            return "zlib", True
        compression = tifffile.COMPRESSION(meta["compression"])
        if compression == tifffile.COMPRESSION.NONE:
            return None, False
        if compression == tifffile.COMPRESSION.JPEG and info.dtype != np.uint8:
            return "zlib", True
        return compression, meta.get("predictor", 1) > 1 and compression in PREDICTABLE
    if choice not in COMPRESSIONS:
        raise ConfigError(f"unknown TIFF compression {choice!r}; choose from {', '.join(COMPRESSIONS)}")
    if choice == "jpeg" and info.dtype != np.uint8:
        raise ConfigError("JPEG compression in TIFF needs 8-bit data; use zlib or zstd")
    if choice == "none":
        return None, False
    return choice, choice in ("zlib", "zstd", "lzw", "lzma")


class TiffWriter(Writer):
    """Tiled TIFF written band by band; BigTIFF when the source was or the size needs it."""

    def __init__(self, compression: str | None = "keep", tile: tuple[int, int] | None = None):
        self.compression = compression
        self.tile = tile

    def tile_of(self, info: ImageInfo) -> tuple[int, int]:
        """The output's TIFF tile: as asked, else the source's, else 512 x 512."""
        tile = tuple(self.tile or info.metadata.get("tiff", {}).get("tile") or DEFAULT_TILE)
        if tile[0] % 16 or tile[1] % 16:
            raise ConfigError(f"TIFF tile size {tile} must be a multiple of 16")
        return tile

    def options(self, info: ImageInfo) -> dict[str, Any]:
        """``tifffile.imwrite`` keywords for this output: shape, tiling, compression and copied tags."""
        meta = info.metadata.get("tiff", {})
        tile = self.tile_of(info)
        compression, predictor = resolve_compression(self.compression, info)
        raw_bytes = info.height * info.width * info.channels * info.dtype.itemsize
        kwargs: dict[str, Any] = dict(
            shape=info.shape, dtype=info.dtype, tile=tile, **sample_options(info),
            compression=compression, predictor=predictor or None,
            bigtiff=bool(meta.get("bigtiff")) or raw_bytes > CLASSIC_LIMIT,
            metadata=None, buffersize=32 << 20, maxworkers=2, **profile_tags(info),
        )
        if compression in ("jpeg", tifffile.COMPRESSION.JPEG):
            kwargs["compressionargs"] = {"level": 95}
        return kwargs

    def write(self, path, info: ImageInfo, bands: Iterator[Band]) -> None:
        tifffile.imwrite(path, _tiles(bands, info, self.tile_of(info)), **self.options(info))

    def encode_tiles(self, info: ImageInfo, rows: int, bands: Iterator[Band]) -> list[bytes]:
        """The finished output tiles (raster order) of ``rows`` image rows starting on a tile row.

        The bytes are exactly those :meth:`write` would put in the file for these rows (same
        codec, predictor and padding), so a file can be assembled from pieces encoded elsewhere
        with :meth:`write_encoded`.
        """
        kwargs = self.options(info)
        kwargs.update(shape=(rows,) + info.shape[1:], bigtiff=True, extratags=[], iccprofile=None,
                      description=None, software=None)
        kwargs.pop("resolution", None)
        kwargs.pop("resolutionunit", None)
        part = dataclasses.replace(info, height=rows)
        buf = io.BytesIO()
        tifffile.imwrite(buf, _tiles(bands, part, self.tile_of(info)), **kwargs)
        with tifffile.TiffFile(io.BytesIO(buf.getbuffer())) as tif:
            page = tif.pages.first
            data = buf.getbuffer()
            return [bytes(data[o:o + n]) for o, n in zip(page.dataoffsets, page.databytecounts)]

    def write_encoded(self, path, info: ImageInfo, tiles: Iterator[bytes]) -> None:
        """Write a file from already encoded tiles in raster order (see :meth:`encode_tiles`)."""
        kwargs = self.options(info)
        kwargs.pop("maxworkers")
        kwargs.pop("buffersize")
        tifffile.imwrite(path, tiles, **kwargs)
