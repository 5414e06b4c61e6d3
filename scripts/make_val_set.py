"""Whole-picture validation sets for choosing a HazeNet recipe: hazy/ + clear/ PNGs of the validation photographs.

The training loop validates on patches; the engine restores whole pictures, with the airlight
estimated from the overview and tiles blended. These sets score recipes the way users run
them, on the validation photographs of ``configs/hazenet.yaml`` only (never trained on, never
reported), hazed three ways so that a recipe cannot win by learning one generator:

- ``train/``: the training generator itself (``tiledehaze.train.synth``), depth from its own
  depth models;
- ``cluster/``: a generator of its own: depth from colour clusters of the photograph (k-means
  in CIELAB, 3-6 clusters at random depths) mixed with a top-to-bottom ramp and blurred; the
  farthest point keeps a log-uniform 2 % to 80 % of its light; a grey airlight of 0.65-1.0
  with a 4 % per-channel tint; sensor noise (sigma 0.002);
- ``detail/``: a third generator, nearer to how real photographs are hazed and saved: depth
  where the photograph holds little fine detail and toward its top (distance blurs texture
  away), following its edges; the farthest point keeps 2 % to 80 % of its light, blue
  scattered more than red (Angstrom exponent 0 to 1.5); an airlight of daylight colour (a black
  body of 3,500 K warm smog to 10,000 K blue overcast, 0.6-1.0 bright); the result saved as a
  JPEG of quality 75 to 95, as a camera would.

With ``--exposure P`` every generator raises, with probability P, an airlight dimmer than the
photograph's whites to them, as a camera exposes a hazy scene (``expose_airlight``).

Each generator's folder holds ``airlight.json``: the true A of every hazy picture (the mean over
the picture where it varies), so that an airlight estimator can be scored on its own.

    python scripts/fetch_clean_photos.py --out data/clean
    python -m scripts.make_val_set --out runs/valset-exposed --exposure 0.8
    tiledehaze eval --hazy runs/valset-exposed/train/hazy --clear runs/valset-exposed/train/clear --model hazenet \\
        --model-option hazenet.weights=RUN/last.safetensors --out runs/val-RUN-train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import yaml

from scripts.make_eval_set import write_png
from tiledehaze.train.data import expand_clean, load_clean
from tiledehaze.models.hazenet import guided_filter
from tiledehaze.train.synth import SynthConfig, expose_airlight, synthesize

SEEDS = {"train": 4242, "cluster": 777, "detail": 31337}


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


def cluster_haze(image: np.ndarray, rng: np.random.Generator, exposure: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    depth = cluster_depth(image, rng)
    far_log_t = rng.uniform(np.log(0.02), np.log(0.8))  # the farthest point keeps 2 % to 80 % of its light
    t = np.exp(far_log_t * depth)[..., None]
    airlight = np.clip(rng.uniform(0.65, 1.0) * (1 + rng.normal(0, 0.04, 3)), 0, 1)
    airlight = expose_airlight(airlight, image, rng, exposure).reshape(1, 1, 3)
    hazy = image * t + airlight * (1 - t)
    return np.clip(hazy + rng.normal(0, 0.002, hazy.shape), 0, 1).astype(np.float32), airlight.ravel()


def daylight_rgb(kelvin: float) -> np.ndarray:
    """Linear-ish RGB (max 1) of a black body at ``kelvin`` (the usual fit of Planck's law to sRGB)."""
    k = kelvin / 100.0
    r = 1.0 if k <= 66 else 1.2929 * (k - 60) ** -0.1332
    g = 0.3901 * np.log(k) - 0.6318 if k <= 66 else 1.1299 * (k - 60) ** -0.0755
    b = 1.0 if k >= 66 else (0.0 if k <= 19 else 0.5432 * np.log(k - 10) - 1.1963)
    rgb = np.clip(np.array([r, g, b], np.float64), 0.0, None)
    return (rgb / rgb.max()).astype(np.float32)


def detail_depth(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Depth in [0, 1]: far where the photograph holds little fine detail and toward its top.

    Distance blurs texture away, so the local energy of the luminance gradient (blurred over
    about 3 % of the side) is inverted into depth, mixed with a top-to-bottom ramp, then made
    to follow the photograph's edges with a guided filter.
    """
    h, w = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    gy, gx = np.gradient(grey)
    energy = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 0.03 * max(h, w))
    energy = energy / max(1e-6, float(np.percentile(energy, 99)))
    flat = 1.0 - np.clip(energy, 0, 1)
    ramp = np.linspace(1, 0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    mix = rng.uniform(0.3, 0.7)
    depth = (mix * flat + (1 - mix) * ramp).astype(np.float32)
    depth = guided_filter(grey, depth, radius=max(4, int(0.02 * max(h, w))), eps=1e-3)
    return (depth - depth.min()) / max(1e-6, float(depth.max() - depth.min()))


def detail_haze(image: np.ndarray, rng: np.random.Generator, exposure: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """(hazy, A): depth from :func:`detail_depth`, a daylight-coloured A, haze by wavelength, JPEG."""
    depth = detail_depth(image, rng) ** rng.uniform(0.6, 1.6)
    far_t = np.exp(rng.uniform(np.log(0.02), np.log(0.8)))  # light haze to dense fog at the farthest point
    angstrom = rng.uniform(0.0, 1.5)  # 0: grey fog; 1.5: fine haze, blue scattered most
    beta = -np.log(far_t) * (np.array([610.0, 550.0, 465.0]) / 550.0) ** -angstrom
    t = np.exp(-depth[..., None] * beta.reshape(1, 1, 3))
    kelvin = np.exp(rng.uniform(np.log(3500.0), np.log(10000.0)))  # warm smog to a blue overcast
    airlight = expose_airlight(rng.uniform(0.6, 1.0) * daylight_rgb(kelvin), image, rng, exposure).reshape(1, 1, 3)
    hazy = np.clip(image * t + airlight * (1 - t) + rng.normal(0, 0.003, image.shape), 0, 1)
    quality = int(rng.integers(75, 96))  # as a camera saves it
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.round(hazy * 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    hazy = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return hazy, airlight.ravel()


HAZE = {"cluster": cluster_haze, "detail": detail_haze}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/hazenet.yaml"),
                        help="the recipe whose validation photographs and training haze are used")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", type=int, default=8, help="hazes of each photograph per generator")
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--photos", choices=("validation", "training"), default="validation",
                        help="the recipe's validation photographs, or its training photographs (for scoring "
                             "rules that learn nothing, such as an airlight estimator; never a network's recipe)")
    parser.add_argument("--exposure", type=float, default=None,
                        help="probability that a haze is exposed for its airlight, in every generator "
                             "(tiledehaze.train.synth.expose_airlight; default: the recipe's synthesis.exposure "
                             "for the training generator, never for the others)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    if args.exposure is not None:
        cfg["synthesis"]["exposure"] = args.exposure
    synth = SynthConfig.from_dict(cfg["synthesis"])
    exposure = args.exposure or 0.0
    photos = expand_clean(cfg["data"]["val_images"])
    if args.photos == "training":
        photos = [name for name in expand_clean(cfg["data"]["clean_images"]) if name not in photos]
    for generator, seed in SEEDS.items():
        rng = np.random.default_rng(seed)
        airlights: dict[str, list[float]] = {}
        for sub in ("hazy", "clear"):
            (args.out / generator / sub).mkdir(parents=True, exist_ok=True)
        for name in photos:
            image, depth = load_clean(name, max_side=args.max_side)
            stem = Path(name).stem
            write_png(args.out / generator / "clear" / f"{stem}.png", image)
            for v in range(args.variants):
                if generator == "train":
                    hazy, _, airlight = synthesize(image, rng, synth, depth_map=depth, return_airlight=True)
                else:
                    hazy, airlight = HAZE[generator](image, rng, exposure)
                write_png(args.out / generator / "hazy" / f"{stem}_{v}.png", hazy)
                airlights[f"{stem}_{v}"] = [round(float(a), 4) for a in airlight]
        (args.out / generator / "airlight.json").write_text(json.dumps(airlights, indent=1))
        print(f"{generator}: {args.variants} hazes of each {args.photos} photograph in {args.out / generator}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
