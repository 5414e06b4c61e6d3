"""CPU speed of AOD-Net in tiledehaze, side by side with the baselines, in one run.

1. Model only, one 1x3x1024x1024 tile: plain PyTorch eager NCHW (the baseline), the torch
   backend (channels_last) and the ONNX Runtime backend (the default on CPU).
2. End to end: `tiledehaze process` (a fresh process, as a user runs it) on a large RGB uint8
   TIFF, against the model-only throughput on the same number of pixels; with ``--models``
   several models, their runs interleaved (HazeNet, AOD-Net and DCP side by side).
3. The naive way: the whole image in one torch forward (time and peak RSS).

Every figure is the median of several runs.

    python scripts/bench.py [--size 8192] [--runs 5] [--e2e-runs 3] [--naive-runs 3]
    python scripts/bench.py --compare-with ../other-checkout   # end to end against another version
    python scripts/bench.py --size 8192 --naive-runs 0 --compression none --models hazenet aodnet dcp
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from benchlib import machine, median_time, run_measured, write_large_tiff

NAIVE = textwrap.dedent("""
    import sys, numpy as np, torch, tifffile
    from tiledehaze.models.aodnet import AODNet, load_weights
    torch.set_num_threads({threads})
    net = AODNet(load_weights()).to_torch()
    img = tifffile.imread(sys.argv[1])
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
    with torch.no_grad():
        y = net(x)
    out = (y[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    tifffile.imwrite(sys.argv[2], out, photometric="rgb")
""")


def model_only(runs: int, threads: int) -> dict[str, float]:
    import torch

    from tiledehaze.backends import create_backend
    from tiledehaze.models.aodnet import AODNet, load_weights

    torch.set_num_threads(threads)
    net = AODNet(load_weights())
    tile = np.random.default_rng(0).random((1, 1024, 1024, 3), dtype=np.float32)
    mp = 1024 * 1024 / 1e6
    module = net.to_torch()
    nchw = torch.from_numpy(tile).permute(0, 3, 1, 2).contiguous()

    def eager():
        with torch.no_grad():
            module(nchw)

    results = {"torch eager NCHW (baseline)": mp / median_time(eager, runs)}
    for name in ("torch", "onnxruntime"):
        backend = create_backend(name, net, threads=threads)
        results[f"tiledehaze backend: {backend.describe()}"] = mp / median_time(lambda: backend.run(tile), runs)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="side of the square end-to-end test image")
    ap.add_argument("--runs", type=int, default=7, help="runs per model-only figure")
    ap.add_argument("--e2e-runs", type=int, default=3)
    ap.add_argument("--naive-runs", type=int, default=3, help="0 skips the naive whole-image run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compression", nargs="+", default=["none", "zstd"],
                    help="input/output TIFF compressions to measure end to end")
    ap.add_argument("--compare-with", type=Path, metavar="DIR",
                    help="also run 'tiledehaze process' from the package in DIR (another checkout), interleaved")
    ap.add_argument("--models", nargs="+", default=["aodnet"],
                    help="models to run end to end, interleaved (model-only figures are AOD-Net's)")
    args = ap.parse_args()

    print(f"machine: {machine()}; {args.threads} inference threads\n")
    print("## Model only (1x3x1024x1024 tile)\n")
    print("| path | MP/s (median) | vs baseline |\n|---|---|---|")
    model = model_only(args.runs, args.threads)
    base = next(iter(model.values()))
    for name, mps in model.items():
        print(f"| {name} | {mps:.2f} | {mps / base:.2f}x |", flush=True)
    default_mps = max(v for k, v in model.items() if "onnxruntime" in k)

    mp = args.size * args.size / 1e6
    print(f"\n## End to end, {args.size}x{args.size} RGB uint8 TIFF ({mp:.0f} MP)\n")
    print("| run | wall s (median) | MP/s | vs AOD-Net model-only | peak RSS MB |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for comp in args.compression:
            src = write_large_tiff(Path(tmp) / f"in_{comp}.tif", args.size, args.size,
                                   compression=None if comp == "none" else comp)
            dst = Path(tmp) / "out.tif"
            trees = {"": None} if args.compare_with is None else {
                " (this tree)": dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
                f" ({args.compare_with.name})": dict(os.environ, PYTHONPATH=str(args.compare_with.resolve()))}
            runs = [(f"--model {name}{label}", env, name) for name in args.models for label, env in trees.items()]
            measured: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _, _ in runs}
            for _ in range(args.e2e_runs):  # interleaved, so that a busy moment hits every run alike
                for label, env, name in runs:
                    w, r, _ = run_measured([sys.executable, "-m", "tiledehaze.cli", "process", str(src), "-o",
                                            str(dst), "--overwrite", "--no-progress", "--threads",
                                            str(args.threads), "--model", name], env=env)
                    measured[label][0].append(w)
                    measured[label][1].append(r)
            for label, (walls, rss) in measured.items():
                wall = statistics.median(walls)
                print(f"| tiledehaze process {label}, {comp} | {wall:.1f} | {mp / wall:.2f} | "
                      f"{mp / wall / default_mps:.2f}x | {statistics.median(rss):.0f} |", flush=True)
            if comp == args.compression[0] and args.naive_runs:
                script = Path(tmp) / "naive.py"
                script.write_text(NAIVE.format(threads=args.threads))
                naive_walls, naive_rss = [], []
                for _ in range(args.naive_runs):
                    w, r, _ = run_measured([sys.executable, str(script), str(src), str(dst)])
                    naive_walls.append(w)
                    naive_rss.append(r)
                naive = statistics.median(naive_walls)
                print(f"| naive: whole image in one torch forward | {naive:.1f} | {mp / naive:.2f} | "
                      f"{mp / naive / default_mps:.2f}x | {statistics.median(naive_rss):.0f} |", flush=True)
            src.unlink()


if __name__ == "__main__":
    main()
