"""Any torch network runs as a tiledehaze model, fed as its spec says, on torch and ONNX Runtime,
and its tiles reproduce the whole image where the spec promises it."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiledehaze
from tiledehaze.errors import BackendUnavailable
from tiledehaze.models.adapter import NetworkModel
from tiledehaze.models.checkpoint import load_checkpoint
from tiledehaze.models.spec import ModelSpec
from tiledehaze.options import RunOptions

from .images import smooth_image

# the test's own ONNX builder uses torch's TorchScript exporter, which notes that it is the older one
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Local(torch.nn.Module):
    """Two zero-padded 3x3 convolutions: receptive-field radius 2."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.a = torch.nn.Conv2d(channels, 6, 3, padding=1)
        self.b = torch.nn.Conv2d(6, channels, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Halves(torch.nn.Module):
    """Space-to-depth by 4 around a 1x1 convolution: sizes must be multiples of 4."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.mix = torch.nn.Conv2d(48, 48, 1)

    def forward(self, x):
        assert x.shape[2] % 4 == 0 and x.shape[3] % 4 == 0, x.shape
        return F.pixel_shuffle(self.mix(F.pixel_unshuffle(x, 4)), 4)


class NoOnnx(Local):
    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            raise RuntimeError("this operator has no ONNX form")
        return super().forward(x)


def _model(network, spec, backend="torch", **kwargs):
    return NetworkModel("toy", network, spec, checkpoint=None, options=RunOptions(model="dcp", backend=backend),
                        **kwargs)


def _forward(network, x):
    """The network on an NHWC numpy array, written without the adapter."""
    with torch.no_grad():
        return network(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


LUMA = ModelSpec(colour="luma", channels=1, value_range=(-1.0, 1.0), activation="tanh", halo=2)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_luma_network_sees_y_in_its_range_and_keeps_the_chroma(backend):
    net = Local(1)
    rgb = smooth_image(40, 52, 3, np.float32)
    y = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    expected_y = (np.tanh(_forward(net, (2 * y - 1)[None, ..., None])[0, ..., 0]) + 1) / 2
    # full-range BT.601 YCbCr with Cb, Cr kept, back to RGB
    cb = (rgb[..., 2] - y) * 0.564 + 0.5
    cr = (rgb[..., 0] - y) * 0.713 + 0.5
    expected = np.stack([expected_y + 1.403 * (cr - 0.5),
                         expected_y - 0.344 * (cb - 0.5) - 0.714 * (cr - 0.5),
                         expected_y + 1.773 * (cb - 0.5)], -1)
    out = _model(net, LUMA, backend).run(rgb[None], {})[0]
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=2e-3)
    assert out.dtype == np.float32 and out.shape == rgb.shape


def test_rgb_network_with_sigmoid_output():
    net = Local(3)
    rgb = smooth_image(30, 34, 3, np.float32, seed=2)
    spec = ModelSpec(activation="sigmoid", halo=2)
    expected = 1 / (1 + np.exp(-_forward(net, rgb[None])[0]))
    np.testing.assert_allclose(_model(net, spec).run(rgb[None], {})[0], expected, atol=1e-5)


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.full_like(x, 2.0)


def test_clamp_limits_the_luma_before_the_chroma_goes_back_and_linear_does_not():
    rgb = np.array([[[[0.2, 0.4, 0.6]]]], np.float32)
    y = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    spec = dict(colour="luma", channels=1)
    clamped = _model(Constant(), ModelSpec(**spec, activation="clamp")).run(rgb, {})
    linear = _model(Constant(), ModelSpec(**spec, activation="linear")).run(rgb, {})
    np.testing.assert_allclose(clamped[0, 0, 0], [0.2 + 1 - y, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(linear[0, 0, 0], [1.0, 1.0, 1.0])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_sizes_are_padded_by_reflection_to_the_multiple_and_cropped(backend):
    net = Halves()
    rgb = smooth_image(37, 42, 3, np.float32, seed=3)
    padded = np.pad(rgb, ((0, 3), (0, 2), (0, 0)), mode="reflect")  # up to 40 x 44, bottom and right
    expected = np.clip(_forward(net, padded[None])[0, :37, :42], 0, 1)
    spec = ModelSpec(size_multiple=4, align=4)
    out = _model(net, spec, backend).run(rgb[None], {})[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_tiles_of_an_exact_network_reproduce_the_whole_image(backend):
    model = _model(Local(1, seed=4), LUMA, backend)
    img = smooth_image(150, 170, 3, np.uint8, seed=5)
    whole = tiledehaze.restore(img, model=model, tile=None)
    tiled = tiledehaze.restore(img, model=model, tile=48)
    assert np.array_equal(tiled, whole)
    assert not np.array_equal(whole, img)


class Blocks(torch.nn.Module):
    """A 3x3 convolution, then 4x4 blocks mixed: sizes multiples of 4, exact only on 4-aligned tiles."""

    def __init__(self):
        super().__init__()
        self.local, self.blocks = Local(3, seed=6), Halves()

    def forward(self, x):
        return self.blocks(self.local(x))


def test_aligned_tiles_of_a_network_that_needs_a_size_multiple_reproduce_the_whole_image():
    model = _model(Blocks(), ModelSpec(size_multiple=4, align=4, halo=8))
    img = smooth_image(147, 181, 3, np.uint8, seed=7)  # neither side a multiple of 4: the edge tiles are padded
    whole = tiledehaze.restore(img, model=model, tile=None)
    tiled = tiledehaze.restore(img, model=model, tile=64)
    assert np.array_equal(tiled, whole)
    shifted = _model(Blocks(), ModelSpec(size_multiple=4, align=1, halo=8))  # origins off the 4 px grid
    assert not np.array_equal(tiledehaze.restore(img, model=shifted, tile=64), whole)


def test_an_onnx_builder_the_network_gives_is_used():
    calls = []

    def builder(module):
        calls.append(module)
        import io

        buf = io.BytesIO()
        axes = {0: "n", 2: "h", 3: "w"}
        torch.onnx.export(module, (torch.zeros(1, 1, 16, 16),), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes, "y": axes})
        return buf.getvalue()

    net = Local(1)
    model = _model(net, LUMA, "onnxruntime", onnx_builder=builder)
    assert calls == [net] and "onnxruntime" in model.describe()
    rgb = smooth_image(20, 24, 3, np.float32)
    np.testing.assert_allclose(model.run(rgb[None], {}), _model(net, LUMA).run(rgb[None], {}), atol=1e-5)


def test_a_network_without_an_onnx_form_runs_on_torch_under_auto_and_is_refused_on_onnxruntime():
    assert "torch" in _model(NoOnnx(1), LUMA, "auto").describe()
    with pytest.raises(BackendUnavailable, match="cannot be exported to ONNX.*--backend torch") as err:
        _model(NoOnnx(1), LUMA, "onnxruntime")
    assert "\n" not in str(err.value)


def test_fp16_on_the_cpu_is_refused_in_one_line_that_says_what_works():
    from tiledehaze.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16 on a GPU only.*leave --precision out") as err:
        NetworkModel("toy", Local(1), LUMA, checkpoint=None,
                     options=RunOptions(model="dcp", backend="auto", precision="fp16", device="cpu"))
    assert "\n" not in str(err.value)


def test_a_slow_model_on_the_cpu_logs_its_time_before_it_starts(caplog):
    model = _model(Local(1), ModelSpec(colour="luma", channels=1, halo=2, speed="slow (~0.005 MP/s)"))
    with caplog.at_level(logging.WARNING, logger="tiledehaze.engine"):
        tiledehaze.restore(smooth_image(200, 300, 3, np.uint8), model=model)
        tiledehaze.restore(smooth_image(20, 30, 3, np.uint8), model=model)  # a fraction of a second: no note
    (record,) = [r for r in caplog.records if "MP/s" in r.getMessage()]
    assert "toy on the CPU: 0.1 MP" in record.getMessage() and "roughly 12 s" in record.getMessage()


def test_the_checkpoint_digest_travels_with_the_model(tmp_path):
    net = Local(1)
    path = tmp_path / "toy.pth"
    torch.save({"params": net.state_dict()}, path)
    ckpt = load_checkpoint(path)
    model = NetworkModel("toy", net, LUMA, checkpoint=ckpt, options=RunOptions(model="dcp", backend="torch"))
    assert model.sha256 == ckpt.sha256 and len(model.sha256) == 64
