"""Full-resolution tiled restoration against the seed's shortcut (resize to 1024x1024 and back).

The seed resized every image to 1024x1024 (aspect ratio ignored), ran the model, and resized the
result back with ``cv2.resize``'s default bilinear interpolation. Here both paths run the same
created model on the same hazy image and are scored against the ground truth (PSNR and SSIM,
settings as in :mod:`tiledehaze.evaluate`).

Images (large ones with ground truth are rare offline; see docs/dcp-eval-figures.md):

- ``--paired DIR`` (repeatable): real hazy/clear pairs at native resolution from ``DIR/hazy`` and
  ``DIR/clear`` (e.g. the O-HAZE pairs of the shared data, 2556x2202 and 1286x947);
- ``--synth-from DIR`` (repeatable): clean images from a folder, each upscaled (Lanczos) so that
  the long side is at least ``--min-size`` px, then hazed with the held-out generator of
  ``scripts/make_eval_set.py``;
- ``--skimage NAME`` (repeatable): the same for a scikit-image bundled photo.

Upscaled sources hold no detail above their native resolution, so the shortcut's loss measured
on them understates what it loses on a genuinely high-resolution photograph.

    python -m scripts.full_res_vs_shortcut --paired DATA/paired/ohaze --synth-from DATA/paired/ohaze/clear \\
        --skimage hubble_deep_field --model dcp
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from scripts.make_eval_set import add_haze
from tiledehaze.dataset import image_files, read_rgb
from tiledehaze.evaluate import dehaze, match_pairs
from tiledehaze.metrics import psnr, ssim
from tiledehaze.models import create_model

log = logging.getLogger("full_res_vs_shortcut")


def shortcut(model, image: np.ndarray, size: int = 1024) -> np.ndarray:
    """The seed's path: resize to size x size, run the whole image as one tile, resize back (bilinear)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (size, size))
    out = model.run(small[None], model.global_state(small))[0]
    return np.clip(cv2.resize(out, (w, h)), 0.0, 1.0)


def upscale_to(image: np.ndarray, min_size: int) -> np.ndarray:
    scale = min_size / max(image.shape[:2])
    if scale <= 1.0:
        return image
    size = (int(np.ceil(image.shape[1] * scale)), int(np.ceil(image.shape[0] * scale)))
    return np.clip(cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4), 0.0, 1.0)


def cases(args: argparse.Namespace):
    """(name, note, hazy, clear) for every requested image."""
    for folder in args.paired:
        for pair in match_pairs(folder / "hazy", folder / "clear"):
            hazy, clear = read_rgb(pair.hazy), read_rgb(pair.clear)
            yield f"{pair.name} (real pair)", f"{hazy.shape[1]}x{hazy.shape[0]} native", hazy, clear
    rng = np.random.default_rng(args.seed)
    sources: list[tuple[str, np.ndarray]] = []
    for folder in args.synth_from:
        sources += [(p.stem, read_rgb(p)) for p in image_files(folder)]
    for name in args.skimage:
        from skimage import data

        img = getattr(data, name)()
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        sources.append((name, img.astype(np.float32) / 255.0))
    for name, clean in sources:
        native = f"{clean.shape[1]}x{clean.shape[0]}"
        clear = upscale_to(clean, args.min_size)
        hazy, _ = add_haze(clear, rng)
        yield f"{name} (synthetic)", f"{native} upscaled to {clear.shape[1]}x{clear.shape[0]}", hazy, clear


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paired", type=Path, action="append", default=[])
    parser.add_argument("--synth-from", type=Path, action="append", default=[])
    parser.add_argument("--skimage", action="append", default=[])
    parser.add_argument("--min-size", type=int, default=3000, help="long side of synthesised images")
    parser.add_argument("--model", action="append", dest="models", help="model name (repeatable; default dcp)")
    parser.add_argument("--weights", type=Path, help="AOD-Net weights")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    models = {name: create_model(name, **({"weights": args.weights} if name == "aodnet" and args.weights else {}))
              for name in (args.models or ["dcp"])}
    print(f"Full-resolution tiled restore (tile {args.tile}) vs resize-to-1024 shortcut; PSNR dB / SSIM\n")
    print("| image | size | model | hazy | shortcut 1024 | full-res tiled | gain dB | full-res s |"
          " full-res, DCP patch/radius scaled |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, note, hazy, clear in cases(args):
        base = f"{psnr(clear, hazy):.2f} / {ssim(clear, hazy):.3f}"
        for model_name, model in models.items():
            quick = shortcut(model, hazy)
            start = time.perf_counter()
            full = dehaze(model, hazy, tile=args.tile)
            seconds = time.perf_counter() - start
            p_quick, p_full = psnr(clear, quick), psnr(clear, full)
            scaled = "-"
            if model_name == "dcp":
                # DCP's windows are in pixels: what the shortcut's 15 px patch and radius 40 cover at full size
                s = max(hazy.shape[:2]) / 1024
                big = create_model("dcp", patch=2 * round(7 * s) + 1, guided_radius=round(40 * s))
                restored = dehaze(big, hazy, tile=args.tile)
                scaled = f"{psnr(clear, restored):.2f} / {ssim(clear, restored):.3f} (patch {big.patch}, r {big.guided_radius})"
            print(f"| {name} | {note} | {model_name} | {base} | {p_quick:.2f} / {ssim(clear, quick):.3f} | "
                  f"{p_full:.2f} / {ssim(clear, full):.3f} | {p_full - p_quick:+.2f} | {seconds:.1f} | {scaled} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
