"""AECR-Net (Wu et al., "Contrastive Learning for Compact Single Image Dehazing", CVPR 2021).

The authors' dehazing network (github.com/GlassyWu/AECR-Net, ``models/AECRNet.py``), rebuilt so
that their training checkpoints load key for key:

* ``deconv``: a 3 x 3 convolution on the RGB input whose inputs are whitened ("network
  deconvolution", Ye et al. 2020): during training it tracks the mean and the inverse square root
  of the covariance of its 27-value input patches (``running_mean``, ``running_deconv``); at
  inference both fold into an ordinary convolution;
* ``down1..3``: a reflection-padded 7 x 7 convolution, then two stride-2 3 x 3 convolutions
  (width 64 -> 128 -> 256, a quarter of the resolution);
* ``block``: one FFA-style block (two 3 x 3 convolutions, channel attention from a global
  average pool, pixel attention, a residual), applied six times with the same weights;
* ``dcn_block.dcn``: a modulated deformable convolution (DCNv2, :mod:`.deform`), applied twice
  with the same weights;
* ``mix1``/``mix2``: learned sigmoid-weighted skips from ``down3`` and ``down2``;
* ``up1``/``up2``: stride-2 transposed convolutions back to full resolution, and ``up3``: a
  reflection-padded 7 x 7 convolution with a tanh.

Input and output are RGB in [0, 1] (the tanh's negative half is clipped by the engine); height and
width must be multiples of :data:`SIZE_MULTIPLE`. 2.61 M parameters at width 64, about 0.62 M
multiply-adds per pixel. The channel attention pools the whole input, so a tile's output depends
on the entire tile: tiling is approximate (the difference to whole-image output is measured in
the tests and stated in the README).

The wiring is written once, in :func:`forward`, against a small set of operations: the torch
module (:class:`AECRNet`) runs it with torch, :func:`to_onnx` builds an ONNX graph from it whose
deformable convolutions are ONNX's ``DeformConv`` (opset 19; ONNX Runtime runs it on CPU).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .deform import ModulatedDeformConv2d

#: the authors' width (``ngf``)
WIDTH = 64
#: how often the shared FFA block and the shared deformable convolution are applied
BLOCK_REPEATS = 6
DCN_REPEATS = 2
#: height and width of a network input must be multiples of this (two stride-2 levels)
SIZE_MULTIPLE = 4
#: the whitening statistics of ``deconv`` (the authors' FastDeconv defaults)
DECONV_EPS = 1e-5
DECONV_ITERATIONS = 5
DECONV_MOMENTUM = 0.1
DECONV_SAMPLING_STRIDE = 3
OPSET = 19
INPUT_NAME, OUTPUT_NAME = "hazy", "dehazed"


class Ops(Protocol):
    """The operations :func:`forward` is written in (a torch and an ONNX implementation)."""

    def whitened_conv(self, name: str, x: Any) -> Any: ...
    def conv(self, name: str, x: Any, *, stride: int = 1, pad: int = 0, reflect: bool = False) -> Any: ...
    def conv_transpose(self, name: str, x: Any) -> Any: ...
    def deform(self, name: str, x: Any) -> Any: ...
    def mix(self, name: str, a: Any, b: Any) -> Any: ...
    def global_mean(self, x: Any) -> Any: ...
    def act(self, kind: str, x: Any) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...


def dehaze_block(ops: Ops, x: Any, name: str = "block") -> Any:
    """The FFA block: conv, ReLU, residual, conv, channel attention, pixel attention, residual."""
    res = ops.add(ops.act("relu", ops.conv(f"{name}.conv1", x, pad=1)), x)
    res = ops.conv(f"{name}.conv2", res, pad=1)
    ca = ops.act("relu", ops.conv(f"{name}.calayer.ca.0", ops.global_mean(res)))
    res = ops.mul(res, ops.act("sigmoid", ops.conv(f"{name}.calayer.ca.2", ca)))
    pa = ops.act("relu", ops.conv(f"{name}.palayer.pa.0", res))
    res = ops.mul(res, ops.act("sigmoid", ops.conv(f"{name}.palayer.pa.2", pa)))
    return ops.add(res, x)


def forward(ops: Ops, x: Any) -> Any:
    """AECR-Net on RGB ``x`` (N, 3, H, W), H and W multiples of :data:`SIZE_MULTIPLE`; the authors' forward."""
    x = ops.whitened_conv("deconv", x)
    d1 = ops.act("relu", ops.conv("down1.1", x, pad=3, reflect=True))
    d2 = ops.act("relu", ops.conv("down2.0", d1, stride=2, pad=1))
    d3 = ops.act("relu", ops.conv("down3.0", d2, stride=2, pad=1))
    y = d3
    for _ in range(BLOCK_REPEATS):
        y = dehaze_block(ops, y)
    for _ in range(DCN_REPEATS):
        y = ops.deform("dcn_block.dcn", y)
    y = ops.act("relu", ops.conv_transpose("up1.0", ops.mix("mix1", d3, y)))
    y = ops.act("relu", ops.conv_transpose("up2.0", ops.mix("mix2", d2, y)))
    return ops.act("tanh", ops.conv("up3.1", y, pad=3, reflect=True))


