"""Training configuration: defaults, YAML files, ``key.path=value`` overrides and a stable hash."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

#: Every option with its default; ``configs/aodnet.yaml`` writes the same tree out.
DEFAULTS: dict[str, Any] = {
    "model": "aodnet",
    "seed": 0,
    "output_dir": "runs/aodnet",
    "threads": 2,
    "num_epochs": 10,
    "train_batch_size": 8,
    "val_batch_size": 8,
    "patch_size": 48,
    "samples_per_epoch": 12000,
    "loss": "mse",
    "init_std": 0.02,
    "optim": {"name": "adam", "lr": 1.0e-4, "weight_decay": 1.0e-4, "grad_clip_norm": 0.1,
              "schedule": "constant"},
    "data": {
        "source": "synthetic",
        "clean_images": ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                         "immunohistochemistry", "retina", "motorcycle_left", "motorcycle_right"],
        "val_images": ["coffee"],
        "val_samples": 64,
        "val_patch_size": 128,
        "val_seed": 12345,
        "max_side": 0,
        "paired": {"root": None, "val_fraction": 0.1},
    },
    "synthesis": {
        "beta": [0.4, 1.6],
        "beta_scale": "linear",
        "airlight": [0.6, 1.0],
        "tint": 0.05,
        "depth_max": [0.7, 1.3],
        "depth_weights": {"ramp": 1.0, "noise": 1.0, "mix": 1.0, "uniform": 1.0, "layers": 0.0, "map": 2.0},
        "angstrom": [0.0, 0.0],
        "airlight_gradient": 0.0,
        "exposure": 0.0,
        "scene_scale": [1.0, 1.0],
        "near": [0.0, 0.7],
    },
    "augment": {
        "from_epoch": 2,
        "min_brightness": 0.15,
        "max_tries": 10,
        "crop_scale": [1.0, 2.0],
        "hflip": 0.5,
        "vflip": 0.2,
        "rot90": 0.3,
        "ssr_prob": 0.3,
        "ssr_shift": 0.0625,
        "ssr_scale": 0.1,
        "ssr_rotate": 15.0,
        "jitter_prob": 0.5,
        "brightness": 0.15,
        "contrast": 0.15,
        "saturation": 0.2,
        "channel_gain": 0.03,
        "channel_shuffle": 0.0,
        "greyscale": 0.0,
        "black_point": 0.0,
    },
    "guard": {
        "check_every": 200,
        "min_alive_fraction": 0.05,
        "white_level": 0.98,
        "lr_factor": 0.5,
        "max_recoveries": 5,
    },
    "hazenet": {
        "airlight_gain": [0.85, 1.1],
        "airlight_tint": 0.02,
        "t_weight": 0.1,
        "t_per_channel": False,
    },
    "jpeg": {"quality": 20, "scale": 1.0},
    "log_every": 100,
}

#: keys that say where and how a run is written, not what it learns (left out of the hash)
_NOT_HASHED = ("output_dir", "threads", "log_every")
#: options added later, left out of the hash while they are off (0), so older configs keep theirs
_ADDED_LATER = (("data", "max_side"), ("synthesis", "exposure"), ("augment", "black_point"),
                ("hazenet", "t_per_channel"))
#: sections that one model alone reads, left out of the hash of the others' configs
_OWN_SECTIONS = {"hazenet": "hazenet", "jpeg": "srcnn"}


def merge(base: dict[str, Any], update: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys are refused."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = f"{path}{key}"
        if key not in out:
            raise ConfigError(f"unknown config key {where!r}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where!r} is a section, not a value")
            out[key] = merge(out[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``optim.lr=3e-4`` -> ``{"optim": {"lr": 3e-4}}`` (values are parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" as a string
            value = float(value)
        except ValueError:
            pass
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults, then the YAML file, then each override in order."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {p}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of options")
        cfg = merge(cfg, loaded)
    for text in overrides or []:
        cfg = merge(cfg, parse_override(text))
    return cfg


def config_hash(cfg: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of what the run learns from (paths and threads excluded)."""
    learnt = {k: v for k, v in cfg.items() if k not in _NOT_HASHED}
    # options added later leave the hash of configs that do not use them unchanged
    for section, model in _OWN_SECTIONS.items():
        if learnt.get("model") != model:
            learnt.pop(section, None)
    for section, key in _ADDED_LATER:
        if section in learnt and not (learnt[section] or {}).get(key):
            learnt[section] = {k: v for k, v in learnt[section].items() if k != key}
    blob = json.dumps(learnt, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
