"""The training loop, its run folder, resuming, reproducibility and the dead-K guard."""

import csv
import json
import logging

import numpy as np
import pytest
import torch
import yaml

from tiledehaze.errors import ConfigError
from tiledehaze.models.aodnet import load_weights, read_metadata
from tiledehaze.models.aodnet_torch import AODNetModule
from tiledehaze.train import DEFAULTS, config_hash, load_config, train
from tiledehaze.train import checkpoint, history, tasks
from tiledehaze.train.guard import DeadKGuard, measure


def _same_weights(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_yaml_config_writes_out_every_default():
    assert yaml.safe_load(open("configs/aodnet.yaml")) == DEFAULTS
    assert DEFAULTS["optim"]["lr"] == 1e-4 and DEFAULTS["num_epochs"] == 10
    assert DEFAULTS["train_batch_size"] == 8 and DEFAULTS["val_batch_size"] == 8


def test_overrides_reach_nested_keys_and_unknown_keys_are_refused():
    cfg = load_config("configs/aodnet.yaml", ["optim.lr=3e-4", "synthesis.beta=[0.5, 1.0]", "seed=7"])
    assert cfg["optim"]["lr"] == 3e-4 and cfg["synthesis"]["beta"] == [0.5, 1.0] and cfg["seed"] == 7
    assert config_hash(cfg) != config_hash(DEFAULTS)
    assert config_hash(load_config(None, ["output_dir=elsewhere"])) == config_hash(DEFAULTS)
    # one depth model's weight changes alone; the others keep theirs
    weights = load_config(None, ["synthesis.depth_weights.layers=1.0"])["synthesis"]["depth_weights"]
    assert weights == {**DEFAULTS["synthesis"]["depth_weights"], "layers": 1.0}
    with pytest.raises(ConfigError):
        load_config(None, ["synthesis.depth_weights.fog=1.0"])
    with pytest.raises(ConfigError):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError):
        load_config(None, ["optim=3"])


def test_cosine_schedule_decays_the_learning_rate_and_constant_keeps_it(tiny_config, tmp_path):
    cosine = train(tiny_config("num_epochs=4", "optim.lr=1e-3", "optim.schedule=cosine"), out_dir=tmp_path / "c")
    lrs = [row["lr"] for row in cosine.history]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[0] < 1e-3 and lrs[-1] < 0.05 * 1e-3
    # 4 steps an epoch: the last step of epoch 2 is step 7 of 16 (counting from 0)
    assert lrs[1] == pytest.approx(0.5e-3 * (1 + np.cos(np.pi * 7 / 16)), rel=1e-6)
    constant = train(tiny_config("num_epochs=2", "optim.lr=1e-3"), out_dir=tmp_path / "k")
    assert [row["lr"] for row in constant.history] == [1e-3, 1e-3]
    with pytest.raises(ConfigError):
        train(tiny_config("optim.schedule=linear"), out_dir=tmp_path / "x")


def test_a_run_writes_checkpoints_metrics_and_curves(tiny_config, tmp_path):
    result = train(tiny_config(), out_dir=tmp_path)
    for name in ("best.safetensors", "last.safetensors", "last_state.pt", "config.yaml", "metrics.csv",
                 "metrics.jsonl", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    jsonl = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in jsonl] == [1, 2]
    assert all(np.isfinite(r["val_psnr"]) and 0 < r["val_ssim"] <= 1 for r in jsonl)
    # weights load in the engine; metadata says how they were made
    best = load_weights(tmp_path / "best.safetensors")
    meta = read_metadata(tmp_path / "best.safetensors")
    assert meta["config_hash"] == result.config_hash and meta["seed"] == "0"
    assert float(meta["val_psnr"]) == pytest.approx(result.best_psnr, abs=1e-3)
    assert int(meta["epoch"]) == result.best_epoch
    assert set(best) == set(load_weights(tmp_path / "last.safetensors"))
    state = torch.load(tmp_path / "last_state.pt", weights_only=True)
    assert state["epoch"] == 2 and "state" in state["optimizer"]


