"""SRCNN as a torch module, for training, the torch backend and loading checkpoints (see :mod:`.srcnn`)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from .checkpoint import load_exact
from .srcnn import Layout, infer_layout, seeds_layout


class SRCNN(nn.Module):
    """The three convolutions of :class:`Layout`; input and output are (N, channels, H, W)."""

    def __init__(self, layout: Layout | None = None):
        super().__init__()
        self.layout = layout = layout or seeds_layout()
        sizes = (layout.channels, *layout.widths, layout.channels)
        for i, (k, p) in enumerate(zip(layout.kernels, layout.padding)):
            setattr(self, f"conv{i + 1}", nn.Conv2d(sizes[i], sizes[i + 1], k, padding=p,
                                                    padding_mode=layout.padding_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.conv3(x)

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().float().numpy().copy() for k, v in self.state_dict().items()}

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, torch.Tensor]) -> "SRCNN":
        """The network these tensors fit (layout inferred from their shapes), with them loaded."""
        module = cls(infer_layout(tensors))
        load_exact(module, tensors, "SRCNN")
        return module
