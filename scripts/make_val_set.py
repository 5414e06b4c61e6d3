"""Whole-picture validation sets for choosing a HazeNet recipe: hazy/ + clear/ PNGs of the validation photographs.

The training loop validates on patches; the engine restores whole pictures, with the airlight
estimated from the overview and tiles blended. These sets score recipes the way users run
them, on the validation photographs of ``configs/hazenet.yaml`` only (never trained on, never
reported), hazed two ways so that a recipe cannot win by learning one generator:

- ``train/``: the training generator itself (``tiledehaze.train.synth``), depth from its own
  depth models;
- ``cluster/``: a generator of its own: depth from colour clusters of the photograph (k-means
  in CIELAB, 3-6 clusters at random depths) mixed with a top-to-bottom ramp and blurred; the
  farthest point keeps a log-uniform 2 % to 80 % of its light; a grey airlight of 0.65-1.0
  with a 4 % per-channel tint; sensor noise (sigma 0.002).

    python scripts/fetch_clean_photos.py --out data/clean
    python -m scripts.make_val_set --out runs/valset
    tiledehaze eval --hazy runs/valset/train/hazy --clear runs/valset/train/clear --model hazenet \\
        --model-option hazenet.weights=RUN/last.safetensors --out runs/val-RUN-train
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import yaml

from scripts.make_eval_set import write_png
from tiledehaze.train.data import expand_clean, load_clean
from tiledehaze.train.synth import SynthConfig, synthesize

SEEDS = {"train": 4242, "cluster": 777}


def cluster_depth(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Depth in [0, 1] (float32 (h, w)): colour clusters at random depths, mixed with a vertical ramp."""
    h, w = image.shape[:2]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    k = int(rng.integers(3, 7))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, _, centres = cv2.kmeans(lab[::7], k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = ((lab[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1).reshape(h, w)
    level = rng.uniform(0, 1, k)
    ramp = np.linspace(1, 0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    mix = rng.uniform(0.2, 0.8)
    depth = mix * level[labels].astype(np.float32) + (1 - mix) * ramp
    depth = cv2.GaussianBlur(depth, (0, 0), max(h, w) * rng.uniform(0.01, 0.04))
    return (depth - depth.min()) / max(1e-6, depth.max() - depth.min())


def cluster_haze(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    depth = cluster_depth(image, rng)
    far_log_t = rng.uniform(np.log(0.02), np.log(0.8))  # the farthest point keeps 2 % to 80 % of its light
    t = np.exp(far_log_t * depth)[..., None]
    airlight = np.clip(rng.uniform(0.65, 1.0) * (1 + rng.normal(0, 0.04, 3)), 0, 1).reshape(1, 1, 3)
    hazy = image * t + airlight * (1 - t)
    return np.clip(hazy + rng.normal(0, 0.002, hazy.shape), 0, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/hazenet.yaml"),
                        help="the recipe whose validation photographs and training haze are used")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", type=int, default=8, help="hazes of each photograph per generator")
    parser.add_argument("--max-side", type=int, default=1024)
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    synth = SynthConfig.from_dict(cfg["synthesis"])
    for generator, seed in SEEDS.items():
        rng = np.random.default_rng(seed)
        for sub in ("hazy", "clear"):
            (args.out / generator / sub).mkdir(parents=True, exist_ok=True)
        for name in expand_clean(cfg["data"]["val_images"]):
            image, depth = load_clean(name, max_side=args.max_side)
            stem = Path(name).stem
            write_png(args.out / generator / "clear" / f"{stem}.png", image)
            for v in range(args.variants):
                hazy = (synthesize(image, rng, synth, depth_map=depth)[0] if generator == "train"
                        else cluster_haze(image, rng))
                write_png(args.out / generator / "hazy" / f"{stem}_{v}.png", hazy)
        print(f"{generator}: {args.variants} hazes of each validation photograph in {args.out / generator}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
