"""Any torch network as a tiledehaze model, fed as its :class:`~.spec.ModelSpec` says.

The engine hands every model float32 RGB tiles in [0, 1]. :class:`NetworkModel` turns them into
what the network was trained on (luma with the chroma put aside, a value range such as
[-1, 1], sizes padded by reflection to a multiple), runs the network on a backend, applies the
output activation and maps the result back. The network runs on torch everywhere, and on ONNX
Runtime (the CPU default) when it offers an ONNX builder or ``torch.onnx`` can export it.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import BackendUnavailable, ConfigError
from ..pending import Pending, Then
from .base import Model, pad_to_multiple
from .checkpoint import Checkpoint, load_checkpoint
from .spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from ..options import RunOptions

log = logging.getLogger(__name__)

#: full-range BT.601 luma weights (as PIL's "L" and OpenCV's RGB2GRAY)
BT601 = np.array([0.299, 0.587, 0.114], np.float32)
INPUT_NAME, OUTPUT_NAME = "input", "output"
#: opset of graphs that torch.onnx exports
EXPORT_OPSET = 17
#: backends whose shape profiles assume 3 channels
TENSORRT = ("tensorrt", "onnxruntime-tensorrt")


class ExportFailed(BackendUnavailable):
    """The network has no ONNX form (no builder, and ``torch.onnx`` could not export it)."""


class TorchNetwork:
    """A torch module in the two forms backends take (see :class:`~tiledehaze.backends.base.Network`).

    Tensors are NCHW with ``channels`` channels, already in the network's value range.
    """

    input_name, output_name = INPUT_NAME, OUTPUT_NAME

    def __init__(self, name: str, module: "torch.nn.Module", spec: ModelSpec,
                 onnx_builder: Callable[["torch.nn.Module"], bytes] | None = None):
        self.name, self.module, self.spec, self.onnx_builder = name, module.eval(), spec, onnx_builder
        self.halo = spec.halo

    def to_torch(self) -> "torch.nn.Module":
        return self.module

    def to_onnx(self, precision: str = "fp32", layout: str = "nchw") -> bytes:
        if precision != "fp32":
            raise ExportFailed(f"{self.name} has an ONNX graph in fp32 only; for fp16 use --backend torch-cuda")
        graph = self.onnx_builder(self.module) if self.onnx_builder is not None else self._export()
        return io_named(graph, layout)

    def _export(self) -> bytes:
        import torch

        side = self.spec.size_multiple * -(-64 // self.spec.size_multiple)
        dummy = torch.zeros(1, self.spec.channels, side, side)
        axes = {0: "batch", 2: "height", 3: "width"}
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():  # the exporter's deprecation and tracer notes are not the user's concern
                warnings.simplefilter("ignore")
                torch.onnx.export(self.module, (dummy,), buf, dynamo=False, opset_version=EXPORT_OPSET,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportFailed(f"{self.name} cannot be exported to ONNX ({first}); use --backend torch") from None
        return buf.getvalue()


def io_named(graph: bytes, layout: str) -> bytes:
    """``graph`` with its one input and output named ``input`` / ``output``; for ``layout="nhwc"``
    they take and return (N, H, W, C), transposed inside the graph."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(graph)
    g = model.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise ConfigError(f"an ONNX graph for the adapter has one input and one output, not "
                          f"{len(g.input)} and {len(g.output)}")
    (inp,), (out,) = g.input, g.output
    nhwc = layout == "nhwc"
    inner_in, inner_out = (f"{INPUT_NAME}.nchw", f"{OUTPUT_NAME}.nchw") if nhwc else (INPUT_NAME, OUTPUT_NAME)
    for node in g.node:
        node.input[:] = [inner_in if n == inp.name else n for n in node.input]
        node.output[:] = [inner_out if n == out.name else n for n in node.output]
    inp.name, out.name = INPUT_NAME, OUTPUT_NAME
    if layout == "nhwc":
        g.node.insert(0, helper.make_node("Transpose", [INPUT_NAME], [inner_in], perm=[0, 3, 1, 2]))
        g.node.append(helper.make_node("Transpose", [inner_out], [OUTPUT_NAME], perm=[0, 2, 3, 1]))
        for value in (inp, out):
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4:
                nchw = [type(d)() for d in dims]
                for new, old in zip(nchw, dims):
                    new.CopyFrom(old)
                del dims[:]
                dims.extend(nchw[i] for i in (0, 2, 3, 1))
    elif layout != "nchw":
        raise ConfigError(f"layout must be nchw or nhwc, not {layout!r}")
    return model.SerializeToString()