# ------------------------------------------------------------------ whitening ("deconv")

def inverse_sqrt(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """``a ** -0.5`` of a symmetric positive definite matrix by coupled Newton-Schulz iterations (differentiable)."""
    norm = a.norm()
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    y, z = a / norm, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return z / norm.sqrt()


def fold_whitening(weight, bias, mean, deconv):
    """The plain convolution ``(weight', bias')`` equal to ``weight`` applied to whitened patches.

    Works on torch tensors and numpy arrays alike: ``weight' = W @ deconv``, ``bias' = b - weight' @ mean``.
    """
    w = weight.reshape(weight.shape[0], -1) @ deconv
    return w.reshape(weight.shape), bias - w @ mean


class WhitenedConv2d(nn.Conv2d):
    """The authors' ``FastDeconv`` for an input of at most 64 channels, as AECR-Net uses it (3 x 3 on RGB).

    Training whitens each batch's patches (sampled every :data:`DECONV_SAMPLING_STRIDE` pixels)
    and updates running statistics; evaluation uses the running ones, folded into the weights.
    """

    def __init__(self, channels: int = 3, out_channels: int = 3, kernel_size: int = 3):
        super().__init__(channels, out_channels, kernel_size, padding=kernel_size // 2)
        features = channels * kernel_size * kernel_size
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_deconv", torch.eye(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=DECONV_SAMPLING_STRIDE)
            cols = cols.transpose(1, 2).reshape(-1, self.running_mean.numel())
            mean = cols.mean(0)
            centred = cols - mean
            eye = torch.eye(centred.shape[1], dtype=x.dtype, device=x.device)
            deconv = inverse_sqrt(centred.T @ centred / centred.shape[0] + DECONV_EPS * eye, DECONV_ITERATIONS)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), DECONV_MOMENTUM)
                self.running_deconv.lerp_(deconv.detach(), DECONV_MOMENTUM)
        else:
            mean, deconv = self.running_mean, self.running_deconv
        weight, bias = fold_whitening(self.weight, self.bias, mean, deconv)
        return F.conv2d(x, weight, bias, padding=self.padding)


# ------------------------------------------------------------------ the torch module

class _Mix(nn.Module):
    def __init__(self, init: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([init]))


