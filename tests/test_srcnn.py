"""SRCNN: both layouts load from their authors' files and match an independent forward pass; tiles are exact.

The reference below is written from the layouts' definitions in float64 numpy (explicit
padding, then sliding-window correlation), never through tiledehaze's module.
"""

import io

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

import tiledehaze
from tiledehaze.cli import main
from tiledehaze.errors import ConfigError
from tiledehaze.models import srcnn
from tiledehaze.models.srcnn_torch import SRCNN
from tiledehaze.train.data import JpegDegradation

from .images import smooth_image

#: layout -> (conv2 kernel, per-layer padding, numpy padding mode): the seeds' and yjn870/SRCNN-pytorch's
LAYOUTS = {"9-1-5": (1, (2, 2, 2), "edge"), "9-5-5": (5, (4, 2, 2), "constant")}


def authors_state_dict(layout: str, seed: int = 0, channels: int = 1) -> dict[str, torch.Tensor]:
    """Random weights with the key names and shapes of the authors' definitions (conv1/conv2/conv3).

    He-normal kernels with small biases. Like a trained restorer, the network stays near its
    input: feature 0 of conv1 and conv2 carries the input's centre tap to conv3, whose other
    taps are scaled down, so the output follows the image with a random correction of a few percent.
    """
    k2 = LAYOUTS[layout][0]
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv1": (64, channels, 9, 9), "conv2": (32, 64, k2, k2), "conv3": (channels, 32, 5, 5)}
    out = {}
    for name, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3]
        weight = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        if name == "conv3":
            weight *= 0.1
        else:
            weight[0] = 0.0
        weight[0, 0] = 0.0
        weight[0, 0, shape[2] // 2, shape[3] // 2] = 1.0
        out[f"{name}.weight"] = weight
        out[f"{name}.bias"] = torch.rand(shape[0], generator=g) * 0.02
    return out


def reference(state: dict[str, torch.Tensor], layout: str, image: np.ndarray) -> np.ndarray:
    """The network on one (C, H, W) image in float64: pad, correlate, add the bias, ReLU (not after conv3)."""
    _, pads, mode = LAYOUTS[layout]
    x = np.asarray(image, np.float64)
    for i, p in enumerate(pads, 1):
        w = state[f"conv{i}.weight"].double().numpy()
        b = state[f"conv{i}.bias"].double().numpy()
        windows = sliding_window_view(np.pad(x, ((0, 0), (p, p), (p, p)), mode=mode), w.shape[-2:], axis=(1, 2))
        x = np.einsum("chwij,ocij->ohw", windows, w) + b[:, None, None]
        x = np.maximum(x, 0.0) if i < 3 else x
    return x


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_authors_checkpoints_load_and_match_the_reference(tmp_path, layout):
    """Both layouts save a bare state dict (torch.save(model.state_dict())); the layout is read from the shapes."""
    state = authors_state_dict(layout)
    path = tmp_path / "checkpoint.pth"
    torch.save(state, path)
    weights = srcnn.load_weights(path)
    module = SRCNN.from_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    assert module.layout.name == layout
    assert module.layout.padding_mode == {"9-1-5": "replicate", "9-5-5": "zeros"}[layout]
    y = np.random.default_rng(1).random((1, 37, 52))
    with torch.no_grad():
        out = module(torch.from_numpy(y).float()[None])[0].double().numpy()
    expected = reference(state, layout, y)
    assert out.shape == y.shape  # the output has the input's size
    np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize("layout, halo", [("9-1-5", 6), ("9-5-5", 8)])
def test_the_halo_is_the_receptive_field_radius(layout, halo):
    """A crop with ``halo`` pixels of context gives the whole image's output inside; one pixel less does not."""
    state = authors_state_dict(layout, seed=2)
    module = SRCNN.from_state_dict(state)
    assert module.layout.halo == halo
    y = torch.rand(1, 1, 60, 70, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = module(y)[0, 0]
        for context, exact in ((halo, True), (halo - 1, False)):
            crop = module(y[..., 20 - context:40 + context, 25 - context:45 + context])[0, 0]
            inside = crop[context:context + 20, context:context + 20]
            assert torch.allclose(inside, whole[20:40, 25:45], atol=1e-6) is exact


def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line_naming_the_keys(tmp_path):
    state = authors_state_dict("9-1-5")
    broken = {**state, "conv1.bias": torch.zeros(32), "conv4.weight": torch.zeros(1)}
    del broken["conv3.bias"]
    path = tmp_path / "checkpoint.pth"
    torch.save(broken, path)
    with pytest.raises(ConfigError) as err:
        srcnn.load_weights(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: not SRCNN weights: ")
    assert "missing conv3.bias" in message and "unexpected conv4.weight" in message
    assert "conv1.bias is [32], expected [64]" in message
    with pytest.raises(ConfigError, match="not SRCNN weights: missing conv1.weight"):
        SRCNN.from_state_dict({"enc1.weight": torch.zeros(1)})
    torch.save({**state, "conv2.weight": state["conv2.weight"] * float("nan")}, path)
    with pytest.raises(ConfigError, match="conv2.weight holds NaN or inf"):
        srcnn.load_weights(path)


def test_training_starts_from_the_identity():
    """The first weights copy the input (away from the 2-pixel border the replicate padding moves)."""
    module = SRCNN.from_state_dict({k: torch.from_numpy(v) for k, v in srcnn.init_weights(0).items()})
    y = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = module(y)
    assert torch.allclose(out[..., 2:-2, 2:-2], y[..., 2:-2, 2:-2], atol=1e-6)


def test_the_degraded_input_is_the_luma_of_the_jpeg_pil_writes():
    """JpegDegradation: the clean patch saved by PIL at the quality asked for, both as BT.601 luma (H, W, 1)."""
    rng = np.random.default_rng(0)
    clean = np.clip(rng.random((48, 64, 3)) * 0.3 + np.linspace(0, 0.7, 64)[None, :, None], 0, 1).astype(np.float32)
    degraded, target = JpegDegradation(quality=20)(clean, rng)
    assert degraded.shape == target.shape == (48, 64, 1)
    clean8 = np.round(clean * 255).astype(np.uint8)
    np.testing.assert_allclose(target[..., 0], (clean8 @ [0.299, 0.587, 0.114]) / 255, atol=1e-6)
    buffer = io.BytesIO()
    Image.fromarray(clean8).save(buffer, "JPEG", quality=20)
    pil_luma = np.asarray(Image.open(buffer).convert("L"), np.float64)  # PIL rounds its L to 8 bits
    assert np.abs(degraded[..., 0] * 255 - pil_luma).max() <= 0.51
    # a lower quality degrades more; a shrink factor degrades more still
    errors = [np.mean((JpegDegradation(q, s)(clean, rng)[0] - target) ** 2) for q, s in ((90, 1.0), (20, 1.0), (20, 2.0))]
    assert errors[0] < errors[1] < errors[2]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_onnx_graph_matches_the_reference(layout):
    import onnxruntime as ort

    state = authors_state_dict(layout, seed=5)
    graph = srcnn.to_onnx(SRCNN.from_state_dict(state))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    y = np.random.default_rng(6).random((2, 1, 29, 41)).astype(np.float32)
    out = session.run(None, {session.get_inputs()[0].name: y})[0]
    for n in range(2):
        np.testing.assert_allclose(out[n], reference(state, layout, y[n]), atol=2e-5)


def engine_reference(state: dict[str, torch.Tensor], layout: str, rgb: np.ndarray) -> np.ndarray:
    """What the engine promises: the network on full-range BT.601 luma (studio swing for the 9-5-5
    port), the chroma kept, so every channel moves by the change of luma; clipped to [0, 1]."""
    y = np.asarray(rgb, np.float64) @ [0.299, 0.587, 0.114]
    low, high = (0.0, 1.0) if layout == "9-1-5" else (16 / 255, 235 / 255)
    restored = (reference(state, layout, (low + (high - low) * y)[None])[0] - low) / (high - low)
    return np.clip(rgb + (restored - y)[..., None], 0.0, 1.0)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_restore_runs_srcnn_on_luma_keeps_the_chroma_and_tiles_exactly(tmp_path, layout, backend):
    state = authors_state_dict(layout, seed=7)
    path = tmp_path / "checkpoint.pth"
    torch.save(state, path)
    rgb = 0.1 + 0.8 * smooth_image(90, 118, 3, np.float32, seed=8)
    expected = engine_reference(state, layout, rgb)
    change = expected - rgb  # a correction of a few percent, rarely clipped
    assert 0.005 < np.abs(change).mean() < 0.1 and ((expected <= 0) | (expected >= 1)).mean() < 0.01
    whole = tiledehaze.restore(rgb, model="srcnn", weights=path, tile=None, backend=backend)
    tiled = tiledehaze.restore(rgb, model="srcnn", weights=path, tile=40, backend=backend)
    np.testing.assert_allclose(whole, expected, atol=5e-5)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    grey = np.repeat(rgb[..., :1], 3, axis=2)  # grey stays grey
    out = tiledehaze.restore(grey, model="srcnn", weights=path, tile=40, backend=backend)
    assert np.abs(out - out[..., :1]).max() < 1e-6


def test_the_registry_describes_srcnn_by_the_checkpoint_it_loads(tmp_path):
    """The shipped layout's spec in the registry; a 9-5-5 port's checkpoint brings its own halo and range."""
    from tiledehaze.models import model_entry

    spec = model_entry("srcnn").spec
    assert (spec.colour, spec.channels, spec.tiling, spec.halo) == ("luma", 1, "exact", 6)
    path = tmp_path / "port.pth"
    torch.save(authors_state_dict("9-5-5"), path)
    model = tiledehaze.get_model(model="srcnn", weights=path)
    assert (model.halo, model.spec.value_range) == (8, (16 / 255, 235 / 255))


def test_the_command_line_runs_srcnn_and_finds_it_from_its_weights(tmp_path, capsys):
    from safetensors.torch import save_file

    state = authors_state_dict("9-1-5", seed=9)
    weights, seeds_file = tmp_path / "srcnn.safetensors", tmp_path / "checkpoint.pth"
    save_file(state, str(weights))
    torch.save(state, seeds_file)  # the seeds' own file: a bare state dict
    photo = tmp_path / "photo.png"
    Image.fromarray(smooth_image(64, 80, 3, np.uint8, seed=10)).save(photo)
    assert main(["process", str(photo), "--weights", str(weights), "-o", str(tmp_path / "a.png"), "-q"]) == 0
    assert main(["process", str(photo), "--model", "srcnn", "--weights", str(weights),
                 "-o", str(tmp_path / "b.png"), "-q"]) == 0
    assert main(["process", str(photo), "--weights", str(seeds_file), "-o", str(tmp_path / "c.png"), "-q"]) == 0
    a, b, c = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png", "c.png"))
    assert np.array_equal(a, b) and np.array_equal(a, c) and not np.array_equal(a, np.asarray(Image.open(photo)))


def test_a_srcnn_run_learns_from_jpeg_degraded_luma_and_its_weights_run_in_the_engine(tiny_config, tmp_path):
    from tiledehaze.models.aodnet import read_metadata
    from tiledehaze.train import config_hash, train

    result = train(tiny_config("model=srcnn"), out_dir=tmp_path / "q20")
    meta = read_metadata(tmp_path / "q20" / "last.safetensors")
    assert meta["format"] == "tiledehaze-srcnn-1" and meta["config_hash"] == result.config_hash
    model = tiledehaze.get_model("srcnn", weights=tmp_path / "q20" / "last.safetensors")
    assert (model.spec.colour, model.halo) == ("luma", 6)
    # the jpeg section makes the inputs: a higher quality leaves less to repair
    lighter = train(tiny_config("model=srcnn", "jpeg.quality=90", "num_epochs=1"), out_dir=tmp_path / "q90")
    assert lighter.hazy_psnr > result.hazy_psnr + 3
    assert config_hash(tiny_config("model=srcnn", "jpeg.quality=90")) != result.config_hash
    assert config_hash(tiny_config("jpeg.quality=90")) == config_hash(tiny_config())  # AOD-Net ignores it
    with pytest.raises(ConfigError, match="data.source 'synthetic'"):
        train(tiny_config("model=srcnn", "data.source=paired", "data.paired.root=."), out_dir=tmp_path / "p")


def test_batches_and_eval_run_srcnn_with_the_checkpoint_digest(tmp_path):
    import hashlib
    import json

    from tiledehaze.batch.manifest import MANIFEST_NAME
    from tiledehaze.evaluate import evaluate

    weights = tmp_path / "checkpoint.pth"
    torch.save(authors_state_dict("9-1-5", seed=11), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    clean, degraded = tmp_path / "clean", tmp_path / "degraded"
    clean.mkdir()
    degraded.mkdir()
    for i in range(2):
        image = smooth_image(48, 64, 3, np.uint8, seed=20 + i)
        Image.fromarray(image).save(clean / f"{i}.png")
        Image.fromarray(JpegDegradation(20).degrade(image)).save(degraded / f"{i}.png")
    report = tiledehaze.process_batch([degraded], tmp_path / "out", model="srcnn", weights=weights)
    assert len(report.done) == 2
    for i in range(2):
        expected = tiledehaze.restore(np.asarray(Image.open(degraded / f"{i}.png")), model="srcnn", weights=weights)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{i}.png")), expected)
    manifest = (tmp_path / "out" / MANIFEST_NAME).read_text()
    assert [json.loads(line)["weights_sha256"] for line in manifest.splitlines() if '"done"' in line] == [digest] * 2
    scores = evaluate(degraded, clean, models=["srcnn"], model_options={"srcnn": {"weights": weights}}, grids=False)
    assert scores.settings["weights_sha256"] == {"srcnn": digest}
    assert np.isfinite(scores.summary()["srcnn"]["psnr"])


def test_the_shipped_weights_come_from_the_shipped_recipe_and_repair_a_held_out_jpeg():
    from tiledehaze.metrics import psnr
    from tiledehaze.models.aodnet import read_metadata
    from tiledehaze.train import config_hash, load_config
    from tiledehaze.train.data import load_builtin

    meta = read_metadata(srcnn.DEFAULT_WEIGHTS)
    assert meta["format"] == srcnn.FORMAT
    assert meta["config_hash"] == config_hash(load_config("configs/srcnn.yaml"))
    shipped = {k: torch.from_numpy(v) for k, v in srcnn.load_weights().items()}
    assert SRCNN.from_state_dict(shipped).layout == srcnn.seeds_layout()
    clean8 = np.round(np.asarray(load_builtin("coffee")[0]) * 255).astype(np.uint8)  # validation only
    degraded8 = JpegDegradation(20).degrade(clean8)
    restored8 = tiledehaze.restore(degraded8, model="srcnn")
    reference = srcnn.luma(clean8 / 255)
    # measured 29.64 -> 29.82 dB on this photograph (a model that changes nothing gains 0)
    assert psnr(reference, srcnn.luma(restored8 / 255)) > psnr(reference, srcnn.luma(degraded8 / 255)) + 0.1


def test_export_says_in_one_line_that_it_does_not_cover_srcnn(tmp_path, capsys):
    assert main(["export", "--weights", str(srcnn.DEFAULT_WEIGHTS), "--onnx", str(tmp_path / "srcnn.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds SRCNN weights; export covers AOD-Net and HazeNet" in err
    assert not (tmp_path / "srcnn.onnx").exists()
