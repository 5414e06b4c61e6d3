"""What the engine needs from a restoration model.

A model works on float32 RGB tiles in [0, 1], laid out (N, H, W, 3). It declares its
receptive-field radius (``halo``): an output pixel depends only on input pixels at most
``halo`` away, so a tile whose interior edges carry ``halo`` pixels of real context reproduces
whole-image inference there. Models with image-wide statistics (the Dark Channel Prior's
atmospheric light) compute them once from an overview of the whole image in
:meth:`Model.global_state` and receive them with every tile.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..pending import Done, Pending


class Model(ABC):
    """A restoration model, as the tiling engine sees it."""

    #: registered name
    name: str = ""
    #: receptive-field radius in pixels
    halo: int = 0
    #: tile origins must lie on multiples of this (models that downsample; 1: anywhere)
    align: int = 1
    #: "exact" (tiles equal one pass), "approximate" (image-wide statistics: tiles get a large
    #: overlap and differ slightly) or "whole" (one pass only, up to :attr:`max_pixels`)
    tiling: str = "exact"
    max_pixels: int | None = None
    #: expected speed where it runs, in MP/s, when slow enough to warn about (None: no estimate)
    expected_mp_per_s: float | None = None
    #: whether :meth:`global_state` needs an overview of the whole image
    needs_overview: bool = False
    #: tiles per call that suit the backend (1 on CPU, more on a GPU)
    preferred_batch: int = 1
    #: batches worth submitting before waiting for the first (more than 1 only on a GPU)
    in_flight: int = 1

    def global_state(self, overview: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
        """Image-wide statistics from a downscaled float32 RGB overview in [0, 1].

        Where ``valid`` is False the overview holds no data (filled from nearby pixels); those
        pixels must not count.
        """
        return {}

    @abstractmethod
    def run(self, tiles: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        """Restore a batch of float32 tiles (N, H, W, 3) in [0, 1]; returns the same shape."""

    def submit(self, tiles: np.ndarray, state: dict[str, Any]) -> Pending:
        """Start :meth:`run`; models on a GPU return before the device is done."""
        return Done(self.run(tiles, state))

    def describe(self) -> str:
        return self.name


def pad_to_multiple(tiles: np.ndarray, multiple: int) -> np.ndarray:
    """Pad (N, H, W, C) at the bottom and right by reflection up to multiples of ``multiple``.

    Never with zeros: a network sees a plausible continuation of the picture, not a black edge.
    """
    h, w = tiles.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return tiles
    return np.pad(tiles, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > max(ph, pw) else "symmetric")
