"""What the training loop needs to know about each trainable model.

A task builds the torch module and its first weights, says whether its samples carry the
true transmission and airlight, computes the loss of one batch and predicts a validation set.
The loop itself (optimiser, schedule, checkpoints, resume, history) is shared.

- ``aodnet``: the paper's recipe, MSE on J, with the dead-K guard.
- ``srcnn``: MSE between the restored and the clean luma of JPEG-degraded photographs
  (:class:`~tiledehaze.train.data.JpegDegradation`, the ``jpeg`` section of the config).
- ``hazenet``: the input is divided by an airlight that is the true one with the estimation
  errors of a real image (a global gain and a small per-channel tint), as the engine divides
  by the airlight it estimates from the overview; the loss is L1 (or MSE) on J plus
  ``hazenet.t_weight`` times L1 on the transmission where the true one is known. With
  ``hazenet.t_per_channel`` the network predicts a transmission per colour and learns each
  against the true one of that colour (haze that scatters blue more than red).
- ``aecrnet``: AECR-Net with the authors' initialisation and their reconstruction loss, L1 on
  J (their contrastive term needs VGG-19 features, see the README); patches must be multiples of 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..models import aecrnet, aodnet, hazenet, srcnn
from ..models.srcnn_torch import SRCNN as SRCNNModule
from .data import JpegDegradation


def nchw(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)


def _pixel_loss(kind: str, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((y - target) ** 2) if kind == "mse" else torch.mean(torch.abs(y - target))


@dataclass(frozen=True)
class Task:
    name: str
    #: weights file format tag written into every checkpoint
    format: str
    #: whether samples carry the true transmission and airlight (hazy, clear, t, airlight)
    extras: bool
    #: whether the dead-K guard applies
    guard: bool
    losses: tuple[str, ...]
    #: config -> the torch module
    module: Callable[[dict[str, Any]], torch.nn.Module]
    init: Callable[[int, dict[str, Any]], dict[str, np.ndarray]]
    load: Callable[[Any], dict[str, np.ndarray]]
    #: (module, batch arrays, config, rng) -> (loss, the network input for the guard)
    loss: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    #: (module, batch arrays) -> predicted clean images (N, H, W, channels)
    predict: Callable[..., np.ndarray]
    #: patch sides must be multiples of this
    size_multiple: int = 1
    #: config -> (clean patch, rng) -> (input, target), made instead of haze; None: haze synthesis
    degrade: Callable[[dict[str, Any]], Callable] | None = None


# ------------------------------------------------------------------ AOD-Net

def _aodnet_module(cfg: dict[str, Any]) -> torch.nn.Module:
    from ..models.aodnet_torch import AODNetModule

    return AODNetModule()


def aodnet_init(seed: int, std: float = 0.02) -> dict[str, np.ndarray]:
    """The paper's initialisation, drawn from a stream of its own for this training seed."""
    return aodnet.init_weights(std=std, rng=np.random.default_rng([seed, 0x0A0D]))