def _attention(channels: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels // 8, 1), nn.ReLU(), nn.Conv2d(channels // 8, out, 1), nn.Sigmoid())


class _Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.calayer, self.palayer = nn.Module(), nn.Module()
        self.calayer.ca = _attention(dim, dim)
        self.palayer.pa = _attention(dim, 1)


class _TorchOps:
    def __init__(self, module: "AECRNet"):
        self.m = module
        self.p = dict(module.named_parameters())

    def whitened_conv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.m.get_submodule(name)(x)

    def conv(self, name: str, x: torch.Tensor, *, stride: int = 1, pad: int = 0, reflect: bool = False) -> torch.Tensor:
        if reflect:
            x, pad = F.pad(x, (pad,) * 4, mode="reflect"), 0
        return F.conv2d(x, self.p[f"{name}.weight"], self.p[f"{name}.bias"], stride=stride, padding=pad)

    def conv_transpose(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.p[f"{name}.weight"], self.p[f"{name}.bias"], stride=2, padding=1,
                                  output_padding=1)

    def deform(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.m.get_submodule(name)(x)

    def mix(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f = torch.sigmoid(self.p[f"{name}.w"])
        return a * f + b * (1 - f)

    def global_mean(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)

    def act(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(torch, kind)(x)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class AECRNet(nn.Module):
    """AECR-Net: RGB (N, 3, H, W) in [0, 1] -> dehazed RGB through a tanh; see :mod:`.aecrnet`.

    Parameters and buffers carry the names of the authors' ``Dehaze`` module (``down1.1.weight``,
    ``block.calayer.ca.0.weight``, ``dcn_block.dcn.conv_offset_mask.weight``...), so their state
    dicts load unchanged; the default initialisation is theirs (torch's layer defaults, zero
    offsets, mixes at -1 and -0.6).
    """

    def __init__(self, width: int = WIDTH):
        super().__init__()
        w = width
        self.width = width
        self.deconv = WhitenedConv2d(3, 3, 3)
        self.down1 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, w, 7), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU())
        self.down3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU())
        self.block = _Block(4 * w)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, output_padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1), nn.ReLU())
        self.up3 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w, 3, 7), nn.Tanh())
        self.dcn_block = nn.Module()
        self.dcn_block.dcn = ModulatedDeformConv2d(4 * w, 4 * w, 3, padding=1)
        self.mix1, self.mix2 = _Mix(-1.0), _Mix(-0.6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"AECR-Net needs height and width multiples of {SIZE_MULTIPLE}, not {h}x{w}")
        return forward(_TorchOps(self), x)

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> "AECRNet":
        """The network a state dict describes (width read from ``down1.1.weight``), loaded exactly, in eval mode.

        Anything but the authors' keys and shapes at that width is a one-line :class:`ConfigError`.
        """
        from .checkpoint import load_exact

        module = cls(int(tensors["down1.1.weight"].shape[0]))
        load_exact(module, tensors, "AECR-Net")
        return module

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().float().numpy().copy() for k, v in self.state_dict().items()}


def parameter_count(width: int = WIDTH) -> int:
    return sum(p.numel() for p in AECRNet(width).parameters())


# ------------------------------------------------------------------ ONNX

