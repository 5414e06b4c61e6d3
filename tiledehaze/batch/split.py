"""One TIFF across a dask cluster: blocks of output tile rows, restored and encoded on the workers.

The image is cut into blocks of whole rows of the *output* TIFF's tiles. Every block runs the
same :class:`~tiledehaze.plan.TilePlan` as a run in one process, restricted to the tile rows
that touch its rows (see ``span`` in :func:`~tiledehaze.engine.restore_bands`), and receives
the image-wide state (DCP's airlight) that the client computed once from the overview. So a
block's pixels are exactly those of the single-process run, and its worker encodes them into
the very tile bytes the single-process writer would produce. The client only stores finished
blocks and concatenates their tiles into the output file, in order, while later blocks are
still being computed, so its CPU and memory stay small whatever the image size.

The cost of exactness: the one tile row that straddles a block boundary is computed by both
blocks. There is therefore one block per worker by default (never more than the plan has tile
rows), which keeps that duplication to one tile row per worker.

Faults: a block whose worker dies is retried on another worker (``retries``). Every finished
block is kept in a scratch folder beside the output (``.<name>.tiledehaze-blocks-<key>``, the key
made of the input's identity and every setting that changes the output), so a rerun after the
client was killed computes only the missing rows, whatever its number of workers; the folder
is removed once the output is complete. The output itself appears atomically, as always.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import struct
import time
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Callable, Iterator

from ..engine import log_estimate, make_plan, restore_bands, scene_state
from ..errors import ConfigError, OutputError, TileDehazeError
from ..io import TiffReader, TiffWriter, format_of_path, open_image, probe, writer_for
from ..io.atomic import atomic_output, describe_os_error, write_atomic
from ..io.base import ImageInfo
from ..models import model_entry
from ..options import RunOptions, fingerprint
from ..pipeline import background
from ..pixels import ValueRange
from ..plan import TilePlan
from .cluster import check_cluster_options, dask_client, worker_threads
from .jobs import Job, JobResult
from .memory import estimate_job_memory, fit_workers

log = logging.getLogger(__name__)

Span = tuple[int, int]
SCRATCH_MARK = ".tiledehaze-blocks-"
#: in a batch on a cluster, TIFFs above this many megapixels are spread over all workers
DEFAULT_SPLIT_MP = 500.0
WORKER_WAIT_S = 60


def plan_blocks(height: int, out_tile: int, plan: TilePlan, blocks: int) -> list[Span]:
    """About ``blocks`` row spans of nearly equal height, each a whole number of ``out_tile`` rows.

    Each cut lies on the output tile row nearest its ideal place (one either side allowed) that
    the fewest tile rows of ``plan`` straddle: those are computed by both blocks. There are never
    more blocks than tile rows in ``plan`` nor than output tile rows.
    """
    tile_rows = math.ceil(height / out_tile)
    n = max(1, min(blocks, len(plan.rows), tile_rows))

    def shared(k: int) -> int:
        y = k * out_tile
        return sum(1 for s, e in plan.rows if s < y < e)

    cuts = [0]
    for i in range(1, n):
        ideal = round(i * tile_rows / n)
        options = [k for k in (ideal, ideal - 1, ideal + 1) if cuts[-1] < k < tile_rows]
        if options:
            cuts.append(min(options, key=lambda k: (shared(k), abs(k - ideal))))
    edges = [k * out_tile for k in cuts] + [height]
    return list(zip(edges, edges[1:]))


def block_tiles(plan: TilePlan, span: Span) -> int:
    """Tiles of ``plan`` whose tile row starts in ``span``: the block's share of the progress."""
    return sum(len(plan.cols) for y0, _ in plan.rows if span[0] <= y0 < span[1])


def block_memory(info: ImageInfo, span: Span, *, tile: int | None, overlap: int) -> int:
    """Rough peak bytes of a worker restoring one block: the engine's bands plus the encoded block."""
    raw = (span[1] - span[0]) * info.width * info.channels * info.dtype.itemsize
    engine = estimate_job_memory(info.width, info.height, channels=info.channels, itemsize=info.dtype.itemsize,
                                 whole=False, tile=tile, overlap=overlap)
    return engine + 2 * raw  # the in-memory TIFF and the tiles cut from it (uncompressed at worst)


def restore_block(source: str, options: RunOptions, compression: str | None, span: Span, scene: tuple,
                  threads: int | None = None, bands: tuple[int, ...] | None = None) -> list[bytes]:
    """On a worker: restore rows ``span`` of ``source`` and return their finished output tiles.

    ``scene`` is :func:`~tiledehaze.engine.scene_state`'s result for the whole image, computed
    once by the client; ``bands`` picks the model's bands as in :func:`tiledehaze.process_file`.
    """
    from ..api import load_model

    model = load_model(options.replace(threads=threads or options.threads or worker_threads()))
    with open_image(source, bands=bands) as reader:
        info = reader.info
        plan = make_plan(info.height, info.width, model, tile=options.tile, overlap=options.overlap)
        rows = restore_bands(reader, model, plan, batch=options.batch, scene=scene, span=span)
        return TiffWriter(compression=compression).encode_tiles(info, span[1] - span[0], rows)


