"""Work handed to a device, and a result that is already there."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


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


class Then:
    """A pending result that ``finish`` turns into the final one when it is collected."""

    __slots__ = ("pending", "finish")

    def __init__(self, pending: Pending, finish: Callable[[np.ndarray], np.ndarray]):
        self.pending, self.finish = pending, finish

    def result(self) -> np.ndarray:
        return self.finish(self.pending.result())
