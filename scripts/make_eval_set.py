"""Held-out synthetic evaluation set: hazy/ + clear/ PNGs from photos that load offline.

The haze here is deliberately *not* the training generator's, so that a model cannot score
well by learning one generator's quirks:

- depth: camera geometry, not a procedural ramp, noise field or disparity map. A pinhole camera
  at a random height and pitch (and a small roll) looks over a ground plane; each pixel's depth
  is the distance along its ray to the plane, capped at a far "background" distance above the
  horizon, with a few upright occluders (random discs standing on the ground) that are closer;
- scattering coefficient varies per pixel: beta(x) = beta0 * (1 + 0.45 * f(x)), where f is a
  sum of a few random low-frequency plane waves (patchy fog, not a noise texture);
- wavelength dependence: beta_c = beta(x) * (lambda_c / 550 nm) ** -gamma, lambda = 610/550/465 nm
  for R/G/B, Angstrom exponent gamma in [0, 1.3] (0 = fog, 1.3 = fine haze);
- airlight is not uniform: a tinted A0 (warm or cool, 0.7-1.0) that brightens toward a random
  "sun" direction and fades toward the ground;
- I = J t + A (1 - t), then mild sensor noise (sigma 0.004) and 8-bit quantisation.

Sources are held out from the training images (which are astronaut, chelsea, rocket,
hubble_deep_field, ihc, retina and motorcycle, plus coffee unless excluded there): we use
``coffee`` (colour; the training set must exclude it) and the greyscale photographs ``camera``,
``moon``, ``coins``, ``brick``, ``grass`` and ``gravel`` as neutral RGB, none of which training
uses. Each source gets ``--variants`` haze draws, named RESIDE style: ``hazy/coffee_1.png`` pairs
with ``clear/coffee.png``. ``--extra-clear DIR`` adds clean images from a folder (for example the
ground truths of a paired set) without copying them anywhere but the output.

    python -m scripts.make_eval_set --out runs/evalset --variants 2 --seed 0
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from tiledehaze.dataset import image_files, read_rgb

log = logging.getLogger("make_eval_set")

#: held-out colour photographs (skimage.data names) and greyscale ones (used as neutral RGB)
HELD_OUT_COLOUR = ("coffee",)
HELD_OUT_GREY = ("camera", "moon", "coins", "brick", "grass", "gravel")
WAVELENGTHS_NM = np.array([610.0, 550.0, 465.0])


def load_sources() -> dict[str, np.ndarray]:
    """The held-out skimage photographs as float32 RGB in [0, 1] (bundled, nothing downloads)."""
    from skimage import data

    out: dict[str, np.ndarray] = {}
    for name in HELD_OUT_COLOUR + HELD_OUT_GREY:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out[name] = img[..., :3].astype(np.float32) / 255.0
    return out


def camera_depth(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Depth (metres, float32 (h, w)) of a ground plane seen by a pitched, rolled pinhole camera."""
    focal = max(h, w) * rng.uniform(0.8, 1.4)
    height = rng.uniform(1.5, 30.0)  # camera height above ground
    pitch = np.deg2rad(rng.uniform(-2.0, 12.0))  # looking slightly down
    roll = np.deg2rad(rng.uniform(-6.0, 6.0))
    far = rng.uniform(300.0, 3000.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (xs - w / 2) / focal, (ys - h * rng.uniform(0.35, 0.6)) / focal
    u, v = u * np.cos(roll) - v * np.sin(roll), u * np.sin(roll) + v * np.cos(roll)
    # ray direction in world coordinates (x right, y down, z forward), camera pitched down by `pitch`
    dy = v * np.cos(pitch) + np.sin(pitch)
    dz = -v * np.sin(pitch) + np.cos(pitch)
    norm = np.sqrt(u * u + dy * dy + dz * dz)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(dy > 1e-6, height / dy * norm, far)
    depth = np.minimum(depth, far)
    # upright occluders: discs at random image positions, nearer than what is behind them
    for _ in range(rng.integers(1, 5)):
        cy, cx = rng.uniform(0.3, 0.9) * h, rng.uniform(0, 1) * w
        radius = rng.uniform(0.05, 0.25) * max(h, w)
        inside = (ys - cy) ** 2 + (xs - cx) ** 2 < radius**2
        depth = np.where(inside, np.minimum(depth, rng.uniform(0.05, 0.5) * far), depth)
    return cv2.GaussianBlur(depth.astype(np.float32), (0, 0), max(h, w) / 400.0)


def patchy_field(h: int, w: int, rng: np.random.Generator, waves: int = 5) -> np.ndarray:
    """A smooth field in [-1, 1] from a few random low-frequency plane waves."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    field = np.zeros((h, w), np.float32)
    for _ in range(waves):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        field += np.cos(2 * np.pi * freq * (xs * np.cos(angle) + ys * np.sin(angle)) + phase).astype(np.float32)
    return field / waves


def add_haze(clear: np.ndarray, rng: np.random.Generator, *, density: float | None = None) -> tuple[np.ndarray, dict]:
    """Hazy version of a float32 RGB image in [0, 1] under the held-out haze model; returns (hazy, parameters)."""
    h, w = clear.shape[:2]
    depth = camera_depth(h, w, rng)
    depth = depth / float(depth.max())  # relative optical path in [0, 1]
    # visible range: the far background keeps t in roughly [0.05, 0.45]
    density = float(rng.uniform(0.8, 3.0) if density is None else density)
    gamma = float(rng.uniform(0.0, 1.3))
    beta = density * (1.0 + 0.45 * patchy_field(h, w, rng))
    spectral = (WAVELENGTHS_NM / 550.0) ** -gamma
    t = np.exp(-beta[..., None] * spectral[None, None, :] * depth[..., None]).astype(np.float32)
    tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.06, 0.06) * np.array([1.0, 0.0, -1.0])
    a0 = rng.uniform(0.7, 1.0) * tint
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    sun_y, sun_x = rng.uniform(-0.2, 0.3), rng.uniform(0, w / max(h, w))
    glow = np.exp(-((ys - sun_y) ** 2 + (xs - sun_x) ** 2) / 0.3) * rng.uniform(0.0, 0.15)
    fade = -rng.uniform(0.0, 0.12) * ys  # a little darker toward the bottom
    airlight = np.clip(a0[None, None, :] * (1.0 + glow + fade)[..., None], 0.0, 1.0).astype(np.float32)
    hazy = clear * t + airlight * (1.0 - t)
    hazy += rng.normal(0.0, 0.004, hazy.shape).astype(np.float32)
    hazy = np.round(np.clip(hazy, 0.0, 1.0) * 255.0) / 255.0
    params = {"density": density, "gamma": gamma, "airlight_base": [round(float(v), 3) for v in a0],
              "mean_t": float(t.mean()), "min_t": float(t.min())}
    return hazy.astype(np.float32), params


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write hazy/ and clear/ into")
    parser.add_argument("--variants", type=int, default=2, help="haze draws per source image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-clear", type=Path, action="append", default=[],
                        help="also use the clean images in this folder (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sources = load_sources()
    for folder in args.extra_clear:
        for p in image_files(folder):
            sources.setdefault(p.stem, read_rgb(p))
    rng = np.random.default_rng(args.seed)
    for name, clear in sources.items():
        write_png(args.out / "clear" / f"{name}.png", clear)
        for k in range(1, args.variants + 1):
            hazy, params = add_haze(clear, rng)
            write_png(args.out / "hazy" / f"{name}_{k}.png", hazy)
            log.info("%s_%d: %s", name, k, {key: (round(v, 3) if isinstance(v, float) else v) for key, v in params.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
