"""PyTorch backend (CPU here; CUDA where torch sees a GPU)."""

from __future__ import annotations

import importlib.util

import numpy as np

from .base import Backend, BackendInfo
from .ort import default_threads


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, network, *, threads: int | None = None, device: str = "cpu", **_: object):
        import torch

        self.torch = torch
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.device = device
        self.module = network.to_torch().to(device=device, memory_format=torch.channels_last)

    def run(self, tiles: np.ndarray) -> np.ndarray:
        torch = self.torch
        # NHWC memory viewed as NCHW is exactly the channels_last layout: no copy.
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            y = self.module(x.to(self.device))
        return y.permute(0, 2, 3, 1).cpu().numpy()

    def describe(self) -> str:
        return f"torch {self.device} channels_last ({self.threads} threads)"


def probe() -> BackendInfo:
    if importlib.util.find_spec("torch") is None:
        return BackendInfo("torch", "torch is not installed", "PyTorch")
    return BackendInfo("torch", None, "PyTorch, CPU, channels_last")
