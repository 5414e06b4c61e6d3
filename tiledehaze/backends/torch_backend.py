"""PyTorch backend: CPU with channels_last, or CUDA with FP16, pinned buffers and own streams.

On CUDA every batch goes through one of a few *slots*, each with its own stream and pinned
host buffers: the host-to-device copy, the network and the device-to-host copy of one batch
are queued on its stream and :meth:`TorchBackend.submit` returns at once, so the next batch
can be stacked (and copied, on the next slot's stream) while this one runs.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from ..errors import BackendUnavailable, ConfigError
from ..executor import Done, Pending
from .base import Backend, BackendInfo
from .cuda import has_module, torch_cuda_problem
from .ort import default_threads

log = logging.getLogger(__name__)

#: tiles per call on a GPU: eight 1024^2 tiles keep a large GPU busy and fit a small one
GPU_BATCH = 8


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, network, *, threads: int | None = None, device: str | None = "auto",
                 precision: str | None = None, batch: int | None = None, streams: int = 2, **_: object):
        import torch

        self.torch = torch
        if device in (None, "auto"):
            device = "cuda" if torch_cuda_problem() is None else "cpu"
        self.device = torch.device(device)
        self.threads = threads or default_threads()
        self.on_gpu = self.device.type == "cuda"
        if self.on_gpu:
            problem = torch_cuda_problem()
            if problem is not None:
                raise BackendUnavailable(f"torch on {device}: {problem}")
            self.precision = precision or "fp16"
            self._init_cuda(network, batch or GPU_BATCH, max(1, streams))
        elif self.device.type == "cpu":
            if precision not in (None, "fp32"):
                raise ConfigError("torch on CPU runs fp32 only; use --backend onnxruntime for fp16 on CPU")
            self.precision = "fp32"
            torch.set_num_threads(self.threads)
            self.module = network.to_torch().to(memory_format=torch.channels_last)
            self.preferred_batch = batch or 1
        else:
            raise ConfigError(f"torch backend: unsupported device {device!r} (use cpu or cuda)")

    # -- CUDA -------------------------------------------------------------------------------
    def _init_cuda(self, network, batch: int, streams: int) -> None:
        torch = self.torch
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16, not {self.precision!r}")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        torch.backends.cudnn.benchmark = True  # tile shapes repeat, so the search pays off
        self.module = network.to_torch().to(device=self.device, dtype=self.dtype,
                                            memory_format=torch.channels_last)
        self.preferred_batch = batch
        self.oom_errors = (torch.cuda.OutOfMemoryError,)
        self._slots = [_Slot(torch, torch.cuda.Stream(self.device)) for _ in range(streams)]
        self._next = 0
        self.in_flight = streams
        self._lock = threading.Lock()  # slots rotate safely if several threads share the model
        torch.cuda.synchronize(self.device)  # weights are on the device before other streams read them

    def submit(self, tiles: np.ndarray) -> Pending:
        """Queue ``tiles`` on the GPU; the returned handle's ``result()`` waits for them."""
        if not self.on_gpu:
            return Done(self.run(tiles))
        tiles = np.ascontiguousarray(tiles, dtype=np.float32)
        with self._lock:
            return self._enqueue(tiles)

    def _enqueue(self, tiles: np.ndarray) -> Pending:
        torch = self.torch
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        slot.retire()  # its pinned buffers are about to be reused
        host_in = slot.host("inp", tiles.shape)
        np.copyto(host_in.numpy(), tiles)
        with torch.cuda.stream(slot.stream), torch.inference_mode():
            x = host_in.to(self.device, non_blocking=True)
            # NHWC memory viewed as NCHW is exactly channels_last: no copy, no transpose.
            x = x.permute(0, 3, 1, 2).to(self.dtype)
            y = self.module(x).permute(0, 2, 3, 1).to(torch.float32, memory_format=torch.contiguous_format)
            host_out = slot.host("out", tiles.shape)
            host_out.copy_(y, non_blocking=True)
            done = torch.cuda.Event(blocking=True)  # waits without spinning: the CPU reads and writes meanwhile
            done.record(slot.stream)
        slot.pending = _CudaPending(done, host_out.numpy(), keepalive=(x, y))
        return slot.pending

    def run(self, tiles: np.ndarray) -> np.ndarray:
        if self.on_gpu:
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
            for slot in self._slots:
                slot.stream.synchronize()
            self.torch.cuda.empty_cache()

    def describe(self) -> str:
        if self.on_gpu:
            name = self.torch.cuda.get_device_name(self.device)
            return f"torch {self.device} ({name}) {self.precision} channels_last, batch {self.preferred_batch}"
        return f"torch cpu channels_last ({self.threads} threads)"


class _Slot:
    """One CUDA stream with its pinned host buffers, grown on demand and reused."""

    def __init__(self, torch, stream, *, pin: bool = True):
        self.torch = torch
        self.stream = stream
        self.pin = pin
        self.buffers: dict[str, object] = {}
        self.pending: _CudaPending | None = None

    def retire(self) -> None:
        if self.pending is not None:
            self.pending.result()  # keeps its own copy; the buffers are free afterwards
            self.pending = None

    def host(self, key: str, shape: tuple[int, ...]):
        size = int(np.prod(shape))
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < size:
            buf = self.torch.empty(size, dtype=self.torch.float32, pin_memory=self.pin)
            self.buffers[key] = buf
        return buf[:size].view(shape)


class _CudaPending:
    def __init__(self, event, out: np.ndarray, keepalive: tuple):
        self._event = event
        self._out = out
        self._keepalive = keepalive  # device tensors stay alive until the stream is past them
        self._value: np.ndarray | None = None

    def result(self) -> np.ndarray:
        if self._value is None:
            self._event.synchronize()
            self._value = self._out.copy()  # the pinned buffer is reused by a later batch
            self._out = None
            self._keepalive = ()
        return self._value


def probe() -> BackendInfo:
    if not has_module("torch"):
        return BackendInfo("torch", "torch is not installed", "PyTorch")
    return BackendInfo("torch", None, "PyTorch on CUDA (fp16) when a GPU is visible, else CPU channels_last")


def probe_cuda() -> BackendInfo:
    return BackendInfo("torch-cuda", torch_cuda_problem(),
                       "PyTorch on CUDA: fp16, channels_last, pinned buffers, own streams")


def create_cuda(network, **options) -> TorchBackend:
    options["device"] = "cuda" if options.get("device") in (None, "auto", "cpu") else options["device"]
    return TorchBackend(network, **options)
