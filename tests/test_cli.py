"""The command line: writes atomically, never touches its input, answers bad input in one line."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import tiledehaze
from tiledehaze.cli import main

from .images import smooth_image


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tiledehaze.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_image(200, 260, 3, np.uint8)).save(path)
    return path


def test_process_writes_the_default_output_beside_the_input(photo, weights_path):
    result = _run("process", photo, "--weights", weights_path)
    assert result.returncode == 0, result.stderr
    out = photo.with_name("photo_dehazed.png")
    assert out.exists() and "MP/s" in result.stdout
    assert sorted(p.name for p in photo.parent.iterdir()) == ["photo.png", "photo_dehazed.png"]


def test_existing_output_is_kept_unless_overwrite(photo, weights_path, capsys):
    out = photo.with_name("out.png")
    out.write_bytes(b"precious")
    assert main(["process", str(photo), "-o", str(out), "--weights", str(weights_path)]) != 0
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    assert main(["process", str(photo), "-o", str(out), "--weights", str(weights_path), "--overwrite"]) == 0
    assert Image.open(out).size == (260, 200)


def test_the_input_is_never_overwritten(photo, weights_path, capsys):
    before = _digest(photo)
    for target in (photo, photo.parent / "." / photo.name):
        assert main(["process", str(photo), "-o", str(target), "--overwrite", "--weights", str(weights_path)]) != 0
    assert "is the input" in capsys.readouterr().err
    assert _digest(photo) == before


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),
    (b"II*\x00" + b"\x00" * 20, "TIFF"),
    (b"plain text, not a picture", "not a readable image"),
])
def test_bad_files_get_one_line_and_a_nonzero_exit(tmp_path, content, message):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(content)
    result = _run("process", bad)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert bad.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tif"]


def test_missing_input_and_bad_options_are_refused(tmp_path, photo, weights_path):
    assert "no such file" in _run("process", tmp_path / "nope.tif").stderr
    result = _run("process", photo, "-o", tmp_path / "out.xyz")
    assert result.returncode != 0 and "unknown output format" in result.stderr
    result = _run("process", photo, "--backend", "quantum", "--weights", weights_path)
    assert result.returncode != 0 and "unknown backend" in result.stderr and "Traceback" not in result.stderr


def test_truncated_tiff_leaves_nothing_behind(tmp_path, weights_path):
    src = tmp_path / "cut.tif"
    tifffile.imwrite(src, smooth_image(600, 600, 3, np.uint8), tile=(128, 128), compression="zlib", photometric="rgb")
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    result = _run("process", src, "-o", tmp_path / "out.tif", "--weights", weights_path, "--tile", "128")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]


def test_interrupt_midway_leaves_no_partial_output(tmp_path, weights_path):
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, smooth_image(700, 500, 3, np.uint8), photometric="rgb")

    def interrupt(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiledehaze.process_file(src, dst, weights=weights_path, tile=128, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_help_shows_examples():
    result = _run("process", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "--overwrite" in result.stdout


def test_info_lists_backends_and_models():
    result = _run("info")
    assert result.returncode == 0 and "aodnet" in result.stdout and "onnxruntime" in result.stdout


def test_sigterm_midway_leaves_no_partial_output(tmp_path, weights_path):
    import signal
    import time

    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, smooth_image(3000, 1500, 3, np.uint8), photometric="rgb")
    proc = subprocess.Popen([sys.executable, "-m", "tiledehaze.cli", "process", str(src), "-o", str(dst),
                             "--weights", str(weights_path), "--tile", "128", "--no-progress"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.tif") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_progress_bar_shows_tiles_rate_and_eta_on_a_terminal(tmp_path, weights_path):
    import fcntl
    import os
    import pty
    import re
    import struct
    import termios

    src = tmp_path / "photo.png"
    Image.fromarray(smooth_image(600, 700, 3, np.uint8)).save(src)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-m", "tiledehaze.cli", "process", str(src), "--weights",
                             str(weights_path), "--tile", "256"], stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closed: the process has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\b[0-9]/9\b", text)  # tiles done of the 3 x 3
    assert "tile/s" in text  # rate
    assert re.search(r"\[\d\d:\d\d<", text)  # elapsed < remaining (the ETA)


def test_no_progress_bar_when_stderr_is_not_a_terminal(photo, weights_path):
    result = _run("process", photo, "--weights", weights_path)
    assert result.returncode == 0 and result.stderr == ""


def test_the_readme_sample_command_dehazes_the_shipped_sample(tmp_path):
    import cv2

    sample = Path(__file__).resolve().parents[1] / "samples" / "halong_bay.jpg"
    dst = tmp_path / "halong_bay_dehazed.jpg"
    assert main(["process", str(sample), "-o", str(dst), "--no-progress"]) == 0

    def haze_score(path) -> float:  # the mean 15x15 dark channel, lower is clearer
        rgb = np.asarray(Image.open(path), np.float32) / 255
        return float(cv2.erode(rgb.min(axis=2), np.ones((15, 15), np.uint8)).mean())

    assert Image.open(dst).size == Image.open(sample).size
    assert haze_score(dst) < 0.8 * haze_score(sample)


def test_tile_none_runs_the_whole_image_in_one_pass(tmp_path, weights_path, ref_weights):
    from . import reference

    img = smooth_image(150, 170, 3, np.uint8, seed=12)
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(img).save(src)
    tiles = []
    tiledehaze.process_file(src, tmp_path / "api.png", weights=weights_path, tile=None, on_plan=tiles.append)
    assert tiles == [1]
    assert main(["process", str(src), "-o", str(dst), "--tile", "none", "--weights", str(weights_path),
                 "--no-progress"]) == 0
    reference.assert_equal_to_rounding(np.asarray(Image.open(dst)), reference.restore(ref_weights, img))
