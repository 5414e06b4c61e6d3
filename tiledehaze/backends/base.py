"""One interface for every inference runtime.

A backend runs a network on batches of float32 tiles laid out (N, H, W, 3) and returns the
same layout. Torch, ONNX Runtime and TensorRT live behind this interface and never leak into
planning, blending or I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import BackendUnavailable
from ..pending import Done, Pending

if TYPE_CHECKING:
    import torch

    from ..options import RunOptions


@runtime_checkable
class Network(Protocol):
    """What a backend runs: a fully convolutional network in the two forms runtimes take.

    Its ONNX graph has one input and one output, named :attr:`input_name` and
    :attr:`output_name`, both float RGB laid out as ``layout`` says; an output pixel depends
    only on input pixels at most :attr:`halo` away.
    """

    name: str
    #: receptive-field radius in pixels
    halo: int
    #: the ONNX graph's input and output tensor names
    input_name: str
    output_name: str

    def to_onnx(self, precision: str = "fp32", layout: str = "nchw") -> bytes:
        """The serialized ONNX graph: ``precision`` fp32 or fp16, ``layout`` nchw or nhwc."""
        ...

    def to_torch(self) -> "torch.nn.Module":
        """A torch module in eval mode on the CPU, taking and returning NCHW float tensors."""
        ...


class Backend(ABC):
    name: str = ""
    #: tiles per call that fill the device
    preferred_batch: int = 1
    #: batches worth keeping in flight: 1 for synchronous (CPU) backends, 2+ for GPU streams
    in_flight: int = 1
    #: exception types that mean "out of device memory" (see :mod:`tiledehaze.executor`)
    oom_errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def run(self, tiles: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float32 in, (N, H, W, 3) float32 out."""

    def submit(self, tiles: np.ndarray) -> Pending:
        """Start :meth:`run` on ``tiles``; GPU backends return before the device is done."""
        return Done(self.run(tiles))

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class BackendInfo:
    name: str
    #: None when usable, else why not
    unavailable: str | None
    description: str


def package_probe(name: str, package: str, description: str, *, install: str | None = None) -> BackendInfo:
    """A backend usable wherever ``package`` is installed (found without importing it); ``install`` says how."""
    from .cuda import has_module

    missing = f"{package} is not installed" + (f" ({install})" if install else "")
    return BackendInfo(name, None if has_module(package) else missing, description)


_FACTORIES: dict[str, Callable[..., Backend]] = {}
_PROBES: dict[str, Callable[[], BackendInfo]] = {}
#: the order ``auto`` tries them in: fastest first
AUTO_ORDER: list[str] = []


#: backends that only run on a GPU: ``auto`` takes only these for ``device="cuda..."`` and none for "cpu"
GPU_ONLY: set[str] = set()


def register_backend(name: str, factory: Callable[..., Backend], probe: Callable[[], BackendInfo],
                     auto_rank: int, *, gpu_only: bool = False) -> None:
    _FACTORIES[name] = factory
    _PROBES[name] = probe
    if gpu_only:
        GPU_ONLY.add(name)
    AUTO_ORDER.insert(min(auto_rank, len(AUTO_ORDER)), name)


def available_backends() -> list[BackendInfo]:
    """Every registered backend, whether it can run here, and why not."""
    return [_PROBES[name]() for name in AUTO_ORDER]


def create_backend(name: str, network: Network, options: RunOptions | None = None, **kwargs) -> Backend:
    """Create backend ``name`` (or the fastest usable one for ``auto``) for ``network``.

    ``options`` supplies threads, precision, device, tile and batch (the tile and batch size the
    plan will use, e.g. for TensorRT's profile); ``kwargs`` add or override backend-specific ones.
    """
    if options is not None:
        kwargs = {**options.backend_kwargs(), **kwargs}
    if name == "auto":
        reasons = []
        device = str(kwargs.get("device") or "")
        for candidate in AUTO_ORDER:
            if (device == "cpu" and candidate in GPU_ONLY) or (device.startswith("cuda") and candidate not in GPU_ONLY):
                continue
            info = _PROBES[candidate]()
            if info.unavailable is None:
                return _FACTORIES[candidate](network, **kwargs)
            reasons.append(f"{candidate}: {info.unavailable}")
        what = "GPU inference backend" if device.startswith("cuda") else "inference backend"
        raise BackendUnavailable(f"no {what} can run here (" + "; ".join(reasons) + ")")
    check_backend(name)
    return _FACTORIES[name](network, **kwargs)


def check_backend(name: str) -> None:
    """Raise :class:`BackendUnavailable` (one line: what and why) unless ``name`` can run here.

    Cheap: it runs the probe only, so callers can refuse early, before loading weights.
    """
    if name == "auto":
        return
    if name not in _FACTORIES:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, {', '.join(AUTO_ORDER)}")
    info = _PROBES[name]()
    if info.unavailable is not None:
        raise BackendUnavailable(f"backend {name!r} cannot run here: {info.unavailable}")
