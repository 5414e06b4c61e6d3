"""HINet: the authors' checkpoints load and match an independent forward pass; tiles keep their promise.

The checkpoints are built here from the layout of the authors' definition (megvii-model/HINet,
``basicsr/models/archs/hinet_arch.py``): the same names and shapes, random values, saved as
BasicSR saves them (``{'params': ...}``, or ``{'params_ema': ...}``). The reference forward pass
is written with ``torch.nn.functional`` over that dictionary in float64, without tiledehaze's
module; its local statistics (TLC) use an integral image, as TLC does, not the module's pooling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiledehaze import restore
from tiledehaze.cli import main
from tiledehaze.engine import make_plan
from tiledehaze.errors import BackendUnavailable, ConfigError
from tiledehaze.models import create_model, model_entry
from tiledehaze.models.hinet import DEFAULT_BASE_SIZE, HINet, from_state_dict, receptive_radius, spec_for, window_at


def authors_layout(width: int, depth: int = 5, hin: tuple[int, ...] = (0, 1, 2, 3, 4),
                   cin: int = 3) -> dict[str, tuple]:
    """Parameter names and shapes of the authors' ``HINet(wf=width, depth=depth, hin_position_left/right)``."""
    shapes: dict[str, tuple] = {}

    def conv(name, co, ci, k, bias=True):
        shapes[f"{name}.weight"] = (co, ci, k, k)
        if bias:
            shapes[f"{name}.bias"] = (co,)

    def block(name, ci, co, *, down, csff, norm):
        conv(f"{name}.identity", co, ci, 1)
        conv(f"{name}.conv_1", co, ci, 3)
        conv(f"{name}.conv_2", co, co, 3)
        if down and csff:
            conv(f"{name}.csff_enc", co, co, 3)
            conv(f"{name}.csff_dec", co, co, 3)
        if norm:
            shapes[f"{name}.norm.weight"] = shapes[f"{name}.norm.bias"] = (co // 2,)
        if down:
            conv(f"{name}.downsample", co, co, 4, bias=False)

    conv("conv_01", width, cin, 3)
    conv("conv_02", width, cin, 3)
    prev = width
    for i in range(depth):
        c, down = width * 2 ** i, i + 1 < depth
        block(f"down_path_1.{i}", prev, c, down=down, csff=False, norm=i in hin)
        block(f"down_path_2.{i}", prev, c, down=down, csff=down, norm=i in hin)
        prev = c
    for j, i in enumerate(reversed(range(depth - 1))):
        c = width * 2 ** i
        for s in (1, 2):
            shapes[f"up_path_{s}.{j}.up.weight"], shapes[f"up_path_{s}.{j}.up.bias"] = (prev, c, 2, 2), (c,)
            block(f"up_path_{s}.{j}.conv_block", prev, c, down=False, csff=False, norm=False)
            conv(f"skip_conv_{s}.{j}", c, c, 3)
        prev = c
    conv("sam12.conv1", width, width, 3)
    conv("sam12.conv2", 3, width, 3)
    conv("sam12.conv3", width, 3, 3)
    conv("cat12", width, 2 * width, 1)
    conv("last", cin, width, 3)
    return shapes


def random_checkpoint(width: int, depth: int = 5, hin=(0, 1, 2, 3, 4), seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the authors' layout, scaled so that the output stays a picture (residual ~ 0.1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in authors_layout(width, depth, tuple(hin)).items():
        if name.endswith("norm.weight"):
            sd[name] = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            sd[name] = 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = shape[0 if name.endswith("up.weight") else 1] * shape[2] * shape[3]
            sd[name] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
    sd["last.weight"] *= 0.05
    return sd


# ---- the reference forward pass ------------------------------------------------------------------

def _local_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k x k windows kept inside the image (TLC: valid window means, replicate-padded)."""
    h, w = x.shape[-2:]
    k1, k2 = min(h, k), min(w, k)
    s = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    valid = (s[..., k1:, k2:] - s[..., :-k1, k2:] - s[..., k1:, :-k2] + s[..., :-k1, :-k2]) / (k1 * k2)
    ys = (torch.arange(h) - (k1 - 1) // 2).clamp(0, h - k1)
    xs = (torch.arange(w) - (k2 - 1) // 2).clamp(0, w - k2)
    return valid[..., ys[:, None], xs[None, :]]


def reference(sd: dict[str, torch.Tensor], image: np.ndarray, base_size: int | None = None) -> np.ndarray:
    """HINet's second-stage output for an (H, W, 3) image in float64, written from the paper and the
    authors' layout; ``base_size``: TLC's local statistics instead of instance normalisation."""
    p = {k: v.double() for k, v in sd.items()}
    depth = sum(1 for k in p if k.startswith("down_path_1.") and k.endswith(".conv_1.weight"))

    def conv(name, x, stride=1, pad=None):
        w = p[f"{name}.weight"]
        return F.conv2d(x, w, p.get(f"{name}.bias"), stride=stride, padding=w.shape[-1] // 2 if pad is None else pad)

    def hin_block(name, x, level, enc=None, dec=None):
        y = conv(f"{name}.conv_1", x)
        if f"{name}.norm.weight" in p:
            half = y.shape[1] // 2
            a = y[:, :half]
            if base_size is None:
                mean = a.mean((2, 3), keepdim=True)
                var = a.var((2, 3), unbiased=False, keepdim=True)
            else:
                k = (256 >> level) * base_size // 256
                mean = _local_mean(a, k)
                var = _local_mean(a * a, k) - mean ** 2
            a = (a - mean) / torch.sqrt(var + 1e-5) * p[f"{name}.norm.weight"].view(1, -1, 1, 1) \
                + p[f"{name}.norm.bias"].view(1, -1, 1, 1)
            y = torch.cat([a, y[:, half:]], 1)
        y = F.leaky_relu(conv(f"{name}.conv_2", F.leaky_relu(y, 0.2)), 0.2) + conv(f"{name}.identity", x)
        if enc is not None:
            y = y + conv(f"{name}.csff_enc", enc) + conv(f"{name}.csff_dec", dec)
        return y

    def unet(s, x, fuse=None):
        skips, outs = [], []
        for i in range(depth):
            x = hin_block(f"down_path_{s}.{i}", x, i, *(fuse[i] if fuse and i < depth - 1 else (None, None)))
            if i < depth - 1:
                skips.append(x)
                x = F.conv2d(x, p[f"down_path_{s}.{i}.downsample.weight"], stride=2, padding=1)
        for j in range(depth - 1):
            up = F.conv_transpose2d(x, p[f"up_path_{s}.{j}.up.weight"], p[f"up_path_{s}.{j}.up.bias"], stride=2)
            bridge = conv(f"skip_conv_{s}.{j}", skips[-1 - j])
            x = hin_block(f"up_path_{s}.{j}.conv_block", torch.cat([up, bridge], 1), 0)
            outs.append(x)
        return x, skips, outs

    img = torch.from_numpy(np.asarray(image, np.float64)).permute(2, 0, 1)[None]
    x1, encs, decs = unet(1, conv("conv_01", img))
    stage_one = conv("sam12.conv2", x1) + img
    sam = conv("sam12.conv1", x1) * torch.sigmoid(conv("sam12.conv3", stage_one)) + x1
    x2 = conv("cat12", torch.cat([conv("conv_02", img), sam], 1))
    x2, _, _ = unet(2, x2, [(encs[i], decs[-1 - i]) for i in range(depth - 1)])
    return (conv("last", x2) + img)[0].permute(1, 2, 0).numpy()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    from .images import smooth_image

    return smooth_image(h, w, 3, np.float32, seed=seed)


def _module_output(net: HINet, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).double().numpy()


# ---- the network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("width, hin", [(64, (3, 4)), (32, (0, 1, 2, 3, 4))])
def test_the_authors_layouts_load_with_width_depth_and_norm_levels_read_from_the_shapes(width, hin):
    """Width 64 (the published models) and 32 ("0.5x"); HIN at every level (SIDD) or at levels 3-4 (GoPro, REDS)."""
    sd = {k: torch.zeros(shape) for k, shape in authors_layout(width, hin=hin).items()}
    net = from_state_dict(sd)
    assert (net.width, net.depth, net.hin_levels, net.size_multiple) == (width, 5, hin, 16)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("width, hin", [(32, (0, 1, 2, 3, 4)), (16, (3, 4))])
def test_output_matches_the_reference_forward_pass(width, hin):
    sd = random_checkpoint(width, hin=hin)
    net = from_state_dict(sd)
    image = _image(32, 48)
    np.testing.assert_allclose(_module_output(net, image), reference(sd, image), atol=2e-4)


def test_local_statistics_match_tlc():
    """TLC's sliding-window statistics: windows smaller than the image at levels 0-2, larger below."""
    sd = random_checkpoint(8, hin=(0, 1, 2, 3, 4), seed=2)
    net = from_state_dict(sd, base_size=40)
    assert [window_at(i, 40) for i in range(5)] == [40, 20, 10, 5, 2]
    image = _image(80, 112, seed=1)
    out = _module_output(net.double(), image.astype(np.float64))
    np.testing.assert_allclose(out, reference(sd, image, base_size=40), atol=1e-9)
    assert np.abs(out - reference(sd, image)).max() > 1e-3  # the windows do change the output


def test_windows_larger_than_the_image_are_instance_normalisation():
    sd = random_checkpoint(8, hin=(0, 1, 2, 3, 4), seed=2)
    image = _image(80, 112, seed=1)
    out = _module_output(from_state_dict(sd, base_size=384).double(), image.astype(np.float64))
    np.testing.assert_allclose(out, reference(sd, image), atol=1e-9)


def _reach(net: HINet, size: int, threshold: float) -> int:
    """How far from a changed pixel the output changes by more than ``threshold``, at two places on the grid."""
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    reach = 0
    with torch.no_grad():
        base = net(x)
        for d in (0, 3):
            c = size // 2 + d
            x2 = x.clone()
            x2[0, :, c, c] += 1.0
            ys, xs = np.nonzero(((net(x2) - base).abs().amax(1)[0] > threshold).numpy())
            reach = max(reach, np.abs(ys - c).max(), np.abs(xs - c).max())
    return reach


def test_receptive_radius_bounds_a_perturbation():
    """A change to one pixel reaches no farther than :func:`receptive_radius`; TLC's windows reach farther than
    the convolutions alone (their integral image leaves float64 rounding, ~1e-12, everywhere: a threshold)."""
    torch.manual_seed(1)
    conv_only = receptive_radius(3)
    net = HINet(width=2, depth=3, hin_levels=()).double().eval()
    assert conv_only - 8 <= _reach(net, 2 * conv_only + 64, 0.0) <= conv_only
    radius = receptive_radius(3, (0, 1, 2), 16)
    net = HINet(width=2, depth=3, hin_levels=(0, 1, 2), base_size=16).double().eval()
    for p in net.parameters():
        p.data *= 1.7  # a gain near 1 per layer keeps the change above the rounding farther out
    assert conv_only < _reach(net, 2 * radius + 64, 1e-9) <= radius


def test_a_checkpoint_that_is_not_hinet_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="not a HINet checkpoint") as err:
        from_state_dict({"conv1.weight": torch.zeros(3, 3, 1, 1)})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="RGB HINet"):
        from_state_dict({k: torch.zeros(s) for k, s in authors_layout(8, cin=1).items()})
    sd = random_checkpoint(8)
    sd["down_path_2.1.conv_2.weight"] = sd["down_path_2.1.conv_2.weight"][:, :-1]
    with pytest.raises(ConfigError, match="down_path_2.1.conv_2.weight") as err:
        from_state_dict(sd)
    assert "\n" not in str(err.value)


