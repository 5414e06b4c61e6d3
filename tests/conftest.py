"""Shared fixtures: test weights and images generated on the fly (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

from tiledehaze.models.aodnet import init_weights, save_weights
from tiledehaze.train.config import load_config


def spread_weights():
    """Random AOD-Net weights whose output looks like a trained model's: spread over [0, 1], rarely clipped.

    The paper's init (std 0.02, zero biases) gives an almost white image, on which a seam of a
    few percent rounds away at 8 bits; these are wider and biased so K stays alive.
    """
    weights = init_weights(seed=4, std=0.2)
    for name in weights:
        if name.endswith(".bias"):
            weights[name] += 0.1
    return weights


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory):
    """AOD-Net weights independent of the shipped ones, checked to give a spread-out output."""
    from . import reference
    from .images import smooth_image

    path = tmp_path_factory.mktemp("weights") / "test.safetensors"
    save_weights(spread_weights(), path)
    out = reference.aodnet(reference.read_weights(path), smooth_image(200, 300, 3, np.float32, seed=3))
    # like a trained model on a photo: dark and bright pixels, a wide spread, little clipping
    assert out.std() > 0.15 and np.percentile(out, 5) < 0.35 and np.percentile(out, 95) > 0.85
    assert ((out <= 0) | (out >= 1)).mean() < 0.05
    return path


@pytest.fixture(scope="session")
def weights_file(weights_path) -> str:
    """The test weights as a string, for command lines."""
    return str(weights_path)


@pytest.fixture(scope="session")
def ref_weights(weights_path):
    """The test weights as float64 arrays, read without tiledehaze, for the reference forward pass."""
    from . import reference

    return reference.read_weights(weights_path)


@pytest.fixture(scope="session")
def make_photo():
    """``make_photo(path, height, width, seed=0)`` writes a hazy photo in the format of the path's extension."""
    from pathlib import Path

    import tifffile
    from PIL import Image

    from .images import hazy_photo

    def make(path, height: int = 96, width: int = 128, seed: int = 0) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = hazy_photo(height, width, seed)
        if path.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(path, pixels, tile=(64, 64), compression="zlib", photometric="rgb")
        else:
            Image.fromarray(pixels).save(path)
        return path

    return make


@pytest.fixture
def tiny_config():
    """A training config that runs in about a second: tiny patches, few steps, two images."""
    def make(*overrides: str) -> dict:
        return load_config(None, [
            "patch_size=16", "samples_per_epoch=32", "train_batch_size=8", "val_batch_size=4",
            "num_epochs=2", "threads=1", "data.clean_images=[astronaut, coffee]", "data.val_images=[coffee]",
            "data.val_samples=4", "data.val_patch_size=24", "guard.check_every=2", *overrides])
    return make
