"""What this machine offers for GPU inference, found without importing torch when it can't help.

The CPU default path must not pay for importing torch, so every probe first asks cheap
questions (is the package there, is an NVIDIA driver loaded) and only imports torch when
a GPU could really be used.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass

#: how to get torch, for messages about backends that need it
TORCH_EXTRA = "pip install 'tiledehaze[torch]'"


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def nvidia_driver() -> str | None:
    """None when an NVIDIA driver is present, else why not (no torch import, no CUDA init)."""
    if sys.platform.startswith("linux"):
        if os.path.exists("/proc/driver/nvidia/version"):
            return None
        names = ("libcuda.so.1", "libcuda.so")
    elif sys.platform == "win32":
        names = ("nvcuda.dll",)
    else:
        return "no CUDA on this platform"
    for name in names:
        try:
            ctypes.CDLL(name)  # loading the driver library does not initialise CUDA
            return None
        except OSError:
            continue
    return "no CUDA device (no NVIDIA driver found)"


def torch_build() -> str | None:
    """torch's version string without importing it (``2.13.0+cpu``), or None if absent."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def torch_cuda_problem() -> str | None:
    """None when torch can run on a CUDA device here, else a short reason."""
    version = torch_build()
    if version is None or not has_module("torch"):
        return f"torch is not installed ({TORCH_EXTRA})"
    if version.endswith("+cpu"):
        return f"no CUDA device (torch {version} is a CPU-only build)"
    problem = nvidia_driver()
    if problem is not None:
        return problem
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


@dataclass(frozen=True)
class GpuIdentity:
    """What a compiled TensorRT plan depends on besides TensorRT itself."""

    name: str
    capability: tuple[int, int]


def gpu_identity(device: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``device`` (imports torch)."""
    import torch

    return GpuIdentity(torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device)))


def clear_probe_caches() -> None:
    """Forget cached probe answers (for tests and long-lived processes)."""
    nvidia_driver.cache_clear()
    torch_cuda_problem.cache_clear()
