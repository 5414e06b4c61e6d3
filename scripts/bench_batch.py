"""Batch throughput: in-process vs dask worker processes, side by side on one generated batch.

Makes a batch of mixed photos (0.3-4 MP, JPEG/PNG/TIFF), then restores it with each
configuration in turn, repeating the round ``--repeats`` times (configurations interleaved so
that machine noise hits them alike) and reporting the median. Times include starting the
dask cluster, as a user of ``--workers`` pays it.

    python scripts/bench_batch.py --files 24 --repeats 3

Configurations (C = cores):
  in-process         one process, inference on C threads, no dask
  dask Nx1           --workers N, one file per worker, C // N inference threads each
  dask 1xC           --workers 1 --threads C: one worker process with C threads
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tifffile  # noqa: E402
from PIL import Image  # noqa: E402

from tiledehaze import process_batch  # noqa: E402


def photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    phase = rng.uniform(0, 6, 3).astype(np.float32)
    scene = 0.5 + 0.4 * np.sin(x * 40 + y * 25 + phase)
    t = 0.3 + 0.7 * y
    hazy = scene * t + 0.85 * (1 - t)
    return np.clip(hazy * 255, 0, 255).astype(np.uint8)


def make_batch(folder: Path, files: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(files):
        mp = float(rng.uniform(0.3, 4.0))
        aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0]))
        h = int(np.sqrt(mp * 1e6 / aspect))
        w = int(h * aspect)
        pixels = photo(h, w, i)
        kind = ("jpg", "png", "tif")[i % 3]
        path = folder / f"sub{i % 4}" / f"photo{i:03d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "tif":
            tifffile.imwrite(path, pixels, tile=(512, 512), compression="zlib", photometric="rgb")
        elif kind == "jpg":
            Image.fromarray(pixels).save(path, quality=92)
        else:
            Image.fromarray(pixels).save(path, compress_level=1)
        total += h * w / 1e6
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="dask workers (default: cores)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--compare-malloc", action="store_true",
                    help="also run dask workers with dask's own MALLOC_TRIM_THRESHOLD_=65536")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = args.workers or cores

    work = Path(tempfile.mkdtemp(prefix="tiledehaze-bench-"))
    try:
        src = work / "in"
        megapixels = make_batch(src, args.files)
        common = dict(backend=args.backend, overwrite=True)  # the shipped weights
        configs = {
            f"in-process ({cores} threads)": dict(threads=cores),
            f"dask {n} workers x {max(1, cores // n)} thread": dict(workers=n),
            f"dask 1 worker x {cores} threads": dict(workers=1, threads=cores),
        }
        if args.compare_malloc:
            configs[f"dask {n} workers, dask's malloc trim"] = dict(workers=n, _dask_malloc=True)
        print(f"batch: {args.files} files, {megapixels:.1f} MP (JPEG/PNG/TIFF, 0.3-4 MP); {cores} cores; "
              f"backend {args.backend}; median of {args.repeats}")
        times: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(args.repeats):
            for name, options in configs.items():
                options = dict(options)
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                if options.pop("_dask_malloc", False):
                    os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"  # the nanny passes it on to workers
                t0 = time.perf_counter()
                report = process_batch([src], out, **common, **options)
                elapsed = time.perf_counter() - t0
                os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
                assert report.ok and len(report.done) == args.files, report.summary()
                times[name].append(elapsed)
                print(f"  round {r + 1}: {name:36s} {elapsed:6.1f} s  {megapixels / elapsed:5.2f} MP/s", file=sys.stderr)
        base = statistics.median(next(iter(times.values())))
        print("| configuration | median s | MP/s | vs in-process |\n|---|---|---|---|")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {name} | {med:.1f} | {megapixels / med:.2f} | {base / med:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
