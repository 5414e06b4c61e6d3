"""Airlight rules scored on validation pictures whose true airlight is known.

HazeNet divides every tile by the airlight A the engine estimates once per image; with the
true A it gains 3 to 5 dB on validation pictures. This script scores candidate estimators of A
on the sets of ``scripts/make_val_set.py`` (each generator's folder holds ``airlight.json``),
never on a reporting set:

- ``dcp``: the engine's rule (:func:`tiledehaze.models.dcp.estimate_airlight`): the brightest of
  the 0.1 % haziest pixels;
- ``mean``: the mean colour of those haziest pixels;
- ``haze-lines``: the point the haze-lines of the picture meet (Berman, Treibitz and Avidan,
  "Air-light estimation using haze-lines", ICCP 2017), on a 256 px copy;
- ``half-grey``: the engine's rule with A's colour pulled halfway toward grey;
- ``true``: the generator's own A, the ceiling of any rule.

For each generator and rule: mean PSNR of HazeNet's output (whole picture, the network's t
refined as the engine refines it), the median relative error of A, and the mean shift of b*
(CIELAB blue-yellow) of the output against the clear picture (negative: bluer than the truth).
``--split-whites`` scores apart the hazes whose airlight is dimmer than the photograph's whites
(its brightest channel under 0.95 of the clear picture's 99.5th percentile): the regime where
the brightest hazy pixels are white objects rather than haze.

    python -m scripts.make_val_set --out runs/valset --exposure 0
    python -m scripts.airlight_rules runs/valset
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from scripts.transmission_ceiling import network_transmission, recover
from tiledehaze.dataset import find_clear, image_files, images_by_stem, read_rgb
from tiledehaze.metrics import mean_b_star, psnr
from tiledehaze.models.dcp import MIN_AIRLIGHT, dark_channel, estimate_airlight
from tiledehaze.models.hazenet import DARK_PATCH, HazeNet, load_weights


def haziest_mean(image: np.ndarray, top_fraction: float = 0.001) -> np.ndarray:
    """The mean colour of the ``top_fraction`` pixels with the largest dark channel."""
    dark = dark_channel(image, DARK_PATCH).ravel()
    k = max(1, int(np.ceil(top_fraction * dark.size)))
    haziest = np.argpartition(dark, dark.size - k)[dark.size - k:]
    return np.maximum(image.reshape(-1, 3)[haziest].mean(axis=0), MIN_AIRLIGHT).astype(np.float32)


def _line_votes(points: np.ndarray, weights: np.ndarray, grid: tuple[np.ndarray, np.ndarray],
                directions: np.ndarray, tolerance: float) -> np.ndarray:
    """Score of every candidate A on a 2-D grid (one pair of channels): weight of the colours on its haze-lines."""
    candidates = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 2)
    score = np.empty(len(candidates))
    for s in range(0, len(candidates), 128):
        offset = candidates[s:s + 128, None, :] - points[None]             # A - I: (m, n, 2)
        below = (offset > 0).all(-1)                                       # haze only brightens toward A
        dist = np.sqrt((offset ** 2).sum(-1))
        off_line = np.abs(offset[..., :1] * directions[:, 1] - offset[..., 1:] * directions[:, 0])  # (m, n, K)
        on_line = (off_line < 2 * tolerance * (dist / np.sqrt(2) + 1)[..., None]) & below[..., None]
        lines = on_line.sum(1) >= 2                                        # a line needs two colours
        voted = (on_line & lines[:, None, :]).any(-1)
        score[s:s + 128] = (voted * weights * (5 * np.exp(-dist) + 1)).sum(1)
    return score.reshape(len(grid[0]), len(grid[1]))


def haze_lines(image: np.ndarray, *, side: int = 256, levels: int = 24, spacing: float = 0.02,
               angles: int = 40, tolerance: float = 0.01) -> np.ndarray:
    """A where the picture's haze-lines meet: colours quantised, then a Hough vote per pair of channels."""
    scale = side / max(image.shape[:2])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    pixels = np.clip(small.reshape(-1, 3), 0.0, 1.0)
    bins = np.minimum((pixels * levels).astype(np.int64), levels - 1) @ np.array([levels * levels, levels, 1])
    keys, index, counts = np.unique(bins, return_inverse=True, return_counts=True)
    points = np.zeros((keys.size, 3))
    np.add.at(points, index, pixels)
    points /= counts[:, None]
    weights = counts / counts.sum()
    theta = np.linspace(0, np.pi, angles, endpoint=False)
    directions = np.stack([np.sin(theta), np.cos(theta)], 1)
    grids = [np.arange(low, 1.0 + 1e-6, spacing) for low in (0.0, 0.05, 0.1)]
    votes = {pair: _line_votes(points[:, pair], weights, (grids[pair[0]], grids[pair[1]]), directions, tolerance)
             for pair in ((0, 1), (0, 2), (1, 2))}
    top = max(v.max() for v in votes.values()) or 1.0
    total = ((votes[0, 1] / top)[:, :, None] * (votes[0, 2] / top)[:, None, :] * (votes[1, 2] / top)[None])
    r, g, b = np.unravel_index(int(np.argmax(total)), total.shape)
    return np.maximum(np.array([grids[0][r], grids[1][g], grids[2][b]]), MIN_AIRLIGHT).astype(np.float32)


