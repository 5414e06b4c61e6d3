"""Speed of the Dark Channel Prior: tiledehaze's OpenCV version against a straightforward scipy one.

Both compute the same algorithm (same A, patch, omega, guided filter, t0) on the same random-
textured hazy image; the scipy version uses ``scipy.ndimage.minimum_filter`` and
``uniform_filter``. Prints a Markdown table of the median of ``--repeats`` runs (MP/s) and the
largest difference between the two outputs, and, for context, the end-to-end rate of
``tiledehaze.restore(uint8 image, model="dcp", tile=1024)`` (overview, tiling with halo
context, feathered blending, uint8 conversion).

    python -m scripts.bench_dcp --sizes 1024 4096 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from scipy import ndimage

import tiledehaze
from tiledehaze.models.dcp import DCPModel, estimate_airlight


def dcp_scipy(image: np.ndarray, airlight: np.ndarray, *, patch: int = 15, omega: float = 0.95, t0: float = 0.1,
              guided_radius: int = 40, guided_eps: float = 1e-3) -> np.ndarray:
    """The textbook formulation with scipy.ndimage filters (mirror = OpenCV's REFLECT_101)."""
    norm = image / airlight
    dark = ndimage.minimum_filter(norm.min(axis=2), size=patch, mode="nearest")
    raw = 1.0 - omega * dark
    guide = image @ np.array([0.299, 0.587, 0.114], np.float32)
    size = 2 * guided_radius + 1

    def box(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=size, mode="mirror")

    mean_i, mean_p = box(guide), box(raw)
    cov_ip = box(guide * raw) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + guided_eps)
    b = mean_p - a * mean_i
    t = box(a) * guide + box(b)
    return np.clip((image - airlight) / np.maximum(t, t0)[..., None] + airlight, 0.0, 1.0)


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """A hazy-looking float32 RGB image: smooth random texture, a depth ramp and grey airlight."""
    rng = np.random.default_rng(seed)
    small = rng.random((size // 32 + 2, size // 32 + 2, 3)).astype(np.float32)
    import cv2

    clear = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    clear += 0.1 * rng.standard_normal((size, size, 3)).astype(np.float32)
    t = np.linspace(0.9, 0.3, size, dtype=np.float32)[:, None, None]
    return np.clip(clear * t + 0.85 * (1 - t), 0, 1).astype(np.float32)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--guided-radius", type=int, default=40)
    args = parser.parse_args(argv)

    model = DCPModel(guided_radius=args.guided_radius)
    rows = []
    for size in args.sizes:
        image = test_image(size)
        airlight = estimate_airlight(image)
        state = {"airlight": airlight}
        batch = image[None]
        fast = model.run(batch, state)[0]
        slow = dcp_scipy(image, airlight, guided_radius=args.guided_radius)
        diff = float(np.abs(fast - slow).max())
        t_cv = median_time(lambda: model.run(batch, state), args.repeats)
        t_sp = median_time(lambda: dcp_scipy(image, airlight, guided_radius=args.guided_radius), args.repeats)
        as_uint8 = np.round(image * 255).astype(np.uint8)
        t_api = median_time(lambda: tiledehaze.restore(as_uint8, model=model, tile=1024), args.repeats)
        mp = size * size / 1e6
        rows.append((size, mp / t_cv, mp / t_sp, t_sp / t_cv, diff, mp / t_api))

    print(f"DCP speed, median of {args.repeats} runs, guided radius {args.guided_radius}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n")
    print("| image | OpenCV (DCPModel.run) MP/s | scipy.ndimage MP/s | speed-up | max abs diff |"
          " restore(tile=1024) MP/s |")
    print("|---|---|---|---|---|---|")
    for size, cv_mps, sp_mps, ratio, diff, api_mps in rows:
        print(f"| {size}x{size} | {cv_mps:.1f} | {sp_mps:.1f} | {ratio:.1f}x | {diff:.1e} | {api_mps:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
