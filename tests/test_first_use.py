"""What a new user meets: inference without torch, one line for every error they can cause,
quiet interrupts and progress in logs. Each test runs the command line in a subprocess on real
files, as a user would.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tifffile
from PIL import Image

import tiledehaze

from .images import smooth_image

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = '''import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTorch())
'''


def cli(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiledehaze.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env, **kwargs)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The whole of stderr, which must be a single line, after a non-zero exit."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------------- without torch

@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory) -> dict:
    """An environment in which ``import torch`` fails, as on a machine without it."""
    shim = tmp_path_factory.mktemp("no_torch")
    (shim / "sitecustomize.py").write_text(NO_TORCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    return env


def test_installing_the_package_does_not_pull_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]]
    assert "torch" not in names and "onnxruntime" in names
    assert all(any(d.startswith("torch") for d in project["optional-dependencies"][extra]) for extra in ("torch", "train"))


def test_process_restore_batch_eval_and_export_run_without_torch(tmp_path, no_torch_env, make_photo):
    photo = make_photo(tmp_path / "in" / "photo.jpg", 96, 128)
    make_photo(tmp_path / "in" / "second.png", 64, 80, seed=1)
    result = cli("process", photo, "-o", tmp_path / "single.jpg", env=no_torch_env)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "single.jpg").size == (128, 96)

    result = cli("process", tmp_path / "in", "-o", tmp_path / "batch", env=no_torch_env)
    assert result.returncode == 0, result.stderr
    assert visible_files(tmp_path / "batch") == ["photo.jpg", "second.png", "tiledehaze-report.json"]

    code = ("import sys, numpy as np, tiledehaze; out = tiledehaze.restore(np.full((40, 50, 3), 180, np.uint8)); "
            "print(out.shape, out.dtype, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=no_torch_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(40,", "50,", "3)", "uint8", "False"]

    result = cli("eval", "--hazy", tmp_path / "in", "--model", "aodnet", "--out", tmp_path / "eval", env=no_torch_env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "eval" / "report.json").is_file()

    from tiledehaze.models.aodnet import DEFAULT_WEIGHTS

    result = cli("export", "--weights", DEFAULT_WEIGHTS, "--onnx", tmp_path / "m.onnx", env=no_torch_env)
    assert result.returncode == 0, result.stderr
    ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("args,extra", [
    (["train", "--epochs", "1"], "tiledehaze[train]"),
    (["process", "{photo}", "-o", "{out}", "--backend", "torch"], "tiledehaze[torch]"),
])
def test_torch_features_without_torch_name_the_extra_in_one_line(tmp_path, no_torch_env, make_photo, args, extra):
    photo = make_photo(tmp_path / "photo.jpg")
    args = [a.format(photo=photo, out=tmp_path / "out.jpg") for a in args]
    line = one_error_line(cli(*args, env=no_torch_env, cwd=tmp_path))
    assert extra in line and "torch" in line
    assert visible_files(tmp_path) == ["photo.jpg"]


# ---------------------------------------------------------------------------- one line per error

@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only file system (a tmpfs mounted read-only); skipped where mounting is not allowed."""
    target = tmp_path / "readonly"
    target.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(target)], capture_output=True,
                                 text=True)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip() or 'not permitted'}")
    yield target
    subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("name", ["out.jpg", "out.tif"])
def test_a_single_file_into_a_read_only_folder_is_one_line(tmp_path, readonly_dir, make_photo, weights_file, name):
    photo = make_photo(tmp_path / "photo.tif")
    before = photo.read_bytes()
    result = cli("process", photo, "-o", readonly_dir / name, "--weights", weights_file)
    line = one_error_line(result)
    assert result.returncode == 3 and "read-only" in line
    assert photo.read_bytes() == before


def test_a_batch_into_a_read_only_folder_is_one_line(tmp_path, readonly_dir, make_photo, weights_file):
    make_photo(tmp_path / "in" / "a.png")
    result = cli("process", tmp_path / "in", "-o", readonly_dir, "--weights", weights_file)
    assert result.returncode == 3 and "read-only" in one_error_line(result)


