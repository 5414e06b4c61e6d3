"""Dark Channel Prior dehazing (He, Sun and Tang, CVPR 2009 / TPAMI 2011), tile-exact.

The clean image is recovered from the scattering model I = J t + A (1 - t):

1. dark channel: ``dark(X) = erode_{patch x patch}(min_c X_c)`` (a square min filter);
2. atmospheric light A, **once per image**, from an overview (see :func:`estimate_airlight`);
3. raw transmission ``t~ = 1 - omega * dark(I / A)``;
4. refinement of t~ with a guided filter (He et al., ECCV 2010) whose guide is the grey
   image, radius ``guided_radius`` and regulariser ``guided_eps``;
5. ``J = (I - A) / max(t, t0) + A``, clipped to [0, 1].

Receptive field: the erode reaches ``patch // 2`` pixels; the guided filter's first box-filter
pass (means and correlations of guide and t~) reaches ``guided_radius`` further, and its
second pass (mean of the coefficients a and b) another ``guided_radius``. So an output pixel
depends only on input pixels at most ``halo = patch // 2 + 2 * guided_radius`` away, and a
tile whose interior edges carry ``halo`` pixels of real context reproduces the whole-image
result. Every filter is a fixed-size window; the only image-wide quantity is A, which the
engine passes with every tile. At the true image border OpenCV's border rules apply
(BORDER_REFLECT_101 for the box filters, the window clipped to the image for the erode);
that is the same for a tile and for the whole image because edge tiles lie on the border.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError
from .base import Model

log = logging.getLogger(__name__)

#: A below this (per channel) is raised to it, so that I / A stays finite on black images.
MIN_AIRLIGHT = 0.05
_BORDER = cv2.BORDER_REFLECT_101


def dark_channel(image: np.ndarray, patch: int = 15) -> np.ndarray:
    """Dark channel of a float32 RGB image (H, W, 3): patch x patch min filter of the channel minimum.

    The window is clipped to the image at its borders (the erode ignores outside pixels).
    """
    image = np.asarray(image, dtype=np.float32)
    m = np.minimum(np.minimum(image[..., 0], image[..., 1]), image[..., 2])
    return _erode(m, patch)


def _erode(m: np.ndarray, patch: int) -> np.ndarray:
    if patch <= 1:
        return m.copy()  # callers reuse m as scratch space
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    # the default border value of erode is +max, i.e. outside pixels never win the minimum
    return cv2.erode(m, kernel)


def estimate_airlight(image: np.ndarray, *, patch: int = 15, top_fraction: float = 0.001,
                     valid: np.ndarray | None = None) -> np.ndarray:
    """Atmospheric light A (3,) of a float32 RGB image in [0, 1].

    Rule: take the ``ceil(top_fraction * H * W)`` (at least one) largest dark-channel values;
    every pixel whose dark channel is at least the smallest of them is a candidate (ties are
    all kept, so the choice does not depend on sort order). A is the RGB value of the candidate
    with the largest R + G + B (the first in raster order on a tie), raised per channel to at
    least :data:`MIN_AIRLIGHT`. Pixels where ``valid`` is False (nodata) are never candidates
    and do not count towards H * W.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB, got shape {image.shape}")
    dark = dark_channel(image, patch).ravel()
    if valid is not None and valid.any():
        dark = np.where(valid.ravel(), dark, -np.inf)
    count = dark.size if valid is None or not valid.any() else int(np.count_nonzero(valid))
    k = max(1, int(np.ceil(top_fraction * count)))
    threshold = np.partition(dark, dark.size - k)[dark.size - k]
    candidates = np.flatnonzero(dark >= threshold)
    pixels = image.reshape(-1, 3)[candidates]
    best = pixels[int(np.argmax(pixels.sum(axis=1)))]
    return np.maximum(best, MIN_AIRLIGHT).astype(np.float32)


def _box(x: np.ndarray, radius: int, dst: np.ndarray | None = None) -> np.ndarray:
    # float32 box sums are accumulated in float64 by OpenCV, so a tile sees the same sums as the whole image
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), dst=dst, normalize=True, borderType=_BORDER)


