"""Test images generated on the fly."""

from __future__ import annotations

import numpy as np


def smooth_image(height: int, width: int, channels: int | None = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A natural-looking test image: smooth random structure plus fine texture."""
    import cv2

    rng = np.random.default_rng(seed)
    c = channels or 1
    base = cv2.resize(rng.random((max(2, height // 16), max(2, width // 16), c)).astype(np.float32),
                      (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, c)
    img = np.clip(0.8 * base + 0.2 * rng.random((height, width, c)), 0, 1).astype(np.float32)
    if channels is None:
        img = img[..., 0]
    if np.dtype(dtype).kind == "f":
        return img.astype(dtype)
    return np.round(img * np.iinfo(dtype).max).astype(dtype)


def hazy_pair(height: int = 256, width: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(hazy, clear) float32 RGB with haze from the scattering model on a vertical depth ramp."""
    clear = smooth_image(height, width, 3, np.float32, seed)
    depth = np.linspace(1.0, 0.2, height, dtype=np.float32)[:, None, None]
    t = np.exp(-1.2 * depth)
    hazy = clear * t + 0.9 * (1 - t)
    return hazy.astype(np.float32), clear
