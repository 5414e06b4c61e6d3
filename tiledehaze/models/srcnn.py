"""SRCNN (Dong et al., ECCV 2014) as a remover of JPEG artefacts, run on luma with chroma kept.

Three convolutions: ``conv1`` 9x9 (channels -> 64), ``conv2`` (64 -> 32), ``conv3`` 5x5
(32 -> channels), ReLU after the first two and a linear output. Two layouts are in use, with
the same key names; :func:`infer_layout` tells them apart by the shape of ``conv2``:

- ``9-1-5``: a 1x1 ``conv2``, every layer padded by 2 pixels with ``replicate`` mode, so that
  ``conv1`` shrinks the map by 4 on each side and the 1x1 ``conv2`` grows it back: the output
  has the input's size. Trained on full-range BT.601 luma in [0, 1] (PIL's ``L``). This is the
  layout of the weights tiledehaze ships.
- ``9-5-5``: a 5x5 ``conv2`` with "same" zero padding on every layer, as in the widely used
  port yjn870/SRCNN-pytorch, which feeds it studio-swing luma (16-235, divided by 255).

Either way an output pixel depends only on input pixels at most :attr:`Layout.halo` away
(6 and 8 pixels) and nothing pools or normalises, so tiles with that much context reproduce
whole-image inference exactly. The widths (64, 32) and the channels (1 for luma, 3 for RGB
ports) are read from the tensors' shapes too.

This file needs no torch (the registry imports it); the torch module is in :mod:`.srcnn_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import ConfigError
from .adapter import BT601, INPUT_NAME, OUTPUT_NAME
from .checkpoint import load_checkpoint
from .spec import ModelSpec

if TYPE_CHECKING:
    from .srcnn_torch import SRCNN

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "srcnn.safetensors"
FORMAT = "tiledehaze-srcnn-1"
#: the BT.601 studio swing the 9-5-5 port's luma uses, as fractions of 255
STUDIO_RANGE = (16 / 255, 235 / 255)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 luma of float RGB (..., 3), as float32 (..., )."""
    return np.asarray(rgb, np.float32) @ BT601


@dataclass(frozen=True)
class Layout:
    """Kernel sizes, per-layer padding and widths of one SRCNN."""

    kernels: tuple[int, int, int]
    padding: tuple[int, int, int]
    padding_mode: str  # "replicate" or "zeros", as torch.nn.Conv2d names them
    channels: int = 1
    widths: tuple[int, int] = (64, 32)

    @property
    def name(self) -> str:
        return "-".join(map(str, self.kernels))

    @property
    def halo(self) -> int:
        """Receptive-field radius: the sum of the kernels' radii (the paddings only move the border)."""
        return sum(k // 2 for k in self.kernels)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape."""
        sizes = (self.channels, *self.widths, self.channels)
        out = {}
        for i, k in enumerate(self.kernels):
            out[f"conv{i + 1}.weight"] = (sizes[i + 1], sizes[i], k, k)
            out[f"conv{i + 1}.bias"] = (sizes[i + 1],)
        return out

    @property
    def value_range(self) -> tuple[float, float]:
        """What the network was trained to see as black and white: studio-swing luma for the
        one-channel port layout (as yjn870/SRCNN-pytorch), [0, 1] otherwise."""
        return STUDIO_RANGE if self.padding_mode == "zeros" and self.channels == 1 else (0.0, 1.0)


def seeds_layout(channels: int = 1, widths: tuple[int, int] = (64, 32)) -> Layout:
    """The 9-1-5 layout with replicate padding 2 on every layer (the layout tiledehaze trains)."""
    return Layout((9, 1, 5), (2, 2, 2), "replicate", channels, widths)


def port_layout(kernels: tuple[int, int, int] = (9, 5, 5), channels: int = 1,
                widths: tuple[int, int] = (64, 32)) -> Layout:
    """"Same" zero padding on every layer, as yjn870/SRCNN-pytorch."""
    return Layout(kernels, tuple(k // 2 for k in kernels), "zeros", channels, widths)


def infer_layout(tensors: Mapping[str, Any]) -> Layout:
    """9-1-5 with replicate padding where ``conv2`` is 1x1, else "same" zero padding; widths from the shapes."""
    missing = [k for k in ("conv1.weight", "conv2.weight", "conv3.weight") if k not in tensors]
    if missing:
        raise ConfigError(f"not SRCNN weights: missing {', '.join(missing)}")
    shapes = [tuple(tensors[f"conv{i}.weight"].shape) for i in (1, 2, 3)]
    if any(len(s) != 4 or s[2] != s[3] or s[2] % 2 == 0 for s in shapes):
        raise ConfigError(f"not SRCNN weights: kernels must be square and odd, not {shapes}")
    (n1, c, k1, _), (n2, _, k2, _), (_, _, k3, _) = shapes
    if k2 == 1:
        if (k1, k3) != (9, 5):
            raise ConfigError(f"not SRCNN weights: a 1x1 conv2 is the 9-1-5 layout, but conv1/conv3 are "
                              f"{k1}x{k1}/{k3}x{k3}")
        return seeds_layout(c, (n1, n2))
    return port_layout((k1, k2, k3), c, (n1, n2))


def init_weights(seed: int = 0, layout: Layout | None = None) -> dict[str, np.ndarray]:
    """First weights for training: the input passed through one channel of each layer, the rest He-normal.

    Plain SRCNN starts far from the identity and spends most of a short run learning to copy
    its input. Here channel ``c`` of ``conv1`` and ``conv2`` carries input channel ``c``
    (non-negative, so ReLU passes it) to the centre tap of ``conv3``: training starts from
    output = input and learns the correction. The other kernels of ``conv1`` and ``conv2`` are
    He-normal, ``conv3``'s other taps and every bias zero.
    """
    layout = layout or seeds_layout()
    rng = np.random.default_rng([seed, 0x5C2])
    weights = {}
    for name, shape in layout.shapes().items():
        if name.endswith(".bias"):
            weights[name] = np.zeros(shape, np.float32)
            continue
        std = 0.0 if name == "conv3.weight" else float(np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])))
        weights[name] = rng.normal(0.0, std, shape).astype(np.float32)
    for name in ("conv1.weight", "conv2.weight", "conv3.weight"):
        w = weights[name]
        centre = w.shape[-1] // 2
        for c in range(layout.channels):  # feature c carries input channel c alone, at the centre tap
            if name != "conv3.weight":
                w[c] = 0.0
            w[c, c] = 0.0
            w[c, c, centre, centre] = 1.0
    return weights


