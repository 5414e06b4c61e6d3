"""Hazy/clear pair synthesis with the atmospheric scattering model.

A hazy image is ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta d)`` (Koschmieder's
law): ``J`` the clear scene, ``A`` the atmospheric light and ``d`` the scene depth. Depth comes
from procedural fields (a ramp toward a horizon, smooth noise, mixes, uniform haze, nearer
layers in front of a background), from the colour-attenuation prior (Zhu et al. 2015) or from
a real disparity map.

Optionally the haze is more like real haze than the textbook model: scattering that depends
on the wavelength (Angstrom's law, so distant things turn blue-grey), an airlight that grows
brighter toward one side of the scene, and procedural depth drawn over a scene several times
larger than the training patch, so a patch sees the gentle depth changes of a real scene
rather than a whole horizon in 48 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError

#: the procedural depth models; ``cap`` and ``disparity`` need a depth map from the caller
PROCEDURAL_DEPTHS = ("ramp", "noise", "mix", "uniform", "layers")
#: centre wavelengths (nm) of the R, G and B primaries (CIE 1931 RGB)
WAVELENGTHS_NM = np.array([700.0, 546.1, 435.8])
DEPTH_MODELS = (*PROCEDURAL_DEPTHS, "map")


@dataclass(frozen=True)
class SynthConfig:
    """Ranges the haze parameters are drawn from (uniformly)."""

    #: scattering coefficient; AOD-Net's paper used [0.4, 1.6]
    beta: tuple[float, float] = (0.4, 1.6)
    #: draw beta uniformly ("linear") or log-uniformly ("log": as many light hazes as dense ones)
    beta_scale: str = "linear"
    #: a procedural depth field starts at a near depth drawn from this range (0: the patch reaches the camera)
    near: tuple[float, float] = (0.0, 0.7)
    #: atmospheric light (grey level); AOD-Net's paper used [0.6, 1.0]
    airlight: tuple[float, float] = (0.6, 1.0)
    #: largest relative per-channel deviation of A from grey (a slightly tinted sky)
    tint: float = 0.05
    #: depth is normalised to [0, dmax] with dmax drawn from this range
    depth_max: tuple[float, float] = (0.7, 1.3)
    #: relative frequency of each depth model; ``map`` uses the image's own depth map
    depth_weights: dict[str, float] = field(
        default_factory=lambda: {"ramp": 1.0, "noise": 1.0, "mix": 1.0, "uniform": 1.0, "map": 2.0})
    #: Angstrom exponent: beta_c = beta * (lambda_c / 546 nm) ** -exponent (0: grey fog; ~1.3: fine haze)
    angstrom: tuple[float, float] = (0.0, 0.0)
    #: the airlight changes by up to +-this fraction across the scene, along a random direction
    airlight_gradient: float = 0.0
    #: procedural depth is drawn over a scene this many times the patch side (1: the patch is the scene)
    scene_scale: tuple[float, float] = (1.0, 1.0)
    #: probability that the haze is exposed as a camera exposes a hazy scene: an airlight dimmer
    #: than the picture's whites is raised to them (see :func:`expose_airlight`)
    exposure: float = 0.0

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "SynthConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"unknown synthesis option(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for key, value in cfg.items():
            if key in ("beta", "airlight", "depth_max", "angstrom", "scene_scale", "near"):
                lo, hi = _range(value, key)
                kw[key] = (lo, hi)
            elif key == "depth_weights":
                bad = set(value) - set(DEPTH_MODELS)
                if bad or not any(float(v) > 0 for v in value.values()):
                    raise ConfigError(f"synthesis.depth_weights: models are {', '.join(DEPTH_MODELS)}, "
                                      "at least one with a positive weight")
                kw[key] = {k: float(v) for k, v in value.items()}
            elif key == "beta_scale":
                if value not in ("linear", "log"):
                    raise ConfigError("synthesis.beta_scale must be 'linear' or 'log'")
                kw[key] = value
            else:
                kw[key] = float(value)
        out = cls(**kw)
        if not 0.0 <= out.tint < 0.5:
            raise ConfigError("synthesis.tint must be in [0, 0.5)")
        if out.beta[0] < 0 or out.airlight[0] <= 0 or out.airlight[1] > 1.0 or out.depth_max[0] < 0:
            raise ConfigError("synthesis: need beta >= 0, 0 < airlight <= 1 and depth_max >= 0")
        if out.beta_scale == "log" and out.beta[0] <= 0:
            raise ConfigError("synthesis: a log-uniform beta needs beta > 0")
        if out.scene_scale[0] < 1.0 or not 0.0 <= out.airlight_gradient < 1.0:
            raise ConfigError("synthesis: need scene_scale >= 1 and 0 <= airlight_gradient < 1")
        if not 0.0 <= out.exposure <= 1.0:
            raise ConfigError("synthesis.exposure is a probability: 0 to 1")
        return out


def _range(value: Any, key: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"synthesis.{key} must be a pair [low, high], not {value!r}") from None
    if lo > hi:
        raise ConfigError(f"synthesis.{key}: low {lo} is above high {hi}")
    return lo, hi


def add_haze(clear: np.ndarray, depth: np.ndarray, *, beta: float | np.ndarray, airlight: float | np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``I = J t + A (1 - t)``, ``t = exp(-beta d)``; returns (hazy, t).

    ``clear`` is float RGB (H, W, 3) in [0, 1], ``depth`` is (H, W) and non-negative. ``beta``
    is a scalar or one value per channel; ``airlight`` a scalar, one value per channel or a
    (H, W, 3) map. ``t`` is (H, W), or (H, W, 3) when beta differs per channel.
    """
    b = np.asarray(beta, np.float32)
    d = np.maximum(depth, 0.0).astype(np.float32)[..., None]
    t = np.exp(-b.reshape(1, 1, -1) * d).astype(np.float32)
    a = np.asarray(airlight, np.float32)
    a = a if a.ndim == 3 else a.reshape(1, 1, -1)
    hazy = clear * t + a * (1.0 - t)
    return np.clip(hazy, 0.0, 1.0).astype(np.float32), (t[..., 0] if b.size == 1 else t)


