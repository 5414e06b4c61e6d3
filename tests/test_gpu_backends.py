"""Same answers from every backend: each one that runs here matches torch on the CPU.

FP32 backends agree within 1 lsb of 8-bit output, FP16 ones within 2 lsb. The GPU backends
(torch CUDA, ONNX Runtime CUDA/TensorRT, native TensorRT) skip with the reason their probe
gives where there is no GPU or no TensorRT.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import tiledehaze
from tiledehaze.backends import base, create_backend
from tiledehaze.backends.ort import OnnxRuntimeBackend, with_float32_io
from tiledehaze.models.aodnet import AODNet, AODNetModel, init_weights

torch = pytest.importorskip("torch")


def lively_weights(seed: int = 3):
    """Weights whose output spans the whole range (fresh init gives almost pure white)."""
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(0, 0.3, v.shape) if k.endswith("weight") else rng.normal(0.1, 0.1, v.shape))
            .astype(np.float32) for k, v in init_weights().items()}


@pytest.fixture(scope="module")
def network():
    return AODNet(lively_weights())


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(7)
    smooth = rng.random((3, 8, 12, 3)).repeat(8, axis=1).repeat(8, axis=2)  # image-like structure
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def reference(network, tiles):
    return create_backend("torch", network, threads=1, device="cpu").run(tiles)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def lsb(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(to_uint8(a).astype(int) - to_uint8(b)).max())


def test_the_reference_is_not_trivial(reference):
    assert reference.std() > 0.1  # a white or flat output would make every comparison pass


def test_onnx_fp32_graph_equals_the_torch_module(network, tiles, reference):
    out = OnnxRuntimeBackend(network, threads=1).run(tiles)
    assert out.shape == tiles.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=2e-5)
    assert lsb(out, reference) <= 1


def test_onnxruntime_cpu_matches_torch_cpu_on_a_whole_image_within_1_lsb(network):
    image = (np.random.default_rng(2).random((200, 333, 3)) * 255).astype(np.uint8)
    ort_out = tiledehaze.restore(image, model=AODNetModel(create_backend("onnxruntime", network, threads=1)),
                                 tile=96)
    torch_out = tiledehaze.restore(image, model=AODNetModel(create_backend("torch", network, threads=1)),
                                   tile=96)
    assert np.abs(ort_out.astype(int) - torch_out).max() <= 1


def test_fp16_graph_on_onnxruntime_cpu_within_2_lsb(network, tiles, reference):
    out = OnnxRuntimeBackend(network, threads=1, precision="fp16").run(tiles)
    assert out.dtype == np.float32
    assert lsb(out, reference) <= 2
    assert np.abs(out - reference).max() > 0  # it really ran in half precision


def test_fp16_graph_is_fp16_end_to_end(network, tiles, reference):
    import onnxruntime as ort

    session = ort.InferenceSession(network.to_onnx("fp16"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"hazy": tiles.transpose(0, 3, 1, 2).astype(np.float16)})
    assert out.dtype == np.float16
    assert lsb(out.astype(np.float32).transpose(0, 2, 3, 1), reference) <= 2


def test_float32_io_wrapper_keeps_names_and_the_fp16_body(network):
    import onnx
    from onnx import TensorProto

    model = onnx.load_from_string(with_float32_io(network.to_onnx("fp16")))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("hazy", "dehazed")
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert {i.data_type for i in model.graph.initializer} == {TensorProto.FLOAT16}
    assert [n.op_type for n in model.graph.node].count("Cast") == 2


class Brighter:
    """A network of another kind: J = I + 0.25, with tensor names of its own."""

    name, halo, input_name, output_name = "brighter", 0, "pixels", "restored"

    def to_onnx(self, precision: str = "fp32", layout: str = "nchw") -> bytes:
        from onnx import TensorProto, helper, numpy_helper

        dims = ["n", 3, "h", "w"] if layout == "nchw" else ["n", "h", "w", 3]
        graph = helper.make_graph([helper.make_node("Add", ["pixels", "lift"], ["restored"])], "brighter",
                                  [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, dims)],
                                  [helper.make_tensor_value_info("restored", TensorProto.FLOAT, dims)],
                                  initializer=[numpy_helper.from_array(np.float32(0.25), "lift")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model.SerializeToString()

    def to_torch(self):
        return torch.nn.Identity()


def test_any_network_of_the_declared_kind_runs_under_its_own_tensor_names(tiles):
    network = Brighter()
    assert isinstance(network, base.Network) and isinstance(AODNet(lively_weights()), base.Network)
    np.testing.assert_allclose(OnnxRuntimeBackend(network, threads=1).run(tiles), tiles + 0.25, atol=1e-6)


# -- GPU backends: run where a GPU (and TensorRT) is present, skip with the reason otherwise ---

GPU_CASES = [
    ("torch-cuda", "fp16", 2),
    ("torch-cuda", "fp32", 1),
    ("onnxruntime-cuda", "fp32", 1),
    ("onnxruntime-cuda", "fp16", 2),
    ("tensorrt", "fp16", 2),
    ("tensorrt", "fp32", 1),
    ("onnxruntime-tensorrt", "fp16", 2),
]


def require(name: str) -> None:
    reason = base._PROBES[name]().unavailable
    if reason is not None:
        pytest.skip(f"{name}: {reason}")


@pytest.mark.parametrize("name, precision, tolerance", GPU_CASES, ids=[f"{n}-{p}" for n, p, _ in GPU_CASES])
def test_gpu_backends_match_torch_cpu(name, precision, tolerance, network, tiles, reference, tmp_path):
    require(name)
    backend = create_backend(name, network, precision=precision, cache_dir=tmp_path, tile=128, batch=4)
    assert backend.preferred_batch > 1
    out = backend.run(tiles)
    assert out.shape == tiles.shape and out.dtype == np.float32
    assert lsb(out, reference) <= tolerance
    # batches in flight come back in order (kernels may differ per batch size: compare by lsb)
    handles = [backend.submit(tiles[i:i + 1]) for i in range(len(tiles))]
    assert lsb(np.concatenate([h.result() for h in handles]), reference) <= tolerance


def test_tensorrt_engines_are_built_once_then_loaded_from_the_cache(tmp_path):
    require("tensorrt")
    from tiledehaze.backends.tensorrt import build_engine
    from tiledehaze.models.aodnet import save_weights

    weights = tmp_path / "w.safetensors"
    save_weights(lively_weights(), weights)
    path, built = build_engine(tile=128, batch=2, weights=weights, cache_dir=tmp_path / "engines")
    assert built and path.is_file() and path.parent == tmp_path / "engines"
    again, built_again = build_engine(tile=128, batch=2, weights=weights, cache_dir=tmp_path / "engines")
    assert again == path and not built_again
    path.write_bytes(b"not a plan")  # a plan TensorRT refuses is rebuilt, not trusted
    _, rebuilt = build_engine(tile=128, batch=2, weights=weights, cache_dir=tmp_path / "engines")
    assert rebuilt


def test_tensorrt_grows_a_profile_for_tiles_larger_than_planned(network, tiles, reference, tmp_path):
    require("tensorrt")
    backend = create_backend("tensorrt", network, cache_dir=tmp_path, tile=64, batch=2)
    backend.run(np.ascontiguousarray(tiles[:2, :, :64]))  # 2 tiles of 64x64: the planned engine
    assert lsb(backend.run(tiles), reference) <= 2  # 3 tiles of 64x96: a second engine is built
    assert [e.profile.max for e in backend._engines] == [(2, 3, 64, 64), (3, 3, 128, 128)]


def test_torch_cuda_out_of_memory_backs_off_on_a_real_gpu(network, caplog):
    require("torch-cuda")
    backend = create_backend("torch-cuda", network)
    model = AODNetModel(backend)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (2 << 30) / total))  # pretend: a 2 GiB GPU
    try:
        out = model.run(np.full((8, 2048, 2048, 3), 0.5, np.float32), {})  # needs ~4 GiB at once
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert out.shape == (8, 2048, 2048, 3)
    assert model.runner.limit is not None and model.runner.limit < 8
    assert "out of device memory" in caplog.text


class _StandInStream:
    """A CUDA stream for running GPU code paths on the CPU."""

    cuda_stream = 1234

    def synchronize(self):
        pass


class _StandInEvent:
    def __init__(self, **flags):
        pass

    def record(self, stream):
        pass

    def synchronize(self):
        pass


@pytest.fixture
def stand_in_cuda(monkeypatch):
    """torch.cuda device scopes, streams and events that do nothing; returns the stream class."""
    import contextlib

    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Event", _StandInEvent)
    return _StandInStream


def test_the_cuda_code_path_bookkeeping_runs_on_the_cpu_with_stand_in_streams(stand_in_cuda, network, tiles,
                                                                              reference):
    """Slot rotation, pinned-buffer reuse and in-flight results, exercised without a GPU."""
    from tiledehaze.backends.streams import StreamRing
    from tiledehaze.backends.torch_backend import TorchBackend

    ring = StreamRing(torch, "cpu", 2, make_stream=stand_in_cuda, pin=False)
    backend = TorchBackend(network, device="cpu", threads=1, streams=ring)
    assert backend.in_flight == 2
    first = [backend.submit(tiles[i:i + 1]) for i in range(3)]  # the third reuses slot 0
    second = backend.submit(tiles)  # buffers grow to the larger batch
    for i, handle in enumerate(first):
        np.testing.assert_allclose(handle.result(), reference[i:i + 1], atol=2e-5)
    np.testing.assert_allclose(second.result(), reference, atol=2e-5)
    np.testing.assert_allclose(backend.run(tiles[:2]), reference[:2], atol=2e-5)


def test_the_tensorrt_run_path_runs_on_the_cpu_with_a_stand_in_engine(monkeypatch, stand_in_cuda, network, tiles,
                                                                      reference, tmp_path):
    """Shapes, tensor addresses, profile growth and slot reuse of the TensorRT backend, without a GPU.

    The stand-in execution context reads and writes the very addresses the backend hands it.
    """
    import ctypes
    import types

    from tiledehaze.backends import engine_cache
    from tiledehaze.backends import tensorrt as trt_backend
    from tiledehaze.backends.streams import StreamRing

    import onnxruntime as ort

    session = ort.InferenceSession(network.to_onnx(), providers=["CPUExecutionProvider"])  # NCHW, as TensorRT sees it
    trt = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
                                DataType=types.SimpleNamespace(FLOAT="f32", HALF="f16"), __version__="10.0")

    class Context:
        def __init__(self):
            self.addresses, self.shape, self.profile = {}, None, None

        def set_input_shape(self, name, shape):
            assert name == "hazy"
            self.shape = tuple(shape)
            return self.profile.covers(self.shape)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shape))
            view = lambda name: np.ctypeslib.as_array(  # noqa: E731
                (ctypes.c_float * n).from_address(self.addresses[name])).reshape(self.shape)
            view("dehazed")[...] = session.run(None, {"hazy": view("hazy").copy()})[0]
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, profile):
            self.profile = profile

        def get_tensor_name(self, i):
            return ("hazy", "dehazed")[i]

        def get_tensor_mode(self, name):
            return "in" if name == "hazy" else "out"

        def get_tensor_dtype(self, name):
            return "f32"

        def create_execution_context(self):
            ctx = Context()
            ctx.profile = self.profile
            return ctx

    Stream = stand_in_cuda
    built = []
    monkeypatch.setattr(trt_backend, "engine_spec", lambda onnx, profile, precision, index: engine_cache.EngineSpec(
        "0" * 64, "10.0", "stand-in", (9, 0), profile, precision))
    monkeypatch.setattr(trt_backend, "load_or_build",
                        lambda runtime, onnx, spec, cache, **kw: (built.append(spec.profile) or Engine(spec.profile),
                                                                 True))

    monkeypatch.setattr(trt_backend, "tensorrt_problem", lambda: None)
    monkeypatch.setattr(trt_backend, "trt_logger", lambda: None)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(**vars(trt), Runtime=lambda logger: None))

    def make_backend(tile: int):
        ring = StreamRing(torch, "cpu", 2, make_stream=Stream, pin=False)  # buffers live on the CPU
        return trt_backend.TensorRTBackend(network, precision="fp32", tile=tile, batch=2, cache_dir=tmp_path,
                                           streams=ring)

    backend = make_backend(64)
    square = np.ascontiguousarray(tiles[:, :, :64])
    expected = OnnxRuntimeBackend(network, threads=1).run(square)
    handles = [backend.submit(square[i:i + 1]) for i in range(3)]  # 64x64: the planned engine
    for i, h in enumerate(handles):
        np.testing.assert_array_equal(h.result(), expected[i:i + 1])
    np.testing.assert_allclose(backend.run(tiles), reference, atol=2e-5)  # 3 x 64x96: a grown engine
    assert [p.max for p in built] == [(2, 3, 64, 64), (3, 3, 128, 128)]
    assert built[1] == engine_cache.profile_for((3, 3, 64, 96), tile=64, batch=2)

    # an engine prebuilt for smaller tiles than the backend's default is found and used
    backend = make_backend(256)
    small = engine_cache.make_profile(tile=64, batch=2)
    backend.cache.store(trt_backend.engine_spec(b"", small, "fp32", 0), b"prebuilt")
    backend.run(square[:2])
    assert built[-1] == small
