"""ONNX Runtime backend: the default CPU path (about 2x plain torch eager on CPU), and the
CUDA and TensorRT execution providers where onnxruntime-gpu is installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, ConfigError
from .base import Backend, BackendInfo, Network, package_probe
from .cuda import has_module, nvidia_driver

log = logging.getLogger(__name__)

#: provider name per device, in ONNX Runtime's spelling
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_BATCH = 8


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def with_float32_io(onnx_bytes: bytes) -> bytes:
    """Wrap an FP16 graph so that it takes and returns float32, casting on the device.

    The host then never converts pixels to float16 (slow in numpy) and the network still runs
    in FP16 end to end. Input and output keep their names.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    (inp,), (out,) = graph.input, graph.output
    inner_in, inner_out = f"{inp.name}.fp16", f"{out.name}.fp16"
    for node in graph.node:
        node.input[:] = [inner_in if name == inp.name else name for name in node.input]
        node.output[:] = [inner_out if name == out.name else name for name in node.output]
    graph.node.insert(0, helper.make_node("Cast", [inp.name], [inner_in], to=TensorProto.FLOAT16,
                                          name="cast_in"))
    graph.node.append(helper.make_node("Cast", [inner_out], [out.name], to=TensorProto.FLOAT, name="cast_out"))
    inp.type.tensor_type.elem_type = TensorProto.FLOAT
    out.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(model)
    return model.SerializeToString()


