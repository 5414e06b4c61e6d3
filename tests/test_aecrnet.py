"""AECR-Net: the authors' checkpoints load, the network matches an independent reference, the
deformable convolution matches a loop over its definition and ONNX's DeformConv, and tiles are
measured against the whole image.

The reference here is written from the authors' code (GlassyWu/AECR-Net ``models/AECRNet.py``,
``models/deconv.py``; DCNv2's ``DCN``), not from tiledehaze's module: float64 functional calls
over the state dict, and a deformable convolution that interpolates by gathering the four
neighbours of every sample (no grid_sample).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiledehaze.models.aecrnet import AECRNet, to_onnx
from tiledehaze.models.deform import ModulatedDeformConv2d, deform_conv2d

#: the authors' state dict of ``Dehaze(3, 3)`` (ngf 64): every key and its shape
W = 64
AUTHORS_KEYS: dict[str, tuple[int, ...]] = {
    "down1.1.weight": (W, 3, 7, 7), "down1.1.bias": (W,),
    "down2.0.weight": (2 * W, W, 3, 3), "down2.0.bias": (2 * W,),
    "down3.0.weight": (4 * W, 2 * W, 3, 3), "down3.0.bias": (4 * W,),
    "block.conv1.weight": (4 * W, 4 * W, 3, 3), "block.conv1.bias": (4 * W,),
    "block.conv2.weight": (4 * W, 4 * W, 3, 3), "block.conv2.bias": (4 * W,),
    "block.calayer.ca.0.weight": (W // 2, 4 * W, 1, 1), "block.calayer.ca.0.bias": (W // 2,),
    "block.calayer.ca.2.weight": (4 * W, W // 2, 1, 1), "block.calayer.ca.2.bias": (4 * W,),
    "block.palayer.pa.0.weight": (W // 2, 4 * W, 1, 1), "block.palayer.pa.0.bias": (W // 2,),
    "block.palayer.pa.2.weight": (1, W // 2, 1, 1), "block.palayer.pa.2.bias": (1,),
    "up1.0.weight": (4 * W, 2 * W, 3, 3), "up1.0.bias": (2 * W,),  # ConvTranspose2d: (in, out, k, k)
    "up2.0.weight": (2 * W, W, 3, 3), "up2.0.bias": (W,),
    "up3.1.weight": (3, W, 7, 7), "up3.1.bias": (3,),
    "dcn_block.dcn.weight": (4 * W, 4 * W, 3, 3), "dcn_block.dcn.bias": (4 * W,),
    "dcn_block.dcn.conv_offset_mask.weight": (27, 4 * W, 3, 3), "dcn_block.dcn.conv_offset_mask.bias": (27,),
    "deconv.weight": (3, 3, 3, 3), "deconv.bias": (3,),
    "deconv.running_mean": (27,), "deconv.running_deconv": (27, 27),
    "mix1.w": (1,), "mix2.w": (1,),
}


def authors_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the authors' layout that behave like a trained network's.

    Kernels keep activations at a steady scale through the six shared blocks; the offsets are
    fractional and up to a few pixels (sampling crosses pixel and image borders); the whitening
    statistics are not the identity; the output spreads over [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in AUTHORS_KEYS.items():
        if key.endswith(".weight") and len(shape) == 4:
            fan_in = shape[0 if key.startswith("up1") or key.startswith("up2") else 1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        else:
            value = 0.05 * torch.randn(shape, generator=g)
        state[key] = value
    state["block.conv2.weight"] *= 0.5  # a residual branch smaller than its input
    state["dcn_block.dcn.conv_offset_mask.weight"] *= 0.05
    state["dcn_block.dcn.conv_offset_mask.bias"] = 1.5 * torch.randn(27, generator=g)
    state["up3.1.weight"] *= 4.0
    state["up3.1.bias"] += 0.5
    state["deconv.running_mean"] = 0.3 + 0.3 * torch.rand(27, generator=g)
    noise = 0.1 * torch.randn(27, 27, generator=g)
    state["deconv.running_deconv"] = 2.0 * torch.eye(27) + noise + noise.T
    state["mix1.w"], state["mix2.w"] = torch.tensor([-1.0]), torch.tensor([-0.6])
    return state


def authors_checkpoint(path, state: dict | None = None):
    """Save ``state`` (default :func:`authors_state`) as the authors' training script does.

    ``train_aecrnet.py`` saves ``{'epoch', 'step', 'max_psnr', 'max_ssim', 'ssims', 'psnrs',
    'losses', 'model', 'optimizer'}`` from a ``DataParallel`` network (keys ``module.<key>``);
    the scores are numpy float64 (``np.mean`` of per-image scores). Their files were written
    with numpy 1.x, whose pickles name ``numpy.core.multiarray.scalar``: the file is rewritten
    with that spelling, as the published checkpoints have it.
    """
    import zipfile

    state = authors_state() if state is None else state
    params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if "running" not in k]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    psnrs, ssims = [np.float64(p) for p in (30.5, 31.2)], [np.float64(s) for s in (0.95, 0.96)]
    container = {"epoch": 2, "step": 10000, "max_psnr": max(psnrs), "max_ssim": max(ssims), "ssims": ssims,
                 "psnrs": psnrs, "losses": [0.08, 0.05], "model": {f"module.{k}": v for k, v in state.items()},
                 "optimizer": optimizer.state_dict()}
    modern = f"{path}.numpy2"
    torch.save(container, modern)
    with zipfile.ZipFile(modern) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            pickled = info.filename.endswith("data.pkl")
            if pickled and b"numpy._core.multiarray\nscalar" not in data:
                raise RuntimeError("torch.save no longer writes numpy 2's scalar name: update authors_checkpoint")
            respelled = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            dst.writestr(info, respelled if pickled else data)
    Path(modern).unlink()
    return Path(path)


# ------------------------------------------------------------------ the independent reference

def bilinear_zero(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``img`` (C, H, W) at fractional (y, x) (any shape), pixels outside the image being 0 (DCNv2's rule)."""
    c, h, w = img.shape
    y0, x0 = torch.floor(y), torch.floor(x)
    out = torch.zeros((c,) + y.shape, dtype=img.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - (y - yy).abs()) * (1 - (x - xx).abs())
            inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            values = img[:, yy.clamp(0, h - 1).long(), xx.clamp(0, w - 1).long()]
            out += values * (weight * inside)
    return out


