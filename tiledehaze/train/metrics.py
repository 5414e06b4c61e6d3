"""Full-reference image quality, as scikit-image computes it.

PSNR uses ``data_range=1.0``. SSIM uses the settings of Wang et al. (2004):
``data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False`` (7x7-equivalent Gaussian window over each RGB channel, averaged).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

SSIM_SETTINGS = {"data_range": 1.0, "channel_axis": -1, "gaussian_weights": True, "sigma": 1.5,
                 "use_sample_covariance": False}


def psnr(result: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of one float RGB image in [0, 1] against its reference."""
    return float(peak_signal_noise_ratio(reference.astype(np.float64), np.clip(result, 0, 1).astype(np.float64),
                                         data_range=1.0))


def ssim(result: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of one float RGB image (H, W, 3) in [0, 1] with :data:`SSIM_SETTINGS`."""
    return float(structural_similarity(reference.astype(np.float64), np.clip(result, 0, 1).astype(np.float64),
                                       **SSIM_SETTINGS))


def mean_quality(results: np.ndarray, references: np.ndarray) -> tuple[float, float]:
    """Mean PSNR and mean SSIM over a batch (N, H, W, 3)."""
    p = [psnr(r, c) for r, c in zip(results, references)]
    s = [ssim(r, c) for r, c in zip(results, references)]
    return float(np.mean(p)), float(np.mean(s))
