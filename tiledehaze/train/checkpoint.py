"""Checkpoints: weights as safetensors, training state as a torch file that loads with ``weights_only=True``.

A run folder holds ``best.safetensors`` and ``last.safetensors`` (plain AOD-Net weights that
the engine loads with ``--weights``) and ``last_state.pt`` (epoch, weights, metrics so far,
optimizer state, best score, learning rate and the resolved config as YAML text), enough to
``--resume``. The state keeps its own copy of the weights and metrics, so that a run killed
between any two of an epoch's writes resumes exactly.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io.atomic import atomic_output
from ..models.aodnet import Weights, load_weights, save_weights
from ..models.checkpoint import read_torch_file

log = logging.getLogger(__name__)

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last_state.pt"
#: what ``train`` needs from a state to resume (newer states also hold ``model`` and ``history``)
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
    """The weights of a run folder's last epoch and its training state, for ``--resume``.

    The weights come from the state itself; run folders written before it held them give
    ``last.safetensors``, read with ``load``.
    """
    out_dir = Path(out_dir)
    path = out_dir / STATE
    if not path.is_file() or not (out_dir / LAST).is_file():
        raise ConfigError(f"nothing to resume in {out_dir}: {STATE} or {LAST} is missing")
    try:  # numpy scalars allowed: runs written before the learning rate was kept as a plain float hold one
        state = read_torch_file(path)
    except PermissionError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ConfigError, OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:  # damaged
        log.debug("cannot load %s: %s", path, exc)
        state = None
    if not isinstance(state, dict) or not set(STATE_KEYS) <= state.keys():
        raise ConfigError(f"cannot resume from {path}: it is damaged or not the state of a training run")
    if "model" in state:
        return {k: v.numpy() for k, v in state.pop("model").items()}, state
    return load(out_dir / LAST), state
