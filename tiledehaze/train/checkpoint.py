"""Checkpoints: weights as safetensors, training state as a torch file that loads with ``weights_only=True``.

A run folder holds ``best.safetensors`` and ``last.safetensors`` (plain AOD-Net weights that
the engine loads with ``--weights``) and ``last_state.pt`` (epoch, optimizer state, best score,
learning rate and the resolved config as JSON text), enough to ``--resume``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..io.atomic import atomic_output
from ..models.aodnet import Weights, load_weights, save_weights

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last_state.pt"
# what a pickled numpy float needs (its reconstructor's module moved between numpy 1 and 2)
_NUMPY_FLOAT = [np.float64(0).__reduce__()[0], np.dtype, type(np.dtype(np.float64))]


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
    # runs written before the learning rate was kept as a plain float hold a numpy one
    with torch.serialization.safe_globals(_NUMPY_FLOAT):
        state = torch.load(out_dir / STATE, map_location="cpu", weights_only=True)
    return load(out_dir / LAST), state
