"""``tiledehaze export``: an ONNX graph that matches torch and a safetensors file the engine loads."""

import argparse

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tiledehaze.commands import train as train_cmd
from tiledehaze.errors import ConfigError
from tiledehaze.models.aodnet import load_weights, read_metadata, save_weights
from tiledehaze.models.aodnet_torch import AODNetModule
from tiledehaze.train.export import export
from tiledehaze.train.loop import init_weights


def _parser():
    parser = argparse.ArgumentParser()
    train_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture
def checkpoint(tmp_path):
    weights = init_weights(3)
    for k in weights:
        if k.endswith("bias"):
            weights[k] += 0.05  # biases that matter
    path = tmp_path / "ckpt.safetensors"
    save_weights(weights, path, {"seed": "3"})
    return path, weights


def test_export_writes_onnx_matching_torch_and_loadable_safetensors(checkpoint, tmp_path, capsys):
    path, weights = checkpoint
    args = _parser().parse_args(["export", "--weights", str(path), "--onnx", str(tmp_path / "m.onnx"),
                                 "--safetensors", str(tmp_path / "m.safetensors")])
    assert args.func(args) == 0
    assert "matches the reference" in capsys.readouterr().out
    # dynamic batch/height/width: a shape the export check did not use
    x = np.random.default_rng(0).random((3, 3, 29, 71), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"hazy": x})[0]
    with torch.no_grad():
        ref = AODNetModule.from_numpy(weights)(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4
    loaded = load_weights(tmp_path / "m.safetensors")
    assert all(np.array_equal(loaded[k], weights[k]) for k in weights)
    assert read_metadata(tmp_path / "m.safetensors")["seed"] == "3"


def test_export_accepts_a_torch_checkpoint_and_fp16(checkpoint, tmp_path):
    _, weights = checkpoint
    pt = tmp_path / "ckpt.pt"
    torch.save({"model": AODNetModule.from_numpy(weights).state_dict()}, pt)
    diffs = export(pt, onnx_path=tmp_path / "h.onnx", fp16=True)
    assert diffs["fp32"] <= 1e-4 and "fp16" in diffs
    session = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"


def test_export_fails_loudly_when_the_graph_does_not_match(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    from tiledehaze.train import export as export_mod

    real = export_mod.to_onnx

    def broken(weights, **kw):
        w = {k: v + (0.01 if k == "conv5.bias" else 0) for k, v in weights.items()}
        return real(w, **kw)

    monkeypatch.setattr(export_mod, "to_onnx", broken)
    with pytest.raises(RuntimeError, match="differs from the reference"):
        export(path, onnx_path=tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_export_refuses_missing_weights_and_empty_requests(tmp_path, checkpoint):
    with pytest.raises(ConfigError):
        export(tmp_path / "nope.safetensors", onnx_path=tmp_path / "x.onnx")
    with pytest.raises(ConfigError):
        export(checkpoint[0])


def test_train_command_applies_flags_and_overrides(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_train(cfg, *, out_dir=None, resume=False, progress=None):
        seen.update(cfg=cfg, out_dir=out_dir, resume=resume)
        raise SystemExit(0)

    monkeypatch.setattr("tiledehaze.train.train", fake_train)
    args = _parser().parse_args(["train", "--config", "configs/aodnet.yaml", "--set", "optim.lr=3e-4",
                                 "--epochs", "3", "--out", str(tmp_path), "--resume"])
    with pytest.raises(SystemExit):
        args.func(args)
    assert seen["cfg"]["optim"]["lr"] == 3e-4 and seen["cfg"]["num_epochs"] == 3
    assert seen["out_dir"] == str(tmp_path) and seen["resume"] is True
