"""One large TIFF on dask workers vs one process, the client's assembly rate, and a schedule simulation.

    nice -n 10 python scripts/bench_split.py --width 12000 --height 8000 --repeats 3

Measured, side by side and interleaved (the machine is shared and noisy; medians are reported):
  single      ``process_file`` in this process, inference on all cores
  split Nx1   ``process_split`` on a local cluster of N single-threaded worker processes (started
              once, before the timing: cluster start-up is a constant few seconds, not throughput)
Then:
  assembly    tiles per second the client writes from finished blocks (read from the scratch
              folder, written into the output TIFF): the only per-tile work the client does
  worker      output tiles per second one worker produces (from the split runs)
  simulation  makespan of the block schedule for 16 and 64 workers on images of this size and
              of 100,000 x 100,000 px from those two rates, counting the tiles every block
              boundary computes twice and the final assembly; beside it, the same for a grid of
              blocks (rows x columns), which tiledehaze does not run yet
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tifffile  # noqa: E402

from tiledehaze import get_model, process_file  # noqa: E402
from tiledehaze.batch.split import Scratch, plan_blocks, process_split  # noqa: E402
from tiledehaze.engine import make_plan  # noqa: E402
from tiledehaze.io import TiffWriter, probe  # noqa: E402
from tiledehaze.options import RunOptions  # noqa: E402


def make_image(path: Path, height: int, width: int) -> None:
    """A hazy synthetic scene written band by band as a tiled zlib TIFF."""
    def bands():
        for y0 in range(0, height, 512):
            y = np.linspace(y0 / height, min(y0 + 512, height) / height, min(512, height - y0),
                            dtype=np.float32)[:, None, None]
            x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
            scene = 0.5 + 0.4 * np.sin(x * 400 + y * 250 + np.array([0, 2, 4], np.float32))
            t = 0.3 + 0.7 * y
            yield np.clip((scene * t + 0.85 * (1 - t)) * 255, 0, 255).astype(np.uint8)
    tiles = (band[:, x:x + 512] for band in bands() for x in range(0, width, 512))
    tifffile.imwrite(path, tiles, shape=(height, width, 3), dtype=np.uint8, tile=(512, 512),
                     compression="zlib", photometric="rgb")


def assembly_rate(output: Path, folder: Path) -> tuple[float, int]:
    """Tiles/s of the client's only per-tile work: read finished blocks, write the output file."""
    info = probe(output)
    writer = TiffWriter(compression="keep")
    with tifffile.TiffFile(output) as tif, open(output, "rb") as f:
        page = tif.pages.first
        raw = []
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            f.seek(offset)
            raw.append(f.read(count))
    scratch = Scratch(folder / "asm.tif", "bench")
    scratch.prepare()
    scratch.save((0, info.height), raw)
    start = time.perf_counter()
    writer.write_encoded(folder / "asm.tif", info, scratch.tiles((0, info.height)))
    seconds = time.perf_counter() - start
    scratch.remove()
    return len(raw) / seconds, len(raw)


