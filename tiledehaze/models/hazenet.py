"""HazeNet: a physics-constrained transmission network, normalised by the image's airlight.

The atmospheric light A is estimated once per image from an overview, exactly as the Dark
Channel Prior does (:func:`.dcp.estimate_airlight`). Every tile is divided by A per channel,
so haze always looks white to the network, whatever its colour. The network then predicts
only a transmission map t in ``[T_MIN, 1]`` and the clean image follows from the scattering
model::

    x = I / A,    J / A = (x - 1) / t + 1,    J = A (J / A), clipped to [0, 1]

With one transmission, colours come from the input, not from the network (it cannot invent a
cast), and a smooth t does not amplify compression blocks more than DCP's does.

Weights may instead predict a transmission per colour (``hazenet.t_per_channel`` in training;
the weights' shapes say which): each is refined as the single one is and recovers its own
channel, for haze that scatters blue more than red. The shipped weights predict one.

The network is a compact U-Net that tiles exactly: its input is ``x`` and the dark channel of
``x`` (min over RGB, then a 15 x 15 min filter, as DCP); a pixel-unshuffle (space-to-depth)
stem takes it to half resolution, two stride-2 convolutions go down to an eighth, transposed
convolutions come back up with additive skips, and a full-resolution 3 x 3 convolution on
``x`` and its dark channel is added to the upsampled head so that t follows edges (no dark
halos). There is no global pooling and no batch or instance statistic, so an output pixel
depends only on input pixels at most :data:`HALO` away, and tiles whose origins lie on
multiples of :data:`ALIGN` reproduce whole-image inference exactly.

The architecture is written once, in :func:`forward`, against a small set of operations;
:class:`OnnxOps` turns it into an ONNX graph (ONNX Runtime, TensorRT: no torch needed) and
:mod:`.hazenet_torch` into a torch module (training, torch backend). Weights are plain numpy
arrays stored as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .aodnet import INPUT_NAME, OUTPUT_NAME, AODNetModel, check_shapes, finish_graph, graph_types
from ..pending import Then
from .base import pad_to_multiple
from .dcp import estimate_airlight

#: (name, in_channels, out_channels, kernel, stride, transposed), for one transmission
C1, C2, C3 = 16, 32, 48
LAYERS: tuple[tuple[str, int, int, int, int, bool], ...] = (
    ("enc1", 16, C1, 3, 1, False),   # half resolution, after space-to-depth of (x, dark)
    ("down1", C1, C2, 3, 2, False),  # to a quarter
    ("enc2", C2, C2, 3, 1, False),
    ("down2", C2, C3, 3, 2, False),  # to an eighth
    ("mid1", C3, C3, 3, 1, False),
    ("mid2", C3, C3, 3, 1, False),
    ("up2", C3, C2, 2, 2, True),     # back to a quarter, added to enc2
    ("dec2", C2, C2, 3, 1, False),
    ("up1", C2, C1, 2, 2, True),     # back to half, added to enc1
    ("dec1", C1, C1, 3, 1, False),
    ("head", C1, 4, 3, 1, False),    # depth-to-space: one full-resolution channel per transmission
    ("fine", 4, 1, 3, 1, False),     # full resolution on (x, dark): edges
)
#: how many transmissions a network may predict: one for all colours, or one per colour
#: (haze that scatters blue more than red, and an airlight whose colour is slightly off)
T_CHANNELS = (1, 3)


def layers(t_channels: int = 1) -> tuple[tuple[str, int, int, int, int, bool], ...]:
    """:data:`LAYERS` with ``t_channels`` transmissions out of the head and the fine layer."""
    if t_channels not in T_CHANNELS:
        raise ValueError(f"HazeNet predicts {' or '.join(map(str, T_CHANNELS))} transmissions, not {t_channels}")
    out = {"head": 4 * t_channels, "fine": t_channels}
    return tuple((name, cin, out.get(name, cout), k, s, tr) for name, cin, cout, k, s, tr in LAYERS)


def t_channels_of(weights: dict[str, Any]) -> int:
    """How many transmissions these weights predict (read from the fine layer's bias)."""
    bias = weights.get("fine.bias")
    return int(np.shape(bias)[0]) if bias is not None and np.ndim(bias) == 1 else 1


#: dark-channel window, as the Dark Channel Prior
DARK_PATCH = 15
#: the smallest transmission the network can predict (J / A gains at most 1 / T_MIN)
T_MIN = 0.05
#: tile origins must lie on multiples of this (space-to-depth, then two stride-2 levels)
ALIGN = 8
#: receptive-field radius of the network in pixels (measured by perturbation, see the tests, then rounded up)
NET_HALO = 96
#: radius of the guided filter that refines t in the engine (grey guide, as DCP refines its t)
GUIDED_RADIUS = 32
GUIDED_EPS = 1e-3
#: receptive-field radius of the whole model: the network, then the guided filter's two box passes
HALO = NET_HALO + 2 * GUIDED_RADIUS
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "hazenet.safetensors"
FORMAT = "tiledehaze-hazenet-1"

Weights = dict[str, np.ndarray]


def weight_shape(cin: int, cout: int, k: int, transposed: bool) -> tuple[int, int, int, int]:
    return (cin, cout, k, k) if transposed else (cout, cin, k, k)


def init_weights(seed: int = 0, *, rng: np.random.Generator | None = None, t_channels: int = 1) -> Weights:
    """He-normal kernels, zero biases; small output kernels and a bias that start t near 0.85 (light haze).

    Starting from light haze keeps the first steps from over-correcting (t near 0.5 everywhere),
    which pushes the sigmoid into saturation at t = 1, where no gradient flows.
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    weights: Weights = {}
    for name, cin, cout, k, _, transposed in layers(t_channels):
        fan_in = (cout if transposed else cin) * k * k
        std = np.sqrt(2.0 / fan_in)
        weights[f"{name}.weight"] = rng.normal(0.0, std, weight_shape(cin, cout, k, transposed)).astype(np.float32)
        weights[f"{name}.bias"] = np.zeros(cout, np.float32)
    weights["head.weight"] *= 0.1
    weights["fine.weight"] *= 0.1
    weights["fine.bias"][:] = 2.0  # sigmoid(2) = 0.88
    return weights


def check_weights(weights: dict[str, Any], source: str) -> Weights:
    """Validate names and shapes (one transmission or one per colour); returns float32 arrays."""
    shapes = {}
    t_channels = t_channels_of(weights)
    for name, cin, cout, k, _, transposed in layers(t_channels if t_channels in T_CHANNELS else 1):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = weight_shape(cin, cout, k, transposed), (cout,)
    return check_shapes(weights, shapes, source, "HazeNet")


def load_weights(path: str | Path | None = None) -> Weights:
    """Load HazeNet weights from safetensors (no pickle, no torch)."""
    from .aodnet import read_weights

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    return check_weights(read_weights(path), str(path))


def parameter_count(t_channels: int = 1) -> int:
    return sum(int(np.prod(weight_shape(ci, co, k, tr))) + co for _, ci, co, k, _, tr in layers(t_channels))


class Ops(Protocol):
    """The operations :func:`forward` is written in (a torch and an ONNX implementation)."""

    #: transmissions the network predicts (1 or 3)
    t_channels: int

    def conv(self, name: str, x: Any, *, relu: bool) -> Any: ...
    def dark(self, x: Any, patch: int) -> Any: ...
    def concat(self, xs: list[Any]) -> Any: ...
    def space_to_depth(self, x: Any) -> Any: ...
    def depth_to_space(self, x: Any) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def transmission(self, logit: Any, t_min: float) -> Any: ...
    def recover(self, x: Any, t: Any) -> Any: ...


def forward(ops: Ops, x: Any, *, return_t: bool = False, output: str = "j") -> Any:
    """HazeNet on airlight-normalised input ``x`` (N, 3, H, W), H and W multiples of :data:`ALIGN`.

    Returns ``J / A`` (and t when asked), or with ``output="t"`` the transmission on three
    channels, one per colour (what the engine runs: it refines t before recovering J); a
    network with a single transmission repeats it.
    """
    feats = ops.concat([x, ops.dark(x, DARK_PATCH)])
    e1 = ops.conv("enc1", ops.space_to_depth(feats), relu=True)
    e2 = ops.conv("enc2", ops.conv("down1", e1, relu=True), relu=True)
    m = ops.conv("mid2", ops.conv("mid1", ops.conv("down2", e2, relu=True), relu=True), relu=True)
    d2 = ops.conv("dec2", ops.add(ops.conv("up2", m, relu=True), e2), relu=True)
    d1 = ops.conv("dec1", ops.add(ops.conv("up1", d2, relu=True), e1), relu=True)
    logit = ops.add(ops.depth_to_space(ops.conv("head", d1, relu=False)), ops.conv("fine", feats, relu=False))
    t = ops.transmission(logit, T_MIN)
    if output == "t":
        return t if ops.t_channels == 3 else ops.concat([t, t, t])
    j = ops.recover(x, t)
    return (j, t) if return_t else j


class OnnxOps:
    """Builds ONNX nodes; every value is a tensor name."""

    def __init__(self, weights: Weights, np_dtype: type):
        from onnx import helper, numpy_helper

        self.helper = helper
        self.t_channels = t_channels_of(weights)
        self.layers = {name: (k, stride, transposed) for name, _, _, k, stride, transposed in LAYERS}
        self.nodes: list = []
        self.inits = [numpy_helper.from_array(v.astype(np_dtype), k) for k, v in weights.items()]
        for name, value in (("one", 1.0), ("neg_one", -1.0)):
            self.inits.append(numpy_helper.from_array(np.array(value, np_dtype), name))
        self.np_dtype = np_dtype
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}.{self.count}"

    def _node(self, op: str, inputs: list[str], stem: str, **attrs) -> str:
        out = self._name(stem)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def _const(self, stem: str, value: float) -> str:
        from onnx import numpy_helper

        name = self._name(stem)
        self.inits.append(numpy_helper.from_array(np.array(value, self.np_dtype), name))
        return name

    def conv(self, name: str, x: str, *, relu: bool) -> str:
        k, stride, transposed = self.layers[name]
        inputs = [x, f"{name}.weight", f"{name}.bias"]
        if transposed:
            y = self._node("ConvTranspose", inputs, name, kernel_shape=[k, k], strides=[stride, stride])
        else:
            p = k // 2
            y = self._node("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p])
        return self._node("Relu", [y], f"{name}.relu") if relu else y

    def dark(self, x: str, patch: int) -> str:
        m = self._node("ReduceMin", [x], "channel_min", axes=[1], keepdims=1)
        neg = self._node("Neg", [m], "neg")
        p = patch // 2  # separable: a row max, then a column max (30 comparisons a pixel, not 225)
        rows = self._node("MaxPool", [neg], "min_rows", kernel_shape=[1, patch], pads=[0, p, 0, p], strides=[1, 1])
        cols = self._node("MaxPool", [rows], "min_cols", kernel_shape=[patch, 1], pads=[p, 0, p, 0], strides=[1, 1])
        return self._node("Neg", [cols], "dark")

    def concat(self, xs: list[str]) -> str:
        return self._node("Concat", xs, "concat", axis=1)

    def space_to_depth(self, x: str) -> str:
        return self._node("SpaceToDepth", [x], "space_to_depth", blocksize=2)

    def depth_to_space(self, x: str) -> str:
        return self._node("DepthToSpace", [x], "depth_to_space", blocksize=2, mode="CRD")

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], "add")

    def transmission(self, logit: str, t_min: float) -> str:
        s = self._node("Sigmoid", [logit], "sigmoid")
        scaled = self._node("Mul", [s, self._const("t_scale", 1.0 - t_min)], "t_scaled")
        return self._node("Add", [scaled, self._const("t_min", t_min)], "t")

    def recover(self, x: str, t: str) -> str:
        haze = self._node("Add", [x, "neg_one"], "x_minus_1")
        return self._node("Add", [self._node("Div", [haze, t], "div_t"), "one"], "j")


def to_onnx(weights: Weights, *, precision: str = "fp32", opset: int = 17, layout: str = "nchw",
            output: str = "j") -> bytes:
    """The ONNX graph of HazeNet, built from its weights (no torch).

    Input ``hazy`` is the airlight-normalised tile ``I / A`` and output ``dehazed`` is ``J / A``;
    (batch, 3, height, width), all three dynamic, height and width multiples of :data:`ALIGN`.
    ``layout="nhwc"`` takes and returns (batch, height, width, 3), transposing inside the graph.
    ``output="t"`` returns the transmission instead, on three channels.
    """
    from onnx import helper

    np_dtype, elem = graph_types(precision, layout)
    ops = OnnxOps(check_weights(weights, "weights"), np_dtype)
    source = INPUT_NAME
    if layout == "nhwc":
        source = ops._node("Transpose", [INPUT_NAME], "to_nchw", perm=[0, 3, 1, 2])
    result = forward(ops, source, output=output)
    ops.nodes.append(helper.make_node("Transpose" if layout == "nhwc" else "Identity", [result], [OUTPUT_NAME],
                                      name="output", **({"perm": [0, 2, 3, 1]} if layout == "nhwc" else {})))
    return finish_graph(ops.nodes, "hazenet", ops.inits, elem=elem, layout=layout, opset=opset)


class HazeNet:
    """The network as a backend sees it: weights plus the two forms backends can run.

    ``output="j"`` gives ``J / A`` (export, training checks); the engine uses ``output="t"``.
    """

    name = "hazenet"
    halo = NET_HALO
    input_name = INPUT_NAME
    output_name = OUTPUT_NAME

    def __init__(self, weights: Weights, output: str = "j"):
        self.weights = check_weights(weights, "weights")
        self.output = output
        self.t_channels = t_channels_of(self.weights)

    def to_onnx(self, precision: str = "fp32", layout: str = "nchw") -> bytes:
        return to_onnx(self.weights, precision=precision, layout=layout, output=self.output)

    def to_torch(self):
        from .hazenet_torch import HazeNetModule

        return HazeNetModule.from_numpy(self.weights, output=self.output)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``src`` with a grey ``guide``: float32 (H, W), and ``src``
    (H, W) or (H, W, C), every channel filtered with the same guide.

    Its box filters reflect at the borders (BORDER_REFLECT_101), so a tile whose edges lie on
    the image border sees what the whole image sees there.
    """
    import cv2

    size = (2 * radius + 1, 2 * radius + 1)
    # OpenCV drops a last axis of 1: shapes are put back
    box = lambda v: cv2.boxFilter(v, -1, size, borderType=cv2.BORDER_REFLECT_101).reshape(v.shape)  # noqa: E731
    mean_i = box(guide)
    var_i = box(guide * guide) - mean_i * mean_i
    if src.ndim == 3:  # (H, W) statistics of the guide against (H, W, C) ones of the source
        guide, mean_i, var_i = guide[..., None], mean_i[..., None], var_i[..., None]
    mean_p = box(src)
    a = (box(guide * src) - mean_i * mean_p) / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


class HazeNetModel(AODNetModel):
    """HazeNet in the engine: A from the overview, the network on every tile divided by A.

    Bound to a backend (with out-of-memory back-off) exactly as AOD-Net is; only the image-wide
    state and the normalisation around the network differ.
    """

    name = "hazenet"
    halo = HALO
    align = ALIGN
    needs_overview = True
    #: the network's transmission is refined with a guided filter on the grey tile: t follows
    #: the picture's edges, so no bright band is left around buildings against a hazy sky
    guided_radius = GUIDED_RADIUS
    guided_eps = GUIDED_EPS
    #: fraction of the overview's haziest pixels the airlight is chosen from (as DCP)
    top_fraction = 0.001

    def __init__(self, backend, t_channels: int):
        super().__init__(backend)
        #: transmissions the network predicts: one for all colours, or one per colour
        self.t_channels = t_channels

    def global_state(self, overview: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
        """A from the overview, exactly as DCP estimates it (nodata pixels left out)."""
        return {"airlight": estimate_airlight(np.asarray(overview, np.float32), patch=DARK_PATCH,
                                              top_fraction=self.top_fraction, valid=valid)}

    def _prepare(self, tiles: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if "airlight" not in state:
            raise ValueError("hazenet needs state['airlight'] from global_state(overview)")
        airlight = np.asarray(state["airlight"], np.float32).reshape(1, 1, 1, 3)
        return pad_to_multiple(np.asarray(tiles, np.float32) / airlight, ALIGN), airlight

    def _finish(self, t: np.ndarray, tiles: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """J from the network's t (each refined with the grey tile as guide) and the tile, clipped to [0, 1]."""
        import cv2

        tiles = np.asarray(tiles, np.float32)
        out = np.empty_like(tiles)
        channels = slice(0, 3) if self.t_channels == 3 else 0  # (H, W, 3) or (H, W)
        for i, tile in enumerate(tiles):
            raw = np.ascontiguousarray(t[i, : tile.shape[0], : tile.shape[1], channels])
            refined = guided_filter(cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY), raw, self.guided_radius, self.guided_eps)
            np.clip(refined, T_MIN, 1.0, out=refined)
            out[i] = ((tile / airlight[0] - 1.0) / refined.reshape(*refined.shape[:2], -1) + 1.0) * airlight[0]
        return np.clip(out, 0.0, 1.0, out=out)

    def run(self, tiles: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        x, airlight = self._prepare(tiles, state)
        return self._finish(self.runner.run(x), tiles, airlight)

    def submit(self, tiles: np.ndarray, state: dict[str, Any]):
        x, airlight = self._prepare(tiles, state)
        return Then(self.runner.submit(x), lambda t: self._finish(t, tiles, airlight))

    def describe(self) -> str:
        return f"hazenet on {self.backend.describe()}"
