"""Evaluation: pairing by name, metrics, and the files a report consists of."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from tiledehaze.commands import eval as eval_command
from tiledehaze.errors import ConfigError, InputError
from tiledehaze.dataset import clear_candidates, read_rgb
from tiledehaze.evaluate import evaluate, match_pairs, parse_crop


def write(path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))


def clear_image(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    img[::7] *= 0.2
    return img


def add_haze(clear: np.ndarray) -> np.ndarray:
    t = np.linspace(0.25, 0.8, clear.shape[0], dtype=np.float32)[:, None, None]
    return clear * t + 0.9 * (1 - t)


def test_reside_names_pair_with_their_ground_truth(tmp_path):
    for name in ("0001_0.8_0.2.png", "1400_9.png", "27_outdoor.jpg", "scene.png"):
        write(tmp_path / "hazy" / name, np.zeros((8, 8, 3)))
    for name in ("0001.png", "1400.png", "1400_9_extra.png", "27_outdoor.jpg", "scene.png", "unused.png"):
        write(tmp_path / "clear" / name, np.zeros((8, 8, 3)))
    pairs = {p.hazy.name: p.clear.name for p in match_pairs(tmp_path / "hazy", tmp_path / "clear")}
    assert pairs == {"0001_0.8_0.2.png": "0001.png", "1400_9.png": "1400.png", "27_outdoor.jpg": "27_outdoor.jpg",
                     "scene.png": "scene.png"}
    assert clear_candidates("0001_0.8_0.2") == ["0001_0.8_0.2", "0001_0.8", "0001"]


def test_a_hazy_image_without_ground_truth_is_an_input_error(tmp_path):
    write(tmp_path / "hazy" / "a_1.png", np.zeros((8, 8, 3)))
    write(tmp_path / "clear" / "b.png", np.zeros((8, 8, 3)))
    with pytest.raises(InputError, match="a_1.png"):
        match_pairs(tmp_path / "hazy", tmp_path / "clear")


def test_crop_bounds_are_parsed_as_slices():
    assert parse_crop("10,470,10,630") == (10, 470, 10, 630)
    with pytest.raises(ConfigError, match="four integers"):
        parse_crop("10,470")
    with pytest.raises(ConfigError, match="top < bottom"):
        parse_crop("470,10,10,630")


def test_eval_writes_json_markdown_and_grids_and_ranks_clear_above_hazy(tmp_path):
    from tiledehaze.models.aodnet import init_weights, save_weights

    clear = clear_image()
    rng = np.random.default_rng(1)
    write(tmp_path / "clear" / "0001.png", clear)
    write(tmp_path / "hazy" / "0001_0.9_0.2.png", add_haze(clear))
    write(tmp_path / "hazy" / "0001_1.png", clear + rng.normal(0, 0.01, clear.shape))  # nearly clear
    weights = tmp_path / "aodnet.safetensors"
    save_weights(init_weights(0), weights)

    report = evaluate(tmp_path / "hazy", tmp_path / "clear", models=["dcp", "aodnet"], out_dir=tmp_path / "out",
                      model_options={"aodnet": {"weights": weights}})

    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "structural_similarity" in data["settings"]["ssim"] and "data_range=1.0" in data["settings"]["ssim"]
    rows = {(r["image"], r["model"]): r for r in data["results"]}
    assert set(rows) == {(i, m) for i in ("0001_0.9_0.2", "0001_1") for m in ("input", "dcp", "aodnet")}
    assert rows[("0001_1", "input")]["psnr"] > rows[("0001_0.9_0.2", "input")]["psnr"]
    assert rows[("0001_1", "input")]["ssim"] > rows[("0001_0.9_0.2", "input")]["ssim"]
    assert rows[("0001_0.9_0.2", "dcp")]["psnr"] > rows[("0001_0.9_0.2", "input")]["psnr"]
    assert rows[("0001_0.9_0.2", "dcp")]["haze_after"] < rows[("0001_0.9_0.2", "dcp")]["haze_before"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 0001_0.9_0.2 | dcp |" in md and "SSIM" in md
    grid = read_rgb(tmp_path / "out" / "grids" / "0001_0.9_0.2.png")
    assert grid.shape[1] > 4 * grid.shape[0] * 0.9  # hazy | dcp | aodnet | clear side by side
    assert report.summary()["dcp"]["psnr"] is not None


def test_eval_without_ground_truth_reports_haze_scores_only(tmp_path):
    write(tmp_path / "hazy" / "photo.png", add_haze(clear_image()))
    report = evaluate(tmp_path / "hazy", models=["dcp"], out_dir=tmp_path / "out")
    dcp = [r for r in report.results if r.model == "dcp"][0]
    assert dcp.psnr is None and dcp.ssim is None
    assert dcp.haze_after < dcp.haze_before
    assert (tmp_path / "out" / "grids" / "photo.png").is_file()


def test_crop_clear_makes_a_bordered_ground_truth_comparable(tmp_path):
    clear = clear_image(116, 148)
    write(tmp_path / "clear" / "1400.png", clear)
    write(tmp_path / "hazy" / "1400_1.png", add_haze(clear[10:106, 10:138]))
    with pytest.raises(InputError, match="crop-clear"):
        evaluate(tmp_path / "hazy", tmp_path / "clear", models=["dcp"])
    report = evaluate(tmp_path / "hazy", tmp_path / "clear", models=["dcp"], crop_clear=(10, 106, 10, 138))
    assert report.summary()["dcp"]["psnr"] > report.summary()["input"]["psnr"]


def test_eval_command_prints_a_table(tmp_path, capsys):
    write(tmp_path / "hazy" / "a.png", add_haze(clear_image()))
    parser = argparse.ArgumentParser()
    eval_command.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--hazy", str(tmp_path / "hazy"), "--model", "dcp", "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert "| a | dcp |" in capsys.readouterr().out


def test_cli_eval_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    from tiledehaze.cli import main

    assert main(["eval", "--hazy", str(tmp_path / "nowhere"), "--model", "dcp"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a folder" in err[0]


def test_model_options_reach_the_model(tmp_path):
    from tiledehaze.commands.eval import parse_model_options
    from tiledehaze.errors import ConfigError

    assert parse_model_options(["dcp.guided_radius=20", "dcp.omega=0.9"]) == {"dcp": {"guided_radius": 20, "omega": 0.9}}
    with pytest.raises(ConfigError):
        parse_model_options(["guided_radius=20"])
    write(tmp_path / "hazy" / "a.png", add_haze(clear_image()))
    report = evaluate(tmp_path / "hazy", models=["dcp"], model_options={"dcp": {"guided_radius": 5}})
    assert "r 5" in report.settings["models"]["dcp"]


def test_yellow_shift_measures_a_colour_cast_and_is_reported(tmp_path):
    from tiledehaze.metrics import mean_b_star

    grey = np.full((8, 8, 3), 0.5, np.float32)
    yellowed = grey * np.array([1.05, 1.05, 0.85], np.float32)  # a warm cast: less blue
    assert abs(mean_b_star(grey)) < 0.01
    assert mean_b_star(yellowed) > 5 and mean_b_star(grey * np.array([0.9, 0.95, 1.1], np.float32)) < -5
    write(tmp_path / "hazy" / "photo.png", add_haze(clear_image()))
    report = evaluate(tmp_path / "hazy", models=["dcp"], out_dir=tmp_path / "out")
    rows = {r.model: r for r in report.results}
    assert rows["input"].yellow_shift == 0.0
    import tiledehaze

    hazy = read_rgb(tmp_path / "hazy" / "photo.png")
    expected = mean_b_star(tiledehaze.restore(hazy, model="dcp")) - mean_b_star(hazy)
    assert rows["dcp"].yellow_shift == pytest.approx(expected, abs=1e-3)
    assert "yellow shift" in (tmp_path / "out" / "report.md").read_text()
    assert "yellow_shift" in json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["dcp"]
