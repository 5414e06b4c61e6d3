"""Where HazeNet loses: its transmission, or the airlight-then-transmission design itself?

For every paired set of the quality table it estimates the airlight A as the engine does, then
compares three transmissions against the one the ground truth implies (per pixel, the least-
squares t of ``I = J t + A (1 - t)`` for that A):

- **ceiling**: that implied t itself, refined with the same guided filter as HazeNet's: the best
  any network predicting t for this A could do (PSNR);
- **DCP** and **HazeNet**: PSNR with their raw transmission refined by that same filter (so DCP here is
  its transmission only, not the DCP model with its own settings), and the transmission's mean error (bias: positive leaves haze in)
  and mean absolute error, where t is well defined (J far enough from A).

    python -m scripts.transmission_ceiling --data ../shared/data --evalset runs/evalset --evalset2 runs/evalset2

``--power P`` scores the network's t raised to P instead (above 1: more haze removed everywhere).
``--strengths S...`` prints a second table: each transmission with its haze scaled, ``1 - S (1 - t)``
(below 1: less haze removed), at every S, and the mean of each picture's best S: what a perfect
estimate of how much haze a picture holds would add to that transmission.
The second ceiling gives each channel its own implied t: what a network with three transmissions
could reach. ``--valset runs/valset-exposed`` scores the validation generators of
``scripts/make_val_set.py`` instead of the reporting sets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from scripts.make_eval_set import WAVELENGTHS_NM
from scripts.quality_table import paired_sets
from tiledehaze.dataset import find_clear, image_files, images_by_stem, read_rgb
from tiledehaze.metrics import psnr
from tiledehaze.models.dcp import estimate_airlight
from tiledehaze.models.base import pad_to_multiple
from tiledehaze.models.hazenet import (ALIGN, DARK_PATCH, GUIDED_EPS, GUIDED_RADIUS, T_MIN, HazeNet, guided_filter,
                                       load_weights)


def implied_transmission(hazy: np.ndarray, clear: np.ndarray, airlight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel least-squares t of the scattering model, and where it is well defined."""
    d = clear - airlight
    energy = (d * d).sum(axis=-1)
    t = ((hazy - airlight) * d).sum(axis=-1) / np.maximum(energy, 1e-6)
    return np.clip(t, T_MIN, 1.0).astype(np.float32), energy > 0.01


def implied_channel_transmission(hazy: np.ndarray, clear: np.ndarray, airlight: np.ndarray) -> np.ndarray:
    """The t of each channel alone (H, W, 3); the shared least-squares t where J_c is too near A_c."""
    d = clear - airlight
    apart = np.abs(d) > 0.05
    shared = implied_transmission(hazy, clear, airlight)[0][..., None]
    return np.clip(np.where(apart, (hazy - airlight) / np.where(apart, d, 1.0), shared), T_MIN, 1.0).astype(np.float32)


def network_transmission(network, hazy: np.ndarray, airlight: np.ndarray, power: float = 1.0,
                         colour: float = 1.0) -> np.ndarray:
    """The bare network's t for ``hazy`` divided by ``airlight``, as the engine feeds it: (H, W),
    or (H, W, 3) from a network with a transmission per colour.

    ``power`` above 1 removes more haze everywhere (t ** power); ``colour`` below 1 pulls the
    transmissions of the colours toward their mean (0: one t for all). Probes of whether the
    network leaves haze in or over-corrects its colour, not something the engine does.
    """
    import torch

    x = pad_to_multiple((hazy / airlight)[None], ALIGN)
    with torch.no_grad():
        t = network(torch.from_numpy(x).permute(0, 3, 1, 2))[0].numpy()[:, : hazy.shape[0], : hazy.shape[1]]
    t = np.ascontiguousarray(t[0] if network.t_channels == 1 else t.transpose(1, 2, 0))
    if colour != 1.0 and t.ndim == 3:
        mean = t.mean(axis=2, keepdims=True)
        t = np.clip(mean + np.float32(colour) * (t - mean), T_MIN, 1.0)
    return t if power == 1.0 else np.power(t, np.float32(power))


def recover(hazy: np.ndarray, airlight: np.ndarray, t: np.ndarray, angstrom: float = 0.0) -> np.ndarray:
    """J from t (H, W), or one t per channel (H, W, 3), refined as the engine refines it.

    ``angstrom`` above 0 takes t as green's and gives every channel its own, ``t ** (lambda_c /
    550 nm) ** -angstrom`` (Angstrom's law: blue scattered most; the wavelengths of
    ``scripts/make_eval_set.py``): a probe of whether the network's single t is what leaves
    distant scenery blue, not something the engine does.
    """
    grey = cv2.cvtColor(hazy, cv2.COLOR_RGB2GRAY)
    refined = guided_filter(grey, np.ascontiguousarray(t), GUIDED_RADIUS, GUIDED_EPS)
    refined = np.clip(refined.reshape(*refined.shape[:2], -1), T_MIN, 1.0)
    if angstrom:
        if t.ndim == 3:
            raise ValueError("an Angstrom exponent spreads one t over the colours; this t has one per colour")
        exponent = ((WAVELENGTHS_NM / WAVELENGTHS_NM[1]) ** -angstrom).astype(np.float32)
        refined = np.clip(refined ** exponent, T_MIN, 1.0)
    return np.clip((hazy - airlight) / refined + airlight, 0.0, 1.0)