def restore_block(image: np.ndarray, airlight: np.ndarray, *, patch: int = 15, omega: float = 0.95,
                  t0: float = 0.1, guided_radius: int = 40, guided_eps: float = 1e-3,
                  return_transmission: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """DCP of one contiguous float32 RGB block (H, W, 3) for a given A; returns J (and t if asked).

    Written with OpenCV calls on reused single-channel buffers: a handful of full-size
    temporaries instead of dozens, which makes it about twice as fast as plain numpy.
    """
    image = np.ascontiguousarray(image, np.float32)
    planes = list(cv2.split(image))
    a_light = [float(v) for v in airlight]
    # raw transmission 1 - omega * erode(min_c I_c / A_c)
    m = cv2.multiply(planes[0], 1.0 / a_light[0])
    tmp = cv2.multiply(planes[1], 1.0 / a_light[1])
    cv2.min(m, tmp, dst=m)
    cv2.multiply(planes[2], 1.0 / a_light[2], dst=tmp)
    cv2.min(m, tmp, dst=m)
    raw = _erode(m, patch)
    raw *= np.float32(-omega)
    raw += np.float32(1.0)
    if guided_radius > 0:
        # guided filter (grey guide): q = mean(a) * I + mean(b), a = cov(I, p) / (var(I) + eps), b = mean(p) - a mean(I)
        r = guided_radius
        guide = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        mean_i = _box(guide, r)
        mean_p = _box(raw, r)
        cv2.multiply(guide, raw, dst=m)
        cov_ip = _box(m, r)
        cv2.multiply(mean_i, mean_p, dst=m)
        cov_ip -= m
        cv2.multiply(guide, guide, dst=m)
        var_i = _box(m, r, dst=raw)
        cv2.multiply(mean_i, mean_i, dst=m)
        var_i -= m
        var_i += np.float32(guided_eps)
        a = cv2.divide(cov_ip, var_i, dst=cov_ip)
        cv2.multiply(a, mean_i, dst=m)
        b = cv2.subtract(mean_p, m, dst=mean_p)
        t = _box(a, r, dst=mean_i)
        cv2.multiply(t, guide, dst=t)
        t += _box(b, r, dst=var_i)
    else:
        t = raw
    t_out = t.copy() if return_transmission else None
    # J = (I - A) / max(t, t0) + A
    cv2.max(t, float(t0), dst=t)
    inv_t = cv2.divide(1.0, t, dst=t)
    for c in range(3):
        cv2.subtract(planes[c], a_light[c], dst=planes[c])
        cv2.multiply(planes[c], inv_t, dst=planes[c])
        cv2.add(planes[c], a_light[c], dst=planes[c])
    out = cv2.merge(planes)
    np.clip(out, 0.0, 1.0, out=out)
    return (out, t_out) if return_transmission else out


class DCPModel(Model):
    """Dark Channel Prior as an engine model: A from the overview, everything else per tile."""

    name = "dcp"
    needs_overview = True
    preferred_batch = 1

    #: inside a tile, work in blocks of this many output pixels a side (plus halo): keeps buffers in cache
    block: int = 1024

    def __init__(self, *, patch: int = 15, omega: float = 0.95, t0: float = 0.1, top_fraction: float = 0.001,
                 guided_radius: int = 40, guided_eps: float = 1e-3) -> None:
        if not (isinstance(patch, (int, np.integer)) and patch >= 1 and patch % 2 == 1):
            raise ConfigError(f"dcp: patch must be an odd positive integer, not {patch!r}")
        if not (isinstance(guided_radius, (int, np.integer)) and guided_radius >= 0):
            raise ConfigError(f"dcp: guided_radius must be an integer >= 0, not {guided_radius!r}")
        if not 0.0 < omega <= 1.0:
            raise ConfigError(f"dcp: omega must be in (0, 1], not {omega!r}")
        if not 0.0 < t0 < 1.0:
            raise ConfigError(f"dcp: t0 must be in (0, 1), not {t0!r}")
        if not 0.0 < top_fraction <= 1.0:
            raise ConfigError(f"dcp: top_fraction must be in (0, 1], not {top_fraction!r}")
        if not guided_eps > 0.0:
            raise ConfigError(f"dcp: guided_eps must be > 0, not {guided_eps!r}")
        self.patch = int(patch)
        self.omega = float(omega)
        self.t0 = float(t0)
        self.top_fraction = float(top_fraction)
        self.guided_radius = int(guided_radius)
        self.guided_eps = float(guided_eps)
        self.halo = self.patch // 2 + 2 * self.guided_radius

    def global_state(self, overview: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
        """A from the overview; the dark channel there uses the same ``patch`` in overview pixels."""
        airlight = estimate_airlight(np.asarray(overview, np.float32), patch=self.patch,
                                     top_fraction=self.top_fraction, valid=valid)
        log.debug("dcp: atmospheric light %s from a %s overview", airlight.tolist(), overview.shape[:2])
        return {"airlight": airlight}

    def run(self, tiles: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        if "airlight" not in state:
            raise ValueError("dcp needs state['airlight'] from global_state(overview); A is never estimated per tile")
        airlight = np.asarray(state["airlight"], np.float32)
        tiles = np.asarray(tiles, np.float32)
        out = np.empty_like(tiles)
        for i, tile in enumerate(tiles):
            self._run_blocked(tile, airlight, out[i])
        return out

    def _run_blocked(self, tile: np.ndarray, airlight: np.ndarray, out: np.ndarray) -> None:
        """Large tiles go through in cache-sized blocks carrying ``halo`` context: same result, faster."""
        h, w = tile.shape[:2]
        core, halo = self.block, self.halo
        for y in range(0, h, core):
            for x in range(0, w, core):
                y1, x1 = min(h, y + core), min(w, x + core)
                ya, yb, xa, xb = max(0, y - halo), min(h, y1 + halo), max(0, x - halo), min(w, x1 + halo)
                j = restore_block(tile[ya:yb, xa:xb], airlight, patch=self.patch, omega=self.omega, t0=self.t0,
                                  guided_radius=self.guided_radius, guided_eps=self.guided_eps)
                out[y:y1, x:x1] = j[y - ya:y1 - ya, x - xa:x1 - xa]

    def describe(self) -> str:
        return (f"dcp (patch {self.patch}, omega {self.omega}, t0 {self.t0}, top {self.top_fraction:g}, "
                f"guided r {self.guided_radius} eps {self.guided_eps:g}, halo {self.halo})")


def dehaze(image: np.ndarray, **options: Any) -> np.ndarray:
    """Whole-image DCP on a float32 RGB image in [0, 1] (A estimated from the image itself)."""
    model = DCPModel(**options)
    image = np.ascontiguousarray(image, np.float32)
    return model.run(image[None], model.global_state(image))[0]
