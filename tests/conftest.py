"""Shared fixtures: test weights and images generated on the fly (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

from tiledehaze.models.aodnet import init_weights, save_weights


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