def test_a_tiff_with_one_damaged_tile_prints_one_line_and_nothing_else(tmp_path):
    """zarr decodes a band's tiles concurrently; the reads still in flight must not speak at exit."""
    src = tmp_path / "damaged.tif"
    tifffile.imwrite(src, smooth_image(3072, 3072, 3, np.uint8), tile=(256, 256), compression="zstd",
                     photometric="rgb")
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        offset, count = tif.pages.first.dataoffsets[3], tif.pages.first.databytecounts[3]
    data[offset + 8:offset + count] = np.random.default_rng(0).integers(0, 256, count - 8, np.uint8).tobytes()
    src.write_bytes(bytes(data))
    line = one_error_line(cli("process", src, "-o", tmp_path / "out.tif"))
    assert "damaged TIFF data" in line
    assert visible_files(tmp_path) == ["damaged.tif"]


class _RunsCode:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("save", ["torch", "pickle"])
def test_an_unsafe_checkpoint_is_refused_in_one_line_with_how_to_convert_it(tmp_path, make_photo, save):
    photo = make_photo(tmp_path / "photo.jpg")
    weights, marker = tmp_path / "model.pt", tmp_path / "code-ran"
    payload = {"conv1.weight": _RunsCode(marker)}
    if save == "torch":
        import torch

        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload))
    line = one_error_line(cli("process", photo, "-o", tmp_path / "out.jpg", "--weights", weights))
    assert "not a safe checkpoint" in line and "safetensors" in line and "weights_only" in line
    assert not marker.exists()
    assert visible_files(tmp_path) == ["model.pt", "photo.jpg"]


@pytest.mark.parametrize("image,words", [
    ([[10, 20], [30, 40]], "numpy array"),
    ("photo.jpg", "process_file"),
    (np.zeros((32, 32, 3), np.int64), "int64"),
    (np.zeros((0, 32, 3), np.uint8), "no pixels"),
    (np.zeros((32, 32, 7), np.uint8), "7 channels"),
    (np.full((32, 32), -0.5, np.float64), "[0, 1]"),
])
def test_restore_refuses_unusable_arrays_with_a_clear_input_error(image, words):
    with pytest.raises(tiledehaze.InputError, match=re.escape(words)) as info:
        tiledehaze.restore(image)
    assert "\n" not in str(info.value)


def test_a_float_image_scaled_0_to_255_is_refused_naming_the_range_and_restored_when_given_it():
    """A float array outside [0, 1] is an InputError naming the range, never a white image."""
    image = smooth_image(64, 80, 3, np.float32) * np.float32(255)
    with pytest.raises(tiledehaze.InputError, match=re.escape("[0, 1]")) as info:
        tiledehaze.restore(image, model="dcp")
    assert "input_range" in str(info.value) and "\n" not in str(info.value)
    out = tiledehaze.restore(image, model="dcp", input_range=(0, 255))
    assert out.dtype == np.float32 and out.std() > 5 and out.max() > 50


def test_export_without_weights_exports_the_shipped_model(tmp_path):
    import onnx

    from tiledehaze.models import DEFAULT_MODEL, model_entry
    from tiledehaze.models.aodnet import read_weights

    result = cli("export", "--onnx", tmp_path / "shipped.onnx")
    assert result.returncode == 0, result.stderr
    assert "matches the reference" in result.stdout
    graph = onnx.load(str(tmp_path / "shipped.onnx"))
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in graph.graph.initializer}
    shipped = read_weights(model_entry(DEFAULT_MODEL).default_weights)
    assert all(np.array_equal(stored[name], value) for name, value in shipped.items())


# ---------------------------------------------------------------------------- Ctrl-C

