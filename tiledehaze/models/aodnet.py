"""AOD-Net (Li et al., ICCV 2017): the all-in-one dehazing network, as numpy weights.

Five 3-channel convolutions with ReLU, "same" padding and stride 1 estimate K(x); the
clean image is J = ReLU(K * I - K + 1). The network holds 1,761 parameters; its weights live
here as plain numpy arrays so that the CPU path (ONNX Runtime) never has to import torch.
The torch module used for training and CUDA inference is in :mod:`.aodnet_torch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError
from .base import Model

#: (name, in_channels, kernel) for conv1..conv5; every layer has 3 output channels.
LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv1", 3, 1),
    ("conv2", 3, 3),
    ("conv3", 6, 5),
    ("conv4", 6, 7),
    ("conv5", 12, 3),
)
#: Receptive-field radius: the sum of the kernels' radii, 0 + 1 + 2 + 3 + 1.
HALO = sum(k // 2 for _, _, k in LAYERS)
#: the ONNX graph's tensor names
INPUT_NAME, OUTPUT_NAME = "hazy", "dehazed"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "aodnet.safetensors"

Weights = dict[str, np.ndarray]


def clean_image(k, hazy, relu: Callable):
    """AOD-Net's output J = ReLU(K * I - K + 1) from its estimate K and the hazy input I.

    Written once for every form of the network: torch tensors (``relu=torch.relu``), numpy
    arrays (``relu=lambda v: np.maximum(v, 0)``) and values of the ONNX graph that
    :func:`to_onnx` builds, whose arithmetic adds graph nodes.
    """
    return relu(k * hazy - k + 1)


class _GraphValue:
    """A tensor of an ONNX graph under construction: ``*``, ``-`` and ``+`` append nodes.

    Outputs take their names from ``names`` in order; the constant 1 is the initializer ``one``.
    """

    def __init__(self, name: str, nodes: list, names: Iterator[str]):
        self.name, self._nodes, self._names = name, nodes, names

    def apply(self, op: str, *inputs: "_GraphValue | int") -> "_GraphValue":
        from onnx import helper

        args = [self.name] + [v.name if isinstance(v, _GraphValue) else _constant(v) for v in inputs]
        out = _GraphValue(next(self._names), self._nodes, self._names)
        self._nodes.append(helper.make_node(op, args, [out.name]))
        return out

    def __mul__(self, other: "_GraphValue | int") -> "_GraphValue":
        return self.apply("Mul", other)

    def __sub__(self, other: "_GraphValue | int") -> "_GraphValue":
        return self.apply("Sub", other)

    def __add__(self, other: "_GraphValue | int") -> "_GraphValue":
        return self.apply("Add", other)


def _constant(value: int) -> str:
    if value != 1:
        raise ValueError(f"the AOD-Net graph holds the constant 1 only, not {value!r}")
    return "one"


def init_weights(seed: int = 0, std: float = 0.02, *, rng: np.random.Generator | None = None) -> Weights:
    """Fresh weights: normal(0, ``std``) kernels as in the paper, zero biases."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    weights: Weights = {}
    for name, cin, k in LAYERS:
        weights[f"{name}.weight"] = rng.normal(0.0, std, (3, cin, k, k)).astype(np.float32)
        weights[f"{name}.bias"] = np.zeros(3, np.float32)
    return weights


def check_weights(weights: dict[str, Any], source: str) -> Weights:
    """Validate names and shapes; returns float32 arrays."""
    shapes = {}
    for name, cin, k in LAYERS:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (3, cin, k, k), (3,)
    return check_shapes(weights, shapes, source, "AOD-Net")


def check_shapes(weights: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str, network: str) -> Weights:
    """Every array of ``shapes`` present, of that shape and finite; returns float32 arrays."""
    out: Weights = {}
    for key, shape in shapes.items():
        if key not in weights:
            raise ConfigError(f"{source}: not {network} weights (missing {key!r}); "
                              "weights of another network need --model NAME (see tiledehaze info)")
        value = np.asarray(weights[key], dtype=np.float32)
        if value.shape != shape:
            raise ConfigError(f"{source}: {key} has shape {value.shape}, expected {shape}")
        if not np.all(np.isfinite(value)):
            raise ConfigError(f"{source}: {key} holds NaN or inf")
        out[key] = value
    return out


def load_weights(path: str | Path | None = None) -> Weights:
    """Load AOD-Net weights from safetensors (preferred) or a torch state dict."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    return check_weights(read_weights(path), str(path))


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file or a torch state dict / training checkpoint, unchecked.

    The format is taken from the content, not the name. safetensors needs no torch; torch files
    are read by :func:`.checkpoint.load_checkpoint` (no pickled code ever runs).
    """
    from .checkpoint import first_line, load_checkpoint, weights_format

    if weights_format(path) == "torch":
        return {k: v.detach().float().numpy() for k, v in load_checkpoint(path).tensors.items()}
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt or foreign file: say so in one line
        raise ConfigError(f"cannot read weights {path}: {first_line(exc)}") from None


def save_weights(weights: Weights, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write weights as safetensors (no pickle, loads without torch)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}, str(path), metadata=metadata)


