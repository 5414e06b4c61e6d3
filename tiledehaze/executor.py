"""Out of device memory is an expected outcome, not a crash: halve the batch and carry on.

:class:`BackoffRunner` runs tiles through a backend; when the device runs out of memory it
halves the batch, logs a warning and carries on (see chaiNNer's auto-split in STYLE.md). Only
a single tile that does not fit stops the run, with :class:`~tiledehaze.errors.OutOfMemory`.
"""

from __future__ import annotations

import collections
import logging

import numpy as np

from .errors import OutOfMemory
from .pending import Done, Pending

log = logging.getLogger(__name__)


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
            raise OutOfMemory(
                f"{self.backend.describe()}: out of device memory for a single "
                f"{'x'.join(map(str, exc_shape(exc)))} tile; use a smaller --tile") from exc
        self.limit = max(1, n // 2)
        log.warning("%s ran out of device memory on a batch of %d tiles; retrying with batches of %d",
                    self.backend.describe(), n, self.limit)
        release = getattr(self.backend, "release_memory", None)
        if release is not None:
            release()

    def _attempt(self, call, tiles: np.ndarray):
        """``call(tiles)``, or None once the batch limit is halved because the device ran out of memory."""
        try:
            return call(tiles)
        except Exception as exc:
            if not is_out_of_memory(self.backend, exc):
                raise
            _note_shape(exc, tiles)
            self._halve(len(tiles), exc)
            return None

    def submit(self, tiles: np.ndarray) -> Pending:
        """Start ``tiles`` on the device; falls back to smaller synchronous batches on OOM."""
        if (self.limit is None or len(tiles) <= self.limit) and hasattr(self.backend, "submit"):
            pending = self._attempt(self.backend.submit, tiles)
            if pending is not None:
                return pending
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
            out = self._attempt(self.backend.run, piece)
            if out is None:
                pieces.extendleft(reversed(_split(piece, self.limit)))
            else:
                outputs.append(out)
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