def provider_list(device: str, *, input_name: str, device_id: int = 0, batch: int = GPU_BATCH,
                  tile: int = 1024, cache_dir: Path | None = None) -> list:
    """ONNX Runtime ``providers=`` for ``device`` (cpu, cuda or tensorrt), fastest first.

    ``input_name`` is the graph's input, which TensorRT's shape profile names.
    """
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return [cuda, "CPUExecutionProvider"]
    if device == "tensorrt":
        shape = lambda n, side: f"{input_name}:{n}x3x{side}x{side}"  # noqa: E731
        trt = {
            "device_id": device_id,
            "trt_profile_min_shapes": shape(1, 16),
            "trt_profile_opt_shapes": shape(batch, tile),
            "trt_profile_max_shapes": shape(batch, tile),
        }
        if cache_dir is not None:
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]
    raise ConfigError(f"onnxruntime: unknown device {device!r} (use cpu, cuda or tensorrt)")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, network: Network, *, threads: int | None = None, device: str | None = "cpu",
                 precision: str | None = None, batch: int | None = None, tile: int | None = None,
                 cache_dir: str | os.PathLike | None = None, device_id: int = 0):
        import onnxruntime as ort

        device = device or "cpu"
        if device.startswith("cuda:"):
            device, device_id = "cuda", int(device.split(":", 1)[1])
        if device not in PROVIDERS:
            raise ConfigError(f"onnxruntime: unknown device {device!r} (use cpu, cuda or tensorrt)")
        if PROVIDERS[device] not in ort.get_available_providers():
            raise BackendUnavailable(f"onnxruntime on {device}: {PROVIDERS[device]} is not installed "
                                     f"(pip install 'tiledehaze[gpu]' for onnxruntime-gpu)")
        self.device = device
        self.input_name, self.output_name = network.input_name, network.output_name
        gpu = device != "cpu"
        self.precision = precision or ("fp16" if device == "tensorrt" else "fp32")
        self.threads = threads or default_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.device == "cpu":
            # Pre-planned memory patterns keep every intermediate of a 1024^2 tile alive at once
            # (about 160 MB more peak memory) for no measurable speed-up on this model.
            opts.enable_mem_pattern = False
        opts.log_severity_level = 3
        # On the CPU the graph takes NHWC tiles and transposes inside (ONNX Runtime folds that
        # into its own layout conversions): 6 % faster than numpy transposes around the call.
        self.layout = "nchw" if gpu else "nhwc"
        graph = network.to_onnx(self.precision, layout=self.layout)
        if self.precision == "fp16":
            graph = with_float32_io(graph)
        self.preferred_batch = batch or (GPU_BATCH if gpu else 1)
        trt_cache = None
        if device == "tensorrt":
            from .engine_cache import default_cache_dir, untrusted_reason

            trt_cache = Path(cache_dir) if cache_dir else default_cache_dir() / "onnxruntime"
            trt_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            reason = untrusted_reason(trt_cache)
            if reason is not None:  # ONNX Runtime would load plans from there: same rule as ours
                log.warning("not caching TensorRT engines: %s", reason)
                trt_cache = None
        providers = provider_list(device, device_id=device_id, batch=self.preferred_batch, tile=tile or 1024,
                                  cache_dir=trt_cache, input_name=self.input_name)
        self.session = ort.InferenceSession(graph, opts, providers=providers)
        wanted = PROVIDERS[device]
        if self.session.get_providers()[0] != wanted:
            # ONNX Runtime falls back to the CPU silently when a GPU provider fails to load.
            raise BackendUnavailable(f"onnxruntime could not start {wanted} (CUDA/cuDNN/TensorRT libraries "
                                     f"missing or no GPU); it offers {', '.join(self.session.get_providers())}")

    def run(self, tiles: np.ndarray) -> np.ndarray:
        if self.layout == "nhwc":
            return self._run(np.ascontiguousarray(tiles, dtype=np.float32))
        return self._run(np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32)).transpose(0, 2, 3, 1)

    def _run(self, x: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        return out

    def is_oom(self, exc: BaseException) -> bool:
        """ONNX Runtime reports CUDA allocation failures only in the message of a generic error."""
        text = str(exc).lower()
        return self.device != "cpu" and ("out of memory" in text or "failed to allocate" in text)

    def describe(self) -> str:
        if self.device == "cpu":
            extra = "" if self.precision == "fp32" else f" {self.precision}"
            return f"onnxruntime cpu{extra} ({self.threads} threads)"
        return f"onnxruntime {PROVIDERS[self.device]} {self.precision}, batch {self.preferred_batch}"


def probe() -> BackendInfo:
    return package_probe("onnxruntime", "onnxruntime", "ONNX Runtime, CPU execution provider")


def _gpu_probe(name: str, device: str) -> BackendInfo:
    description = f"ONNX Runtime, {PROVIDERS[device]}"
    if not has_module("onnxruntime"):
        return BackendInfo(name, "onnxruntime is not installed", description)
    import onnxruntime as ort

    if PROVIDERS[device] not in ort.get_available_providers():
        return BackendInfo(name, f"not installed (pip install 'tiledehaze[gpu]' for onnxruntime-gpu; "
                                 f"this onnxruntime offers {', '.join(ort.get_available_providers())})",
                           description)
    problem = nvidia_driver()
    if problem is None and device == "tensorrt" and not has_module("tensorrt"):
        problem = "TensorRT libraries not installed (pip install 'tiledehaze[tensorrt]')"
    return BackendInfo(name, problem, description)


def probe_cuda() -> BackendInfo:
    return _gpu_probe("onnxruntime-cuda", "cuda")


def probe_tensorrt() -> BackendInfo:
    return _gpu_probe("onnxruntime-tensorrt", "tensorrt")


def _create_on(provider: str, network: Network, options: dict) -> OnnxRuntimeBackend:
    """ONNX Runtime on ``provider`` (cuda or tensorrt); a ``device`` of ``cuda:N`` picks the GPU."""
    device = options.pop("device", None)
    if isinstance(device, str) and device.startswith("cuda:"):
        options["device_id"] = int(device.split(":", 1)[1])
    return OnnxRuntimeBackend(network, device=provider, **options)


def create_cuda(network: Network, **options) -> OnnxRuntimeBackend:
    return _create_on("cuda", network, options)


def create_tensorrt(network: Network, **options) -> OnnxRuntimeBackend:
    return _create_on("tensorrt", network, options)
