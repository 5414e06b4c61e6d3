"""CUDA streams with pinned host buffers, used in turn: what the torch and TensorRT backends share.

Every batch goes through one *slot* of a :class:`StreamRing`: its tiles are copied into the
slot's pinned host buffer, to the device, through the network and back, all queued on the
slot's own stream, and :meth:`StreamRing.submit` returns at once. The next batch is then
stacked (and copied, on the next slot's stream) while this one runs. A slot's buffers are
reused only after its previous batch has been collected.

Tests run this bookkeeping on the CPU by handing a backend a ring whose streams are stand-ins
(``StreamRing(torch, "cpu", 2, make_stream=StandIn, pin=False)``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

#: what runs a batch on a slot's stream: (slot index, stream, NHWC float32 device tensor) ->
#: (NHWC float32 device tensor, tensors to keep alive until the stream is past them)
Compute = Callable[[int, Any, Any], tuple[Any, tuple]]


class CudaPending:
    """A batch queued on a stream; :meth:`result` waits for it and returns the restored tiles."""

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


class Slot:
    """One CUDA stream with its pinned host buffers, grown on demand and reused."""

    def __init__(self, torch, stream, *, pin: bool = True):
        self.torch = torch
        self.stream = stream
        self.pin = pin
        self.buffers: dict[str, Any] = {}
        self.pending: CudaPending | None = None

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


class StreamRing:
    """``count`` slots on ``device``, used in turn; safe to share between threads.

    ``make_stream`` creates each stream (default: a new ``torch.cuda.Stream`` on ``device``);
    ``pin`` pins the host buffers (stand-in streams on the CPU need ``pin=False``).
    """

    def __init__(self, torch, device, count: int = 2, *, make_stream: Callable[[], Any] | None = None,
                 pin: bool = True):
        self.torch = torch
        self.device = torch.device(device)
        if make_stream is None:
            make_stream = lambda: torch.cuda.Stream(self.device)  # noqa: E731
        self.slots = [Slot(torch, make_stream(), pin=pin) for _ in range(max(1, count))]
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.slots)

    def submit(self, tiles: np.ndarray, compute: Compute) -> CudaPending:
        """Queue ``tiles`` (N, H, W, 3) through ``compute`` on the next slot's stream."""
        torch = self.torch
        tiles = np.ascontiguousarray(tiles, dtype=np.float32)
        with self._lock:
            index = self._next
            self._next = (index + 1) % len(self.slots)
            slot = self.slots[index]
            slot.retire()  # its pinned buffers are about to be reused
            host_in = slot.host("inp", tiles.shape)
            np.copyto(host_in.numpy(), tiles)
            with torch.cuda.device(self.device), torch.cuda.stream(slot.stream):
                x = host_in.to(self.device, non_blocking=True)
                y, keepalive = compute(index, slot.stream, x)
                host_out = slot.host("out", tiles.shape)
                host_out.copy_(y, non_blocking=True)
                done = torch.cuda.Event(blocking=True)  # waits without spinning: the CPU reads and writes meanwhile
                done.record(slot.stream)
            slot.pending = CudaPending(done, host_out.numpy(), keepalive=(x, y, *keepalive))
            return slot.pending

    def synchronize(self) -> None:
        """Wait for every queued batch."""
        for slot in self.slots:
            slot.stream.synchronize()
