"""The tiling engine: read -> plan -> infer -> blend, one row of tiles at a time.

Only one row of tiles is in memory at once: the source rows it covers, a float32
accumulator of the same height and the full width, and the rows it shares with the next
row of tiles. Peak memory therefore grows with the image width, never its height. Rows are
yielded as soon as no later tile can touch them, already converted back to the stored dtype.
"""

from __future__ import annotations

import logging
from contextlib import closing
from typing import Callable, Iterator

import numpy as np

from .errors import ConfigError
from .io.base import Band, Reader
from .io.nodata import fill_invalid, restore_invalid
from .models.base import Model
from .pipeline import pipelined, read_ahead
from .pixels import ValueRange, from_unit_rgb, input_range, needs_sample, to_unit_rgb
from .plan import TilePlan

Progress = Callable[[int], None]
log = logging.getLogger(__name__)


def default_overlap(halo: int) -> int:
    """``halo`` px of ignored context on both sides plus an 8 px feathered ramp.

    Tiles are exact whatever the ramp (the halo is ignored), so a short ramp only saves work.
    """
    return 2 * halo + 8


#: an ``approximate`` model's tiles are feathered across this fraction of the tile side (256 px at 1024):
#: its image-wide statistics differ a little from tile to tile, and a long ramp hides the change
APPROXIMATE_RAMP = 0.25


def plan_overlap(model: Model, overlap: int | None = None, tile: int | None = 1024) -> int:
    """The overlap a plan for ``model`` uses: ``overlap``, else the default for its halo and tiling mode."""
    if overlap is not None:
        return overlap
    if model.tiling == "approximate" and tile is not None:
        return default_overlap(model.halo) + int(tile * APPROXIMATE_RAMP)
    return default_overlap(model.halo)


def make_plan(height: int, width: int, model: Model, *, tile: int | None = 1024,
              overlap: int | None = None) -> TilePlan:
    """Plan tiles for ``model``; ``tile=None`` means the whole image in one pass, as does an image no
    larger than ``tile`` (even for a model whose overlap exceeds the tile).

    A ``whole`` model always runs in one pass, and refuses images above its ``max_pixels``.
    """
    if model.tiling == "whole":
        check_whole(height, width, model)
        tile = None
    overlap = plan_overlap(model, overlap, tile)
    if tile is None or max(height, width) <= tile:  # one tile, which any alignment allows
        tile = max(height, width, overlap + 2 * model.align)
    return TilePlan(height, width, tile=tile, overlap=overlap, halo=model.halo, align=model.align)


def check_whole(height: int, width: int, model: Model) -> None:
    """Refuse, in one line, an image too large for a model that runs on the whole image at once."""
    limit = model.max_pixels
    if limit is not None and height * width > limit:
        raise ConfigError(f"{model.name} runs on the whole image in one pass (its result depends on every "
                          f"pixel, so it cannot be tiled) and takes at most {limit / 1e6:g} MP; "
                          f"this image is {width}x{height} ({height * width / 1e6:g} MP): crop or downscale it")


#: models slower than this where they run (MP/s) log an estimate of their time before they start ...
SLOW_MP_PER_S = 1.0
#: ... when it is at least this many seconds
ESTIMATE_ABOVE_S = 5.0


def log_estimate(model: Model, plan: TilePlan) -> None:
    """Warn how long a slow model (a heavy network on the CPU) will take on ``plan``, before it starts."""
    rate = model.expected_mp_per_s
    if rate is None or rate >= SLOW_MP_PER_S:
        return
    work = sum(b - a for a, b in plan.rows) * sum(b - a for a, b in plan.cols) / 1e6
    if work / rate < ESTIMATE_ABOVE_S:
        return
    log.warning("%s on the CPU: %.1f MP to compute (tiles with their overlap) at about %g MP/s, roughly %s",
                model.name, work, rate, duration(work / rate))


def duration(seconds: float) -> str:
    """``seconds`` for people: 40 s, 12 min, 3.2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def scene_state(reader: Reader, model: Model, choice: ValueRange | None = None) -> tuple[ValueRange, dict]:
    """The input range and the model's image-wide state, both from one overview, nodata left out."""
    info = reader.info
    if not (model.needs_overview or needs_sample(info.dtype, info.bits, choice)):
        return input_range(info.dtype, choice=choice, bits=info.bits), {}
    pixels, valid = reader.overview()
    layout = info.layout
    bands = layout.select(pixels[..., None] if layout.squeeze else pixels)
    scale = input_range(info.dtype, choice=choice, bits=info.bits,
                        sample=bands if valid is None else bands[valid])
    if not model.needs_overview:
        return scale, {}
    unit = to_unit_rgb(pixels, layout, scale=scale, valid=valid)
    fill_invalid(unit, valid)
    return scale, model.global_state(unit, valid=valid)


