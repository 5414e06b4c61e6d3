"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from tiledehaze.models.aodnet import init_weights, save_weights


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> str:
    """AOD-Net weights made at test time (the trained defaults are not needed to test plumbing).

    Biases get +0.05 so that K is not a dead ReLU and outputs are not uniformly white.
    """
    weights = init_weights(seed=0)
    for name in list(weights):
        if name.endswith(".bias"):
            weights[name] = weights[name] + np.float32(0.05)
    path = tmp_path_factory.mktemp("weights") / "aodnet-test.safetensors"
    save_weights(weights, path)
    return str(path)


def hazy_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 scene with haze that thickens toward the top, like a landscape photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([0.5 + 0.4 * np.sin(x / (17 + 9 * c) + y / (23 + 5 * c) + rng.uniform(0, 6)) for c in range(3)], -1)
    t = (0.3 + 0.7 * y / max(height - 1, 1))[..., None]
    hazy = scene * t + 0.85 * (1 - t)
    return np.clip(hazy * 255 + rng.normal(0, 2, hazy.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def make_photo():
    """``make_photo(path, height, width, seed=0)`` writes a photo in the format of the path's extension."""
    from PIL import Image
    import tifffile

    def make(path, height: int = 96, width: int = 128, seed: int = 0):
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = hazy_photo(height, width, seed)
        if path.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(path, pixels, tile=(64, 64), compression="zlib")
        else:
            Image.fromarray(pixels).save(path)
        return path

    return make
