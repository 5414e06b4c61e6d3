"""Native TensorRT backend (TensorRT 10 and 11 Python API), with a disk cache of built engines.

Build: the project's own ONNX graph (FP16 end to end for ``precision="fp16"``) is parsed into
a strongly typed network, so the graph alone decides the precision. TensorRT 11 removed
``BuilderFlag.FP16`` and makes strong typing the only mode; 10.x accepts the same recipe.
One optimisation profile spans batch 1..B and tile sides 16..T.

Run: device buffers are torch CUDA tensors (``data_ptr()``), the engine runs with
``execute_async_v3`` on a non-default torch stream, and copies go through pinned host
buffers, one set per stream (see :mod:`.streams`). No pycuda.

Plans are only ever loaded from our own private cache directory (:mod:`.engine_cache`).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, ConfigError, OutputError
from ..pending import Pending
from .base import Backend, BackendInfo
from .cuda import gpu_identity, has_module, nvidia_driver, torch_cuda_problem
from .engine_cache import (MIN_SIDE, PRECISIONS, EngineCache, EngineSpec, Profile, make_profile,
                           onnx_digest, profile_for)
from .streams import StreamRing

log = logging.getLogger(__name__)

GPU_BATCH = 8
DEFAULT_TILE = 1024
#: builder scratch memory; AOD-Net's layers need far less, this just leaves tactics room
DEFAULT_WORKSPACE = 1 << 30
INSTALL_HINT = "pip install 'tiledehaze[tensorrt]'"
MIN_MAJOR = 10


def tensorrt_problem() -> str | None:
    """None when the TensorRT backend can run here, else a short reason (cheap checks first)."""
    if not has_module("tensorrt"):
        return f"not installed ({INSTALL_HINT})"
    problem = nvidia_driver()
    if problem is not None:
        return problem
    problem = torch_cuda_problem()
    if problem is not None:
        return f"needs torch with CUDA for its device buffers: {problem}"
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken install: say what failed, in one line
        return f"cannot import tensorrt: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if _major(trt.__version__) < MIN_MAJOR:
        return f"TensorRT {trt.__version__} is too old (need {MIN_MAJOR} or newer)"
    return None


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


_LOGGER = None


def trt_logger():
    """A TensorRT logger that forwards to Python logging (one per process, kept alive)."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        levels = {
            trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
            trt.ILogger.Severity.ERROR: logging.ERROR,
            trt.ILogger.Severity.WARNING: logging.WARNING,
            trt.ILogger.Severity.INFO: logging.DEBUG,
            trt.ILogger.Severity.VERBOSE: logging.DEBUG - 5,
        }

        class _Forward(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg) -> None:
                log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

        _LOGGER = _Forward()
    return _LOGGER


def build_plan(onnx_bytes: bytes, profile: Profile, *, precision: str,
               workspace: int = DEFAULT_WORKSPACE) -> bytes:
    """Compile ``onnx_bytes`` into a serialized TensorRT plan for ``profile``."""
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: match the CPU within 1 lsb
    if network.num_inputs != 1:
        raise RuntimeError(f"expected one network input, found {network.num_inputs}")
    shapes = builder.create_optimization_profile()
    shapes.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(shapes)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (its log above says why)")
    return bytes(plan)


def engine_spec(onnx_bytes: bytes, profile: Profile, precision: str, device_index: int) -> EngineSpec:
    import tensorrt as trt

    gpu = gpu_identity(device_index)
    return EngineSpec(onnx_digest(onnx_bytes), trt.__version__, gpu.name, gpu.capability, profile, precision)


