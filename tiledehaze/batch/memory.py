"""How much memory one worker needs for an image, and how many workers fit."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, TileDehazeError
from ..io import probe
from .jobs import Job

log = logging.getLogger(__name__)

RUNTIME_BYTES = 300 << 20


def estimate_job_memory(width: int, height: int, *, channels: int = 3, itemsize: int = 1,
                        whole: bool = True, tile: int | None = 1024, overlap: int = 32) -> int:
    """Rough peak bytes one worker needs to restore an image of this size (see the module notes)."""
    side = min(tile or max(width, height), max(width, height))
    band_rows = min(height, side + 2 * overlap)
    bands = 2 * band_rows * width * (2 * channels * itemsize + 24)
    model = 50 * side * side
    decoded = 2 * width * height * channels * itemsize if whole else 32 << 20
    return RUNTIME_BYTES + bands + model + decoded


def job_memory(path: str | Path, *, tile: int | None, overlap: int) -> int:
    """:func:`estimate_job_memory` for the image at ``path``, from its header; ``overlap`` is the plan's."""
    try:
        info = probe(path)
    except TileDehazeError:
        return RUNTIME_BYTES
    return estimate_job_memory(info.width, info.height, channels=info.channels, itemsize=info.dtype.itemsize,
                               whole=info.format != "tiff", tile=tile, overlap=overlap)


def default_memory_limit(jobs: Sequence[Job], workers: int, *, tile: int | None, overlap: int) -> tuple[int, int]:
    """``(workers, bytes per worker)``: fewer workers when the largest image would not fit N times."""
    need = max((job_memory(j.source, tile=tile, overlap=overlap) for j in jobs), default=RUNTIME_BYTES)
    return fit_workers(need, workers, "the largest image")


def fit_workers(need: int, workers: int, what: str) -> tuple[int, int]:
    """``(workers, bytes per worker)`` when each worker needs ``need`` bytes (``what`` names the need)."""
    budget = int(available_memory() * 0.85)
    fit = max(1, budget // max(need, 1))
    if fit < workers:
        log.warning("%s needs about %.1f GB per worker; using %d workers instead of %d "
                    "(pass --memory-limit to decide yourself)", what, need / 1e9, fit, workers)
        workers = fit
    return workers, budget // workers


def parse_memory(value: str | int) -> int:
    from dask.utils import parse_bytes

    try:
        limit = parse_bytes(value)
    except (ValueError, TypeError):
        raise ConfigError(f"--memory-limit {value!r} is not a size like 4GB or 3500MiB") from None
    if limit < 256 << 20:
        raise ConfigError(f"--memory-limit {value!r} is too small; a worker needs at least 256 MiB")
    return limit


def available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