def read_metadata(path: str | Path | None = None) -> dict[str, str]:
    """The metadata stored with a safetensors weights file (how it was trained)."""
    from safetensors import safe_open

    with safe_open(str(path or DEFAULT_WEIGHTS), framework="numpy") as f:
        return dict(f.metadata() or {})


def to_onnx(weights: Weights, *, precision: str = "fp32", opset: int = 17, layout: str = "nchw") -> bytes:
    """Build the ONNX graph of AOD-Net directly from its weights.

    Input ``hazy`` and output ``dehazed`` are (batch, 3, height, width) with all three sizes
    dynamic. ``precision="fp16"`` gives a graph that is FP16 end to end, which TensorRT
    builds as a strongly typed network. ``layout="nhwc"`` takes and returns
    (batch, height, width, 3) instead, transposing inside the graph (ONNX Runtime folds that
    into its own layout conversions, cheaper than numpy transposes on the host).
    """
    from onnx import helper, numpy_helper

    np_dtype, elem = graph_types(precision, layout)
    inits = [numpy_helper.from_array(v.astype(np_dtype), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.ones((), np_dtype), "one"))

    def conv(name: str, src: str, k: int) -> list:
        p = k // 2
        return [
            helper.make_node("Conv", [src, f"{name}.weight", f"{name}.bias"], [f"{name}.pre"],
                             kernel_shape=[k, k], pads=[p, p, p, p], name=name),
            helper.make_node("Relu", [f"{name}.pre"], [name], name=f"{name}.relu"),
        ]

    source, result = ((INPUT_NAME, OUTPUT_NAME) if layout == "nchw"
                      else (f"{INPUT_NAME}.nchw", f"{OUTPUT_NAME}.nchw"))
    nodes = [
        *conv("conv1", source, 1),
        *conv("conv2", "conv1", 3),
        helper.make_node("Concat", ["conv1", "conv2"], ["cat1"], axis=1),
        *conv("conv3", "cat1", 5),
        helper.make_node("Concat", ["conv2", "conv3"], ["cat2"], axis=1),
        *conv("conv4", "cat2", 7),
        helper.make_node("Concat", ["conv1", "conv2", "conv3", "conv4"], ["cat3"], axis=1),
        *conv("conv5", "cat3", 3),
    ]
    names = iter(("ki", "ki_k", "j", result))
    k, hazy = _GraphValue("conv5", nodes, names), _GraphValue(source, nodes, names)
    clean_image(k, hazy, relu=lambda v: v.apply("Relu"))
    if layout == "nhwc":
        nodes.insert(0, helper.make_node("Transpose", [INPUT_NAME], [source], perm=[0, 3, 1, 2]))
        nodes.append(helper.make_node("Transpose", [result], [OUTPUT_NAME], perm=[0, 2, 3, 1]))
    return finish_graph(nodes, "aodnet", inits, elem=elem, layout=layout, opset=opset)


def graph_types(precision: str, layout: str) -> tuple[type, int]:
    """The numpy dtype and ONNX element type of a graph in ``precision``; refuses unknown precisions and layouts."""
    from onnx import TensorProto

    if layout not in ("nchw", "nhwc"):
        raise ConfigError(f"layout must be nchw or nhwc, not {layout!r}")
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"precision must be fp32 or fp16, not {precision!r}")
    return (np.float16, TensorProto.FLOAT16) if precision == "fp16" else (np.float32, TensorProto.FLOAT)


def finish_graph(nodes: list, name: str, inits: list, *, elem: int, layout: str, opset: int) -> bytes:
    """A checked, serialised ONNX model with input ``hazy`` and output ``dehazed``, batch/height/width dynamic."""
    import onnx
    from onnx import helper

    dims = ["batch", 3, "height", "width"] if layout == "nchw" else ["batch", "height", "width", 3]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(INPUT_NAME, elem, dims)],
                              [helper.make_tensor_value_info(OUTPUT_NAME, elem, dims)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tiledehaze")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


class AODNet:
    """The network as a backend sees it (a :class:`~tiledehaze.backends.base.Network`): weights
    plus the two forms backends can run."""

    name = "aodnet"
    halo = HALO
    input_name = INPUT_NAME
    output_name = OUTPUT_NAME

    def __init__(self, weights: Weights):
        self.weights = check_weights(weights, "weights")

    def to_onnx(self, precision: str = "fp32", layout: str = "nchw") -> bytes:
        return to_onnx(self.weights, precision=precision, layout=layout)

    def to_torch(self):
        from .aodnet_torch import AODNetModule

        return AODNetModule.from_numpy(self.weights)


class AODNetModel(Model):
    """AOD-Net in the engine: a network bound to an inference backend."""

    name = "aodnet"
    halo = HALO

    def __init__(self, backend):
        from ..executor import BackoffRunner

        self.backend = backend
        self.preferred_batch = backend.preferred_batch
        self.in_flight = backend.in_flight
        # halves the batch and carries on when the device runs out of memory
        self.runner = BackoffRunner(backend)

    def run(self, tiles: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        return self.runner.run(tiles)

    def submit(self, tiles: np.ndarray, state: dict[str, Any]):
        return self.runner.submit(tiles)

    def describe(self) -> str:
        return f"aodnet on {self.backend.describe()}"