class Scratch:
    """Finished blocks of one output, one file each, in a hidden folder beside the output."""

    def __init__(self, dst: Path, key: str):
        self.prefix = f".{dst.name}{SCRATCH_MARK}"
        self.folder = dst.with_name(self.prefix + key)

    def prepare(self) -> None:
        """Create the folder, removing those of earlier runs with other inputs or settings."""
        for old in self.folder.parent.glob(glob.escape(self.prefix) + "*"):
            if old != self.folder and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.folder)) from None

    def path(self, span: Span) -> Path:
        return self.folder / f"rows-{span[0]:09d}-{span[1]:09d}.bin"

    def finished(self) -> list[Span]:
        """The spans of the blocks saved so far, in any order."""
        spans = []
        for path in self.folder.glob("rows-*-*.bin"):
            try:
                y0, y1 = (int(part) for part in path.stem.split("-")[1:])
            except ValueError:
                continue
            spans.append((y0, y1))
        return spans

    def save(self, span: Span, tiles: list[bytes]) -> None:
        head = struct.pack(f"<Q{len(tiles)}Q", len(tiles), *(len(t) for t in tiles))
        write_atomic(self.path(span), head + b"".join(tiles))

    def tiles(self, span: Span) -> Iterator[bytes]:
        with open(self.path(span), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            for size in struct.unpack(f"<{n}Q", f.read(8 * n)):
                yield f.read(size)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_key(src: Path, options: RunOptions, compression: str | None, out_tile: tuple[int, int], **io) -> str:
    """What identifies a block's content: the input (path, size, time) and every setting of the output."""
    st = src.stat()
    return fingerprint({"source": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        **options.fingerprint_key(), "compression": compression, "out_tile": list(out_tile),
                        **{k: v for k, v in io.items() if v is not None}})


def merge_blocks(planned: list[Span], finished: list[Span], height: int) -> list[Span]:
    """All blocks of a run: the ``finished`` ones of an earlier run, the gaps between them cut where ``planned`` cuts.

    So a rerun reuses every finished block even when it has another number of workers.
    """
    keep: list[Span] = []
    for span in sorted(finished):
        if (not keep or span[0] >= keep[-1][1]) and span[0] < span[1] <= height:
            keep.append(span)
    cuts = [a for a, _ in planned]
    spans: list[Span] = []
    pos = 0
    for a, b in keep + [(height, height)]:
        edges = [pos] + [c for c in cuts if pos < c < a] + [a]
        spans += [(y0, y1) for y0, y1 in zip(edges, edges[1:]) if y0 < y1]
        if a < b:
            spans.append((a, b))
        pos = b
    return spans


def process_split(src: str | os.PathLike, dst: str | os.PathLike, *, options: RunOptions,
                  compression: str | None = "keep", bands: tuple[int, ...] | None = None,
                  value_range: ValueRange | None = None, cog: bool = False,
                  workers: int | None = None, scheduler: str | None = None,
                  memory_limit: str | int | None = None, retries: int = 2, blocks: int | None = None,
                  client=None, restore: Callable[..., list[bytes]] = restore_block,
                  on_plan: Callable[[int], None] | None = None,
                  progress: Callable[[int], None] | None = None):
    """Restore the TIFF ``src`` into ``dst`` on dask workers, block by block (see the module notes).

    ``client`` reuses a connected dask client (a batch's); otherwise ``workers`` starts a local
    cluster or ``scheduler`` joins an existing one. ``blocks`` overrides the number of blocks
    (default: one per worker). ``restore`` replaces :func:`restore_block` (for tests).
    ``bands``, ``value_range`` and ``cog`` are as for :func:`tiledehaze.process_file`; COG
    outputs (asked for, or from a source with overviews or a mask) are not spread yet.
    Returns a :class:`~tiledehaze.api.ProcessResult`.
    """
    from ..api import ProcessResult, load_model

    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    memory_limit = check_cluster_options(workers, scheduler, memory_limit)
    if not isinstance(options.model, str):
        raise ConfigError("spreading an image over workers needs a registered model name "
                          "(workers build their own model)")
    with open_image(src, bands=bands) as reader:
        if not isinstance(reader, TiffReader):
            raise ConfigError(f"{src}: only TIFF inputs can be spread over workers; drop --workers/--scheduler")
        info = reader.info
        writer = writer_for(dst, info, compression=compression, cog=cog)
        if not isinstance(writer, TiffWriter):
            raise ConfigError(f"{dst}: spreading one image over workers writes TIFF; give a .tif output")
        if type(writer) is not TiffWriter:
            raise ConfigError(f"{dst}: a COG output (asked for, or from an input with overviews or a mask) "
                              "cannot be spread over workers yet; run it without --workers/--scheduler")
        model = load_model(options)
        if model.tiling == "whole":
            raise ConfigError(f"{model.name} runs on the whole image in one pass, which cannot be spread over "
                              "workers; drop --workers/--scheduler")
        plan = make_plan(info.height, info.width, model, tile=options.tile, overlap=options.overlap)
        log_estimate(model, plan)
        overlap = plan.overlap
        scene = scene_state(reader, model, value_range)  # once, here: every block gets the same airlight
    out_tile = writer.tile_of(info)

    def need(n: int) -> tuple[int, int]:
        spans = plan_blocks(info.height, out_tile[0], plan, blocks or n)
        return fit_workers(max(block_memory(info, s, tile=options.tile, overlap=overlap) for s in spans),
                           n, "a block of this image")

    if on_plan is not None:
        on_plan(len(plan))
    source = str(src.resolve())
    run = options.replace(threads=None)
    connect = nullcontext((client, "", options.threads)) if client is not None else dask_client(
        workers=workers, scheduler=scheduler, threads=options.threads, memory_limit=memory_limit, need=need)
    with connect as (client, _, threads):
        n_workers = _workers_of(client, scheduler)
        scratch = Scratch(dst, run_key(src, run, compression, out_tile, bands=bands, value_range=value_range))
        scratch.prepare()
        finished = scratch.finished()
        spans = merge_blocks(plan_blocks(info.height, out_tile[0], plan, blocks or n_workers), finished, info.height)
        todo = [span for span in spans if span not in finished]
        reused = len(spans) - len(todo)
        if reused:
            log.info("%s: reusing %d of %d blocks finished by an earlier run", dst, reused, len(spans))
            if progress is not None:
                progress(sum(block_tiles(plan, span) for span in spans if span not in todo))
        futures = {client.submit(restore, source, run, compression, span, scene, threads, bands=bands, pure=False,
                                 retries=retries,
                                 key=f"tiledehaze-block-{scratch.folder.name}-{span[0]}-{span[1]}"): span
                   for span in todo}
        # finished blocks are saved in a thread while this one writes the output from those it needs next
        arrived = background(_save_blocks(futures, scratch, plan, source, progress), depth=len(spans) + 1)
        ready = set(finished)

        def tiles() -> Iterator[bytes]:
            for span in spans:
                while span not in ready:
                    ready.add(next(arrived))
                yield from scratch.tiles(span)

        with closing(arrived):
            try:
                with atomic_output(dst) as tmp:
                    writer.write_encoded(tmp, info, tiles())
            finally:
                client.cancel([f for f in futures if not f.done()])  # after an error: stop the others
    scratch.remove()
    return ProcessResult(src, dst, info.megapixels, len(plan), time.perf_counter() - start, len(spans), reused)


def _workers_of(client, scheduler: str | None) -> int:
    """How many workers the cluster has, waiting a little for the first one to connect."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise ConfigError(f"no dask worker joined the cluster{f' at {scheduler}' if scheduler else ''} within "
                          f"{WORKER_WAIT_S} s; start some with 'dask worker ADDRESS'") from None
    return max(1, len(client.scheduler_info().get("workers", {})))


def _save_blocks(futures: dict, scratch: Scratch, plan: TilePlan, source: str,
                 progress: Callable[[int], None] | None) -> Iterator[Span]:
    """Save every block into ``scratch`` as it arrives and yield its span."""
    from distributed import as_completed

    for future, tiles in as_completed(futures, with_results=True, raise_errors=False):
        span = futures[future]
        if future.status != "finished":
            exc = future.exception()
            if type(exc).__name__ == "KilledWorker":
                raise OutputError(f"the workers restoring rows {span[0]}-{span[1]} of {source} died "
                                  "repeatedly (out of memory? see --memory-limit)") from None
            raise exc
        scratch.save(span, tiles)
        del tiles
        if progress is not None:
            progress(block_tiles(plan, span))
        yield span


def splittable(job: Job, settings, split_above: float | None) -> bool:
    """Whether a batch job is a TIFF above ``split_above`` MP written as TIFF (then spread over the workers)."""
    if split_above is None or job.megapixels is None or job.megapixels <= split_above:
        return False
    if model_entry(settings.run.model).spec.tiling == "whole":  # one pass: nothing to spread
        return False
    try:
        info = probe(job.source)
    except TileDehazeError:
        return False
    meta = info.metadata.get("tiff", {})
    cog = settings.cog or meta.get("overviews") or meta.get("mask")  # COGs are written in one process
    try:
        return info.format == "tiff" and format_of_path(job.output) == "tiff" and not cog
    except TileDehazeError:
        return False


def run_split_job(job: Job, settings, client, *, threads: int | None, retries: int) -> JobResult:
    """A batch job spread over the cluster of ``client``; user errors come back as a failed result."""
    start = time.perf_counter()
    try:
        result = process_split(job.source, job.output, options=settings.run.replace(threads=threads),
                               compression=settings.compression, bands=settings.bands,
                               value_range=settings.input_range, cog=settings.cog, client=client, retries=retries)
    except TileDehazeError as exc:
        return JobResult(job.relpath, job.source, job.output, "failed", str(exc).removeprefix(f"{job.source}: "),
                         seconds=time.perf_counter() - start)
    log.info("%s: spread over the workers in %d blocks (%d reused)", job.source, result.blocks, result.reused)
    return JobResult(job.relpath, job.source, job.output, "done", None, result.megapixels,
                     time.perf_counter() - start, output_size=os.stat(job.output).st_size)
