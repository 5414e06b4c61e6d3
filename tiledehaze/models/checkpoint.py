"""Loading any checkpoint safely: safetensors or torch files, never unpickling code.

Torch files are opened with ``torch.load(weights_only=True)``. Official training checkpoints
often keep numpy scalars beside the weights (a best PSNR, a step count); those load through a
short allow-list of numpy's scalar, dtype and array constructors, and nothing else does. The
tensors are unwrapped from the usual containers (``params_ema``, ``params``, ``state_dict``,
``model``, ``net``), ``module.`` prefixes of ``DataParallel`` are stripped, and every tensor
must be finite. A network then takes exactly these keys and shapes (:func:`load_exact`), or
the user gets one line naming what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from ..errors import ConfigError, TileDehazeError, require
from ..options import file_digest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: containers official training code wraps weights in, in order of preference (EMA weights first)
CONTAINERS = ("params_ema", "params", "state_dict", "model", "net")
#: how many keys an error line names before it says "+N more"
_SHOWN = 4


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of a weights file, unwrapped, prefixes stripped, every one finite."""

    tensors: dict[str, "torch.Tensor"]
    #: SHA-256 of the file's bytes
    sha256: str
    path: Path


def weights_format(path: Path) -> Literal["safetensors", "torch"]:
    """The format of a weights file, from its content (not its name)."""
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise ConfigError(f"cannot read weights {path}: {exc.strerror or exc}") from None
    if head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch's zip format, or a bare pickle
        return "torch"
    raise ConfigError(f"{path}: not a weights file (neither safetensors nor a torch checkpoint)")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``path`` (safetensors or a torch file) into a :class:`Checkpoint`.

    Anything unreadable, unsafe (it would need pickled code), empty or holding NaN/inf is a
    one-line :class:`ConfigError`.
    """
    path = Path(path)
    torch = require("torch", extra="torch", feature=f"reading the torch checkpoint {path}",
                    hint=", or convert it to .safetensors where torch is installed")
    kind = weights_format(path)
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = read_torch_file(path)
    except TileDehazeError:
        raise
    except Exception as exc:  # corrupt or foreign file: say so in one line
        raise ConfigError(f"cannot read weights {path}: {first_line(exc)}") from None
    tensors = unwrap(state, path)
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ConfigError(f"{path}: {key} holds NaN or inf")
    return Checkpoint(tensors, file_digest(path), path)


def read_torch_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and numpy's scalars, dtypes and arrays allowed."""
    import torch

    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_globals()):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr; our error says what matters
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise
        raise ConfigError(
            f"{path} is not a safe checkpoint (loading it would run pickled code); if you trust it, convert it: "
            "load it yourself with torch.load(..., weights_only=False) and save its state dict with "
            "safetensors.torch.save_file(state_dict, 'weights.safetensors')") from None


def _numpy_globals() -> list:
    """numpy's scalar, dtype and array constructors, under numpy 2's names and numpy 1's (older checkpoints)."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray

    dtype_classes = {type(np.dtype(c)) for c in np.typecodes["All"] if c not in "O"}
    allowed: list = [np.dtype, np.ndarray, *sorted(dtype_classes, key=str)]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(multiarray, name)
        allowed += [fn, (fn, f"numpy.core.multiarray.{name}")]
    return allowed


def unwrap(state: Any, path: Path) -> dict[str, "torch.Tensor"]:
    """The tensors of a loaded checkpoint: out of its container, ``module.`` prefixes stripped."""
    import torch

    while isinstance(state, dict):
        inner = next((k for k in CONTAINERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        log.debug("%s: weights under %r", path, inner)
        state = state[inner]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a state dict of weights (holds {type(state).__name__})")
    tensors = {_strip(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConfigError(f"{path}: holds no tensors (keys: {_names(list(state))})")
    return tensors


def _strip(key: Any) -> str:
    key = str(key)
    while key.startswith("module."):
        key = key.removeprefix("module.")
    return key


def load_exact(module: "torch.nn.Module", ckpt: "Checkpoint | Mapping[str, torch.Tensor]", what: str) -> None:
    """Load ``ckpt`` (a :class:`Checkpoint` or its tensors) into ``module``, which must take
    exactly its keys and shapes; then eval mode.

    A mismatch is one :class:`ConfigError` line naming what is missing, unexpected or mis-shaped.
    """
    tensors = ckpt.tensors if isinstance(ckpt, Checkpoint) else dict(ckpt)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shaped = [f"{k} is {list(given[k])}, expected {list(expected[k])}"
              for k in expected if k in given and given[k] != expected[k]]
    problems = [f"{label} {_names(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped:", shaped)) if keys]
    if problems:
        source = f"{ckpt.path}: " if isinstance(ckpt, Checkpoint) else ""
        raise ConfigError(f"{source}not {what} weights: " + "; ".join(problems))
    module.load_state_dict(tensors, strict=True)
    module.eval()


def _names(keys: list) -> str:
    shown = ", ".join(str(k) for k in keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
