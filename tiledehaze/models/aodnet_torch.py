"""AOD-Net as a torch module, for training and for the torch backend."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .aodnet import LAYERS, Weights, clean_image


class AODNetModule(nn.Module):
    """J = ReLU(K(I) * I - K(I) + 1) with K from five small convolutions (Li et al. 2017)."""

    def __init__(self) -> None:
        super().__init__()
        for name, cin, k in LAYERS:
            setattr(self, name, nn.Conv2d(cin, 3, k, padding=k // 2))

    def activations(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of conv1..conv5 (after ReLU); the last is K."""
        x1 = torch.relu(self.conv1(x))
        x2 = torch.relu(self.conv2(x1))
        x3 = torch.relu(self.conv3(torch.cat((x1, x2), 1)))
        x4 = torch.relu(self.conv4(torch.cat((x2, x3), 1)))
        return x1, x2, x3, x4, torch.relu(self.conv5(torch.cat((x1, x2, x3, x4), 1)))

    def estimate_k(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clean_image(self.estimate_k(x), x, torch.relu)

    @classmethod
    def from_numpy(cls, weights: Weights) -> "AODNetModule":
        module = cls()
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
        return module.eval()

    def to_numpy(self) -> Weights:
        return {k: v.detach().cpu().float().numpy().copy() for k, v in self.state_dict().items()}
