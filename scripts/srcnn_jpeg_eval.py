"""SRCNN on held-out JPEG-degraded photographs: PSNR on luma of the degraded input and of the restored output.

The photographs are the ``heldout`` group of ``scripts/fetch_clean_photos.py`` (Debian's
``mate-backgrounds``), never used in training or in choosing the recipe. Each is shrunk to a
longer side of ``--max-side`` pixels (area interpolation, as training shrinks its photographs),
rounded to 8 bits (the reference), and degraded exactly as in training
(:class:`tiledehaze.train.data.JpegDegradation`, whole images, so the JPEG grid starts at the
image's corner as in a real file). The degraded RGB image goes through ``tiledehaze.restore``
(tiles, ONNX Runtime) with the SRCNN weights given; PSNR is measured on full-range BT.601 luma
in [0, 1] over the whole image (``skimage.metrics.peak_signal_noise_ratio``, data_range 1).

    python scripts/fetch_clean_photos.py --out data/clean
    python -m scripts.srcnn_jpeg_eval --clean data/clean/heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import tiledehaze
from tiledehaze.dataset import image_files, read_rgb
from tiledehaze.metrics import psnr
from tiledehaze.models.srcnn import DEFAULT_WEIGHTS, luma
from tiledehaze.train.data import JpegDegradation


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    scale = max_side / max(image.shape[:2])
    if scale >= 1.0:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=Path, required=True, help="folder of clean photographs")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--quality", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)

    degradation = JpegDegradation(args.quality, args.scale)
    model = tiledehaze.get_model("srcnn", weights=args.weights)
    rows = []
    print("| photograph | size | degraded dB | SRCNN dB | gain dB |\n|---|---|---|---|---|")
    for path in image_files(args.clean):
        clean8 = np.round(shrink(read_rgb(path), args.max_side) * 255).astype(np.uint8)
        degraded8 = degradation.degrade(clean8)
        restored8 = tiledehaze.restore(degraded8, model=model)
        reference = luma(clean8 / 255)
        before, after = psnr(reference, luma(degraded8 / 255)), psnr(reference, luma(restored8 / 255))
        rows.append((before, after))
        print(f"| {path.name} | {clean8.shape[1]}x{clean8.shape[0]} | {before:.2f} | {after:.2f} | {after - before:+.2f} |")
    before, after = np.mean(rows, axis=0)
    print(f"| **mean of {len(rows)}** | | **{before:.2f}** | **{after:.2f}** | **{after - before:+.2f}** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
