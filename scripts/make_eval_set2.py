"""Second held-out synthetic evaluation set: hazy/ + clear/ PNGs from photographs no model trains on.

Independent of both the training generator (``tiledehaze.train.synth``) and the first held-out
set (``scripts/make_eval_set.py``), so that a model cannot score well by learning either:

- photographs: the ``heldout`` group of ``scripts/fetch_clean_photos.py`` (Debian's
  ``mate-backgrounds`` nature photographs), never used in training or in choosing a recipe;
  shrunk so that the longer side is ``--max-side`` pixels;
- depth: piecewise smooth and aligned with the image's own edges, as real scenes are. The
  photograph is cut into superpixels (SLIC); each region lies at the depth of a tilted
  background plane at its centroid plus an offset of its own (nearer objects), and the
  depth map is edge-aware smoothed (a guided filter on the photograph);
- airlight: from overcast grey to warm smog, ``A = g * ((1 - w) * grey + w * smog)`` with
  ``g`` in [0.6, 0.95], ``w`` in [0, 1] and smog = (1.0, 0.88, 0.68);
- density: log-uniform, from light haze (the farthest point keeps t = 0.75) to dense fog
  (t = 0.03 there); grey scattering (no wavelength dependence);
- ``I = J t + A (1 - t)``, then sensor noise (sigma 0.003) and 8-bit quantisation.

    python scripts/fetch_clean_photos.py --out data/clean
    python -m scripts.make_eval_set2 --clean data/clean/heldout --out runs/evalset2 --variants 2 --seed 0
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from scripts.make_eval_set import write_png
from tiledehaze.dataset import image_files, read_rgb

log = logging.getLogger("make_eval_set2")

SMOG = np.array([1.0, 0.88, 0.68], np.float32)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide (edges of ``guide`` survive in the result)."""
    box = lambda x: cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1))  # noqa: E731
    mean_i, mean_p = box(guide), box(src)
    a = (box(guide * src) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def region_depth(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Depth in [0, 1] (float32 (h, w)): superpixels placed on a tilted plane, edge-aware smoothed."""
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    labels = slic(image, n_segments=int(rng.integers(30, 120)), compactness=10.0, start_label=0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(-0.4, 0.4)
    plane = -(ys / h * np.cos(angle) + xs / w * np.sin(angle))  # far toward the top
    plane = (plane - plane.min()) / max(1e-6, float(plane.max() - plane.min()))
    plane = plane ** rng.uniform(0.5, 2.0)
    count = labels.max() + 1
    area = np.bincount(labels.ravel(), minlength=count).astype(np.float32)
    centre = np.bincount(labels.ravel(), weights=plane.ravel(), minlength=count) / np.maximum(area, 1)
    near = rng.random(count) < 0.3  # some regions are objects in front of the background
    offset = np.where(near, -rng.uniform(0.1, 0.6, count), rng.normal(0.0, 0.05, count))
    depth = np.clip(centre + offset, 0.0, 1.0)[labels].astype(np.float32)
    guide = cv2.cvtColor(np.ascontiguousarray(image, np.float32), cv2.COLOR_RGB2GRAY)
    radius = max(2, min(h, w) // 60)
    smooth = guided_filter(guide, depth, radius, 1e-3)
    lo, hi = float(smooth.min()), float(smooth.max())
    return ((smooth - lo) / max(1e-6, hi - lo)).astype(np.float32)


def add_haze(clear: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Hazy version of a float32 RGB image in [0, 1] under this set's haze model; returns (hazy, parameters)."""
    depth = region_depth(clear, rng)
    far_t = float(np.exp(rng.uniform(np.log(0.03), np.log(0.75))))
    beta = -np.log(far_t)  # depth is in [0, 1]: the farthest point keeps far_t
    t = np.exp(-beta * depth)[..., None].astype(np.float32)
    grey, warm = rng.uniform(0.6, 0.95), rng.uniform(0.0, 1.0)
    airlight = (grey * ((1.0 - warm) * np.ones(3, np.float32) + warm * SMOG)).astype(np.float32)
    hazy = clear * t + airlight * (1.0 - t)
    hazy += rng.normal(0.0, 0.003, hazy.shape).astype(np.float32)
    hazy = np.round(np.clip(hazy, 0.0, 1.0) * 255.0) / 255.0
    params = {"far_t": far_t, "airlight": [round(float(v), 3) for v in airlight], "mean_t": float(t.mean())}
    return hazy.astype(np.float32), params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=Path, required=True, help="folder of clean photographs (held out)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write hazy/ and clear/ into")
    parser.add_argument("--variants", type=int, default=2, help="haze draws per photograph")
    parser.add_argument("--max-side", type=int, default=1024, help="longer side of the photographs, in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    files = image_files(args.clean)
    if not files:
        parser.error(f"no photographs in {args.clean} (run scripts/fetch_clean_photos.py first)")
    rng = np.random.default_rng(args.seed)
    for path in files:
        clear = read_rgb(path)
        scale = args.max_side / max(clear.shape[:2])
        if scale < 1.0:
            clear = cv2.resize(clear, (round(clear.shape[1] * scale), round(clear.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        clear = np.round(clear * 255.0) / 255.0
        write_png(args.out / "clear" / f"{path.stem}.png", clear)
        for k in range(1, args.variants + 1):
            hazy, params = add_haze(clear, rng)
            write_png(args.out / "hazy" / f"{path.stem}_{k}.png", hazy)
            log.info("%s_%d: %s", path.stem, k, {key: (round(v, 3) if isinstance(v, float) else v)
                                                 for key, v in params.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
