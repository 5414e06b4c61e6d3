"""Detecting and recovering from a dead K.

AOD-Net's K ends in a ReLU. If its pre-activation goes negative everywhere, K = 0, the output
is ``ReLU(0 * I - 0 + 1) = 1`` (pure white) and no gradient reaches the network again. The
guard measures how much of K is alive on a batch, keeps a copy of the last healthy weights and,
when K dies, restores them, re-initialises layers whose ReLU output is dead and lowers the
learning rate.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from ..models.aodnet import LAYERS, clean_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """How alive the network is on one batch."""

    k_alive: float  # fraction of K > 0
    white: float  # fraction of output pixels above the white level
    finite: bool
    layer_alive: dict[str, float]

    def dead(self, min_alive: float) -> bool:
        """K (almost) nowhere positive, or NaN/inf anywhere.

        A white output alone is not death: freshly initialised weights give K close to 0 and an
        almost white output, but K is alive and gradients flow.
        """
        return (not self.finite) or self.k_alive < min_alive


@torch.no_grad()
def measure(model: torch.nn.Module, x: torch.Tensor, *, white_level: float = 0.98) -> Health:
    """Fraction of live K, of white output pixels and of live units per layer on batch ``x``."""
    acts = model.activations(x)
    k = acts[-1]
    y = clean_image(k, x, torch.relu)
    layers = {name: float((a > 0).float().mean()) for (name, _, _), a in zip(LAYERS, acts)}
    finite = bool(torch.isfinite(y).all()) and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return Health(layers["conv5"], float((y > white_level).float().mean()), finite, layers)


class DeadKGuard:
    """Keeps the last healthy state and brings the model back when K dies."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, min_alive: float = 0.05,
                 white_level: float = 0.98, lr_factor: float = 0.5, init_std: float = 0.02,
                 max_recoveries: int = 5, generator: torch.Generator | None = None):
        self.model, self.optimizer = model, optimizer
        self.min_alive, self.white_level = min_alive, white_level
        self.lr_factor, self.init_std, self.max_recoveries = lr_factor, init_std, max_recoveries
        self.generator = generator
        self.recoveries = 0
        self._good: tuple[dict, dict] | None = None

    def snapshot(self) -> None:
        self._good = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

    def check(self, x: torch.Tensor, where: str) -> bool:
        """Measure on ``x``; recover if K is dead (returns True), else remember this state."""
        health = measure(self.model, x, white_level=self.white_level)
        if not health.dead(self.min_alive):
            self.snapshot()
            return False
        self.recover(health, where)
        return True

    def recover(self, health: Health, where: str) -> None:
        self.recoveries += 1
        if self.recoveries > self.max_recoveries:
            raise RuntimeError(f"K died {self.recoveries} times ({where}); lower optim.lr or check the data")
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self._good is not None:
            self.model.load_state_dict(self._good[0])
            self.optimizer.load_state_dict(self._good[1])
            action = "restored the last healthy weights"
        else:
            dead = [n for n, a in health.layer_alive.items() if a < self.min_alive] or ["conv5"]
            for name in dead:
                conv = getattr(self.model, name)
                with torch.no_grad():
                    conv.weight.normal_(0.0, self.init_std, generator=self.generator)
                    conv.bias.fill_(0.01)  # a small positive bias keeps the ReLU open at the start
            self.optimizer.state.clear()
            action = f"re-initialised {', '.join(dead)}"
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr * self.lr_factor
        log.warning("dead K detected %s (K>0 on %.1f%% of pixels, %.1f%% white output): %s and lowered "
                    "the learning rate to %.3g (recovery %d of at most %d)", where, 100 * health.k_alive,
                    100 * health.white, action, self.optimizer.param_groups[0]["lr"], self.recoveries,
                    self.max_recoveries)
