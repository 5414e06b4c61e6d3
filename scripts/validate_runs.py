"""Compare training runs on each other's validation sets (how HazeNet's recipe was chosen).

Every run folder holds its ``config.yaml``; its validation set is drawn from its own haze
recipe on the validation images only (never the reporting sets). Recipes with different
haze draw different validation sets, so each run's last checkpoint is scored on the
validation set of *every* run given, and the mean over them decides.

    python -m scripts.validate_runs runs/hazenet-s0 runs/hazenet-s1 runs/hazenet-dense-s0 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from tiledehaze.train.augment import AugmentConfig
from tiledehaze.train.data import build_sources, fixed_set
from tiledehaze.train.loop import predict
from tiledehaze.metrics import mean_quality
from tiledehaze.train.synth import SynthConfig
from tiledehaze.train.tasks import get_task


def validation_set(cfg: dict) -> tuple[np.ndarray, ...]:
    task = get_task(cfg)
    synth, aug = SynthConfig.from_dict(cfg["synthesis"]), AugmentConfig.from_dict(cfg["augment"])
    _, val = build_sources(cfg["data"], synth, aug, patch=int(cfg["patch_size"]), seed=int(cfg["seed"]),
                           extras=task.extras)
    return fixed_set(val, int(cfg["data"]["val_samples"]), int(cfg["data"]["val_seed"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    configs = {run: yaml.safe_load((run / "config.yaml").read_text()) for run in args.runs}
    sets: dict[str, tuple] = {}
    for run, cfg in configs.items():  # one validation set per distinct haze recipe
        key = yaml.safe_dump({k: cfg[k] for k in ("synthesis", "data")}, sort_keys=True)
        sets.setdefault(key, (run.name, validation_set(cfg)))
    names = [name for name, _ in sets.values()]
    print("| run | " + " | ".join(f"val of {n}" for n in names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    hazy = [mean_quality(v[1], v[0])[0] for _, v in sets.values()]
    print("| hazy input | " + " | ".join(f"{h:.2f}" for h in hazy) + f" | {np.mean(hazy):.2f} |")
    for run, cfg in configs.items():
        task = get_task(cfg)
        module = task.module(cfg)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in task.load(run / "last.safetensors").items()})
        scores = [mean_quality(v[1], predict(task, module, v, 8))[0] for _, v in sets.values()]
        print(f"| {run.name} | " + " | ".join(f"{s:.2f}" for s in scores) + f" | {np.mean(scores):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
