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

from tiledehaze.errors import ConfigError
from tiledehaze.models import srcnn
from tiledehaze.train.data import JpegDegradation

#: layout -> (conv2 kernel, per-layer padding, numpy padding mode): the seeds' and yjn870/SRCNN-pytorch's
LAYOUTS = {"9-1-5": (1, (2, 2, 2), "edge"), "9-5-5": (5, (4, 2, 2), "constant")}


def authors_state_dict(layout: str, seed: int = 0, channels: int = 1) -> dict[str, torch.Tensor]:
    """Random weights with the key names and shapes of the authors' definitions (conv1/conv2/conv3)."""
    k2 = LAYOUTS[layout][0]
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv1": (64, channels, 9, 9), "conv2": (32, 64, k2, k2), "conv3": (channels, 32, 5, 5)}
    out = {}
    for name, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3]
        out[f"{name}.weight"] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        out[f"{name}.bias"] = torch.rand(shape[0], generator=g) * 0.1
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
    module = srcnn.SRCNN.from_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    assert module.layout.name == layout
    assert module.layout.padding_mode == ("replicate" if layout == "9-1-5" else "zeros")
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
    module = srcnn.SRCNN.from_state_dict(state)
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
    with pytest.raises(ConfigError) as err:
        srcnn.SRCNN.from_state_dict(broken, "checkpoint.pth")
    message = str(err.value)
    assert "\n" not in message and message.startswith("checkpoint.pth: ")
    assert "missing conv3.bias" in message and "unexpected conv4.weight" in message
    assert "mis-shaped conv1.bias (32,) (expected (64,))" in message
    with pytest.raises(ConfigError, match="not SRCNN weights"):
        srcnn.SRCNN.from_state_dict({"enc1.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="NaN or inf"):
        srcnn.SRCNN.from_state_dict({**state, "conv2.weight": state["conv2.weight"] * float("nan")})


def test_training_starts_from_the_identity():
    """The first weights copy the input (away from the 2-pixel border the replicate padding moves)."""
    module = srcnn.SRCNN.from_state_dict({k: torch.from_numpy(v) for k, v in srcnn.init_weights(0).items()})
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
    graph = srcnn.to_onnx(srcnn.SRCNN.from_state_dict(state))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    y = np.random.default_rng(6).random((2, 1, 29, 41)).astype(np.float32)
    out = session.run(None, {session.get_inputs()[0].name: y})[0]
    for n in range(2):
        np.testing.assert_allclose(out[n], reference(state, layout, y[n]), atol=2e-5)
