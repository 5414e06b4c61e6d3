"""The Python API: restore an array, or a file of any size."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .engine import log_estimate, make_plan, restore_bands
from .errors import InputError, OutOfMemory, OutputError
from .io import ArrayReader, collect, open_image, writer_for
from .io.atomic import atomic_output
from .models import Model, build_model
from .options import RunOptions, resolve
from .pipeline import background
from .pixels import ValueRange, check_unit_range

Progress = Callable[[int], None]


@functools.lru_cache(maxsize=8)
def _cached_model(options: RunOptions) -> Model:
    return build_model(options)


def load_model(options: RunOptions) -> Model:
    """The model ``options`` describe; models built from names are cached, so repeated calls are cheap."""
    if isinstance(options.model, Model):
        return options.model
    return _cached_model(options.replace(overlap=None))  # the overlap is the plan's, not the model's


def get_model(model: str | Model | None = None, *, weights: str | os.PathLike | None = None,
              backend: str = "auto", threads: int | None = None, **options) -> Model:
    """A ready model; models built from names are cached, so repeated calls are cheap."""
    return load_model(RunOptions.create(model=model, weights=weights, backend=backend, threads=threads, **options))


def restore(image: np.ndarray, *, model: str | Model | None = None, tile: int | None = 1024,
            overlap: int | None = None, backend: str = "auto", weights: str | os.PathLike | None = None,
            threads: int | None = None, batch: int | None = None, precision: str | None = None,
            device: str | None = None, progress: Progress | None = None, options: RunOptions | None = None,
            input_range: tuple[float, float] | None = None, **model_options) -> np.ndarray:
    """Dehaze an image held in memory.

    Parameters
    ----------
    image : ndarray
        (H, W) gray, or (H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), in
        RGB channel order; uint8, uint16, float32 or float64 (floats in [0, 1]).
    model : str or Model
        A registered model name (``"hazenet"``, ``"aodnet"``, ``"dcp"``) or a model from
        :func:`get_model`. Default: the network ``weights`` belong to, or ``"hazenet"``.
    tile : int or None
        Largest tile side in pixels; ``None`` runs the whole image in one pass.
    overlap : int or None
        Minimum overlap between neighbouring tiles; default derived from the model's halo.
    backend : str
        ``"auto"`` (the fastest usable), ``"tensorrt"``, ``"torch-cuda"``, ``"onnxruntime-cuda"``,
        ``"onnxruntime"``, ``"torch"`` or ``"onnxruntime-tensorrt"``; see ``tiledehaze info``.
    weights : path, optional
        The model's weights (safetensors or a torch checkpoint) instead of the shipped ones;
        required by models whose weights do not ship.
    threads, batch : int, optional
        Inference threads (default: all cores) and tiles per inference call (default: what
        suits the backend).
    precision, device : str, optional
        ``"fp16"`` or ``"fp32"``, and ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (default: what the
        backend prefers).
    options : RunOptions, optional
        All of the above in one object (then leave the separate keywords out).
    input_range : (low, high), optional
        Stored values the model sees as 0 and 1; default: the full scale of uint8 and of floats
        (which must then lie in [0, 1]: anything else is an :class:`~tiledehaze.errors.InputError`),
        the image's largest value plus 5 % headroom for uint16 that uses part of its range.
    **model_options
        The model's own options, e.g. ``patch=`` for ``"dcp"``; anything else is a
        :class:`~tiledehaze.errors.ConfigError`.

    Returns
    -------
    ndarray
        The restored image, same shape and dtype; alpha passes through untouched.

    Examples
    --------
    >>> import numpy as np, tiledehaze
    >>> hazy = np.full((600, 800, 3), 180, np.uint8)
    >>> tiledehaze.restore(hazy, tile=512).shape
    (600, 800, 3)
    """
    opts = resolve(options, dict(model=model, tile=tile, overlap=overlap, backend=backend, weights=weights,
                                 threads=threads, batch=batch, precision=precision, device=device), model_options)
    array = _as_array(image)
    if input_range is None and array.dtype.kind == "f":
        check_unit_range(array)  # an array's float scale is the caller's to say; files are scaled from their scene
    reader = ArrayReader(array)
    m = load_model(opts)
    plan = make_plan(reader.info.height, reader.info.width, m, tile=opts.tile, overlap=opts.overlap)
    log_estimate(m, plan)
    return collect(reader.info, restore_bands(reader, m, plan, batch=opts.batch, progress=progress,
                                              value_range=_value_range(input_range)))


def _value_range(value: tuple[float, float] | ValueRange | None) -> ValueRange | None:
    if value is None or isinstance(value, ValueRange):
        return value
    low, high = value
    return ValueRange(float(low), float(high))


def _as_array(image) -> np.ndarray:
    """An ndarray, or an object that is one (a PIL image, a CPU tensor); never a list of numbers."""
    if isinstance(image, np.ndarray):
        return image
    if hasattr(image, "__array__") or hasattr(image, "__array_interface__"):
        return np.asarray(image)
    if isinstance(image, (str, os.PathLike)):
        raise InputError(f"restore() takes pixels, not a file name; use tiledehaze.process_file({str(image)!r})")
    raise InputError(f"restore() takes a numpy array of shape (H, W) or (H, W, C), not a {type(image).__name__}; "
                     "convert it with np.asarray(image, dtype=np.uint8) (or float32 in [0, 1])")


@dataclass(frozen=True)
class ProcessResult:
    source: Path
    output: Path
    megapixels: float
    tiles: int
    seconds: float
    blocks: int = 0  # blocks of rows spread over dask workers (0: restored in this process)
    reused: int = 0  # of those, blocks finished by an earlier, interrupted run


def default_output(src: str | Path) -> Path:
    src = Path(src)
    return src.with_name(f"{src.stem}_dehazed{src.suffix}")


def check_output(src: Path, dst: Path, *, overwrite: bool) -> None:
    """Refuse an output that is the input, a folder, or (without ``overwrite``) an existing file."""
    if src.resolve() == dst.resolve() or _same_file(src, dst):
        raise OutputError(f"output {dst} is the input; choose another output path")
    if dst.is_dir():
        raise OutputError(f"output {dst} is a directory")
    if dst.exists() and not overwrite:
        raise OutputError(f"output {dst} exists; pass --overwrite to replace it")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def process_file(src: str | os.PathLike, dst: str | os.PathLike | None = None, *,
                 model: str | Model | None = None, tile: int | None = 1024, overlap: int | None = None,
                 backend: str = "auto", weights: str | os.PathLike | None = None,
                 threads: int | None = None, batch: int | None = None, precision: str | None = None,
                 device: str | None = None, compression: str | None = "keep", quality: int = 95,
                 overwrite: bool = False, max_pixels: int | None = None,
                 bands: tuple[int, ...] | None = None, input_range: tuple[float, float] | None = None,
                 cog: bool = False, on_plan: Callable[[int], None] | None = None, progress: Progress | None = None,
                 workers: int | None = None, scheduler: str | None = None, memory_limit: str | int | None = None,
                 retries: int = 2, options: RunOptions | None = None, **model_options) -> ProcessResult:
    """Dehaze the image file ``src`` into ``dst`` (default ``<name>_dehazed.<ext>`` beside it).

    TIFFs are streamed band by band in bounded memory; other formats are decoded whole. The
    output appears atomically; the input is never modified. ``on_plan(total_tiles)`` is called
    once the tile count is known; ``progress(n)`` after every ``n`` tiles. The run options are
    those of :func:`restore`.

    GeoTIFFs: ``bands`` (1-based, as GDAL counts) names the one or three bands the model sees,
    every other band passes through bit for bit; ``input_range`` is as for :func:`restore`;
    nodata pixels (a nodata value or a mask page) come out exactly as they went in. A
    Cloud-Optimized GeoTIFF (or any TIFF with overviews) gives a COG; ``cog=True`` makes one
    from any input.

    ``workers=N`` (a local dask cluster of N processes) or ``scheduler="tcp://host:8786"`` (an
    existing cluster whose workers see the same paths) spread this one TIFF over the workers in
    blocks of rows, each restored and encoded where it runs; the output is identical to a run
    in this process (see :mod:`tiledehaze.batch.split`). ``memory_limit`` is per local worker;
    ``retries`` is how often a block is retried after its worker died.
    """
    opts = resolve(options, dict(model=model, tile=tile, overlap=overlap, backend=backend, weights=weights,
                                 threads=threads, batch=batch, precision=precision, device=device), model_options)
    src = Path(src)
    dst = Path(dst) if dst is not None else default_output(src)
    check_output(src, dst, overwrite=overwrite)
    if workers or scheduler:
        from .batch.split import process_split

        return process_split(src, dst, options=opts, compression=compression, bands=bands,
                             value_range=_value_range(input_range), cog=cog, workers=workers, scheduler=scheduler,
                             memory_limit=memory_limit, retries=retries, on_plan=on_plan, progress=progress)
    start = time.perf_counter()
    try:
        with open_image(src, pixel_limit=max_pixels, bands=bands) as reader:
            info = reader.info
            writer = writer_for(dst, info, compression=compression, quality=quality, cog=cog)
            m = load_model(opts)
            plan = make_plan(info.height, info.width, m, tile=opts.tile, overlap=opts.overlap)
            log_estimate(m, plan)
            if on_plan is not None:
                on_plan(len(plan))
            with atomic_output(dst) as tmp:
                restored = restore_bands(reader, m, plan, batch=opts.batch, progress=progress,
                                         value_range=_value_range(input_range))
                writer.write(tmp, info, background(restored))
    except InputError as exc:
        if str(src) in str(exc):
            raise
        raise InputError(f"{src}: {exc}") from None  # pixel checks deep in the engine do not know the file
    except MemoryError:
        size = f" ({info.width}x{info.height} pixels)" if "info" in locals() else ""
        raise OutOfMemory(f"{src}: out of memory{size}; try a smaller --tile, fewer workers, "
                          "or check that the image size is right") from None
    return ProcessResult(src, dst, info.megapixels, len(plan), time.perf_counter() - start)
