"""The quality table of BENCHMARKS.md: every set side by side, HazeNet over several training seeds.

For every paired set it runs ``tiledehaze.evaluate`` once with DCP and AOD-Net (and the hazy
input) and once per HazeNet weights file, then writes mean PSNR/SSIM per set with the HazeNet
mean, standard deviation and range over the seeds. On the real photographs (no ground
truth) it reports the haze score, the yellow shift and the block gain instead, per seed too.
With ``--figure`` it also draws every real photograph as input | DCP | AOD-Net | HazeNet
(the first weights file given).

    python -m scripts.make_eval_set --out runs/evalset --variants 2 --seed 0
    python -m scripts.make_eval_set2 --clean data/clean/heldout --out runs/evalset2 --variants 2 --seed 0
    python -m scripts.quality_table --data ../shared/data --out runs/quality \\
        --hazenet runs/hazenet-s0/last.safetensors runs/hazenet-s1/last.safetensors runs/hazenet-s2/last.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from tiledehaze.dataset import image_files, read_rgb
from tiledehaze.evaluate import evaluate, labelled_grid, write_image

log = logging.getLogger("quality_table")


def paired_sets(data: Path, evalset: Path, evalset2: Path) -> list[tuple[str, Path, Path, tuple | None]]:
    """(label, hazy folder, clear folder, crop of the clear image) for every paired set."""
    return [
        ("held-out synthetic (make_eval_set)", evalset / "hazy", evalset / "clear", None),
        ("held-out synthetic 2 (make_eval_set2)", evalset2 / "hazy", evalset2 / "clear", None),
        ("SOTS indoor (dense)", data / "paired/sots_indoor/hazy", data / "paired/sots_indoor/clear", None),
        ("SOTS indoor, full ground truth", data / "paired/sots_indoor_fullgt/hazy",
         data / "paired/sots_indoor_fullgt/clear", (10, 470, 10, 630)),
        ("O-HAZE (real haze)", data / "paired/ohaze/hazy", data / "paired/ohaze/clear", None),
    ]


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}


def run_set(hazy: Path, clear: Path | None, crop, weights: list[Path], out: Path) -> dict:
    """Summaries of the baselines and of each HazeNet weights file on one set."""
    base = evaluate(hazy, clear, models=["dcp", "aodnet"], crop_clear=crop, out_dir=out / "baselines", grids=False)
    summary = base.summary()
    seeds, results = [], list(base.results)
    for i, w in enumerate(weights):
        rep = evaluate(hazy, clear, models=["hazenet"], crop_clear=crop, out_dir=out / f"hazenet-{i}",
                       model_options={"hazenet": {"weights": w}}, grids=False)
        seeds.append(rep.summary()["hazenet"])
        results += [r for r in rep.results if r.model == "hazenet" and not setattr(r, "model", f"hazenet-{i}")]
    keys = ("psnr", "ssim", "haze_after", "yellow_shift", "block_gain")
    hazenet = {k: _stats([s[k] for s in seeds]) for k in keys if all(s[k] is not None for s in seeds)}
    per_image: dict[str, dict] = {}
    if clear is None:  # real photographs: per-image yellow shift of each model
        for r in results:
            per_image.setdefault(r.image, {})[r.model] = {"yellow_shift": r.yellow_shift, "haze": r.haze_after,
                                                          "block_gain": r.block_gain}
    return {"input": summary["input"], "dcp": summary["dcp"], "aodnet": summary["aodnet"], "hazenet": hazenet,
            "hazenet_seeds": seeds, "images": len(base.results) // 3, "per_image": per_image}


def _pm(stats: dict[str, float], key: str, digits: int) -> str:
    s = stats[key]
    return f"**{s['mean']:.{digits}f}** ± {s['std']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _extreme(r: dict, model: str) -> str:
    shifts = [img[model]["yellow_shift"] for img in r["per_image"].values() if model in img]
    return f"{max(shifts, key=abs):+.1f}" if shifts else "-"


def markdown(results: dict[str, dict], seeds: int) -> str:
    lines = [f"| set (images) | hazy input | DCP | AOD-Net | HazeNet, mean ± std (range) over {seeds} seeds |",
             "|---|---|---|---|---|"]
    for label, r in results.items():
        if "psnr" not in r["hazenet"]:
            continue
        cell = lambda m: f"{r[m]['psnr']:.2f} / {r[m]['ssim']:.3f}"  # noqa: E731
        lines.append(f"| {label} ({r['images']}) | {cell('input')} | {cell('dcp')} | {cell('aodnet')} | "
                     f"{_pm(r['hazenet'], 'psnr', 2)} / {_pm(r['hazenet'], 'ssim', 3)} |")
    for label, r in results.items():
        if "psnr" in r["hazenet"]:
            continue
        lines += ["", f"{label} ({r['images']} photographs, no ground truth):", "",
                  "| | hazy input | DCP | AOD-Net | HazeNet (seeds) |", "|---|---|---|---|---|",
                  f"| haze score (lower = less haze) | {r['input']['haze_after']:.3f} | {r['dcp']['haze_after']:.3f} | "
                  f"{r['aodnet']['haze_after']:.3f} | {_pm(r['hazenet'], 'haze_after', 3)} |",
                  f"| mean yellow shift (b*) | - | {r['dcp']['yellow_shift']:+.2f} | {r['aodnet']['yellow_shift']:+.2f} | "
                  f"{_pm(r['hazenet'], 'yellow_shift', 2)} |",
                  f"| block gain (8x8 boundary steps in smooth regions, output / input) | 1.00 | "
                  f"{r['dcp']['block_gain']:.2f} | {r['aodnet']['block_gain']:.2f} | {_pm(r['hazenet'], 'block_gain', 2)} |",
                  f"| largest yellow shift of one photograph (b*) | - | {_extreme(r, 'dcp')} | {_extreme(r, 'aodnet')} | "
                  f"{', '.join(_extreme(r, f'hazenet-{i}') for i in range(seeds))} |"]
    return "\n".join(lines) + "\n"


def figure(real: Path, weights: Path, path: Path, height: int = 220) -> None:
    """Every real photograph as input | DCP | AOD-Net | HazeNet, one row each."""
    from tiledehaze import restore
    from tiledehaze.models import create_model

    models = [("DCP", create_model("dcp")), ("AOD-Net", create_model("aodnet")),
              ("HazeNet", create_model("hazenet", weights=weights))]
    rows = []
    for p in image_files(real):
        hazy = read_rgb(p)
        panels = [(p.stem, hazy)] + [(name, restore(hazy, model=m)) for name, m in models]
        rows.append(labelled_grid(panels, height=height))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.vstack(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    else:
        write_image(path, grid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding paired/ and real/")
    parser.add_argument("--evalset", type=Path, default=Path("runs/evalset"))
    parser.add_argument("--evalset2", type=Path, default=Path("runs/evalset2"))
    parser.add_argument("--hazenet", type=Path, nargs="+", required=True, help="HazeNet weights, one per seed")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    parser.add_argument("--only", help="evaluate only the sets whose label contains this text")
    parser.add_argument("--figure", type=Path, help="also draw the real photographs here (.jpg or .png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    sets = paired_sets(args.data, args.evalset, args.evalset2) + [("real photographs", args.data / "real", None, None)]
    results = {}
    for i, (label, hazy, clear, crop) in enumerate(sets):
        if args.only and args.only not in label:
            continue
        results[label] = run_set(hazy, clear, crop, args.hazenet, args.out / f"set{i}")
        print(f"{label}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, len(args.hazenet))
    (args.out / "quality.md").write_text(table)
    print(table)
    if args.figure:
        figure(args.data / "real", args.hazenet[0], args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