def normalise(depth: np.ndarray) -> np.ndarray:
    """Scale a depth map to [0, 1] (a constant map becomes all zeros)."""
    lo, hi = float(depth.min()), float(depth.max())
    return np.zeros_like(depth, np.float32) if hi - lo < 1e-8 else ((depth - lo) / (hi - lo)).astype(np.float32)


def ramp_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Depth rising toward a (possibly tilted) horizon: near at one edge, far at the other."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(-0.35, 0.35)  # mostly vertical, slightly tilted
    ramp = -(yy * np.cos(angle) + xx * np.sin(angle))  # far at the top
    ramp = normalise(ramp) ** rng.uniform(0.5, 2.0)  # how fast it recedes
    return ramp.astype(np.float32)


def noise_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth random field: uniform noise on a coarse grid, upsampled with bicubic interpolation."""
    h, w = shape
    cells = int(rng.integers(2, 7))
    coarse = rng.random((cells, cells)).astype(np.float32)
    field_ = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return normalise(field_)


def mix_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A ramp perturbed by smooth noise."""
    w = rng.uniform(0.2, 0.8)
    return normalise((1 - w) * ramp_depth(shape, rng) + w * noise_depth(shape, rng))


def cap_depth(image: np.ndarray, *, smooth: float = 0.02) -> np.ndarray:
    """Colour-attenuation prior (Zhu, Mai and Shao 2015): ``d = 0.121779 + 0.959710 V - 0.780245 S``.

    ``image`` is float RGB in [0, 1]; the result is normalised to [0, 1] and blurred with a
    Gaussian of ``smooth`` times the image's shorter side, so texture does not become depth.
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(image, np.float32), cv2.COLOR_RGB2HSV)
    d = 0.121779 + 0.959710 * hsv[..., 2] - 0.780245 * hsv[..., 1]
    # Zhu et al. take a local minimum so bright small objects do not look far away
    d = cv2.erode(d, np.ones((7, 7), np.uint8))
    sigma = max(1.0, smooth * min(image.shape[:2]))
    return normalise(cv2.GaussianBlur(d, (0, 0), sigma))


def disparity_depth(disparity: np.ndarray, *, percentile: float = 2.0) -> np.ndarray:
    """Depth from a disparity map (depth ~ 1 / disparity), normalised to [0, 1].

    Invalid (non-finite or non-positive) disparities are filled with the smallest valid one,
    i.e. treated as far away.
    """
    disp = np.asarray(disparity, np.float32)
    valid = np.isfinite(disp) & (disp > 0)
    if not valid.any():
        raise ConfigError("disparity map holds no positive values")
    floor = np.percentile(disp[valid], percentile)
    disp = np.where(valid, np.maximum(disp, floor), floor)
    return normalise(1.0 / disp)


def layers_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A far background with one to three nearer objects (ellipses at constant depths) in front of it."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = np.ones(shape, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.1, 0.5) * h, rng.uniform(0.1, 0.5) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        depth[inside] = np.minimum(depth[inside], rng.uniform(0.0, 0.8))
    return cv2.GaussianBlur(depth, (0, 0), max(0.5, 0.004 * max(h, w)))


def random_depth(shape: tuple[int, int], rng: np.random.Generator, model: str) -> np.ndarray:
    """A procedural depth field in [0, 1] from one of :data:`PROCEDURAL_DEPTHS`."""
    if model == "ramp":
        return ramp_depth(shape, rng)
    if model == "noise":
        return noise_depth(shape, rng)
    if model == "mix":
        return mix_depth(shape, rng)
    if model == "uniform":
        return np.ones(shape, np.float32)
    if model == "layers":
        return layers_depth(shape, rng)
    raise ConfigError(f"unknown depth model {model!r}; choose from {', '.join(PROCEDURAL_DEPTHS)}")


@dataclass(frozen=True)
class HazeParams:
    """One draw of the haze parameters."""

    beta: float
    airlight: np.ndarray  # (3,)
    depth_max: float
    depth_model: str
    angstrom: float = 0.0

    def channel_beta(self) -> np.ndarray:
        """Scattering coefficient per RGB channel (Angstrom's law, relative to green)."""
        return (self.beta * (WAVELENGTHS_NM / WAVELENGTHS_NM[1]) ** -self.angstrom).astype(np.float32)


def _draw(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A uniform draw from ``bounds``; a fixed value (low == high) draws no random number."""
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def draw_params(rng: np.random.Generator, cfg: SynthConfig, *, has_map: bool) -> HazeParams:
    """Draw beta, a (slightly tinted) A, the depth scale, the depth model and the Angstrom exponent."""
    models = [m for m, w in cfg.depth_weights.items() if w > 0 and (has_map or m != "map")]
    if not models:
        models = ["uniform"]
    weights = np.array([cfg.depth_weights.get(m, 1.0) for m in models], np.float64)
    model = str(rng.choice(models, p=weights / weights.sum()))
    a = rng.uniform(*cfg.airlight)
    tint = 1.0 + rng.uniform(-cfg.tint, cfg.tint, 3) if cfg.tint > 0 else np.ones(3)
    airlight = np.clip(a * tint, 0.0, 1.0).astype(np.float32)
    lo, hi = cfg.beta
    beta = float(np.exp(rng.uniform(np.log(lo), np.log(hi))) if cfg.beta_scale == "log" else rng.uniform(lo, hi))
    return HazeParams(beta, airlight, float(rng.uniform(*cfg.depth_max)), model,
                      _draw(rng, cfg.angstrom))


def _scene_window(field_: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random window of 1/``scale`` of ``field_`` (a whole scene), resized back to its shape.

    The procedural fields are smooth, so drawing the scene at patch resolution and enlarging a
    window of it is close to drawing a ``scale`` times larger scene, and far faster; only the
    edges of ``layers`` objects soften, by up to ``scale`` pixels.
    """
    if scale <= 1.0:
        return field_
    h, w = field_.shape[:2]
    wh, ww = max(2, int(round(h / scale))), max(2, int(round(w / scale)))
    y, x = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
    return cv2.resize(np.ascontiguousarray(field_[y:y + wh, x:x + ww]), (w, h), interpolation=cv2.INTER_LINEAR)


def airlight_field(shape: tuple[int, int], airlight: np.ndarray, gradient: float, rng: np.random.Generator
                   ) -> np.ndarray:
    """A (H, W, 3) airlight that changes linearly by up to +-``gradient`` along a random direction."""
    h, w = shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = normalise(yy * np.sin(angle) + xx * np.cos(angle)) * 2.0 - 1.0
    gain = 1.0 + rng.uniform(0.0, gradient) * ramp
    return np.clip(gain[..., None] * airlight.reshape(1, 1, 3), 0.0, 1.0).astype(np.float32)


def expose_airlight(airlight: np.ndarray, clear: np.ndarray, rng: np.random.Generator,
                    probability: float = 1.0) -> np.ndarray:
    """With ``probability`` (no random draw at 0), raise a grey level of ``airlight`` (3,) below
    the whites of ``clear`` to them, keeping its tint.

    A camera exposes a hazy scene for its bright haze, so in a hazy photograph the airlight is
    about as bright as the brightest things in the scene or brighter; an airlight drawn without
    looking at the picture is often far dimmer than its whites (white walls, snow, a cup), a
    haze no photograph shows, and the one regime where the brightest hazy pixels are not the
    airlight. The whites are the 99.5th percentile of the brightest channel, times 0.9 to 1.1.
    """
    if probability <= 0 or (probability < 1 and rng.random() >= probability):
        return airlight
    white = float(np.percentile(clear.max(axis=-1), 99.5)) * rng.uniform(0.9, 1.1)
    level = float(np.mean(airlight))
    if level >= white or level <= 0:
        return airlight
    return np.clip(airlight * (white / level), 0.0, 1.0).astype(np.float32)


def synthesize(clear: np.ndarray, rng: np.random.Generator, cfg: SynthConfig | None = None, *,
               depth_map: np.ndarray | None = None, return_airlight: bool = False):
    """Make a hazy version of ``clear`` (float RGB in [0, 1]); returns (hazy, t) or (hazy, t, A).

    ``depth_map`` (H, W, in [0, 1]) is the image's own depth, e.g. a crop of
    :func:`cap_depth` or :func:`disparity_depth`; without it a procedural field is drawn.
    With ``return_airlight`` the atmospheric light (3,) is returned too (the mean over the
    patch where it varies across the scene).
    """
    cfg = cfg or SynthConfig()
    p = draw_params(rng, cfg, has_map=depth_map is not None)
    p = replace(p, airlight=expose_airlight(p.airlight, clear, rng, cfg.exposure))
    shape = clear.shape[:2]
    scale = _draw(rng, cfg.scene_scale)
    if p.depth_model == "map":
        depth = np.asarray(depth_map, np.float32)
    else:
        depth = _scene_window(random_depth(shape, rng, p.depth_model), scale, rng)
        if p.depth_model != "uniform":
            # a crop sees only part of the scene's depth range: start somewhere in [0, 1)
            near = rng.uniform(*cfg.near)
            depth = near + (1.0 - near) * depth
    if p.depth_model == "uniform":
        depth = depth * rng.uniform(0.1, 1.0)
    airlight = p.airlight
    if cfg.airlight_gradient > 0:
        airlight = _scene_window(airlight_field(shape, p.airlight, cfg.airlight_gradient, rng), scale, rng)
    beta = p.beta if p.angstrom == 0.0 else p.channel_beta()
    hazy, t = add_haze(clear, depth * p.depth_max, beta=beta, airlight=airlight)
    if not return_airlight:
        return hazy, t
    mean_airlight = airlight.reshape(-1, 3).mean(axis=0) if airlight.ndim == 3 else airlight
    return hazy, t, mean_airlight.astype(np.float32)
