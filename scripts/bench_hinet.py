"""HINet in tiledehaze: CPU speed beside AOD-Net, and tiled against whole-image output.

1. ``--speed``: model only, one 1x3xSxS tile on the CPU, median of several runs, interleaved
   in one run: torch eager AOD-Net (the baseline) and HINet (width 32, width 64, width 64 with
   TLC's local statistics), and ``hinet`` at width 32 through tiledehaze's torch and ONNX
   Runtime backends.
2. ``--tiling``: ``tiledehaze.restore`` on one image (cropped to ``--crop``), whole (one pass)
   and tiled at ``--tile`` with the engine's default overlap, for ``hinet`` (instance
   normalisation: approximate) and ``hinet-tlc`` (local statistics, window ``--base-size``:
   exact): the largest and mean absolute difference and the PSNR of tiled against whole, in
   [0, 1]. Without ``--weights`` the network has random weights in the authors' layout (torch's
   default initialisation, seed 0, the last convolution scaled so that the output stays a
   picture); a trained checkpoint's figures differ, so rerun this with yours.

    python scripts/bench_hinet.py --speed [--size 256] [--runs 3]
    python scripts/bench_hinet.py --tiling --image photo.jpg [--crop 1200x800] [--weights HINet-GoPro.pth]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import hazy_texture, machine


def random_weights(width: int, hin: tuple[int, ...], path: Path, seed: int = 0) -> Path:
    """A ``{'params': ...}`` torch file in the authors' layout: torch's default initialisation, the last
    convolution scaled down so that the output stays near the input (a picture, not noise)."""
    import torch

    from tiledehaze.models.hinet import HINet

    torch.manual_seed(seed)
    params = HINet(width=width, hin_levels=hin).state_dict()
    params["last.weight"] *= 0.1
    torch.save({"params": params}, path)
    return path


def speed(size: int, runs: int, threads: int) -> None:
    import torch

    from tiledehaze.models import create_model
    from tiledehaze.models.aodnet import AODNet, load_weights
    from tiledehaze.models.hinet import HINet

    torch.set_num_threads(threads)
    x = torch.rand(1, 3, size, size)
    tile = x.permute(0, 2, 3, 1).numpy().copy()
    nets = {"AOD-Net (baseline), torch eager": AODNet(load_weights()).to_torch().eval(),
            "HINet width 32 (0.5x), torch eager": HINet(width=32).eval(),
            "HINet width 64, torch eager": HINet(width=64).eval(),
            "HINet width 64, TLC windows (384), torch eager": HINet(width=64, base_size=384).eval()}
    calls = {name: (lambda net=net: net(x)) for name, net in nets.items()}
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_weights(32, tuple(range(5)), Path(tmp) / "hinet.pth")
        for backend in ("torch", "onnxruntime"):
            model = create_model("hinet", weights=weights, backend=backend, threads=threads)
            calls[f"HINet width 32, tiledehaze {backend} backend"] = lambda model=model: model.run(tile, {})
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():
            call()  # warm-up
        for _ in range(runs):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    print(f"{machine()}, torch {torch.__version__}, {threads} threads; one 1x3x{size}x{size} tile, median of {runs}")
    print("| model | s per tile | MP/s |\n|---|---|---|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.2f} | {size * size / 1e6 / t:.4f} |")


def tiling(image_path: Path | None, crop: tuple[int, int], weights: Path | None, width: int, hin: tuple[int, ...],
           tile: int, base_size: int, models: list[str]) -> None:
    from PIL import Image

    from tiledehaze import restore
    from tiledehaze.engine import make_plan
    from tiledehaze.models import create_model

    w, h = crop
    if image_path is None:
        image = hazy_texture(max(w, h))[:h, :w]
    else:
        full = np.asarray(Image.open(image_path).convert("RGB"))
        y0, x0 = (full.shape[0] - h) // 2, (full.shape[1] - w) // 2
        image = full[max(y0, 0):y0 + h, max(x0, 0):x0 + w]
    image = image.astype(np.float32) / 255.0
    with tempfile.TemporaryDirectory() as tmp:
        label = weights.name if weights else f"random, width {width}, HIN at levels {', '.join(map(str, hin))}"
        weights = weights or random_weights(width, hin, Path(tmp) / "hinet.pth")
        print(f"{machine()}; image {image_path.name if image_path else 'generated'} {image.shape[1]}x{image.shape[0]}, "
              f"tile {tile}; weights {label}")
        print("| model | halo | overlap | tiles | max abs diff | mean abs diff | PSNR tiled vs whole (dB) | "
              "s whole | s tiled |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in models:
            options = {"base_size": base_size} if name == "hinet-tlc" else {}
            model = create_model(name, weights=weights, backend="torch", **options)
            plan = make_plan(image.shape[0], image.shape[1], model, tile=tile)
            start = time.perf_counter()
            whole = restore(image, model=model, tile=None)
            t_whole = time.perf_counter() - start
            start = time.perf_counter()
            tiled = restore(image, model=model, tile=tile)
            t_tiled = time.perf_counter() - start
            d = np.abs(tiled.astype(np.float64) - whole)
            mse = float((d ** 2).mean())
            psnr = "inf" if mse == 0 else f"{10 * np.log10(1 / mse):.1f}"
            label = name + (f" (base_size {base_size})" if options else "")
            print(f"| {label} | {model.halo} | {plan.overlap} | {plan.grid[0]}x{plan.grid[1]} | {d.max():.2e} | "
                  f"{d.mean():.2e} | {psnr} | {t_whole:.0f} | {t_tiled:.0f} |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed", action="store_true")
    p.add_argument("--tiling", action="store_true")
    p.add_argument("--size", type=int, default=256, help="tile side for --speed")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image", type=Path, help="image for --tiling (default: a generated texture)")
    p.add_argument("--crop", default="1200x800", help="WxH: the centre of the image --tiling uses")
    p.add_argument("--weights", type=Path, help="a HINet checkpoint for --tiling (default: random weights)")
    p.add_argument("--width", type=int, default=32, help="width of the random network")
    p.add_argument("--hin", default="3,4", help="levels with instance normalisation in the random network")
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--base-size", type=int, default=64, help="TLC window for hinet-tlc in --tiling")
    p.add_argument("--models", nargs="+", default=["hinet", "hinet-tlc"], choices=["hinet", "hinet-tlc"])
    args = p.parse_args()
    if args.speed:
        speed(args.size, args.runs, args.threads)
    if args.tiling:
        crop = tuple(int(v) for v in args.crop.lower().split("x"))
        hin = tuple(int(v) for v in args.hin.split(","))
        tiling(args.image, crop, args.weights, args.width, hin, args.tile, args.base_size, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
