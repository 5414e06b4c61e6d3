"""Which backend runs: the order ``auto`` follows, and clear refusals for the ones that can't."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from tiledehaze.backends import AUTO_ORDER, BackendInfo, available_backends, base, create_backend
from tiledehaze.backends.tensorrt import tensorrt_problem
from tiledehaze.cli import main
from tiledehaze.errors import BackendUnavailable
from tiledehaze.models.aodnet import AODNet, init_weights

ALL = ["tensorrt", "torch-cuda", "onnxruntime-cuda", "onnxruntime", "torch", "onnxruntime-tensorrt"]


def test_auto_tries_tensorrt_then_cuda_torch_then_the_cpu_paths():
    assert AUTO_ORDER == ALL


@pytest.fixture
def fake_probes(monkeypatch):
    """Pretend each backend is usable or not; factories just report their name."""
    def install(usable: set[str]) -> None:
        for name in ALL:
            reason = None if name in usable else f"{name} is faked away"
            monkeypatch.setitem(base._PROBES, name, lambda n=name, r=reason: BackendInfo(n, r, "fake"))
            monkeypatch.setitem(base._FACTORIES, name, lambda network, n=name, **opts: (n, opts))
    return install


@pytest.mark.parametrize("usable, chosen", [
    (set(ALL), "tensorrt"),
    ({"torch-cuda", "onnxruntime-cuda", "onnxruntime", "torch"}, "torch-cuda"),
    ({"onnxruntime-cuda", "onnxruntime", "torch"}, "onnxruntime-cuda"),
    ({"onnxruntime", "torch"}, "onnxruntime"),  # ONNX Runtime is ~2x torch on CPU
    ({"torch"}, "torch"),
    ({"torch", "onnxruntime-tensorrt"}, "torch"),
])
def test_auto_picks_the_first_usable_backend(fake_probes, usable, chosen):
    fake_probes(usable)
    name, opts = create_backend("auto", network=None, threads=2)
    assert name == chosen and opts == {"threads": 2}


def test_auto_on_device_cpu_skips_the_gpu_backends(fake_probes):
    fake_probes(set(ALL))
    name, _ = create_backend("auto", network=None, device="cpu")
    assert name == "onnxruntime"


def test_auto_on_device_cuda_takes_only_gpu_backends(fake_probes):
    fake_probes({"onnxruntime-cuda", "onnxruntime", "torch"})
    assert create_backend("auto", network=None, device="cuda:1")[0] == "onnxruntime-cuda"
    fake_probes({"onnxruntime", "torch"})
    with pytest.raises(BackendUnavailable, match=r"^no GPU inference backend can run here \(tensorrt: "):
        create_backend("auto", network=None, device="cuda")


def test_auto_with_nothing_usable_says_why_for_each(fake_probes):
    fake_probes(set())
    with pytest.raises(BackendUnavailable) as err:
        create_backend("auto", network=None)
    message = str(err.value)
    assert "\n" not in message
    assert all(f"{name}: {name} is faked away" in message for name in ALL)


def test_asking_for_an_unusable_backend_is_one_line(fake_probes):
    fake_probes({"onnxruntime"})
    with pytest.raises(BackendUnavailable, match=r"^backend 'tensorrt' cannot run here: tensorrt is faked away$"):
        create_backend("tensorrt", network=None)
    with pytest.raises(BackendUnavailable, match="unknown backend 'cuda'; choose from auto, tensorrt"):
        create_backend("cuda", network=None)


def test_every_backend_is_listed_with_a_reason_when_unusable():
    infos = {i.name: i for i in available_backends()}
    assert list(infos) == ALL
    assert infos["onnxruntime"].unavailable is None
    for info in infos.values():
        assert info.unavailable is None or (info.unavailable and "\n" not in info.unavailable)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_absent_is_explained_with_the_install_hint():
    reason = tensorrt_problem()
    assert reason is not None and "not installed" in reason
    assert "pip install 'tiledehaze[tensorrt]'" in reason


def test_info_lists_all_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert f"  {name} " in out
    assert "unavailable:" in out or all(i.unavailable is None for i in available_backends())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiledehaze.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(tensorrt_problem() is None, reason="TensorRT can run here")
def test_process_with_an_unusable_backend_prints_one_line_and_fails(tmp_path, weights_file):
    import cv2

    src = tmp_path / "x.png"
    cv2.imwrite(str(src), np.full((40, 60, 3), 128, np.uint8))
    result = run_cli("process", str(src), "--backend", "tensorrt", "--weights", str(weights_file))
    assert result.returncode == BackendUnavailable.exit_code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tiledehaze: error: backend 'tensorrt' cannot run here: ")
    assert not (tmp_path / "x_dehazed.png").exists()


@pytest.mark.skipif(tensorrt_problem() is None, reason="TensorRT can run here")
def test_engine_build_without_tensorrt_is_one_line(tmp_path):
    result = run_cli("engine", "build", "--tile", "1024", "--batch", "8", "--cache-dir", str(tmp_path))
    assert result.returncode == BackendUnavailable.exit_code
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"tiledehaze: error: tensorrt: {tensorrt_problem()}"]


def test_engine_list_shows_the_cache(tmp_path, capsys):
    assert main(["engine", "list", "--cache-dir", str(tmp_path)]) == 0
    assert f"engine cache: {tmp_path} (0 engines)" in capsys.readouterr().out


def test_the_cpu_default_path_never_imports_torch(tmp_path, weights_file):
    code = (
        "import sys, numpy as np, tiledehaze\n"
        f"out = tiledehaze.restore(np.zeros((40, 50, 3), np.uint8), weights={str(weights_file)!r}, tile=64,"
        " backend='onnxruntime')\n"
        "from tiledehaze.backends import available_backends; available_backends()\n"
        "print('torch' in sys.modules, tiledehaze.get_model(weights="
        f"{str(weights_file)!r}, backend='onnxruntime').describe())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    imported, description = result.stdout.strip().split(" ", 1)
    assert description.startswith("aodnet on onnxruntime cpu") and imported == "False"


def test_torch_backend_picks_cpu_when_no_gpu_is_visible():
    pytest.importorskip("torch")
    from tiledehaze.backends.cuda import torch_cuda_problem

    if torch_cuda_problem() is None:
        pytest.skip("a CUDA device is visible")
    backend = create_backend("torch", AODNet(init_weights()), threads=1)
    assert backend.device.type == "cpu" and backend.preferred_batch == 1


def test_process_passes_precision_to_the_backend(tmp_path, weights_file):
    import cv2

    rng = np.random.default_rng(5)
    src = tmp_path / "scene.png"
    cv2.imwrite(str(src), (rng.random((90, 130, 3)) * 255).astype(np.uint8))
    outs = {}
    for precision in ("fp32", "fp16"):
        dst = tmp_path / f"out-{precision}.png"
        assert main(["process", str(src), "-o", str(dst), "--backend", "onnxruntime", "--precision", precision,
                     "--weights", str(weights_file), "--tile", "64", "--no-progress"]) == 0
        outs[precision] = cv2.imread(str(dst)).astype(int)
    diff = np.abs(outs["fp16"] - outs["fp32"])
    assert diff.max() <= 2  # half precision is close to full precision...
    assert (diff > 0).mean() > 0.001  # ...but it did run: rounding differs on some pixels


def test_torch_refuses_fp16_on_the_cpu_in_one_line(weights_file):
    pytest.importorskip("torch")
    from tiledehaze.backends.cuda import torch_cuda_problem
    from tiledehaze.errors import ConfigError

    if torch_cuda_problem() is None:
        pytest.skip("a CUDA device is visible")
    with pytest.raises(ConfigError, match="torch on CPU runs fp32 only"):
        create_backend("torch", AODNet(init_weights()), precision="fp16")


def test_gpu_options_are_accepted_by_every_model(tmp_path):
    import cv2

    src = tmp_path / "scene.png"
    cv2.imwrite(str(src), np.full((48, 64, 3), 150, np.uint8))
    assert main(["process", str(src), "--model", "dcp", "--precision", "fp16", "--device", "cpu",
                 "--no-progress"]) == 0