def load_weights(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """SRCNN weights from safetensors or a torch file (any official container), checked; numpy arrays."""
    from .srcnn_torch import SRCNN

    ckpt = load_checkpoint(path if path is not None else DEFAULT_WEIGHTS)
    try:
        return SRCNN.from_state_dict(ckpt.tensors).to_numpy()
    except ConfigError as exc:
        raise ConfigError(f"{ckpt.path}: {exc}") from None


def spec_of(module: "SRCNN", base: ModelSpec) -> ModelSpec:
    """``base`` (the registered spec) with what this checkpoint's layout decides: halo, value range, colour."""
    layout = module.layout
    colour = "luma" if layout.channels == 1 else "rgb"
    return replace(base, colour=colour, channels=layout.channels, halo=layout.halo, value_range=layout.value_range)


def parameter_count(layout: Layout | None = None) -> int:
    return sum(int(np.prod(shape)) for shape in (layout or seeds_layout()).shapes().values())


def to_onnx(module: "SRCNN", *, opset: int = 17) -> bytes:
    """The ONNX graph of ``module``: (batch, channels, height, width) in and out, all but channels dynamic.

    Replicate padding is an ONNX ``Pad`` in ``edge`` mode before each convolution; zero padding
    is the convolutions' own.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layout = module.layout
    inits = [numpy_helper.from_array(v, k) for k, v in module.to_numpy().items()]
    nodes, source = [], INPUT_NAME
    for i, (k, p) in enumerate(zip(layout.kernels, layout.padding), 1):
        name = f"conv{i}"
        pads = [p, p, p, p]
        if layout.padding_mode == "replicate" and p:
            inits.append(numpy_helper.from_array(np.array([0, 0, p, p, 0, 0, p, p], np.int64), f"{name}.pads"))
            nodes.append(helper.make_node("Pad", [source, f"{name}.pads"], [f"{name}.padded"], mode="edge"))
            source, pads = f"{name}.padded", [0, 0, 0, 0]
        out = OUTPUT_NAME if i == 3 else f"{name}.pre"
        nodes.append(helper.make_node("Conv", [source, f"{name}.weight", f"{name}.bias"], [out],
                                      kernel_shape=[k, k], pads=pads, name=name))
        if i < 3:
            nodes.append(helper.make_node("Relu", [out], [name]))
            source = name
    dims = ["batch", layout.channels, "height", "width"]
    graph = helper.make_graph(nodes, "srcnn", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tiledehaze")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