def reference_dcn(x: torch.Tensor, state: dict, name: str) -> torch.Tensor:
    """DCNv2's ``DCN`` (3 x 3, stride 1, padding 1, one offset group), by gathering."""
    om = F.conv2d(x, state[f"{name}.conv_offset_mask.weight"], state[f"{name}.conv_offset_mask.bias"], padding=1)
    o1, o2, m = torch.chunk(om, 3, dim=1)
    offset, mask = torch.cat((o1, o2), 1), torch.sigmoid(m)
    weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    n, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    out = bias.view(1, -1, 1, 1).repeat(n, 1, h, w)
    for b in range(n):
        for k in range(9):
            i, j = divmod(k, 3)
            y = ys - 1 + i + offset[b, 2 * k]
            xx = xs - 1 + j + offset[b, 2 * k + 1]
            cols = bilinear_zero(x[b], y, xx) * mask[b, k]
            out[b] += torch.einsum("oc,chw->ohw", weight[:, :, i, j], cols)
    return out


def reference_aecrnet(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The authors' ``Dehaze.forward`` in eval mode, float64, from the state dict."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()

    def conv(name, v, **kw):
        return F.conv2d(v, s[f"{name}.weight"], s[f"{name}.bias"], **kw)

    # FastDeconv in eval mode: the running statistics folded into the kernel (C // block == 1)
    wd = s["deconv.weight"].reshape(3, 27) @ s["deconv.running_deconv"]
    bd = s["deconv.bias"] - wd @ s["deconv.running_mean"]
    x = F.conv2d(x, wd.reshape(3, 3, 3, 3), bd, padding=1)
    d1 = F.relu(conv("down1.1", F.pad(x, (3, 3, 3, 3), mode="reflect")))
    d2 = F.relu(conv("down2.0", d1, stride=2, padding=1))
    d3 = F.relu(conv("down3.0", d2, stride=2, padding=1))
    y = d3
    for _ in range(6):
        res = F.relu(conv("block.conv1", y, padding=1)) + y
        res = conv("block.conv2", res, padding=1)
        ca = torch.sigmoid(conv("block.calayer.ca.2", F.relu(conv("block.calayer.ca.0", F.adaptive_avg_pool2d(res, 1)))))
        res = res * ca
        res = res * torch.sigmoid(conv("block.palayer.pa.2", F.relu(conv("block.palayer.pa.0", res))))
        y = res + y
    y = reference_dcn(reference_dcn(y, s, "dcn_block.dcn"), s, "dcn_block.dcn")
    f1, f2 = torch.sigmoid(s["mix1.w"]), torch.sigmoid(s["mix2.w"])
    y = d3 * f1 + y * (1 - f1)
    y = F.relu(F.conv_transpose2d(y, s["up1.0.weight"], s["up1.0.bias"], stride=2, padding=1, output_padding=1))
    y = d2 * f2 + y * (1 - f2)
    y = F.relu(F.conv_transpose2d(y, s["up2.0.weight"], s["up2.0.bias"], stride=2, padding=1, output_padding=1))
    return torch.tanh(conv("up3.1", F.pad(y, (3, 3, 3, 3), mode="reflect")))


def naive_deform_conv(x, offset, weight, bias, mask, stride, pad, dilation):
    """Modulated deformable convolution straight from its definition: loops over every output and tap."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    groups = offset.shape[1] // (2 * kh * kw)
    out = np.zeros((n, o, ho, wo))
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                col = np.zeros((c, kh, kw))
                for ch in range(c):
                    g = ch // (c // groups)
                    for i in range(kh):
                        for j in range(kw):
                            tap = i * kw + j
                            py = oy * stride - pad + i * dilation + offset[b, (g * kh * kw + tap) * 2, oy, ox]
                            px = ox * stride - pad + j * dilation + offset[b, (g * kh * kw + tap) * 2 + 1, oy, ox]
                            val = 0.0
                            y0, x0 = math.floor(py), math.floor(px)
                            for yy in (y0, y0 + 1):
                                for xx in (x0, x0 + 1):
                                    if 0 <= yy < h and 0 <= xx < w:
                                        val += (1 - abs(py - yy)) * (1 - abs(px - xx)) * x[b, ch, yy, xx]
                            col[ch, i, j] = val * mask[b, g * kh * kw + tap, oy, ox]
                out[b, :, oy, ox] = np.tensordot(weight, col, axes=3) + bias
    return out


# ------------------------------------------------------------------ the deformable convolution

@pytest.mark.parametrize("stride,pad,dilation,groups,one_row_bands", [(1, 1, 1, 1, False), (2, 1, 1, 2, False),
                                                                       (1, 2, 2, 1, False), (1, 1, 1, 2, True)])
def test_deformable_convolution_matches_its_definition(stride, pad, dilation, groups, one_row_bands, monkeypatch):
    """Fractional offsets of up to 3 px, some reaching outside the image, with a mask; stride, dilation,
    offset groups, and output built one row at a time (as on large tiles)."""
    from tiledehaze.models import deform

    monkeypatch.setattr(deform, "COLUMN_BYTES", 1 if one_row_bands else deform.COLUMN_BYTES)
    rng = np.random.default_rng(stride + 3 * groups + dilation)
    x = rng.random((2, 4, 6, 7))
    weight, bias = rng.normal(size=(3, 4, 3, 3)), rng.normal(size=3)
    ho = (6 + 2 * pad - dilation * 2 - 1) // stride + 1
    wo = (7 + 2 * pad - dilation * 2 - 1) // stride + 1
    offset = rng.uniform(-3, 3, size=(2, 2 * groups * 9, ho, wo))
    mask = rng.random((2, groups * 9, ho, wo))
    got = deform_conv2d(*(torch.from_numpy(a) for a in (x, offset, weight, bias, mask)), stride=stride, padding=pad,
                        dilation=dilation).numpy()
    np.testing.assert_allclose(got, naive_deform_conv(x, offset, weight, bias, mask, stride, pad, dilation), atol=1e-10)


def test_deformable_convolution_with_zero_offsets_is_a_convolution_and_trains():
    layer = ModulatedDeformConv2d(5, 4).double()
    x = torch.rand(1, 5, 9, 8, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    # a fresh layer predicts zero offsets and a mask of sigmoid(0) = 0.5
    torch.testing.assert_close(y, F.conv2d(x, layer.weight * 0.5, layer.bias, padding=1))
    y.square().sum().backward()
    assert layer.conv_offset_mask.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_deformable_convolution_refuses_offsets_of_the_wrong_shape():
    x, w = torch.rand(1, 4, 6, 6), torch.rand(2, 4, 3, 3)
    with pytest.raises(ValueError, match="offset has 17 channels"):
        deform_conv2d(x, torch.zeros(1, 17, 6, 6), w, padding=1)
    with pytest.raises(ValueError, match="output is 6x6"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 6), w, padding=1)


def test_onnx_deformconv_equals_the_torch_deformable_convolution():
    """ONNX Runtime's DeformConv (opset 19, CPU) and :func:`deform_conv2d` agree on the same inputs."""
    import onnxruntime
    from onnx import TensorProto, helper

    names = ["X", "W", "offset", "B", "mask"]
    node = helper.make_node("DeformConv", names, ["Y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                            offset_group=2)
    graph = helper.make_graph([node], "dcn", [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in names],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    rng = np.random.default_rng(2)
    feed = {"X": rng.random((1, 4, 9, 10)), "W": rng.normal(size=(5, 4, 3, 3)), "offset": rng.uniform(-2, 2, (1, 36, 5, 5)),
            "B": rng.normal(size=5), "mask": rng.random((1, 18, 5, 5))}
    feed = {k: v.astype(np.float32) for k, v in feed.items()}
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    want = deform_conv2d(*(torch.from_numpy(feed[k]) for k in ("X", "offset", "W", "B", "mask")), stride=2, padding=1)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


# ------------------------------------------------------------------ the network

@pytest.fixture(scope="module")
def state():
    return authors_state()


@pytest.fixture(scope="module")
def picture():
    """A small hazy RGB picture, float32 in [0, 1], sides not multiples of 4."""
    from .images import hazy_photo

    return hazy_photo(30, 42, seed=7).astype(np.float32) / 255.0


def test_network_has_the_authors_layout_and_size():
    net = AECRNet()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == AUTHORS_KEYS
    assert sum(p.numel() for p in net.parameters()) == 2_614_229  # "2.61 M" in the paper


def test_network_equals_the_independent_reference(state):
    net = AECRNet()
    net.load_state_dict(state)
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = net.eval()(x)
    want = reference_aecrnet(state, x)
    assert want.std() > 0.1  # the test weights give a spread-out picture, not a constant
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=0)


def test_onnx_graph_equals_the_torch_network(state):
    import onnxruntime

    net = AECRNet()
    net.load_state_dict(state)
    graph = to_onnx(net.eval())
    assert "DeformConv" in {node.op_type for node in __import__("onnx").load_from_string(graph).graph.node}
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(session.run(None, {"hazy": x.numpy()})[0], want, atol=1e-5)


def test_training_whitens_input_patches_and_tracks_their_statistics():
    """In training the first convolution sees whitened patches and its running statistics move toward them."""
    net = AECRNet(width=8).train()
    x = 0.5 + 0.1 * torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    before = net.deconv.running_mean.clone()
    net(x).abs().mean().backward()
    patches = F.unfold(x, 3, padding=1, stride=3).transpose(1, 2).reshape(-1, 27)
    torch.testing.assert_close(net.deconv.running_mean, 0.9 * before + 0.1 * patches.mean(0))
    assert net.deconv.weight.grad.abs().sum() > 0 and net.dcn_block.dcn.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ in the engine

@pytest.fixture(scope="module")
def authors_file(tmp_path_factory, state):
    return authors_checkpoint(tmp_path_factory.mktemp("aecrnet") / "ITS_train_cdnet_test.pk.best", state)


def reference_restore(state: dict, image: np.ndarray) -> np.ndarray:
    """What the engine promises for a float RGB image: reflection-padded at the bottom and right to
    multiples of 4, the authors' forward, cropped, clipped to [0, 1]."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
    out = reference_aecrnet(state, torch.from_numpy(padded).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    return np.clip(out[:h, :w], 0.0, 1.0)


@pytest.fixture(scope="module")
def picture_reference(state, picture):
    return reference_restore(state, picture)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_authors_training_checkpoint_loads_and_matches_the_reference(authors_file, picture, picture_reference,
                                                                         backend):
    """``{'model': {'module.<key>': ...}}`` with numpy scalars beside it, through the safe loader, on both backends."""
    import hashlib

    from tiledehaze import restore
    from tiledehaze.models import create_model

    model = create_model("aecrnet", weights=authors_file, backend=backend)
    assert model.sha256 == hashlib.sha256(authors_file.read_bytes()).hexdigest()
    got = restore(picture, model=model, tile=None)
    assert np.abs(got - picture_reference).max() <= 2e-5 and picture_reference.std() > 0.05


def test_a_checkpoint_that_is_not_aecrnet_is_refused_in_one_line(tmp_path, state):
    from tiledehaze.errors import ConfigError
    from tiledehaze.models import create_model

    wrong = dict(state)
    wrong.pop("mix2.w")
    wrong["dcn_block.dcn.conv_offset_mask.bias"] = torch.zeros(18)  # DCNv1 has no mask channels
    path = authors_checkpoint(tmp_path / "wrong.pk", wrong)
    with pytest.raises(ConfigError, match=r"missing mix2\.w.*mis-shaped: dcn_block\.dcn\.conv_offset_mask\.bias") as err:
        create_model("aecrnet", weights=path, backend="torch")
    assert "\n" not in str(err.value)


def test_width_is_read_from_the_checkpoint(tmp_path):
    from tiledehaze.models import create_model

    narrow = AECRNet(width=16).state_dict()
    path = authors_checkpoint(tmp_path / "narrow.pk", narrow)
    model = create_model("aecrnet", weights=path, backend="torch")
    assert model.network.module.width == 16


def test_without_weights_one_line_says_where_the_authors_publish_them(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from .images import hazy_photo

    Image.fromarray(hazy_photo(16, 16)).save(tmp_path / "in.png")
    result = subprocess.run([sys.executable, "-m", "tiledehaze.cli", "process", str(tmp_path / "in.png"), "--model",
                             "aecrnet"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "github.com/GlassyWu/AECR-Net" in result.stderr and "--weights" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_folders_and_eval_run_the_authors_checkpoint(authors_file, state, tmp_path):
    """``process`` over a folder (the batch path, with its manifest) and ``eval`` take ``--model aecrnet``
    and record the checkpoint's SHA-256."""
    import hashlib
    import json

    from PIL import Image

    from tiledehaze.batch.manifest import MANIFEST_NAME

    from tiledehaze.cli import main
    from tiledehaze.evaluate import evaluate

    from .images import hazy_photo

    (tmp_path / "in").mkdir()
    for i in range(2):
        Image.fromarray(hazy_photo(20, 28, seed=i)).save(tmp_path / "in" / f"{i}.png")
    assert main(["process", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "aecrnet", "--weights",
                 str(authors_file), "--backend", "onnxruntime", "-q"]) == 0
    first = np.asarray(Image.open(tmp_path / "out" / "0.png")).astype(np.float64)
    want = reference_restore(state, np.asarray(Image.open(tmp_path / "in" / "0.png")).astype(np.float32) / 255)
    assert np.abs(first - np.floor(want * 255 + 0.5)).max() <= 1
    digest = hashlib.sha256(authors_file.read_bytes()).hexdigest()
    manifest = [json.loads(line) for line in (tmp_path / "out" / MANIFEST_NAME).read_text().splitlines()]
    assert [e["weights_sha256"] for e in manifest if e["state"] == "done"] == [digest, digest]
    report = evaluate(tmp_path / "in", models=["aecrnet"], model_options={"aecrnet": {"weights": authors_file}},
                      grids=False)
    runs = [r for r in report.results if r.model == "aecrnet"]
    assert sorted(r.image for r in runs) == ["0", "1"] and all(np.isfinite(r.haze_after) for r in runs)
    assert report.settings["weights_sha256"] == {"aecrnet": digest}


def test_tiles_differ_from_the_whole_image_by_at_most_the_documented_amount(authors_file):
    """Channel attention pools each tile, so tiles are approximate: at the engine's default overlap for
    an approximate model the difference stays within what the README states (random weights here)."""
    from tiledehaze import restore
    from tiledehaze.engine import make_plan
    from tiledehaze.models import create_model

    from .images import hazy_photo

    model = create_model("aecrnet", weights=authors_file, backend="onnxruntime")
    image = hazy_photo(64, 400, seed=2)
    assert len(make_plan(64, 400, model, tile=352)) == 2
    whole = restore(image, model=model, tile=None).astype(np.float64)
    tiled = restore(image, model=model, tile=352).astype(np.float64)
    diff = np.abs(tiled - whole)
    assert diff.max() <= 1 and diff.mean() <= 0.01


def test_training_with_l1_writes_weights_the_engine_runs_and_resumes(tiny_config, tmp_path):
    from tiledehaze.errors import ConfigError
    from tiledehaze.models import create_model
    from tiledehaze.train import train

    def config(*more):
        return tiny_config("model=aecrnet", "loss=l1", "samples_per_epoch=4", "train_batch_size=2", "val_batch_size=2",
                           "data.val_samples=2", *more)

    first = train(config("num_epochs=1"), out_dir=tmp_path)
    resumed = train(config("num_epochs=2"), out_dir=tmp_path, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2] and np.isfinite(resumed.history[-1]["train_loss"])
    assert first.history[0] == resumed.history[0]
    model = create_model("aecrnet", weights=resumed.last_weights, backend="torch")
    assert model.network.module.deconv.running_mean.abs().sum() > 0  # the whitening statistics were trained and saved
    with pytest.raises(ConfigError, match="patch_size a multiple of 4"):
        train(config("patch_size=18"), out_dir=tmp_path / "odd")
