"""Checkpoints: weights as safetensors, training state as a torch file that loads with ``weights_only=True``.

A run folder holds ``best.safetensors`` and ``last.safetensors`` (plain AOD-Net weights that
the engine loads with ``--weights``) and ``last_state.pt`` (epoch, weights, optimizer state, best
score, learning rate and the resolved config as YAML text), enough to ``--resume``. The state
keeps its own copy of the weights, so that a run killed after ``last.safetensors`` of an epoch
was written and before its state was still resumes exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io.atomic import atomic_output
from ..models.aodnet import Weights, load_weights, save_weights
from ..models.checkpoint import numpy_globals

log = logging.getLogger(__name__)

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last_state.pt"
#: what ``train`` reads back from the state to resume
STATE_KEYS = ("epoch", "optimizer", "best_psnr", "best_ssim", "best_epoch", "recoveries", "config")


def save_checkpoint(out_dir: Path, name: str, weights: Weights, metadata: dict[str, Any]) -> Path:
    """Write ``weights`` with string metadata to ``out_dir/name`` atomically."""
    path = Path(out_dir) / name
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    with atomic_output(path) as tmp:
        save_weights(weights, tmp, meta)
    return path


def save_state(out_dir: Path, state: dict[str, Any]) -> Path:
    """Write the resumable training state (tensors, numbers, strings and containers only)."""
    path = Path(out_dir) / STATE
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(out_dir: Path, load=load_weights) -> tuple[Weights, dict[str, Any]]:
    """The last weights (read with ``load``) and training state of a run folder, for ``--resume``."""
    out_dir = Path(out_dir)
    if not (out_dir / STATE).is_file() or not (out_dir / LAST).is_file():
        raise ConfigError(f"nothing to resume in {out_dir}: {STATE} or {LAST} is missing")
    path = out_dir / STATE
    try:  # numpy scalars allowed: runs written before the learning rate was kept as a plain float hold one
        with torch.serialization.safe_globals(numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe: one line, no traceback
        log.debug("cannot read %s: %r", path, exc)
        state = None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"cannot resume from {path}: it is damaged or not a training state "
                          f"(run again without --resume to start over)")
    if "model" in state:  # the weights of the state's own epoch
        return {k: v.numpy() for k, v in state.pop("model").items()}, state
    return load(out_dir / LAST), state  # runs written before the state held the weights