def half_grey(airlight: np.ndarray) -> np.ndarray:
    """``airlight`` with its colour pulled halfway toward the grey of the same mean."""
    return (0.5 * (airlight + airlight.mean())).astype(np.float32)


RULES = {
    "dcp": lambda hazy, true: estimate_airlight(hazy, patch=DARK_PATCH),
    "mean": lambda hazy, true: haziest_mean(hazy),
    "haze-lines": lambda hazy, true: haze_lines(hazy),
    "half-grey": lambda hazy, true: half_grey(estimate_airlight(hazy, patch=DARK_PATCH)),
    "true": lambda hazy, true: true,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("valset", type=Path, help="output of scripts/make_val_set.py")
    parser.add_argument("--weights", type=Path, default=None, help="HazeNet weights (default: the shipped ones)")
    parser.add_argument("--rules", default=",".join(RULES), help=f"comma-separated, of: {', '.join(RULES)}")
    parser.add_argument("--power", type=float, default=1.0,
                        help="score the network's t raised to this power (above 1: more haze removed everywhere)")
    parser.add_argument("--angstrom", type=float, default=0.0,
                        help="recover each channel with its own t, t ** (lambda / 550 nm) ** -ANGSTROM (a probe)")
    parser.add_argument("--colour", type=float, default=1.0,
                        help="pull a network's transmissions per colour toward their mean "
                             "(0: one t; 1: as predicted; a probe)")
    parser.add_argument("--split-whites", action="store_true",
                        help="a row for hazes with an airlight dimmer than the photograph's whites, one for the rest")
    args = parser.parse_args(argv)
    rules = args.rules.split(",")
    network = HazeNet(load_weights(args.weights), output="t").to_torch().eval()
    if args.colour != 1.0 and network.t_channels == 1:
        parser.error("--colour needs weights with a transmission per colour")
    if args.angstrom and network.t_channels == 3:
        parser.error("--angstrom spreads one transmission over the colours; these weights have one per colour")
    print("| generator (pictures) | hazy | " + " | ".join(rules) + " |")
    print("|---|---|" + "---|" * len(rules))
    for folder in sorted(p.parent for p in args.valset.glob("*/airlight.json")):
        truths = json.loads((folder / "airlight.json").read_text())
        clear_by_stem = images_by_stem(folder / "clear")
        scores = {rule: [] for rule in rules}
        hazy_psnr, dim = [], []
        for path in image_files(folder / "hazy"):
            hazy, clear = read_rgb(path), read_rgb(find_clear(path, clear_by_stem))
            true = np.asarray(truths[path.stem], np.float32)
            hazy_psnr.append(psnr(clear, hazy))
            dim.append(true.max() < 0.95 * np.percentile(clear.max(axis=-1), 99.5))
            for rule in rules:
                airlight = RULES[rule](hazy, true)
                t = network_transmission(network, hazy, airlight, args.power, args.colour)
                out = recover(hazy, airlight, t, args.angstrom)
                scores[rule].append((psnr(clear, out), float(np.abs(airlight / true - 1).mean()),
                                     mean_b_star(out) - mean_b_star(clear)))
        dim = np.asarray(dim)
        groups = {"": np.ones_like(dim)}
        if args.split_whites:
            groups = {", A dimmer than the whites": dim, ", A as bright as the whites": ~dim}
        for label, keep in groups.items():
            if not keep.any():
                continue
            cells = []
            for rule in rules:
                p, a, b = np.asarray(scores[rule])[keep].T
                cells.append(f"{p.mean():.2f} dB, A {np.median(a):.3f}, b* {b.mean():+.1f}")
            print(f"| {folder.name}{label} ({int(keep.sum())}) | {np.mean(np.asarray(hazy_psnr)[keep]):.2f} dB | "
                  + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
