"""SRCNN (Dong et al., ECCV 2014) as a remover of JPEG artefacts, run on luma with chroma kept.

Three convolutions: ``conv1`` 9x9 (channels -> 64), ``conv2`` (64 -> 32), ``conv3`` 5x5
(32 -> channels), ReLU after the first two and a linear output. Two layouts are in use, with
the same key names; :func:`from_state_dict` tells them apart by the shape of ``conv2``:

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "srcnn.safetensors"
FORMAT = "tiledehaze-srcnn-1"
KEYS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias")
#: full-range BT.601 luma weights (PIL's "L", OpenCV's RGB2GRAY)
BT601 = np.array([0.299, 0.587, 0.114], np.float32)
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

    @property
    def value_range(self) -> tuple[float, float]:
        """What the network was trained to see as black and white."""
        return (0.0, 1.0) if self.padding_mode == "replicate" else STUDIO_RANGE


def seeds_layout(channels: int = 1, widths: tuple[int, int] = (64, 32)) -> Layout:
    """The 9-1-5 layout with replicate padding 2 on every layer (the layout tiledehaze trains)."""
    return Layout((9, 1, 5), (2, 2, 2), "replicate", channels, widths)


def port_layout(kernels: tuple[int, int, int] = (9, 5, 5), channels: int = 1,
                widths: tuple[int, int] = (64, 32)) -> Layout:
    """"Same" zero padding on every layer, as yjn870/SRCNN-pytorch."""
    return Layout(kernels, tuple(k // 2 for k in kernels), "zeros", channels, widths)


class SRCNN(nn.Module):
    """The three convolutions of :class:`Layout`; input and output are (N, channels, H, W)."""

    def __init__(self, layout: Layout | None = None):
        super().__init__()
        self.layout = layout = layout or seeds_layout()
        sizes = (layout.channels, *layout.widths, layout.channels)
        for i, (k, p) in enumerate(zip(layout.kernels, layout.padding)):
            setattr(self, f"conv{i + 1}", nn.Conv2d(sizes[i], sizes[i + 1], k, padding=p,
                                                    padding_mode=layout.padding_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.conv3(x)

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().float().numpy().copy() for k, v in self.state_dict().items()}

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, torch.Tensor], what: str = "SRCNN weights") -> "SRCNN":
        """The network these tensors fit (layout inferred from their shapes), with them loaded."""
        module = cls(infer_layout(tensors, what))
        load_exact(module, tensors, what)
        return module.eval()


def infer_layout(tensors: Mapping[str, torch.Tensor], what: str = "SRCNN weights") -> Layout:
    """9-1-5 with replicate padding where ``conv2`` is 1x1, else "same" zero padding; widths from the shapes."""
    missing = [k for k in ("conv1.weight", "conv2.weight", "conv3.weight") if k not in tensors]
    if missing:
        raise ConfigError(f"{what}: not SRCNN weights (missing {', '.join(missing)})")
    shapes = [tuple(tensors[f"conv{i}.weight"].shape) for i in (1, 2, 3)]
    if any(len(s) != 4 or s[2] != s[3] or s[2] % 2 == 0 for s in shapes):
        raise ConfigError(f"{what}: SRCNN kernels must be square and odd, not {shapes}")
    (n1, c, k1, _), (n2, _, k2, _), (_, _, k3, _) = shapes
    if k2 == 1:
        if (k1, k3) != (9, 5):
            raise ConfigError(f"{what}: a 1x1 conv2 is the 9-1-5 layout, but conv1/conv3 are {k1}x{k1}/{k3}x{k3}")
        return seeds_layout(c, (n1, n2))
    return port_layout((k1, k2, k3), c, (n1, n2))


def load_exact(module: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Exactly the module's keys and shapes, finite, or one line saying what differs."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shaped = [f"{k} {tuple(tensors[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
              if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    problems = [f"{label} {', '.join(items)}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if items]
    if problems:
        raise ConfigError(f"{what}: {'; '.join(problems)}")
    bad = [k for k in expected if not torch.isfinite(torch.as_tensor(tensors[k])).all()]
    if bad:
        raise ConfigError(f"{what}: {', '.join(bad)} hold NaN or inf")
    module.load_state_dict({k: torch.as_tensor(v).float() for k, v in tensors.items()})


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
    module = SRCNN(layout)
    weights = {}
    for name, tensor in module.state_dict().items():
        shape = tuple(tensor.shape)
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
    """SRCNN weights from safetensors or a torch state dict, checked; numpy arrays."""
    from .aodnet import read_weights

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    raw = read_weights(path)
    module = SRCNN.from_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in raw.items()}, str(path))
    return module.to_numpy()


def parameter_count(layout: Layout | None = None) -> int:
    return sum(p.numel() for p in SRCNN(layout).parameters())


def to_onnx(module: SRCNN, *, opset: int = 17) -> bytes:
    """The ONNX graph of ``module``: (batch, channels, height, width) in and out, all but channels dynamic.

    Replicate padding is an ONNX ``Pad`` in ``edge`` mode before each convolution; zero padding
    is the convolutions' own.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .aodnet import INPUT_NAME, OUTPUT_NAME

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
