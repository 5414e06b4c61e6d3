"""The AOD-Net weights the package ships: loadable, documented, and better than doing nothing."""

import cv2
import numpy as np
import torch

from tiledehaze.models.aodnet import DEFAULT_WEIGHTS, load_weights, read_metadata
from tiledehaze.models.aodnet_torch import AODNetModule
from tiledehaze.train import config_hash, load_config
from tiledehaze.train.data import load_builtin
from tiledehaze.metrics import psnr
from tiledehaze.train.synth import add_haze, ramp_depth


def dark_channel(rgb: np.ndarray) -> float:
    return float(cv2.erode(rgb.min(axis=2), np.ones((15, 15), np.uint8)).mean())


def test_shipped_weights_load_and_say_how_they_were_made():
    weights = load_weights(DEFAULT_WEIGHTS)
    meta = read_metadata(DEFAULT_WEIGHTS)
    assert set(weights) and all(np.isfinite(v).all() for v in weights.values())
    for key in ("config_hash", "seed", "val_psnr", "val_ssim", "hazy_psnr", "training_command"):
        assert key in meta, key
    assert float(meta["val_psnr"]) > float(meta["hazy_psnr"])
    assert (DEFAULT_WEIGHTS.parent / "README.md").is_file()
    # the config file named in the metadata is the one the weights were trained with
    assert config_hash(load_config(meta["training_config"])) == meta["config_hash"]


def test_shipped_weights_remove_haze_from_a_held_out_image():
    clear = np.array(load_builtin("coffee")[0])  # the validation image, never trained on
    hazy, _ = add_haze(clear, ramp_depth(clear.shape[:2], np.random.default_rng(0)), beta=1.0, airlight=0.85)
    with torch.no_grad():
        x = torch.from_numpy(hazy).permute(2, 0, 1)[None]
        out = AODNetModule.from_numpy(load_weights()).eval()(x)[0].permute(1, 2, 0).numpy()
    # the veil is taken away: the haze score (mean 15x15 dark channel) halves, measured 0.38 -> 0.19
    assert dark_channel(out) < 0.6 * dark_channel(hazy)
    # and the result is closer to the clear image by a margin no small brightness change gives (+4.2 dB)
    assert psnr(clear, out) > psnr(clear, hazy) + 3.0
    assert psnr(clear, 0.98 * hazy) < psnr(clear, hazy) + 3.0  # darkening alone does not pass