def restore_bands(reader: Reader, model: Model, plan: TilePlan, *, batch: int | None = None,
                  progress: Progress | None = None, value_range: ValueRange | None = None,
                  scene: tuple[ValueRange, dict] | None = None,
                  span: tuple[int, int] | None = None) -> Iterator[Band]:
    """Yield ``(y0, rows, valid)`` of the restored image, top to bottom, in the reader's dtype and layout.

    ``value_range`` is the stored range the model sees as 0 .. 1 (default: chosen from the
    scene). Nodata pixels are filled for the model and come out exactly as they went in.
    ``scene`` is :func:`scene_state`'s result when it was computed beforehand (once for an
    image spread over several processes). ``span=(y0, y1)`` restores only those image rows,
    running just the tile rows of ``plan`` that touch them; they come out exactly as in a
    whole-image run, since every pixel sees the same tiles blended in the same order.
    """
    info = reader.info
    layout = info.layout
    scale, state = scene_state(reader, model, value_range) if scene is None else scene
    batch = max(1, batch or model.preferred_batch)
    width = info.width
    lo, hi = span or (0, info.height)
    rows = plan.rows_covering(lo, hi)
    # rows shared with the next tile row, already holding this row's weighted share
    carry = np.zeros((0, width, 3), np.float32)
    # the next band is read and decoded in a thread while this one is blended; closing waits for that read
    with closing(read_ahead(reader.read, [plan.rows[r] for r in rows])) as bands:
        for r, band in zip(rows, bands):
            y0, y1 = plan.rows[r]
            valid = reader.valid(y0, band)
            acc = np.zeros((y1 - y0, width, 3), np.float32)
            acc[: len(carry)] = carry
            _blend_row(acc, (band, valid, scale), layout, model, state, plan, r, batch, progress)
            # rows above the next tile row's start are complete; everything above y0 already went out
            done = plan.final_after_row(r) - y0
            carry = acc[done:].copy()
            a, b = max(lo, y0) - y0, min(hi, y0 + done) - y0
            if a < b:
                out = from_unit_rgb(acc[a:b], band[a:b], layout, inplace=True, scale=scale)
                rows_valid = None if valid is None else valid[a:b]
                restore_invalid(out, band[a:b], rows_valid, layout, info.nodata)
                yield y0 + a, out, rows_valid
            del acc


def _blend_row(acc: np.ndarray, source: tuple, layout, model: Model, state: dict,
               plan: TilePlan, r: int, batch: int, progress: Progress | None) -> None:
    """Infer every tile of row ``r`` and add it, feathered, into ``acc``.

    ``source`` is the band of stored rows (the same rows as ``acc``), its valid mask and its value range.
    """
    wy = plan.row_weights[r]
    cols = range(len(plan.cols))
    chunks = [cols[start:start + batch] for start in range(0, len(cols), batch)]
    stacks = (_tiles(source, layout, [plan.cols[c] for c in chunk]) for chunk in chunks)
    # GPU models take the next chunk while the previous one is still on the device.
    results = pipelined(lambda tiles: model.submit(tiles, state), stacks, depth=model.in_flight)
    for chunk, out in zip(chunks, results):
        for k, c in enumerate(chunk):
            x0, x1 = plan.cols[c]
            accumulate(acc[:, x0:x1], out[k], wy, plan.col_weights[c])
        if progress is not None:
            progress(len(chunk))


def _tiles(source: tuple, layout, spans: list[tuple[int, int]]) -> np.ndarray:
    """The model's float32 RGB batch (N, h, w, 3) for column ``spans`` of the band, nodata filled."""
    band, valid, scale = source
    width = spans[0][1] - spans[0][0]
    batch = np.empty((len(spans), band.shape[0], width, 3), np.float32)
    for k, (x0, x1) in enumerate(spans):
        tile_valid = None if valid is None else valid[:, x0:x1]
        to_unit_rgb(band[:, x0:x1], layout, out=batch[k], scale=scale, valid=tile_valid)
        fill_invalid(batch[k], tile_valid)
    return batch


def _core(w: np.ndarray) -> tuple[int, int]:
    """The span where a 1-D weight is exactly 1 (no other tile contributes there)."""
    ones = np.flatnonzero(w == 1.0)
    return (int(ones[0]), int(ones[-1]) + 1) if len(ones) else (0, 0)


def accumulate(dst: np.ndarray, tile: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> None:
    """``dst += tile * wy x wx``; the tile's core, where the weight is exactly 1, is a plain copy.

    Weights are a partition of unity, so where this tile's weight is 1 every other tile's is
    0 and copying equals adding. Only the overlap strips pay for the multiply-add.
    """
    (ya, yb), (xa, xb) = _core(wy), _core(wx)
    if ya >= yb or xa >= xb:
        dst += tile * (wy[:, None, None] * wx[None, :, None])
        return
    dst[ya:yb, xa:xb] = tile[ya:yb, xa:xb]
    for ys, xs in ((slice(0, ya), slice(None)), (slice(yb, None), slice(None)),
                   (slice(ya, yb), slice(0, xa)), (slice(ya, yb), slice(xb, None))):
        dst[ys, xs] += tile[ys, xs] * (wy[ys, None, None] * wx[None, xs, None])