def interrupt(args: list, ready, timeout: float = 240) -> subprocess.CompletedProcess:
    """Start the CLI, wait until ``ready()``, then press Ctrl-C: SIGINT to its whole process group."""
    # a background job of a non-interactive shell inherits SIGINT ignored: give the CLI the terminal's default
    proc = subprocess.Popen([sys.executable, "-m", "tiledehaze.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, "finished or stuck before it could be interrupted"
        time.sleep(0.05)
    time.sleep(0.5)  # a moment more: what made it ready is recorded
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_interrupted_cleanly(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["tiledehaze: interrupted"]


def test_ctrl_c_on_a_single_file_leaves_nothing_behind(tmp_path, weights_file):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, smooth_image(3000, 1500, 3, np.uint8), photometric="rgb")
    result = interrupt(["process", src, "-o", tmp_path / "out.tif", "--weights", weights_file, "--tile", "128", "-q"],
                       ready=lambda: any(p.name.startswith(".out.tif") for p in tmp_path.iterdir()))
    assert_interrupted_cleanly(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


@pytest.mark.parametrize("workers", [None, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_on_a_batch_prints_the_summary_so_far_and_leaves_only_whole_outputs(tmp_path, weights_file,
                                                                                   make_photo, workers):
    for i in range(8):
        make_photo(tmp_path / "in" / f"p{i}.png", 480, 640, seed=i)
    out = tmp_path / "out"
    args = ["process", tmp_path / "in", "-o", out, "--weights", weights_file, "--tile", "128", "--quiet"]
    result = interrupt(args + (["--workers", str(workers)] if workers else []),
                       ready=lambda: any(p.suffix == ".png" for p in out.glob("[!.]*")))
    assert_interrupted_cleanly(result)
    summary = re.search(r"^(\d+) done, 0 skipped \(up to date\), 0 failed", result.stdout, re.M)
    assert summary and 1 <= int(summary[1]) < 8, result.stdout
    assert "run the same command again" in result.stdout
    outputs = [p for p in out.iterdir() if p.suffix == ".png"]
    assert not [p for p in out.iterdir() if ".tiledehaze-tmp-" in p.name]
    for path in outputs:  # every output there is whole
        assert Image.open(path).convert("RGB").size == (640, 480)
    rerun = cli(*args)
    assert rerun.returncode == 0 and re.match(rf"{8 - int(summary[1])} done", rerun.stdout), rerun.stdout


# ---------------------------------------------------------------------------- progress

def test_no_progress_noise_in_logs_for_short_runs(tmp_path, make_photo, weights_file):
    photo = make_photo(tmp_path / "photo.png")
    result = cli("process", photo, "--weights", weights_file)
    assert result.returncode == 0 and result.stderr == ""


def test_progress_in_a_log_is_plain_lines_and_quiet_silences_it(tmp_path, make_photo, weights_file):
    photo = make_photo(tmp_path / "photo.png", 300, 400)
    env = dict(os.environ, TILEDEHAZE_PROGRESS_EVERY="0")
    result = cli("process", photo, "--weights", weights_file, "--tile", "64", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(re.fullmatch(r"photo\.png: \d+/\d+ tiles, [\d.]+ tiles/s, ETA [\d:?]+", x) for x in lines)
    assert "\r" not in result.stderr
    result = cli("process", photo, "--weights", weights_file, "--tile", "64", "--overwrite", "--quiet", env=env)
    assert result.returncode == 0 and result.stderr == ""

    result = cli("process", tmp_path, "-o", tmp_path / "out", "--weights", weights_file, env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d/\d files, [\d.]+/[\d.]+ MP, [\d.]+ MP/s, ETA", result.stderr, re.M), result.stderr


def test_progress_on_a_terminal_is_a_bar(tmp_path, make_photo, weights_file):
    photo = make_photo(tmp_path / "photo.png", 600, 800)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns
    proc = subprocess.Popen([sys.executable, "-m", "tiledehaze.cli", "process", str(photo), "--weights", weights_file,
                             "--tile", "64"], stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    assert b"\r" in seen and re.search(rb"\d+/\d+ \[", seen), seen[-300:]


def test_training_progress_in_a_log_is_plain_lines(tmp_path):
    env = dict(os.environ, TILEDEHAZE_PROGRESS_EVERY="0")
    result = cli("train", "--epochs", "1", "--threads", "1", "--out", tmp_path / "run", "--set", "patch_size=16",
                 "--set", "samples_per_epoch=32", "--set", "train_batch_size=8", "--set", "val_batch_size=4",
                 "--set", "data.clean_images=[astronaut, coffee]", "--set", "data.val_images=[coffee]",
                 "--set", "data.val_samples=4", "--set", "data.val_patch_size=24", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(re.fullmatch(r"epoch 1/1: \d/4 steps, [\d.]+ steps/s, ETA [\d:?]+, loss [\d.]+", x)
                         for x in lines), result.stderr
