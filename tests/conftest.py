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