class _OnnxOps:
    """Builds ONNX nodes from a state dict; every value is a tensor name."""

    def __init__(self, weights: dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.weights = weights
        self.nodes: list = []
        self.inits: dict[str, Any] = {}
        self.count = 0

    def _init(self, name: str, value: Any, dtype: type = np.float32) -> str:
        if name not in self.inits:
            self.inits[name] = self.numpy_helper.from_array(np.ascontiguousarray(value, dtype), name)
        return name

    def _param(self, name: str) -> str:
        return self._init(name, self.weights[name])

    def _node(self, op: str, inputs: list[str], stem: str, **attrs) -> str:
        self.count += 1
        out = f"{stem}.{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def whitened_conv(self, name: str, x: str) -> str:
        w = self.weights
        weight, bias = fold_whitening(w[f"{name}.weight"].astype(np.float64), w[f"{name}.bias"].astype(np.float64),
                                      w[f"{name}.running_mean"].astype(np.float64),
                                      w[f"{name}.running_deconv"].astype(np.float64))
        k = weight.shape[-1]
        return self._node("Conv", [x, self._init(f"{name}.folded_weight", weight), self._init(f"{name}.folded_bias", bias)],
                          name, kernel_shape=[k, k], pads=[k // 2] * 4)

    def conv(self, name: str, x: str, *, stride: int = 1, pad: int = 0, reflect: bool = False) -> str:
        if reflect:
            pads = self._init(f"reflect{pad}", [0, 0, pad, pad, 0, 0, pad, pad], np.int64)
            x, pad = self._node("Pad", [x, pads], f"{name}.pad", mode="reflect"), 0
        k = self.weights[f"{name}.weight"].shape[-1]
        return self._node("Conv", [x, self._param(f"{name}.weight"), self._param(f"{name}.bias")], name,
                          kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def conv_transpose(self, name: str, x: str) -> str:
        return self._node("ConvTranspose", [x, self._param(f"{name}.weight"), self._param(f"{name}.bias")], name,
                          kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])

    def deform(self, name: str, x: str) -> str:
        k = self.weights[f"{name}.weight"].shape[-1]
        raw = self._node("Conv", [x, self._param(f"{name}.conv_offset_mask.weight"),
                                  self._param(f"{name}.conv_offset_mask.bias")], f"{name}.offset_mask",
                         kernel_shape=[k, k], pads=[k // 2] * 4)
        taps = self.weights[f"{name}.conv_offset_mask.weight"].shape[0] // 3
        sizes = self._init(f"{name}.split", [2 * taps, taps], np.int64)
        offset, mask_logit = f"{name}.offset.{self.count}", f"{name}.mask_logit.{self.count}"
        self.nodes.append(self.helper.make_node("Split", [raw, sizes], [offset, mask_logit], axis=1,
                                                name=f"{name}.split.{self.count}"))
        mask = self._node("Sigmoid", [mask_logit], f"{name}.mask")
        return self._node("DeformConv", [x, self._param(f"{name}.weight"), offset, self._param(f"{name}.bias"), mask],
                          name, kernel_shape=[k, k], pads=[k // 2] * 4, offset_group=taps // (k * k))

    def mix(self, name: str, a: str, b: str) -> str:
        f = float(1.0 / (1.0 + np.exp(-float(self.weights[f"{name}.w"][0]))))
        wa = self._init(f"{name}.a", np.array(f, np.float32))
        wb = self._init(f"{name}.b", np.array(1.0 - f, np.float32))
        return self.add(self._node("Mul", [a, wa], f"{name}.mul_a"), self._node("Mul", [b, wb], f"{name}.mul_b"))

    def global_mean(self, x: str) -> str:
        return self._node("GlobalAveragePool", [x], "global_mean")

    def act(self, kind: str, x: str) -> str:
        return self._node(kind.capitalize(), [x], kind)

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], "add")

    def mul(self, a: str, b: str) -> str:
        return self._node("Mul", [a, b], "mul")


def to_onnx(network: AECRNet | dict[str, Any]) -> bytes:
    """The ONNX graph (opset 19) of AECR-Net from a module or its state dict.

    Input ``hazy`` and output ``dehazed`` are (batch, 3, height, width), all dynamic, height and
    width multiples of :data:`SIZE_MULTIPLE`. The whitening folds into the first convolution, the
    deformable convolutions become ``DeformConv`` nodes.
    """
    import onnx
    from onnx import TensorProto, helper

    state = network.state_dict() if isinstance(network, nn.Module) else network
    weights = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in state.items()}
    ops = _OnnxOps(weights)
    result = forward(ops, INPUT_NAME)
    ops.nodes.append(helper.make_node("Identity", [result], [OUTPUT_NAME], name="output"))
    dims = ["batch", 3, "height", "width"]
    graph = helper.make_graph(ops.nodes, "aecrnet", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)],
                              initializer=list(ops.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tiledehaze")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def load_weights(path) -> dict[str, np.ndarray]:
    """AECR-Net weights as numpy arrays from any checkpoint the engine reads (the authors' training
    container, a safetensors file of ``tiledehaze train``), checked exactly."""
    from .checkpoint import load_checkpoint

    return AECRNet.from_state_dict(load_checkpoint(path).tensors).to_numpy()