class NetworkModel(Model):
    """Runs a torch module (or an ONNX graph) as a tiledehaze Model, following its ModelSpec:
    RGB -> luma (chroma kept) when spec.colour == "luma", [0,1] -> spec.value_range, reflection
    padding to spec.size_multiple and crop, spec.activation, back to [0,1], clip.

    ``options`` choose the backend: ``auto`` takes ONNX Runtime on the CPU when the network
    has an ONNX form (``onnx_builder``, else ``torch.onnx`` export) and torch otherwise.
    """

    def __init__(self, name: str, network: "torch.nn.Module", spec: ModelSpec, *, checkpoint: Checkpoint | None,
                 options: "RunOptions", onnx_builder: Callable[["torch.nn.Module"], bytes] | None = None):
        from ..backends import create_backend
        from ..executor import BackoffRunner

        self.name, self.spec, self.checkpoint = name, spec, checkpoint
        self.halo, self.align, self.tiling, self.max_pixels = spec.halo, spec.align, spec.tiling, spec.max_pixels
        self.network = TorchNetwork(name, network, spec, onnx_builder)
        if options.backend in TENSORRT and spec.channels != 3:
            raise BackendUnavailable(f"{name} has {spec.channels} channel(s); "
                                     f"{options.backend} runs 3-channel networks only")
        try:
            self.backend = create_backend(options.backend, self.network, options)
        except ExportFailed as exc:
            if options.backend != "auto":
                raise
            log.info("%s; running it on torch", exc)
            try:
                self.backend = create_backend("torch", self.network, options)
            except ConfigError:  # torch on the CPU is fp32 only, and this network has no fp16 ONNX graph either
                raise ConfigError(f"{name} runs fp16 on a GPU only (--backend torch-cuda); "
                                  f"leave --precision out on the CPU") from None
        if self.backend.name in TENSORRT and spec.channels != 3:  # auto: TensorRT profiles are 3-channel
            self.backend = create_backend("torch", self.network, options)
        self.preferred_batch, self.in_flight = self.backend.preferred_batch, self.backend.in_flight
        self.runner = BackoffRunner(self.backend)
        on_cpu = str(getattr(self.backend, "device", "cpu")) == "cpu"
        self.expected_mp_per_s = spec.cpu_mp_per_s if on_cpu else None

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the checkpoint file the weights came from."""
        return None if self.checkpoint is None else self.checkpoint.sha256

    def _prepare(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The network's input (N, H', W', channels) and, for luma, the input's luma (N, H, W, 1)."""
        x = np.asarray(tiles, np.float32)
        luma = None
        if self.spec.colour == "luma":
            luma = x @ BT601[:, None]
            x = luma
        low, high = self.spec.value_range
        if (low, high) != (0.0, 1.0):
            x = x * np.float32(high - low) + np.float32(low)
        return np.ascontiguousarray(pad_to_multiple(x, self.spec.size_multiple)), luma

    def _finish(self, y: np.ndarray, tiles: np.ndarray, luma: np.ndarray | None) -> np.ndarray:
        """Crop, activate, map back to [0, 1], put the chroma back; clipped to [0, 1]."""
        h, w = tiles.shape[1:3]
        y = np.asarray(y[:, :h, :w], np.float32)
        low, high = self.spec.value_range
        act = self.spec.activation
        if act == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-y))
        elif act == "tanh":
            y = np.tanh(y)
        elif act == "clamp":
            y = np.clip(y, low, high)
        if (low, high) != (0.0, 1.0):
            y = (y - np.float32(low)) / np.float32(high - low)
        if luma is not None:
            y = np.asarray(tiles, np.float32) + (y - luma)  # BT.601: equal chroma means RGB moves with Y
        return np.clip(y, 0.0, 1.0)

    def run(self, tiles: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        x, luma = self._prepare(tiles)
        return self._finish(self.runner.run(x), tiles, luma)

    def submit(self, tiles: np.ndarray, state: dict[str, Any]) -> Pending:
        x, luma = self._prepare(tiles)
        return Then(self.runner.submit(x), lambda y: self._finish(y, tiles, luma))

    def describe(self) -> str:
        return f"{self.name} on {self.backend.describe()}"


def load_network(name: str, build: Callable[[dict[str, "torch.Tensor"]], "torch.nn.Module"], options: "RunOptions",
                 *, onnx_builder: Callable[["torch.nn.Module"], bytes] | None = None,
                 spec: ModelSpec | None = None,
                 spec_of: Callable[["torch.nn.Module", ModelSpec], ModelSpec] | None = None) -> NetworkModel:
    """The registered network ``name``: its checkpoint (``options.weights``, else the shipped weights)
    loaded, ``build(tensors)`` (a ``from_state_dict``) making the module, on the backend the options ask for.

    A registry factory is then one line: ``lambda options: load_network("srcnn", SRCNN.from_state_dict, options)``.
    ``spec`` replaces the entry's where a model option changes it (a variant that tiles exactly);
    ``spec_of(module, spec)`` then adjusts it to what the checkpoint's layout decides (SRCNN: halo, value range).
    """
    from ..backends import check_backend
    from . import model_entry

    entry = model_entry(name)
    check_backend(options.backend)  # an unusable backend is reported before weights are read
    path = options.weights or entry.default_weights
    if path is None:
        raise ConfigError(f"{name} needs --weights FILE")
    ckpt = load_checkpoint(Path(path))
    try:
        module = build(_Named(ckpt.tensors, f"{ckpt.path}: not {name} weights"))
    except ConfigError as exc:
        if str(ckpt.path) in str(exc):
            raise
        raise ConfigError(f"{ckpt.path}: {exc}") from None
    spec = spec or entry.spec
    if spec_of is not None:
        spec = spec_of(module, spec)
    return NetworkModel(name, module, spec, checkpoint=ckpt, options=options, onnx_builder=onnx_builder)


class _Named(dict):
    """Tensors whose missing keys are a one-line :class:`ConfigError` (``from_state_dict`` reads shapes by key)."""

    def __init__(self, tensors: dict, problem: str):
        super().__init__(tensors)
        self.problem = problem

    def __missing__(self, key: str):
        raise ConfigError(f"{self.problem} (no tensor {key!r})")
