"""TensorRT engine cache, profiles and build recipe: everything that needs no GPU.

The build recipe is checked against a stand-in ``tensorrt`` module that records the calls the
real TensorRT 10/11 Python API would receive.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import types

import pytest

from tiledehaze.backends import engine_cache as ec
from tiledehaze.backends import tensorrt as trt_backend
from tiledehaze.errors import ConfigError

BASE = ec.EngineSpec(
    onnx_sha256=ec.onnx_digest(b"onnx graph"),
    tensorrt_version="10.13.0",
    gpu_name="NVIDIA H200",
    compute_capability=(9, 0),
    profile=ec.make_profile(tile=1024, batch=8),
    precision="fp16",
)


@pytest.mark.parametrize("change", [
    {"onnx_sha256": ec.onnx_digest(b"other weights")},
    {"tensorrt_version": "11.0.0"},
    {"gpu_name": "NVIDIA A100-SXM4-80GB"},
    {"compute_capability": (8, 0)},
    {"profile": ec.make_profile(tile=2048, batch=8)},
    {"profile": ec.make_profile(tile=1024, batch=4)},
    {"precision": "fp32"},
])
def test_the_key_changes_with_every_component(change):
    other = dataclasses.replace(BASE, **change)
    assert other.key() != BASE.key()
    assert other.filename() != BASE.filename()


def test_the_key_is_stable_for_equal_inputs():
    again = ec.EngineSpec(ec.onnx_digest(b"onnx graph"), "10.13.0", "NVIDIA H200", (9, 0),
                          ec.make_profile(tile=1024, batch=8), "fp16")
    assert again.key() == BASE.key()
    assert again.filename() == BASE.filename()
    assert len(BASE.key()) == 64  # sha256 hex


def test_plan_names_are_readable_and_end_in_the_key():
    name = BASE.filename()
    assert name.startswith("aodnet-fp16-b8-t1024-sm90-trt10.13.0-")
    assert name.endswith(BASE.key()[:20] + ".plan")
    assert os.sep not in name


def test_profile_spans_batch_and_tile_size():
    p = ec.make_profile(tile=1000, batch=8)
    assert p.min == (1, 3, 16, 16)
    assert p.opt == p.max == (8, 3, 1024, 1024)  # rounded up to a multiple of 64
    assert p.covers((8, 3, 1024, 1024)) and p.covers((1, 3, 16, 700))
    assert not p.covers((9, 3, 1024, 1024)) and not p.covers((1, 3, 1025, 64)) and not p.covers((1, 3, 8, 8))
    assert str(p) == "1x3x16x16/8x3x1024x1024/8x3x1024x1024"


def test_profile_for_grows_to_fit_and_otherwise_keeps_the_default():
    assert ec.profile_for((3, 3, 600, 1024)) == ec.make_profile()
    assert ec.profile_for((12, 3, 1024, 1024)).max == (12, 3, 1024, 1024)
    assert ec.profile_for((1, 3, 1500, 900)).max == (8, 3, 1536, 1536)
    with pytest.raises(ConfigError):
        ec.profile_for((1, 3, 8, 8))
    with pytest.raises(ConfigError):
        ec.make_profile(tile=1024, batch=0)


@pytest.mark.skipif(sys.platform == "win32", reason="XDG_CACHE_HOME is a POSIX convention")
def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TILEDEHAZE_ENGINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ec.default_cache_dir() == tmp_path / "xdg" / "tiledehaze" / "engines"
    monkeypatch.setenv("TILEDEHAZE_ENGINE_CACHE", str(tmp_path / "mine"))
    assert ec.default_cache_dir() == tmp_path / "mine"


def test_plans_round_trip_privately_and_atomically(tmp_path):
    cache = ec.EngineCache(tmp_path / "engines")
    assert cache.load(BASE) is None
    path = cache.store(BASE, b"plan bytes")
    assert path == cache.path(BASE) and cache.load(BASE) == b"plan bytes"
    assert [p.name for p in (tmp_path / "engines").iterdir()] == [BASE.filename()]  # no temp left
    cache.discard(BASE)
    assert cache.load(BASE) is None and cache.entries() == []


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX file modes")
def test_plans_are_readable_by_their_owner_only(tmp_path):
    path = ec.EngineCache(tmp_path / "engines").store(BASE, b"plan bytes")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "engines").stat().st_mode) & 0o077 == 0


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions only")
def test_plans_are_never_loaded_from_a_directory_others_can_write(tmp_path, caplog):
    shared = tmp_path / "shared"
    cache = ec.EngineCache(shared)
    cache.store(BASE, b"plan")
    shared.chmod(0o777)
    assert cache.load(BASE) is None
    assert "writable by other users" in caplog.text
    assert cache.store(BASE, b"other") is None


# -- the TensorRT recipe, against a recording stand-in ---------------------------------------

class Recorder:
    """A stand-in for the parts of the tensorrt module the backend uses."""

    def __init__(self, *, strongly_typed: bool = True, parse_ok: bool = True, version: str = "10.13.0"):
        self.calls: list[tuple] = []
        rec = self
        mod = types.SimpleNamespace(__version__=version)
        flags = {"STRONGLY_TYPED": 0} if strongly_typed else {}
        mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
        mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        mod.BuilderFlag = types.SimpleNamespace(TF32="TF32")  # no FP16, as in TensorRT 11
        sev = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        class ILogger:
            Severity = sev

            def __init__(self):
                pass

        mod.ILogger = ILogger

        class Input:
            name = "hazy"

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return Input()

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                rec.calls.append(("OnnxParser",))

            def parse(self, data):
                rec.calls.append(("parse", data))
                return parse_ok

            def get_error(self, i):
                return "Unsupported op Foo"

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec.calls.append(("set_shape", name, lo, opt, hi))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("pool", pool, size))

            def clear_flag(self, flag):
                rec.calls.append(("clear_flag", flag))

            def set_flag(self, flag):
                rec.calls.append(("set_flag", flag))

            def add_optimization_profile(self, profile):
                rec.calls.append(("add_optimization_profile",))

        class Builder:
            def __init__(self, logger):
                rec.calls.append(("Builder",))

            def create_network(self, flags):
                rec.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.calls.append(("build_serialized_network",))
                return memoryview(b"PLAN")

        mod.Builder, mod.OnnxParser = Builder, Parser
        self.module = mod

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kwargs) -> Recorder:
        rec = Recorder(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
        monkeypatch.setattr(trt_backend, "_LOGGER", None)
        return rec
    return install


def test_build_is_strongly_typed_with_a_workspace_and_one_profile(fake_trt):
    rec = fake_trt()
    profile = ec.make_profile(tile=512, batch=4)
    plan = trt_backend.build_plan(b"graph", profile, precision="fp16", workspace=123)
    assert plan == b"PLAN"
    assert ("create_network", 1 << 0) in rec.calls
    assert ("parse", b"graph") in rec.calls
    assert ("pool", "WORKSPACE", 123) in rec.calls
    assert ("set_shape", "hazy", (1, 3, 16, 16), (4, 3, 512, 512), (4, 3, 512, 512)) in rec.calls
    assert "set_flag" not in rec.names()  # precision comes from the FP16 graph, never BuilderFlag.FP16
    assert rec.names().index("add_optimization_profile") < rec.names().index("build_serialized_network")


def test_fp32_builds_turn_tf32_off(fake_trt):
    rec = fake_trt()
    trt_backend.build_plan(b"graph", ec.make_profile(), precision="fp32")
    assert ("clear_flag", "TF32") in rec.calls


def test_build_works_where_the_strongly_typed_flag_is_gone(fake_trt):
    rec = fake_trt(strongly_typed=False, version="11.4.0")
    trt_backend.build_plan(b"graph", ec.make_profile(), precision="fp16")
    assert ("create_network", 0) in rec.calls


def test_parse_errors_are_reported(fake_trt):
    fake_trt(parse_ok=False)
    with pytest.raises(RuntimeError, match="Unsupported op Foo"):
        trt_backend.build_plan(b"graph", ec.make_profile(), precision="fp16")


class FakeRuntime:
    def __init__(self, good: set[bytes]):
        self.good = good
        self.loaded: list[bytes] = []

    def deserialize_cuda_engine(self, plan):
        self.loaded.append(bytes(plan))
        return f"engine<{bytes(plan).decode()}>" if bytes(plan) in self.good else None


def test_a_cached_plan_is_loaded_without_building(tmp_path, monkeypatch):
    cache = ec.EngineCache(tmp_path)
    cache.store(BASE, b"cached")
    monkeypatch.setattr(trt_backend, "build_plan", lambda *a, **k: pytest.fail("must not build"))
    engine, built = trt_backend.load_or_build(FakeRuntime({b"cached"}), b"graph", BASE, cache)
    assert (engine, built) == ("engine<cached>", False)


def test_a_plan_tensorrt_refuses_is_rebuilt_and_replaced(tmp_path, monkeypatch, caplog):
    cache = ec.EngineCache(tmp_path)
    cache.store(BASE, b"stale")
    builds = []
    monkeypatch.setattr(trt_backend, "build_plan",
                        lambda onnx, profile, **kw: builds.append((onnx, profile, kw)) or b"fresh")
    runtime = FakeRuntime({b"fresh"})
    engine, built = trt_backend.load_or_build(runtime, b"graph", BASE, cache)
    assert (engine, built) == ("engine<fresh>", True)
    assert runtime.loaded == [b"stale", b"fresh"]
    assert builds[0][0] == b"graph" and builds[0][1] == BASE.profile and builds[0][2]["precision"] == "fp16"
    assert cache.load(BASE) == b"fresh"
    assert "could not be loaded; rebuilding" in caplog.text


def test_a_missing_plan_is_built_and_cached(tmp_path, monkeypatch):
    cache = ec.EngineCache(tmp_path / "new")
    monkeypatch.setattr(trt_backend, "build_plan", lambda *a, **k: b"fresh")
    engine, built = trt_backend.load_or_build(FakeRuntime({b"fresh"}), b"graph", BASE, cache)
    assert built and cache.load(BASE) == b"fresh"


def test_engine_io_tensors_are_found_by_mode(fake_trt):
    torch = pytest.importorskip("torch")
    rec = fake_trt()
    trt = rec.module
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.DataType = types.SimpleNamespace(FLOAT="f32", HALF="f16")

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["dehazed", "hazy"][i]

        def get_tensor_mode(self, name):
            return "in" if name == "hazy" else "out"

        def get_tensor_dtype(self, name):
            return "f16"

    e = trt_backend._Engine(trt, torch, Engine(), ec.make_profile())
    assert (e.input_name, e.output_name) == ("hazy", "dehazed")
    assert e.input_dtype == e.output_dtype == torch.float16
