"""Helpers shared by the benchmark scripts: synthetic large TIFFs, timing, peak memory."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile


def hazy_texture(size: int = 1024, seed: int = 0) -> np.ndarray:
    """A hazy-looking uint8 RGB texture: smooth structure, fine detail and a haze veil."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((size // 32, size // 32, 3)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC)
    detail = rng.random((size, size, 3)).astype(np.float32)
    clear = np.clip(0.75 * base + 0.25 * detail, 0, 1)
    hazy = clear * 0.55 + 0.8 * 0.45
    return np.round(hazy * 255).astype(np.uint8)


def write_large_tiff(path: Path, height: int, width: int, *, tile: int = 512, compression=None,
                     bigtiff: bool = True, nodata_border: int = 0) -> Path:
    """Stream a tiled RGB uint8 TIFF of any size to disk without holding it in memory.

    ``nodata_border`` > 0 sets that many pixels along every edge to 0 and declares 0 as
    GDAL nodata (the hazy texture itself never reaches 0).
    """
    texture = hazy_texture(1024)

    def tiles():
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                ty, tx = (y * 7) % (1024 - tile + 1), (x * 13) % (1024 - tile + 1)
                t = texture[ty:ty + tile, tx:tx + tile]
                if nodata_border:
                    yy, xx = np.mgrid[y:y + tile, x:x + tile]
                    edge = (yy < nodata_border) | (xx < nodata_border) | (yy >= height - nodata_border) | \
                        (xx >= width - nodata_border)
                    t = np.where(edge[..., None], 0, t).astype(np.uint8)
                yield t

    extratags = [(42113, 2, 0, "0", True)] if nodata_border else []
    tifffile.imwrite(path, tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", compression=compression, bigtiff=bigtiff, metadata=None,
                     extratags=extratags)
    os.sync()  # let the kernel finish writing it back before anything is timed
    return path


def median_time(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


#: Runs the command in a grandchild and writes "peak-RSS-KiB wall-seconds" to argv[1]. Linux counts a
#: child's peak RSS from at least its parent's peak at the fork, so a benchmark that already holds
#: a large image would see every child as big as itself; forked from this small launcher, the
#: command's own peak is what is read.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {time.perf_counter() - start}")
sys.exit(min(abs(os.waitstatus_to_exitcode(status)), 255))
"""


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Run a command; return (wall seconds, peak RSS in MB of that process, exit code)."""
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, out.name, *map(str, cmd)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {proc.stderr.decode()[-500:]}")
        rss_kib, wall = out.read().split()
    return float(wall), int(rss_kib) / 1024, proc.returncode


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {cores} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"
