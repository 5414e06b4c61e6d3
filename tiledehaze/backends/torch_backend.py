"""PyTorch backend: CPU with channels_last, or CUDA with FP16, pinned buffers and own streams.

On CUDA every batch is queued on one of a few streams with pinned host buffers (a
:class:`~.streams.StreamRing`): :meth:`TorchBackend.submit` returns at once, so the next batch
can be stacked (and copied, on the next stream) while this one runs.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import BackendUnavailable, ConfigError
from ..pending import Done, Pending
from .base import Backend, BackendInfo, package_probe
from .cuda import TORCH_EXTRA, torch_cuda_problem
from .ort import default_threads
from .streams import StreamRing

log = logging.getLogger(__name__)

#: tiles per call on a GPU: eight 1024^2 tiles keep a large GPU busy and fit a small one
GPU_BATCH = 8


class TorchBackend(Backend):
    """AOD-Net (or any :class:`~.base.Network`) in torch.

    ``streams`` is how many CUDA streams keep batches in flight, or a ready
    :class:`~.streams.StreamRing`; a ring handed to a CPU backend runs the CUDA code path's
    bookkeeping on the CPU (with stand-in streams, for tests).
    """

    name = "torch"

    def __init__(self, network, *, threads: int | None = None, device: str | None = "auto",
                 precision: str | None = None, batch: int | None = None, tile: int | None = None,
                 streams: int | StreamRing = 2):
        import torch

        self.torch = torch
        if device in (None, "auto"):
            device = "cuda" if torch_cuda_problem() is None else "cpu"
        self.device = torch.device(device)
        self.threads = threads or default_threads()
        self.on_gpu = self.device.type == "cuda"
        self.ring: StreamRing | None = None
        if self.on_gpu:
            problem = torch_cuda_problem()
            if problem is not None:
                raise BackendUnavailable(f"torch on {device}: {problem}")
            self.precision = precision or "fp16"
            self._init_cuda(network, batch or GPU_BATCH, streams)
        elif self.device.type == "cpu":
            if precision not in (None, "fp32"):
                raise ConfigError("torch on CPU runs fp32 only; use --backend onnxruntime for fp16 on CPU")
            self.precision = "fp32"
            torch.set_num_threads(self.threads)
            self.module = network.to_torch().to(memory_format=torch.channels_last)
            self.preferred_batch = batch or 1
            if isinstance(streams, StreamRing):
                self.dtype = torch.float32
                self._use_ring(streams)
        else:
            raise ConfigError(f"torch backend: unsupported device {device!r} (use cpu or cuda)")

    # -- CUDA -------------------------------------------------------------------------------
    def _init_cuda(self, network, batch: int, streams: "int | StreamRing") -> None:
        torch = self.torch
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16, not {self.precision!r}")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        torch.backends.cudnn.benchmark = True  # tile shapes repeat, so the search pays off
        self.module = network.to_torch().to(device=self.device, dtype=self.dtype,
                                            memory_format=torch.channels_last)
        self.preferred_batch = batch
        self.oom_errors = (torch.cuda.OutOfMemoryError,)
        self._use_ring(streams)
        torch.cuda.synchronize(self.device)  # weights are on the device before other streams read them

    def _use_ring(self, streams: "int | StreamRing") -> None:
        self.ring = streams if isinstance(streams, StreamRing) else StreamRing(self.torch, self.device, streams)
        self.in_flight = len(self.ring)

    def submit(self, tiles: np.ndarray) -> Pending:
        """Queue ``tiles`` on the GPU; the returned handle's ``result()`` waits for them."""
        if self.ring is None:
            return Done(self.run(tiles))
        return self.ring.submit(tiles, self._compute)

    def _compute(self, index: int, stream, x):
        torch = self.torch
        with torch.inference_mode():
            # NHWC memory viewed as NCHW is exactly channels_last: no copy, no transpose.
            y = self.module(x.permute(0, 3, 1, 2).to(self.dtype))
            return y.permute(0, 2, 3, 1).to(torch.float32, memory_format=torch.contiguous_format), ()

    def run(self, tiles: np.ndarray) -> np.ndarray:
        if self.ring is not None:
            return self.submit(tiles).result()
        torch = self.torch
        # NHWC memory viewed as NCHW is exactly the channels_last layout: no copy.
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            y = self.module(x)
        return y.permute(0, 2, 3, 1).numpy()

    def release_memory(self) -> None:
        """Wait for queued work and hand cached blocks back to the driver (after an OOM)."""
        if self.on_gpu:
            self.ring.synchronize()
            self.torch.cuda.empty_cache()

    def describe(self) -> str:
        if self.on_gpu:
            name = self.torch.cuda.get_device_name(self.device)
            return f"torch {self.device} ({name}) {self.precision} channels_last, batch {self.preferred_batch}"
        return f"torch cpu channels_last ({self.threads} threads)"


def probe() -> BackendInfo:
    return package_probe("torch", "torch", "PyTorch on CUDA (fp16) when a GPU is visible, else CPU channels_last",
                         install=TORCH_EXTRA)


def probe_cuda() -> BackendInfo:
    return BackendInfo("torch-cuda", torch_cuda_problem(),
                       "PyTorch on CUDA: fp16, channels_last, pinned buffers, own streams")


def create_cuda(network, **options) -> TorchBackend:
    options["device"] = "cuda" if options.get("device") in (None, "auto", "cpu") else options["device"]
    return TorchBackend(network, **options)
