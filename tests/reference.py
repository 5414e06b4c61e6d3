"""An independent reference: AOD-Net on a whole image, written from the paper with scipy.

Nothing here goes through tiledehaze's engine, backends or pixel conversions: the weights are
read with safetensors, the convolutions are ``scipy.ndimage.correlate`` with zero padding in
float64, and stored pixels are converted with plain numpy. File and array outputs are compared
against this, so a bug shared by the tiled and the one-pass paths of the engine still shows.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate

#: conv name -> the layers whose outputs are concatenated as its input ("I" is the hazy image)
INPUTS = {"conv1": ["I"], "conv2": ["conv1"], "conv3": ["conv1", "conv2"], "conv4": ["conv2", "conv3"],
          "conv5": ["conv1", "conv2", "conv3", "conv4"]}


def read_weights(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}


def aodnet(weights: dict[str, np.ndarray], rgb: np.ndarray) -> np.ndarray:
    """J = ReLU(K * I - K + 1) for float RGB (H, W, 3) in [0, 1]; float64 out."""
    feats = {"I": np.moveaxis(np.asarray(rgb, np.float64), -1, 0)}
    for name, sources in INPUTS.items():
        x = np.concatenate([feats[s] for s in sources])
        w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
        out = np.empty((3,) + x.shape[1:])
        for o in range(3):
            out[o] = b[o] + sum(correlate(x[i], w[o, i], mode="constant", cval=0.0) for i in range(len(x)))
        feats[name] = np.maximum(out, 0.0)
    k, i = feats["conv5"], feats["I"]
    return np.moveaxis(np.maximum(k * i - k + 1.0, 0.0), 0, -1)


def restore(weights: dict[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    """What tiledehaze promises for a stored image: same shape and dtype, gray stays gray, alpha untouched.

    Gray is given to the network as three equal channels and comes back as their mean.
    """
    dtype = image.dtype
    px = image[..., None] if image.ndim == 2 else image
    color = 1 if px.shape[2] <= 2 else 3
    top = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
    rgb = np.clip(px[..., :color].astype(np.float64) / top, 0.0, 1.0)
    out = aodnet(weights, np.repeat(rgb, 3, axis=2) if color == 1 else rgb)
    if color == 1:
        out = out.mean(axis=2, keepdims=True)
    out = np.clip(out, 0.0, 1.0)
    stored = np.floor(out * top + 0.5).astype(dtype) if dtype.kind in "ui" else out.astype(dtype)
    result = np.concatenate([stored, px[..., color:]], axis=2)
    return result[..., 0] if image.ndim == 2 else result


def tolerance(dtype) -> float:
    """One unit of the stored type for integers; float32 rounding (2e-6) for floats, in 8-bit units."""
    return 1.0 if np.dtype(dtype).kind in "ui" else 255 * 2e-6


def lsb_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference in units of the last bit (of 8 bits for floats)."""
    scale = 1.0 if a.dtype.kind in "ui" else 255.0
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() * scale)


def assert_equal_to_rounding(out: np.ndarray, ref: np.ndarray) -> None:
    """``out`` equals the reference up to float32 rounding: at most one unit of the last bit anywhere,
    and off by that unit on under 1 % of the values (measured: 0.002 % at 8 bits, 0.3 % at 16).

    The second condition catches what a one-unit tolerance alone lets through, such as scaling by
    254 instead of 255 or truncating instead of rounding.
    """
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, out.dtype, ref.shape, ref.dtype)
    worst = lsb_error(out, ref)
    off = float((np.abs(out.astype(np.float64) - ref.astype(np.float64)) * (255 if out.dtype.kind == "f" else 1)
                 > tolerance(out.dtype) / 2).mean())
    assert worst <= tolerance(out.dtype) and off < 0.01, f"{worst:.3g} units at worst, {off:.2%} of values off"