def _image_loss(model, batch, cfg, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of a network that maps the input image to the clean one (AOD-Net, SRCNN, AECR-Net)."""
    hazy, clear = batch[:2]
    x = nchw(hazy)
    return _pixel_loss(cfg["loss"], model(x), nchw(clear)), x


def _image_predict(model, batch) -> np.ndarray:
    return model(nchw(batch[0])).permute(0, 2, 3, 1).numpy()


AODNET = Task("aodnet", "tiledehaze-aodnet-1", extras=False, guard=True, losses=("mse",),
              module=_aodnet_module,
              init=lambda seed, cfg: aodnet_init(seed, float(cfg["init_std"])),
              load=aodnet.load_weights, loss=_image_loss, predict=_image_predict)


# ------------------------------------------------------------------ SRCNN

SRCNN = Task("srcnn", srcnn.FORMAT, extras=False, guard=False, losses=("mse",),
             module=lambda cfg: SRCNNModule(), init=lambda seed, cfg: srcnn.init_weights(seed),
             load=srcnn.load_weights, loss=_image_loss, predict=_image_predict,
             degrade=lambda cfg: JpegDegradation.from_dict(cfg["jpeg"]))


# ------------------------------------------------------------------ HazeNet

def _t_channels(cfg: dict[str, Any]) -> int:
    return 3 if cfg["hazenet"].get("t_per_channel") else 1  # runs written before the option have one


def _hazenet_module(cfg: dict[str, Any]) -> torch.nn.Module:
    from ..models.hazenet_torch import HazeNetModule

    return HazeNetModule(t_channels=_t_channels(cfg))


def airlight_input(true_airlight: np.ndarray, rng: np.random.Generator, cfg: dict[str, Any]) -> np.ndarray:
    """The airlight the network is given: the true one (N, 3) with an estimator's errors."""
    h = cfg["hazenet"]
    n = len(true_airlight)
    gain = rng.uniform(*h["airlight_gain"], size=(n, 1))
    tint = 1.0 + rng.normal(0.0, float(h["airlight_tint"]), size=(n, 3))
    return np.clip(true_airlight * gain * tint, 0.05, 1.0).astype(np.float32)


def _hazenet_run(model, hazy: np.ndarray, airlight: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.from_numpy(airlight).reshape(-1, 3, 1, 1)
    x = nchw(hazy) / a
    j_norm, t = model.forward_with_t(x)
    return j_norm * a, t, x


def _hazenet_loss(model, batch, cfg, rng) -> tuple[torch.Tensor, torch.Tensor]:
    hazy, clear, t_true, airlight = batch
    j, t, x = _hazenet_run(model, hazy, airlight_input(airlight, rng, cfg))
    loss = _pixel_loss(cfg["loss"], j, nchw(clear))
    weight = float(cfg["hazenet"]["t_weight"])
    target = torch.from_numpy(t_true).permute(0, 3, 1, 2)  # (N, 3, H, W): the true t of each colour
    if t.shape[1] == 1:  # their mean, and exactly the one t of grey fog (a plain mean may round it)
        target = target[:, :1] + (target[:, 1:] - target[:, :1]).sum(1, keepdim=True) / 3
    known = target >= 0  # paired data carries t = -1 (unknown)
    if weight > 0 and bool(known.any()):
        loss = loss + weight * torch.abs(t - target)[known].mean()
    return loss, x


def _hazenet_predict(model, batch) -> np.ndarray:
    j, _, _ = _hazenet_run(model, batch[0], batch[3])
    return j.permute(0, 2, 3, 1).numpy()


HAZENET = Task("hazenet", hazenet.FORMAT, extras=True, guard=False, losses=("l1", "mse"),
               module=_hazenet_module,
               init=lambda seed, cfg: hazenet.init_weights(rng=np.random.default_rng([seed, 0x4A2E]),
                                                           t_channels=_t_channels(cfg)),
               load=hazenet.load_weights, loss=_hazenet_loss, predict=_hazenet_predict)


# ------------------------------------------------------------------ AECR-Net

def _aecrnet_init(seed: int) -> dict[str, np.ndarray]:
    """The authors' initialisation (torch's layer defaults, zero offsets), from a stream of its own."""
    with torch.random.fork_rng():
        torch.manual_seed(seed * 7919 + 0xAEC)
        return aecrnet.AECRNet().to_numpy()


def _aecrnet_predict(model, batch) -> np.ndarray:
    return np.clip(_image_predict(model, batch), 0.0, 1.0)  # the tanh's negative half, clipped as the engine does


AECRNET = Task("aecrnet", "tiledehaze-aecrnet-1", extras=False, guard=False, losses=("l1",),
               module=lambda cfg: aecrnet.AECRNet(), init=lambda seed, cfg: _aecrnet_init(seed),
               load=aecrnet.load_weights, loss=_image_loss, predict=_aecrnet_predict, size_multiple=4)

TASKS = {task.name: task for task in (AODNET, HAZENET, AECRNET, SRCNN)}


def get_task(cfg: dict[str, Any]) -> Task:
    task = TASKS.get(cfg["model"])
    if task is None:
        raise ConfigError(f"model must be one of {', '.join(TASKS)}, not {cfg['model']!r}")
    if cfg["loss"] not in task.losses or cfg["optim"]["name"] != "adam":
        raise ConfigError(f"{task.name} trains with loss {' or '.join(task.losses)} and optim 'adam'")
    for key, size in (("patch_size", cfg["patch_size"]), ("data.val_patch_size", cfg["data"]["val_patch_size"])):
        if int(size) % task.size_multiple:
            raise ConfigError(f"{task.name} needs {key} a multiple of {task.size_multiple}, not {size}")
    return task
