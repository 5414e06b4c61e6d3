"""AECR-Net on the CPU: network speed (torch and ONNX Runtime, side by side) and tiled against whole.

1. ``speed``: the network alone on one 1x3xSxS input, the torch module (plain-torch deformable
   convolution) and the ONNX graph on ONNX Runtime (``DeformConv``), interleaved; median of
   ``--runs`` runs after a warm-up.
2. ``tiling``: ``restore`` of a picture whole and tiled at the engine's default overlap for an
   approximate model (and at any ``--overlaps`` given); the difference in 8-bit units.

Without ``--weights`` the network has random weights in the authors' layout, made as the tests
make them (offsets of a few pixels, whitening statistics that are not the identity); with the
authors' checkpoint the tiling figures are those of the trained network.

    python scripts/bench_aecrnet.py speed --sizes 128 256 --runs 3
    python scripts/bench_aecrnet.py tiling --image photo.jpg --tile 512 [--weights aecrnet.pk]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import machine  # noqa: E402


def test_weights(tmp: Path) -> Path:
    """Random weights in the authors' layout and container (as the tests write them)."""
    from tests.test_aecrnet import authors_checkpoint

    return authors_checkpoint(tmp / "aecrnet-random.pk")


def network(weights: Path):
    from tiledehaze.models.aecrnet import AECRNet
    from tiledehaze.models.checkpoint import load_checkpoint

    return AECRNet.from_state_dict(load_checkpoint(weights).tensors)


def speed(args, weights: Path) -> None:
    import onnxruntime as ort

    from tiledehaze.models.aecrnet import to_onnx

    torch.set_num_threads(args.threads)
    net = network(weights)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(to_onnx(net), options, providers=["CPUExecutionProvider"])
    print(f"machine: {machine()}; threads {args.threads}; median of {args.runs} runs after one warm-up")
    print("| input | torch (plain-torch DCN) | ONNX Runtime (DeformConv) |")
    print("|---|---|---|")
    for size in args.sizes:
        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        runs = {"torch": lambda: net(torch.from_numpy(x)), "ort": lambda: session.run(None, {"hazy": x})}
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.no_grad():
            for fn in runs.values():
                fn()
            for _ in range(args.runs):
                for name, fn in runs.items():  # interleaved, so both see the same machine
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
        cells = [f"{statistics.median(times[k]):.2f} s ({size * size / statistics.median(times[k]) / 1e6:.3f} MP/s)"
                 for k in runs]
        print(f"| {size}x{size} | {cells[0]} | {cells[1]} |")


def tiling(args, weights: Path) -> None:
    from PIL import Image

    from tiledehaze import restore
    from tiledehaze.models import create_model

    image = np.asarray(Image.open(args.image).convert("RGB"))
    if args.crop:
        image = image[: args.crop[0], : args.crop[1]]
    model = create_model("aecrnet", weights=weights, backend=args.backend, threads=args.threads)
    whole = restore(image, model=model, tile=None).astype(np.float32)
    print(f"{args.image}: {image.shape[1]}x{image.shape[0]}, tile {args.tile}, backend {args.backend}")
    print("| overlap | max | mean | 99th percentile | pixels off by more than 1 |")
    print("|---|---|---|---|---|")
    for overlap in [None, *args.overlaps]:
        tiled = restore(image, model=model, tile=args.tile, overlap=overlap).astype(np.float32)
        d = np.abs(tiled - whole)
        name = "default" if overlap is None else str(overlap)
        print(f"| {name} | {d.max():.0f} | {d.mean():.3f} | {np.percentile(d, 99):.1f} | {(d > 1).mean():.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "tiling"])
    parser.add_argument("--weights", type=Path, help="an AECR-Net checkpoint (default: random, authors' layout)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlaps", type=int, nargs="*", default=[])
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or test_weights(Path(tmp))
        (speed if args.what == "speed" else tiling)(args, weights)


if __name__ == "__main__":
    main()
