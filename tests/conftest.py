"""Shared fixtures: test weights and images generated on the fly (nothing is downloaded)."""

from __future__ import annotations

import pytest

from tiledehaze.models.aodnet import init_weights, save_weights
from tiledehaze.train.config import load_config


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory):
    """Non-degenerate AOD-Net weights, independent of the shipped ones (for exactness tests)."""
    weights = init_weights(seed=7)
    for name in weights:
        if name.endswith(".bias"):
            weights[name] += 0.05
    path = tmp_path_factory.mktemp("weights") / "test.safetensors"
    save_weights(weights, path)
    return path


@pytest.fixture(scope="session")
def weights_file(weights_path) -> str:
    """The test weights as a string, for command lines."""
    return str(weights_path)


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