# ---- in the engine -------------------------------------------------------------------------------

def _engine_reference(sd, image, *, base_size=None, sigmoid=False):
    """What the engine promises: reflection padding to multiples of 2^(depth-1) (16 for the published depth 5),
    the reference pass, crop, activation, clip."""
    h, w = image.shape[:2]
    m = 2 ** (sum(1 for k in sd if k.startswith("down_path_1.") and k.endswith(".conv_1.weight")) - 1)
    padded = np.pad(image, ((0, -h % m), (0, -w % m), (0, 0)), mode="reflect")
    out = reference(sd, padded, base_size=base_size)[:h, :w]
    return np.clip(1 / (1 + np.exp(-out)) if sigmoid else out, 0, 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A width-8 HINet with HIN at levels 3-4 (the GoPro/REDS layout), saved as BasicSR saves it."""
    sd = random_checkpoint(8, hin=(3, 4), seed=3)
    path = tmp_path_factory.mktemp("hinet") / "HINet-8.pth"
    torch.save({"params": sd}, path)
    return sd, path


@pytest.mark.parametrize("name", ["hinet", "hinet-sigmoid"])
def test_the_engine_runs_an_authors_checkpoint_as_the_reference_does(checkpoint, name):
    sd, path = checkpoint
    image = _image(40, 58, seed=4)
    out = restore(image, model=name, weights=path, backend="torch", tile=None)
    np.testing.assert_allclose(out, _engine_reference(sd, image, sigmoid=name.endswith("sigmoid")), atol=1e-4)


def test_ema_weights_are_taken_before_the_raw_ones(shallow, tmp_path):
    sd, _ = shallow
    ema = random_checkpoint(4, depth=3, hin=(0, 1, 2), seed=9)
    path = tmp_path / "HINet-ema.pth"
    torch.save({"params": sd, "params_ema": ema, "iter": np.int64(1000)}, path)
    image = _image(32, 32, seed=5)
    out = restore(image, model="hinet", weights=path, backend="torch", tile=None)
    np.testing.assert_allclose(out, _engine_reference(ema, image), atol=1e-4)


def test_the_loaded_checkpoint_sets_the_halo_and_alignment():
    """The registered halos are those of the published layouts; a checkpoint with other levels brings its own."""
    assert model_entry("hinet").spec.halo == receptive_radius(5)
    assert model_entry("hinet-tlc").spec.halo == receptive_radius(5, (3, 4), DEFAULT_BASE_SIZE)
    net = from_state_dict({k: torch.zeros(s) for k, s in authors_layout(8, hin=(0, 1, 2, 3, 4)).items()},
                          base_size=DEFAULT_BASE_SIZE)
    spec = spec_for(net, model_entry("hinet-tlc").spec)
    assert (spec.halo, spec.align, spec.size_multiple) == (receptive_radius(5, range(5), DEFAULT_BASE_SIZE), 16, 16)
    assert spec.halo > model_entry("hinet-tlc").spec.halo


def test_tiles_too_small_for_the_local_halo_are_refused_in_one_line_but_small_images_run(checkpoint, tmp_path, capsys):
    """With TLC's default window the GoPro layout reaches 1016 px: 1024 px tiles cannot hold that context."""
    from PIL import Image

    sd, path = checkpoint
    image = _image(40, 58, seed=2)
    np.testing.assert_allclose(restore(image, model="hinet-tlc", weights=path, backend="torch"),
                               _engine_reference(sd, image, base_size=DEFAULT_BASE_SIZE), atol=1e-4)
    wide = tmp_path / "wide.png"
    Image.fromarray((_image(20, 1100) * 255).astype(np.uint8)).save(wide)
    code = main(["process", str(wide), "--model", "hinet-tlc", "--weights", str(path), "--no-progress"])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "halo is 1016 px" in err[0] and "use at least 2072" in err[0]
    assert not (tmp_path / "wide_dehazed.png").exists()


@pytest.fixture(scope="module")
def shallow(tmp_path_factory):
    """A cheap HINet for tiling (width 4, depth 3: origins on multiples of 4), HIN at every level."""
    sd = random_checkpoint(4, depth=3, hin=(0, 1, 2), seed=6)
    path = tmp_path_factory.mktemp("hinet") / "HINet-shallow.pth"
    torch.save({"params": sd}, path)
    return sd, path


def test_local_statistics_tile_exactly(shallow):
    """TLC's windows: tiles (origins on the 4 px grid, several per axis) reproduce the one-pass output."""
    _, path = shallow
    model = create_model("hinet-tlc", weights=path, backend="torch", base_size=16)
    assert model.halo == receptive_radius(3, (0, 1, 2), 16) and model.align == 4
    image = _image(301, 343, seed=7)
    assert make_plan(301, 343, model, tile=280).grid == (2, 2)
    whole = restore(image, model=model, tile=None)
    assert np.abs(restore(image, model=model, tile=280) - whole).max() <= 1e-5


def test_instance_normalisation_tiles_approximately(shallow):
    """The authors' instance normalisation: tiles differ from one pass, a little, and only by their statistics."""
    sd, path = shallow
    model = create_model("hinet", weights=path, backend="torch")
    image = _image(301, 343, seed=7)
    whole = restore(image, model=model, tile=None)
    tiled = restore(image, model=model, tile=280)
    assert make_plan(301, 343, model, tile=280).grid == (2, 2)
    diff = np.abs(tiled - whole)
    assert 1e-4 < diff.mean() < 0.02


def test_onnx_runtime_runs_the_instance_norm_model_and_refuses_the_local_one(shallow):
    _, path = shallow
    image = _image(48, 64, seed=8)
    ort = create_model("hinet", weights=path, backend="onnxruntime")
    np.testing.assert_allclose(restore(image, model=ort, tile=None),
                               restore(image, model="hinet", weights=path, backend="torch", tile=None), atol=1e-5)
    assert "torch" in create_model("hinet-tlc", weights=path).describe()  # auto: torch
    with pytest.raises(BackendUnavailable, match="no ONNX form"):
        create_model("hinet-tlc", weights=path, backend="onnxruntime")


def test_without_weights_one_line_says_where_the_authors_publish_them(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(_image(32, 32).__mul__(255).astype(np.uint8)).save(photo)
    assert main(["process", str(photo), "--model", "hinet", "--no-progress"]) == ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "github.com/megvii-model/HINet" in err[0] and "--weights" in err[0]
    assert not (tmp_path / "photo_dehazed.png").exists()


def test_a_folder_and_eval_run_hinet(shallow, tmp_path):
    from PIL import Image

    from tiledehaze.evaluate import evaluate

    _, path = shallow
    hazy, clear = tmp_path / "hazy", tmp_path / "clear"
    hazy.mkdir(), clear.mkdir()
    for i in range(2):
        Image.fromarray((_image(36, 44, seed=i) * 255).astype(np.uint8)).save(hazy / f"{i}.png")
        Image.fromarray((_image(36, 44, seed=10 + i) * 255).astype(np.uint8)).save(clear / f"{i}.png")
    assert main(["process", str(hazy), "-o", str(tmp_path / "out"), "--model", "hinet", "--weights", str(path),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0.png", "1.png"]
    report = evaluate(hazy, clear, models=["hinet"], model_options={"hinet": {"weights": path}}, grids=False)
    assert sorted(r.image for r in report.results if r.model == "hinet") == ["0", "1"]