def test_resume_continues_from_the_saved_epoch_exactly(tiny_config, tmp_path):
    straight = train(tiny_config(), out_dir=tmp_path / "straight")
    train(tiny_config("num_epochs=1"), out_dir=tmp_path / "split")
    resumed = train(tiny_config(), out_dir=tmp_path / "split", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert _same_weights(load_weights(straight.last_weights), load_weights(resumed.last_weights))
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


class _CrashAtEpoch:
    """A progress sink that stops the run as the given epoch starts, as a killed process would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def start_epoch(self, epoch, steps):
        if epoch == self.epoch:
            raise KeyboardInterrupt

    def step(self, loss):
        pass

    def end_epoch(self, row):
        pass


def test_a_cosine_run_killed_mid_way_resumes_to_the_same_weights(tiny_config, tmp_path):
    cfg = tiny_config("num_epochs=3", "optim.lr=1e-3", "optim.schedule=cosine")
    straight = train(cfg, out_dir=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "killed", progress=_CrashAtEpoch(3))
    resumed = train(cfg, out_dir=tmp_path / "killed", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert _same_weights(load_weights(straight.last_weights), load_weights(resumed.last_weights))
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]
    # a run folder from before: a numpy learning rate, the weights and metrics only in their files
    state = torch.load(tmp_path / "killed" / "last_state.pt", weights_only=True)
    assert type(state["optimizer"]["param_groups"][0]["lr"]) is float
    del state["model"], state["history"]
    state["optimizer"]["param_groups"][0]["lr"] = np.float64(state["optimizer"]["param_groups"][0]["lr"])
    torch.save(state, tmp_path / "killed" / "last_state.pt")
    again = train(tiny_config("num_epochs=4", "optim.lr=1e-3", "optim.schedule=cosine"), out_dir=tmp_path / "killed",
                  resume=True)
    assert [r["epoch"] for r in again.history] == [1, 2, 3, 4]


def _without_times(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("killed_in", ["save_state", "append"])
def test_a_run_killed_between_the_writes_of_an_epoch_resumes_exactly(killed_in, tiny_config, tmp_path, monkeypatch):
    """Killed after last.safetensors of epoch 2 and before its state, or after the state and
    half-way through its metrics line: the resumed run equals one never stopped."""
    cfg = tiny_config("num_epochs=3", "optim.lr=1e-3")
    straight = train(cfg, out_dir=tmp_path / "straight")
    module = checkpoint if killed_in == "save_state" else history
    real = getattr(module, killed_in)

    def killed_at_epoch_2(out, data):
        epoch = data["epoch"]
        if epoch == 2 and killed_in == "append":
            with open(out / "metrics.jsonl", "a") as f:
                f.write('{"epoch": 2, "train_lo')
        if epoch == 2:
            raise KeyboardInterrupt
        return real(out, data)

    monkeypatch.setattr(module, killed_in, killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "killed")
    monkeypatch.setattr(module, killed_in, real)
    resumed = train(cfg, out_dir=tmp_path / "killed", resume=True)
    assert _without_times(resumed.history) == _without_times(straight.history)
    assert _same_weights(load_weights(straight.last_weights), load_weights(resumed.last_weights))
    assert _same_weights(load_weights(straight.best_weights), load_weights(resumed.best_weights))
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "killed" / "metrics.csv"))] == [1, 2, 3]


def test_resume_refuses_a_different_recipe(tiny_config, tmp_path):
    train(tiny_config("num_epochs=1"), out_dir=tmp_path)
    with pytest.raises(ConfigError, match="optim"):
        train(tiny_config("optim.lr=1e-3"), out_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(), out_dir=tmp_path / "empty", resume=True)


def test_resume_from_a_damaged_run_folder_says_so_in_one_line(tiny_config, tmp_path):
    train(tiny_config("num_epochs=1"), out_dir=tmp_path)
    state = (tmp_path / "last_state.pt").read_bytes()
    for damaged in (state[: len(state) // 2], b"not a torch file\n"):
        (tmp_path / "last_state.pt").write_bytes(damaged)
        with pytest.raises(ConfigError, match="damaged or not the state of a training run") as excinfo:
            train(tiny_config(), out_dir=tmp_path, resume=True)
        assert "\n" not in str(excinfo.value)
    torch.save({"epoch": 1}, tmp_path / "last_state.pt")  # a torch file, but not what train wrote
    with pytest.raises(ConfigError, match="damaged or not the state of a training run"):
        train(tiny_config(), out_dir=tmp_path, resume=True)


def test_seeded_runs_are_reproducible(tiny_config, tmp_path):
    a = train(tiny_config("num_epochs=1"), out_dir=tmp_path / "a")
    b = train(tiny_config("num_epochs=1"), out_dir=tmp_path / "b")
    c = train(tiny_config("num_epochs=1", "seed=1"), out_dir=tmp_path / "c")
    assert _same_weights(load_weights(a.last_weights), load_weights(b.last_weights))
    assert not _same_weights(load_weights(a.last_weights), load_weights(c.last_weights))
    assert a.history[0]["val_psnr"] == b.history[0]["val_psnr"]


def _dead(module: AODNetModule) -> None:
    with torch.no_grad():
        module.conv5.bias.fill_(-10.0)  # K = ReLU(very negative) = 0: the output is pure white


def test_guard_restores_the_last_healthy_weights_when_k_dies(caplog):
    torch.manual_seed(0)
    model = AODNetModule()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    guard = DeadKGuard(model, opt, min_alive=0.05, lr_factor=0.5)
    x = torch.rand(2, 3, 32, 32)
    assert not guard.check(x, "healthy")
    healthy = {k: v.clone() for k, v in model.state_dict().items()}
    _dead(model)
    assert measure(model, x).k_alive == 0
    with torch.no_grad():
        assert float(model(x).min()) == 1.0  # the failure: a white image
    with caplog.at_level(logging.WARNING):
        assert guard.check(x, "provoked")
    assert "dead K" in caplog.text
    assert all(torch.equal(healthy[k], v) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-4)
    assert measure(model, x).k_alive > 0.05


def test_training_recovers_from_a_dead_k(tiny_config, tmp_path, monkeypatch, caplog):
    fresh = tasks.aodnet_init

    def dead_init(seed, std=0.02):
        w = fresh(seed, std)
        w["conv5.bias"][:] = -10.0
        return w

    monkeypatch.setattr(tasks, "aodnet_init", dead_init)
    with caplog.at_level(logging.WARNING, logger="tiledehaze"):
        result = train(tiny_config("num_epochs=1"), out_dir=tmp_path)
    assert "dead K" in caplog.text and "re-initialised conv5" in caplog.text
    assert result.history[-1]["recoveries"] >= 1
    assert result.history[-1]["k_alive"] > 0.05
    module = AODNetModule.from_numpy(load_weights(result.last_weights))
    with torch.no_grad():
        out = module(torch.rand(1, 3, 24, 24))
    assert float(out.min()) < 1.0  # no longer a white image


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import errno

    from tiledehaze.errors import OutputError
    from tiledehaze.models.aodnet import init_weights
    from tiledehaze.train import checkpoint

    first = init_weights(seed=1)
    path = checkpoint.save_checkpoint(tmp_path, checkpoint.BEST, first, {"epoch": 1})

    def full_disk(weights, target, metadata=None):
        open(target, "wb").write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_weights", full_disk)
    with pytest.raises(OutputError, match="no space left"):
        checkpoint.save_checkpoint(tmp_path, checkpoint.BEST, init_weights(seed=2), {"epoch": 2})
    assert _same_weights(load_weights(path), first)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.BEST]  # no temporary left behind
