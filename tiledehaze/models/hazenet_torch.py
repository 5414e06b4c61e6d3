"""HazeNet as a torch module, for training and for the torch backend.

The layers come from :func:`.hazenet.layers` and the wiring from :func:`.hazenet.forward`, the
same function the ONNX graph is built from.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hazenet import Weights, forward, layers, t_channels_of


class _TorchOps:
    def __init__(self, module: "HazeNetModule"):
        self.m = module
        self.t_channels = module.t_channels

    def conv(self, name: str, x: torch.Tensor, *, relu: bool) -> torch.Tensor:
        y = getattr(self.m, name)(x)
        return torch.relu(y) if relu else y

    def dark(self, x: torch.Tensor, patch: int) -> torch.Tensor:
        # max pooling ignores its padding, so the min filter sees only real pixels (as ONNX MaxPool)
        p = patch // 2
        rows = F.max_pool2d(-x.amin(1, keepdim=True), (1, patch), stride=1, padding=(0, p))
        return -F.max_pool2d(rows, (patch, 1), stride=1, padding=(p, 0))

    def concat(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)

    def space_to_depth(self, x: torch.Tensor) -> torch.Tensor:
        # ONNX SpaceToDepth's channel order: (dy * 2 + dx) * C + c
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)

    def depth_to_space(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, 2)  # ONNX DepthToSpace, mode CRD

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def transmission(self, logit: torch.Tensor, t_min: float) -> torch.Tensor:
        return torch.sigmoid(logit) * (1.0 - t_min) + t_min

    def recover(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x + -1.0) / t + 1.0


class HazeNetModule(nn.Module):
    """Airlight-normalised input ``x = I / A`` (N, 3, H, W) -> ``J / A``; see :mod:`.hazenet`."""

    def __init__(self, output: str = "j", t_channels: int = 1) -> None:
        super().__init__()
        self.output = output  # "j": J / A; "t": the transmission on three channels (the engine's form)
        self.t_channels = t_channels
        for name, cin, cout, k, stride, transposed in layers(t_channels):
            layer = (nn.ConvTranspose2d(cin, cout, k, stride) if transposed
                     else nn.Conv2d(cin, cout, k, stride, padding=k // 2))
            setattr(self, name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(_TorchOps(self), x, output=self.output)

    def forward_with_t(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward(_TorchOps(self), x, return_t=True)

    @classmethod
    def from_numpy(cls, weights: Weights, output: str = "j") -> "HazeNetModule":
        module = cls(output, t_channels_of(weights))
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
        return module.eval()

    def to_numpy(self) -> Weights:
        return {k: v.detach().cpu().float().numpy().copy() for k, v in self.state_dict().items()}