def simulate(height: int, width: int, workers: int, *, tile: int, overlap: int, out_tile: int,
             worker_px_per_s: float, asm_tiles_per_s: float, grid: bool = False) -> dict:
    """Makespan in seconds of one block per worker, and the speed-up over one such worker alone.

    ``grid=False`` is the schedule tiledehaze runs (blocks of whole rows); ``grid=True`` estimates
    blocks of rows x columns (not implemented), whose boundaries duplicate fewer tiles.
    """
    from tiledehaze.plan import TilePlan

    plan = TilePlan(height, width, tile=tile, overlap=overlap, halo=(overlap - 8) // 2)
    if grid:
        br = max((d for d in range(1, workers + 1) if workers % d == 0 and d * d <= workers), default=1)
        bc = workers // br
        if height < width:
            br, bc = bc, br
        rows = plan_blocks(height, out_tile, plan, bc if height < width else br)
        cols = plan_blocks(width, out_tile, TilePlan(width, height, tile=tile, overlap=overlap,
                                                     halo=(overlap - 8) // 2), br if height < width else bc)
        tcols = TilePlan(width, height, tile=tile, overlap=overlap, halo=(overlap - 8) // 2)
        counts = [len(plan.rows_covering(*r)) * len(tcols.rows_covering(*c)) for r in rows for c in cols]
    else:
        counts = [len(plan.rows_covering(*s)) * len(plan.cols) for s in plan_blocks(height, out_tile, plan, workers)]
    tile_px = (plan.rows[0][1] - plan.rows[0][0]) * (plan.cols[0][1] - plan.cols[0][0])
    loads = [0.0] * workers
    for b in sorted((c * tile_px / worker_px_per_s for c in counts), reverse=True):
        loads[loads.index(min(loads))] += b  # dask hands the next block to the first free worker
    out_tiles = math.ceil(height / out_tile) * math.ceil(width / out_tile)
    makespan = max(loads) + out_tiles / asm_tiles_per_s  # assembly after the last block: conservative
    return {"blocks": len(counts), "work": sum(counts) / len(plan), "makespan_s": makespan,
            "speedup": len(plan) * tile_px / worker_px_per_s / makespan, "assembly_s": out_tiles / asm_tiles_per_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=12000)
    ap.add_argument("--height", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=1024)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        folder = Path(tmp)
        src = folder / "big.tif"
        make_image(src, args.height, args.width)
        mp = args.width * args.height / 1e6
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        options = RunOptions.create(tile=args.tile, threads=max(1, cores // args.workers))
        times: dict[str, list[float]] = {"single": [], "split": []}
        for r in range(args.repeats):
            for name in ("single", "split") if r % 2 == 0 else ("split", "single"):
                out = folder / f"{name}.tif"
                out.unlink(missing_ok=True)
                start = time.perf_counter()
                if name == "single":
                    process_file(src, out, tile=args.tile, threads=cores)
                else:
                    process_split(src, out, options=options, client=client)
                times[name].append(time.perf_counter() - start)
                print(f"  round {r}: {name:6s} {times[name][-1]:6.1f} s", flush=True)
        client.close()
        cluster.close()
        same = (folder / "single.tif").read_bytes() == (folder / "split.tif").read_bytes()
        asm, n_tiles = assembly_rate(folder / "split.tif", folder)
    single_s, split_s = statistics.median(times["single"]), statistics.median(times["split"])
    worker_tiles = n_tiles / split_s / args.workers
    print(f"image {args.width}x{args.height} ({mp:.0f} MP), tile {args.tile}, {cores} cores, outputs identical: {same}")
    print(f"single process ({cores} threads): median {single_s:.1f} s = {mp / single_s:.2f} MP/s  {times['single']}")
    print(f"split {args.workers}x1 workers:       median {split_s:.1f} s = {mp / split_s:.2f} MP/s  {times['split']}")
    print(f"split / single throughput: {single_s / split_s:.2f}x")
    print(f"client assembly: {asm:.0f} tiles/s ({n_tiles} tiles of 512x512); one worker: {worker_tiles:.2f} tiles/s; "
          f"ratio {asm / worker_tiles:.0f}x")
    overlap = make_plan(10, 10, get_model(), tile=args.tile).overlap
    worker_px = mp * 1e6 / split_s / args.workers
    for h, w in ((args.height, args.width), (100_000, 100_000)):
        for n in (16, 64):
            for grid in (False, True):
                s = simulate(h, w, n, tile=args.tile, overlap=overlap, out_tile=512, worker_px_per_s=worker_px,
                             asm_tiles_per_s=asm, grid=grid)
                print(f"simulated {w}x{h}, {n:2d} workers, {'grid (estimate)' if grid else 'row blocks'}: "
                      f"{s['blocks']} blocks, {s['work']:.2f}x the tiles of one process, makespan "
                      f"{s['makespan_s']:.0f} s (assembly {s['assembly_s']:.1f} s), speed-up {s['speedup']:.1f}x")


if __name__ == "__main__":
    main()
