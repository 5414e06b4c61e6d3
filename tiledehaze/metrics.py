"""Image quality, as the training loop, ``tiledehaze eval`` and the scripts measure it.

Every function takes the reference first and the image to judge second, as scikit-image
does; images are float RGB (H, W, 3) in [0, 1] and are compared in float64 with the judged
image clipped to [0, 1].

PSNR is ``skimage.metrics.peak_signal_noise_ratio`` with :data:`PSNR_SETTINGS`; SSIM is
``skimage.metrics.structural_similarity`` with :data:`SSIM_SETTINGS`, the settings of Wang
et al. (2004): a Gaussian window (sigma 1.5) over each RGB channel, averaged. The haze score
is a no-reference measure: the mean dark channel (lower means less haze).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PSNR_SETTINGS = {"data_range": 1.0}
SSIM_SETTINGS = {"data_range": 1.0, "channel_axis": -1, "gaussian_weights": True, "sigma": 1.5,
                 "use_sample_covariance": False}
#: side of the dark channel's min filter in :func:`haze_score`
HAZE_PATCH = 15


def _pair(reference: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(reference, np.float64), np.clip(np.asarray(image, np.float64), 0.0, 1.0)


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB of ``image`` against ``reference``."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(*_pair(reference, image), **PSNR_SETTINGS))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """SSIM of ``image`` against ``reference`` with :data:`SSIM_SETTINGS`."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(*_pair(reference, image), **SSIM_SETTINGS))


def mean_quality(references: Sequence[np.ndarray], images: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR and mean SSIM over a batch (N, H, W, 3)."""
    pairs = list(zip(references, images))
    return float(np.mean([psnr(r, i) for r, i in pairs])), float(np.mean([ssim(r, i) for r, i in pairs]))


def haze_score(image: np.ndarray) -> float:
    """No-reference haze score: mean dark channel of a float RGB image in [0, 1] (lower = less haze)."""
    from .models.dcp import dark_channel

    return float(dark_channel(np.ascontiguousarray(image, np.float32), HAZE_PATCH).mean())


def mean_b_star(image: np.ndarray) -> float:
    """Mean CIELAB b* (blue-yellow axis) of a float RGB image in [0, 1]."""
    import cv2

    lab = cv2.cvtColor(np.clip(np.ascontiguousarray(image, np.float32), 0.0, 1.0), cv2.COLOR_RGB2LAB)
    return float(lab[..., 2].mean())


def call_text(function: str, settings: dict) -> str:
    """``function(key=value, ...)``: how a report says which settings a metric used."""
    return f"{function}({', '.join(f'{k}={v}' for k, v in settings.items())})"


#: block size of JPEG-style compression, and the grey standard deviation below which a region is smooth
BLOCK = 8
SMOOTH_STD = 0.02


def _boundary_steps(image: np.ndarray, mask_h: np.ndarray, mask_v: np.ndarray) -> np.ndarray:
    """RGB steps across the block boundaries selected by the masks (columns, then rows)."""
    dh = image[:, BLOCK::BLOCK] - image[:, BLOCK - 1:-1:BLOCK]
    dv = image[BLOCK::BLOCK] - image[BLOCK - 1:-1:BLOCK]
    return np.concatenate([dh[mask_h].ravel(), dv[mask_v].ravel()])


def block_gain(hazy: np.ndarray, restored: np.ndarray) -> float | None:
    """Energy of the steps across 8x8 block boundaries in smooth regions, output over input.

    Smooth regions (skies, walls) are where the input's local grey standard deviation (9x9) is
    below :data:`SMOOTH_STD`; there, steps at block boundaries are compression artefacts, and a
    model that amplifies them draws blocks and bands. ``None`` where the input has no smooth
    region or no steps there.
    """
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(hazy, np.float32), cv2.COLOR_RGB2GRAY)
    mean = cv2.blur(grey, (9, 9))
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (9, 9)) - mean * mean, 0.0))
    smooth = std < SMOOTH_STD
    mask_h = smooth[:, BLOCK::BLOCK] & smooth[:, BLOCK - 1:-1:BLOCK]
    mask_v = smooth[BLOCK::BLOCK] & smooth[BLOCK - 1:-1:BLOCK]
    before = _boundary_steps(hazy, mask_h, mask_v)
    energy = float(np.mean(before.astype(np.float64) ** 2)) if before.size else 0.0
    if energy <= 1e-12:
        return None
    return float(np.mean(_boundary_steps(restored, mask_h, mask_v).astype(np.float64) ** 2)) / energy
