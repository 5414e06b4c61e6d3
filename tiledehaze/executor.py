"""Keep an accelerator busy: batches in flight, out-of-memory back-off, one worker per GPU.

The engine hands over the tiles of one tile row in chunks of ``model.preferred_batch``.
:func:`pipelined` keeps up to ``depth`` chunks in flight, so that while the GPU works on one
chunk the host already stacks the next and the previous one is copied back. Around it, the
engine prefetches the next band in a thread (reading and decoding) and
:func:`tiledehaze.pipeline.background` lets the writer encode the previous band: reading,
host-to-device copies, inference, device-to-host copies and writing all overlap, each stage
bounded to one or two items, so memory stays bounded whatever the image size.

Running out of device memory is an expected outcome, not a crash: :class:`BackoffRunner`
halves the batch, logs a warning and carries on (see chaiNNer's auto-split in STYLE.md).
"""

from __future__ import annotations

import collections
import logging
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from .errors import TileDehazeError

log = logging.getLogger(__name__)


class Pending(Protocol):
    """Work handed to a device; :meth:`result` waits for it and returns host memory."""

    def result(self) -> np.ndarray: ...


class Done:
    """A result that is already there (CPU backends run synchronously)."""

    __slots__ = ("value",)

    def __init__(self, value: np.ndarray):
        self.value = value

    def result(self) -> np.ndarray:
        return self.value


class DeviceOutOfMemory(TileDehazeError):
    """Even a single tile does not fit in device memory."""

    exit_code = 5


def is_out_of_memory(backend, exc: BaseException) -> bool:
    """Whether ``exc`` from ``backend`` means "out of device memory".

    A backend says so with ``is_oom(exc)`` (for runtimes that signal it only in the message,
    like ONNX Runtime) or lists the exception types in ``oom_errors`` (torch's
    ``torch.cuda.OutOfMemoryError``).
    """
    check = getattr(backend, "is_oom", None)
    if check is not None:
        return bool(check(exc))
    return isinstance(exc, tuple(getattr(backend, "oom_errors", ()) or ()))


class BackoffRunner:
    """Run tiles through ``backend``, halving the batch whenever the device runs out of memory.

    What counts as out of memory is up to the backend (see :func:`is_out_of_memory`); it may
    offer ``release_memory()`` to return cached blocks before the retry. Other errors pass. The smaller batch limit is
    kept for later calls, so the warning is logged once per halving, not once per tile row.
    """

    def __init__(self, backend, *, limit: int | None = None):
        self.backend = backend
        #: most tiles per backend call; ``None`` until an out-of-memory error sets it
        self.limit = limit

    def _pieces(self, tiles: np.ndarray) -> list[np.ndarray]:
        return _split(tiles, self.limit or len(tiles))

    def _halve(self, n: int, exc: BaseException) -> None:
        if n <= 1:
            raise DeviceOutOfMemory(
                f"{self.backend.describe()}: out of device memory for a single "
                f"{'x'.join(map(str, exc_shape(exc)))} tile; use a smaller --tile") from exc
        self.limit = max(1, n // 2)
        log.warning("%s ran out of device memory on a batch of %d tiles; retrying with batches of %d",
                    self.backend.describe(), n, self.limit)
        release = getattr(self.backend, "release_memory", None)
        if release is not None:
            release()

    def submit(self, tiles: np.ndarray) -> Pending:
        """Start ``tiles`` on the device; falls back to smaller synchronous batches on OOM."""
        if (self.limit is None or len(tiles) <= self.limit) and hasattr(self.backend, "submit"):
            try:
                return self.backend.submit(tiles)
            except Exception as exc:
                if not is_out_of_memory(self.backend, exc):
                    raise
                _note_shape(exc, tiles)
                self._halve(len(tiles), exc)
        return Done(self.run(tiles))

    def run(self, tiles: np.ndarray) -> np.ndarray:
        """Run ``tiles`` to completion in as few backend calls as memory allows."""
        outputs = []
        pieces = collections.deque(self._pieces(tiles))
        while pieces:
            piece = pieces.popleft()
            if self.limit is not None and len(piece) > self.limit:
                pieces.extendleft(reversed(_split(piece, self.limit)))
                continue
            try:
                outputs.append(self.backend.run(piece))
            except Exception as exc:
                if not is_out_of_memory(self.backend, exc):
                    raise
                _note_shape(exc, piece)
                self._halve(len(piece), exc)
                pieces.extendleft(reversed(_split(piece, self.limit)))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


def split_batch(n: int, max_batch: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``max_batch`` that cover ``n`` tiles, in order."""
    max_batch = max(1, max_batch)
    return [(i, min(n, i + max_batch)) for i in range(0, n, max_batch)]


def _split(tiles: np.ndarray, step: int) -> list[np.ndarray]:
    return [tiles[a:b] for a, b in split_batch(len(tiles), step)]


def _note_shape(exc: BaseException, tiles: np.ndarray) -> None:
    try:
        exc.tiledehaze_tile_shape = tiles.shape[1:3]  # type: ignore[attr-defined]
    except AttributeError:  # some C extension exceptions refuse new attributes
        pass


def exc_shape(exc: BaseException) -> tuple[int, ...]:
    return tuple(getattr(exc, "tiledehaze_tile_shape", ()))


def run_with_backoff(backend, tiles: np.ndarray) -> np.ndarray:
    """One-shot form of :class:`BackoffRunner`: run ``tiles``, halving the batch on OOM."""
    return BackoffRunner(backend).run(tiles)


def pipelined(submit: Callable[[np.ndarray], Pending], batches: Iterable[np.ndarray], *,
              depth: int = 2) -> Iterator[np.ndarray]:
    """Yield the results of ``submit(batch)`` in order, with up to ``depth`` batches in flight.

    ``batches`` is consumed lazily, so the next batch is stacked on the host while the device
    works on the ones already submitted; at most ``depth`` inputs and outputs are alive.
    """
    depth = max(1, depth)
    in_flight: collections.deque[Pending] = collections.deque()
    for batch in batches:
        in_flight.append(submit(batch))
        if len(in_flight) >= depth:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def gpu_worker_resources(gpus: int = 1) -> dict[str, float]:
    """dask resources a task needs to own ``gpus`` GPUs: ``client.submit(..., resources=...)``.

    Start one dask worker per GPU, each pinned to its device and advertising one GPU::

        CUDA_VISIBLE_DEVICES=0 dask worker tcp://scheduler:8786 --nworkers 1 --nthreads 1 --resources GPU=1
        CUDA_VISIBLE_DEVICES=1 dask worker tcp://scheduler:8786 --nworkers 1 --nthreads 1 --resources GPU=1

    Tasks submitted with ``resources=gpu_worker_resources()`` then run one at a time per GPU.
    A request no worker can satisfy waits forever, so only ask for it when GPU workers exist.
    """
    return {"GPU": float(gpus)}


def gpu_worker_commands(scheduler: str, gpus: int | Iterable[int], *, threads: int = 1) -> list[str]:
    """Shell commands that start one dask worker per GPU (see :func:`gpu_worker_resources`)."""
    ids = range(gpus) if isinstance(gpus, int) else list(gpus)
    return [f"CUDA_VISIBLE_DEVICES={i} dask worker {scheduler} --nworkers 1 --nthreads {threads} "
            f"--resources GPU=1 --name gpu{i}" for i in ids]
