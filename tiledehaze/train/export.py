"""Export trained weights: an ONNX graph checked against a reference evaluation, and a plain safetensors file.

The network (AOD-Net or HazeNet) is recognised from the names of the weights. HazeNet's graph
takes the airlight-normalised tile ``I / A`` with height and width multiples of its alignment
and returns ``J / A`` (the engine divides and multiplies by A around it). AOD-Net's graph is
checked against a direct numpy evaluation of its definition, so exporting it needs no torch;
HazeNet's is checked against its torch module.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError, OutputError, require
from ..io.atomic import atomic_output, write_atomic
from ..models import DEFAULT_MODEL, aodnet, hazenet, model_entry
from ..models.aodnet import Weights, clean_image, read_metadata, read_weights, save_weights

log = logging.getLogger(__name__)

#: largest allowed |ONNX - reference| on random input in [0, 1]
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # fp16 carries ~3 significant digits


def network_of(weights: dict[str, np.ndarray], source: str):
    """The network (:class:`~tiledehaze.models.aodnet.AODNet` or :class:`~tiledehaze.models.hazenet.HazeNet`)
    these weights belong to, recognised by their names."""
    if "enc1.weight" in weights:
        return hazenet.HazeNet(hazenet.check_weights(weights, source))
    if "conv1.weight" in weights and "conv4.weight" not in weights:
        raise ConfigError(f"{source} holds SRCNN weights; export covers AOD-Net and HazeNet (tiledehaze builds "
                          "SRCNN's ONNX graph from its weights when it runs)")
    return aodnet.AODNet(aodnet.check_weights(weights, source))


def to_onnx(weights: Weights, **options) -> bytes:
    """The ONNX graph of the network these weights belong to (see the models' ``to_onnx``)."""
    return (hazenet.to_onnx if "enc1.weight" in weights else aodnet.to_onnx)(weights, **options)


def reference_forward(weights: Weights, x: np.ndarray) -> np.ndarray:
    """AOD-Net evaluated straight from its definition in float64 numpy: (N, 3, H, W) in and out."""
    from numpy.lib.stride_tricks import sliding_window_view

    def relu(v: np.ndarray) -> np.ndarray:
        return np.maximum(v, 0.0)

    def conv(name: str, src: np.ndarray) -> np.ndarray:
        w, b = weights[f"{name}.weight"].astype(np.float64), weights[f"{name}.bias"].astype(np.float64)
        p = w.shape[-1] // 2
        windows = sliding_window_view(np.pad(src, ((0, 0), (0, 0), (p, p), (p, p))), w.shape[-2:], axis=(2, 3))
        return relu(np.einsum("nchwij,ocij->nohw", windows, w) + b[:, None, None])

    x = x.astype(np.float64)
    x1 = conv("conv1", x)
    x2 = conv("conv2", x1)
    x3 = conv("conv3", np.concatenate((x1, x2), 1))
    x4 = conv("conv4", np.concatenate((x2, x3), 1))
    k = conv("conv5", np.concatenate((x1, x2, x3, x4), 1))
    return clean_image(k, x, relu)


def _reference(network, x: np.ndarray) -> np.ndarray:
    """The network's output on ``x`` (N, 3, H, W): numpy for AOD-Net, its torch module for HazeNet."""
    if isinstance(network, aodnet.AODNet):
        return reference_forward(network.weights, x)
    torch = require("torch", extra="torch", feature="checking a HazeNet export")
    with torch.no_grad():
        return network.to_torch()(torch.from_numpy(x)).numpy()


def verify_onnx(graph: bytes, network, *, precision: str = "fp32", seed: int = 0) -> float:
    """Largest |ONNX Runtime - reference| over random inputs of two different shapes.

    Two batch sizes and uneven heights/widths exercise the dynamic axes (multiples of 8 for
    HazeNet, odd sizes for AOD-Net). Raises :class:`RuntimeError` if the difference is above
    :data:`TOLERANCE`.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    dtype = np.float16 if precision == "fp16" else np.float32
    worst = 0.0
    shapes = ((1, 3, 40, 56), (2, 3, 64, 48)) if isinstance(network, hazenet.HazeNet) else ((1, 3, 37, 53),
                                                                                           (2, 3, 64, 48))
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        got = session.run(None, {"hazy": x.astype(dtype)})[0].astype(np.float32)
        ref = _reference(network, x.astype(dtype).astype(np.float32))
        if got.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {got.shape} differs from the reference {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if not worst <= TOLERANCE[precision]:
        raise RuntimeError(f"ONNX ({precision}) differs from the reference by {worst:.3g} > {TOLERANCE[precision]:g}")
    return worst


def export(weights_path: str | Path | None = None, *, onnx_path: str | Path | None = None, fp16: bool = False,
           safetensors_path: str | Path | None = None, opset: int = 17) -> dict[str, float]:
    """Write the ONNX graph (dynamic batch/height/width) and/or a safetensors copy of ``weights_path``.

    Without ``weights_path`` the shipped weights are exported. The FP32 graph is always
    checked against :func:`reference_forward` (max difference <= 1e-4), the FP16 one too
    when ``fp16`` is set. Returns the measured differences by precision.
    """
    if onnx_path is None and safetensors_path is None:
        raise ConfigError("nothing to export: give an ONNX and/or a safetensors output path")
    weights_path = Path(weights_path) if weights_path is not None else model_entry(DEFAULT_MODEL).default_weights
    network = network_of(read_weights(Path(weights_path)), str(weights_path))
    weights = network.weights
    for out in (onnx_path, safetensors_path):
        if out is not None and Path(out).resolve() == Path(weights_path).resolve():
            raise OutputError(f"refusing to overwrite the input weights {weights_path}")
    diffs: dict[str, float] = {}
    if onnx_path is not None:
        graph = to_onnx(weights, precision="fp32", opset=opset)
        diffs["fp32"] = verify_onnx(graph, network, precision="fp32")
        if fp16:
            graph = to_onnx(weights, precision="fp16", opset=opset)
            diffs["fp16"] = verify_onnx(graph, network, precision="fp16")
        write_atomic(onnx_path, graph)
        log.info("wrote %s (%s), max difference from the reference %s", onnx_path, "fp16" if fp16 else "fp32", diffs)
    if safetensors_path is not None:
        meta: dict[str, str] = {}
        if Path(weights_path).suffix == ".safetensors":
            meta = read_metadata(weights_path)
        meta["exported_from"] = Path(weights_path).name
        with atomic_output(safetensors_path) as tmp:
            save_weights(weights, tmp, meta)
        log.info("wrote %s", safetensors_path)
    return diffs
