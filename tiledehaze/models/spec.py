"""What a state dict cannot tell: how the engine feeds a network and how it may be tiled.

A checkpoint holds tensors; it does not say whether the network sees RGB or luma, in [0, 1] or
[-1, 1], whether its raw output needs a sigmoid, which input sizes it accepts or how far an
output pixel looks. A :class:`ModelSpec` says so once, in the model's registry entry, and the
engine (planner, adapter, ``tiledehaze info``) reads it from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

#: tiling modes: tiles equal the whole-image result / tiles with a large overlap differ slightly / one pass only
TILING_MODES = ("exact", "approximate", "whole")
ACTIVATIONS = ("linear", "clamp", "sigmoid", "tanh")


@dataclass(frozen=True)
class ModelSpec:
    """What a state dict cannot tell: how the engine feeds a network and tiles it.

    Attributes
    ----------
    colour : "rgb" or "luma"
        ``luma``: the network sees Y only (``channels`` = 1); the chroma of the input is kept.
    luma : "bt601"
        Which luma: Y of full-range BT.601 YCbCr (0.299 R + 0.587 G + 0.114 B), as PIL and OpenCV.
        A network trained on studio-swing Y (16..235) says so with ``value_range=(16/255, 235/255)``.
    value_range : (low, high)
        The engine's [0, 1] maps linearly onto this range for the network, and back for its output.
    activation : "linear", "clamp", "sigmoid" or "tanh"
        Applied to the network's raw output, before mapping back (``clamp``: to ``value_range``).
    channels : int
        Input and output channels of the network (1 for luma, 3 for RGB).
    size_multiple : int
        Input height and width must be multiples of this; the adapter pads by reflection
        (bottom and right) inside the call, then crops.
    align : int
        Tile origins lie on multiples of this (networks that downsample).
    halo : int
        Receptive-field radius in pixels: the context the planner gives each tile.
    tiling : "exact", "approximate" or "whole"
        ``exact``: tiles reproduce whole-image output (proven by a test); ``approximate``: the
        network uses image-wide statistics, tiles use a large overlap and differ slightly;
        ``whole``: one pass over the image only, refused above ``max_pixels``.
    max_pixels : int or None
        For ``whole``: the largest image (height x width) it accepts.
    speed : str
        Speed class on CPU, e.g. ``"fast (~5 MP/s)"``; a figure in MP/s, when given, sets the
        time estimate logged before a slow model starts on the CPU.
    weights_source : str or None
        Where the authors publish weights, when none ship.
    """

    colour: Literal["rgb", "luma"] = "rgb"
    luma: Literal["bt601"] = "bt601"
    value_range: tuple[float, float] = (0.0, 1.0)
    activation: Literal["linear", "clamp", "sigmoid", "tanh"] = "clamp"
    channels: int = 3
    size_multiple: int = 1
    align: int = 1
    halo: int = 0
    tiling: Literal["exact", "approximate", "whole"] = "exact"
    max_pixels: int | None = None
    speed: str = ""
    weights_source: str | None = None

    def __post_init__(self) -> None:
        expected = {"rgb": 3, "luma": 1}
        if self.colour not in expected:
            raise ConfigError(f"colour must be rgb or luma, not {self.colour!r}")
        if self.channels != expected[self.colour]:
            raise ConfigError(f"a {self.colour} network has {expected[self.colour]} channel(s), not {self.channels}")
        if self.luma != "bt601":
            raise ConfigError(f"luma must be bt601, not {self.luma!r}")
        low, high = self.value_range
        if not high > low:
            raise ConfigError(f"value_range {self.value_range} must rise")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}")
        if self.tiling not in TILING_MODES:
            raise ConfigError(f"tiling must be one of {', '.join(TILING_MODES)}, not {self.tiling!r}")
        if min(self.size_multiple, self.align) < 1 or self.halo < 0:
            raise ConfigError("size_multiple and align must be >= 1, halo >= 0")
        if self.max_pixels is not None and self.tiling != "whole":
            raise ConfigError("max_pixels applies to tiling='whole' only")

    @property
    def cpu_mp_per_s(self) -> float | None:
        """The MP/s figure of :attr:`speed` (``"slow (~0.05 MP/s)"`` -> 0.05), if it has one."""
        found = re.search(r"(\d+(?:\.\d+)?)\s*MP/s", self.speed)
        return float(found.group(1)) if found else None