def load_or_build(runtime, onnx_bytes: bytes, spec: EngineSpec, cache: EngineCache, *,
                  workspace: int = DEFAULT_WORKSPACE, rebuild: bool = False):
    """Deserialize the cached plan for ``spec``, building (and caching) it when missing or stale.

    Returns ``(engine, built)``. A plan TensorRT refuses (another version or GPU slipped past
    the key, or a truncated file) is removed and rebuilt.
    """
    if not rebuild:
        plan = cache.load(spec)
        if plan is not None:
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is not None:
                log.debug("loaded TensorRT engine %s", cache.path(spec))
                return engine, False
            log.warning("cached TensorRT engine %s could not be loaded; rebuilding it", cache.path(spec))
            cache.discard(spec)
    log.warning("building a TensorRT engine for %s %s (once; 'tiledehaze engine build' prebuilds it)",
                spec.precision, spec.profile)
    plan = build_plan(onnx_bytes, spec.profile, precision=spec.precision, workspace=workspace)
    path = cache.store(spec, plan)
    if path is not None:
        log.info("cached TensorRT engine %s", path)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("TensorRT could not load the engine it has just built")
    return engine, True


class _Engine:
    """A deserialized engine, its I/O tensor names and dtypes, and one context per stream."""

    def __init__(self, trt, torch, engine, profile: Profile):
        self.engine = engine
        self.profile = profile
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeError(f"expected one input and one output, engine has {inputs} and {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self.input_dtype = dtypes[engine.get_tensor_dtype(self.input_name)]
        self.output_dtype = dtypes[engine.get_tensor_dtype(self.output_name)]
        self._contexts: dict[int, object] = {}

    def context(self, slot: int):
        ctx = self._contexts.get(slot)
        if ctx is None:
            ctx = self.engine.create_execution_context()
            if ctx is None:
                raise RuntimeError("TensorRT could not create an execution context (out of device memory?)")
            self._contexts[slot] = ctx
        return ctx


class TensorRTBackend(Backend):
    """AOD-Net compiled by TensorRT; engines come from (and go to) the engine cache.

    ``streams`` is how many CUDA streams keep batches in flight, or a ready
    :class:`~.streams.StreamRing` (whose device then holds the buffers; tests hand one with
    stand-in streams on the CPU).
    """

    name = "tensorrt"

    def __init__(self, network, *, precision: str | None = None, tile: int | None = None,
                 batch: int | None = None, cache_dir: str | os.PathLike | None = None,
                 workspace: int = DEFAULT_WORKSPACE, device: str | None = None, streams: int | StreamRing = 2,
                 threads: int | None = None):
        del threads  # a run option every backend takes; a TensorRT engine needs no host threads
        problem = tensorrt_problem()
        if problem is not None:
            raise BackendUnavailable(f"tensorrt: {problem}")
        import tensorrt as trt
        import torch

        self.trt, self.torch = trt, torch
        self.precision = precision or "fp16"
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be fp32 or fp16, not {self.precision!r}")
        self.device = torch.device(_cuda_device(device))
        self.tile = tile or DEFAULT_TILE  # the plan's tile side: the engine profile's largest
        self.preferred_batch = batch or GPU_BATCH
        self.workspace = workspace
        self.cache = EngineCache(cache_dir)
        self.oom_errors = (torch.cuda.OutOfMemoryError,)
        self.onnx = network.to_onnx(self.precision)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(trt_logger())
            self.ring = streams if isinstance(streams, StreamRing) else StreamRing(torch, self.device, streams)
        self.in_flight = len(self.ring)
        # Engines are loaded (or built) on first use, for the profile the tiles need: a run with
        # --tile 2048 then uses the engine 'tiledehaze engine build --tile 2048' made, and never
        # builds a 1024 one it does not need.
        self._engines: list[_Engine] = []
        self._engines_lock = threading.Lock()  # one build per profile if several threads share the model

    def engine_for(self, shape: tuple[int, int, int, int]) -> _Engine:
        """An engine whose profile covers the NCHW ``shape``: loaded, cached or built on demand."""
        with self._engines_lock:
            return self._engine_for(shape)

    def _engine_for(self, shape: tuple[int, int, int, int]) -> _Engine:
        for engine in self._engines:
            if engine.profile.covers(shape):
                return engine
        # the usual profile (tiles up to self.tile), or the tightest one if 'engine build' made it
        profiles = [profile_for(shape, tile=self.tile, batch=self.preferred_batch),
                    profile_for(shape, tile=MIN_SIDE, batch=self.preferred_batch)]
        with self.torch.cuda.device(self.device):
            specs = [engine_spec(self.onnx, p, self.precision, self.device.index) for p in profiles]
            spec = next((sp for sp in specs if self.cache.path(sp).is_file()), specs[0])
            raw, _ = load_or_build(self.runtime, self.onnx, spec, self.cache, workspace=self.workspace)
        engine = _Engine(self.trt, self.torch, raw, spec.profile)
        self._engines.append(engine)
        return engine

    def submit(self, tiles: np.ndarray) -> Pending:
        """Queue ``tiles`` (N, H, W, 3) float32 on the GPU; ``result()`` waits and returns them restored."""
        n, h, w, _ = tiles.shape
        engine = self.engine_for((n, 3, h, w))
        return self.ring.submit(tiles, lambda index, stream, x: self._compute(engine, index, stream, x))

    def _compute(self, engine: _Engine, index: int, stream, x):
        torch = self.torch
        n, h, w, _ = x.shape
        shape = (n, 3, h, w)
        ctx = engine.context(index)
        x = x.permute(0, 3, 1, 2).to(engine.input_dtype, memory_format=torch.contiguous_format).contiguous()
        y = torch.empty(shape, dtype=engine.output_dtype, device=x.device)
        if not ctx.set_input_shape(engine.input_name, shape):
            raise RuntimeError(f"TensorRT refused input shape {shape} (profile {engine.profile})")
        ctx.set_tensor_address(engine.input_name, x.data_ptr())
        ctx.set_tensor_address(engine.output_name, y.data_ptr())
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to enqueue the engine (its log above says why)")
        nhwc = y.permute(0, 2, 3, 1).to(torch.float32, memory_format=torch.contiguous_format).contiguous()
        return nhwc, (x, y)

    def run(self, tiles: np.ndarray) -> np.ndarray:
        return self.submit(tiles).result()

    def release_memory(self) -> None:
        self.ring.synchronize()
        self.torch.cuda.empty_cache()

    def describe(self) -> str:
        name = self.torch.cuda.get_device_name(self.device)
        return f"tensorrt {self.trt.__version__} on {name} ({self.precision}, batch {self.preferred_batch})"


def _cuda_device(device: str | None) -> str:
    if device in (None, "auto", "cuda"):
        return "cuda:0"
    if device.startswith("cuda"):
        return device
    raise ConfigError(f"the TensorRT backend runs on CUDA devices, not {device!r}")


def build_engine(*, tile: int = DEFAULT_TILE, batch: int = GPU_BATCH, precision: str = "fp16",
                 weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 device: str | None = None, workspace: int = DEFAULT_WORKSPACE,
                 rebuild: bool = False) -> tuple[Path, bool]:
    """Prebuild the engine ``tiledehaze process`` will use for ``tile``/``batch``/``precision``.

    Returns the plan's path in the cache and whether it was built now (False: already cached).
    The same as ``tiledehaze engine build``.
    """
    problem = tensorrt_problem()
    if problem is not None:
        raise BackendUnavailable(f"tensorrt: {problem}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be fp32 or fp16, not {precision!r}")
    import tensorrt as trt
    import torch

    from ..models.aodnet import AODNet, load_weights

    onnx_bytes = AODNet(load_weights(weights)).to_onnx(precision)
    cache = EngineCache(cache_dir)
    dev = torch.device(_cuda_device(device))
    with torch.cuda.device(dev):
        spec = engine_spec(onnx_bytes, make_profile(tile=tile, batch=batch), precision, dev.index)
        runtime = trt.Runtime(trt_logger())
        _, built = load_or_build(runtime, onnx_bytes, spec, cache, workspace=workspace, rebuild=rebuild)
    path = cache.path(spec)
    if not path.is_file():
        raise OutputError(f"the engine was built but could not be cached in {cache.directory} "
                          "(see the warning above); choose another --cache-dir")
    return path, built


def probe() -> BackendInfo:
    return BackendInfo("tensorrt", tensorrt_problem(),
                       "TensorRT 10/11, strongly typed fp16 engines cached on disk")