def with_strength(t: np.ndarray, strength: float) -> np.ndarray:
    """``t`` with its haze scaled by ``strength``: ``1 - strength (1 - t)``, kept in [T_MIN, 1]."""
    return np.clip(1.0 - np.float32(strength) * (1.0 - t), T_MIN, 1.0).astype(np.float32)


def strength_table(label: str, scores: np.ndarray) -> str:
    """One row of the strength table from (pictures, transmissions, strengths) PSNRs."""
    cells = [" / ".join(f"{m:.2f}" for m in column) for column in scores.mean(axis=0).T]
    best = " / ".join(f"{v:.2f}" for v in scores.max(axis=2).mean(axis=0))
    return f"| {label} ({len(scores)}) | {' | '.join(cells)} | {best} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder holding paired/")
    parser.add_argument("--evalset", type=Path)
    parser.add_argument("--evalset2", type=Path)
    parser.add_argument("--valset", type=Path,
                        help="score the generators of scripts/make_val_set.py instead of the reporting sets")
    parser.add_argument("--weights", type=Path, default=None, help="HazeNet weights (default: the shipped ones)")
    parser.add_argument("--power", type=float, default=1.0, help="score the network's t raised to this power")
    parser.add_argument("--strengths", type=float, nargs="+", default=None, metavar="S",
                        help="also score HazeNet's and DCP's t with their haze scaled by each S")
    args = parser.parse_args(argv)
    if args.valset is not None:
        sets = [(f"validation, {p.parent.name}", p.parent / "hazy", p.parent / "clear", None)
                for p in sorted(args.valset.glob("*/airlight.json"))]
    elif None in (args.data, args.evalset, args.evalset2):
        parser.error("give --data, --evalset and --evalset2, or --valset")
    else:
        sets = paired_sets(args.data, args.evalset, args.evalset2)

    network = HazeNet(load_weights(args.weights), output="t").to_torch().eval()
    print("| set | hazy | DCP | HazeNet | ceiling | ceiling, a t per channel | DCP t bias / MAE "
          "| HazeNet t bias / MAE |")
    print("|---|---|---|---|---|---|---|---|")
    strength_rows = []
    for label, hazy_dir, clear_dir, crop in sets:
        clear_by_stem = images_by_stem(clear_dir)
        rows, by_strength = [], []
        for path in image_files(hazy_dir):
            hazy, clear = read_rgb(path), read_rgb(find_clear(path, clear_by_stem))
            if crop is not None:  # ground truths with a border, as the quality table crops them
                top, bottom, left, right = crop
                clear = clear[top:bottom, left:right]
            if clear.shape != hazy.shape:
                clear = cv2.resize(clear, hazy.shape[1::-1], interpolation=cv2.INTER_AREA)
            airlight = estimate_airlight(hazy, patch=DARK_PATCH)
            truth, defined = implied_transmission(hazy, clear, airlight)
            t_net = network_transmission(network, hazy, airlight, args.power)
            dark = cv2.erode((hazy / airlight).min(axis=-1), np.ones((DARK_PATCH, DARK_PATCH), np.uint8))
            t_dcp = 1.0 - 0.95 * dark
            t_one = t_net if t_net.ndim == 2 else t_net.mean(axis=-1)  # a t per colour: their mean
            errors = [(t - truth)[defined] for t in (t_dcp, t_one)]
            rows.append([psnr(clear, hazy), psnr(clear, recover(hazy, airlight, t_dcp)),
                         psnr(clear, recover(hazy, airlight, t_net)), psnr(clear, recover(hazy, airlight, truth)),
                         psnr(clear, recover(hazy, airlight, implied_channel_transmission(hazy, clear, airlight))),
                         *[v for e in errors for v in (e.mean(), np.abs(e).mean())]])
            if args.strengths:
                by_strength.append([[psnr(clear, recover(hazy, airlight, with_strength(t, s))) for s in args.strengths]
                                    for t in (t_net, t_dcp)])
        m = np.mean(rows, axis=0)
        print(f"| {label} ({len(rows)}) | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} | {m[3]:.2f} | {m[4]:.2f} | "
              f"{m[5]:+.3f} / {m[6]:.3f} | {m[7]:+.3f} / {m[8]:.3f} |", flush=True)
        if args.strengths:
            strength_rows.append(strength_table(label, np.array(by_strength)))
    if args.strengths:
        print("\nPSNR, HazeNet's t / DCP's t, their haze scaled by S:\n")
        print("| set | " + " | ".join(f"S = {s:g}" for s in args.strengths) + " | each picture's best S |")
        print("|---" * (len(args.strengths) + 2) + "|")
        print("\n".join(strength_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
