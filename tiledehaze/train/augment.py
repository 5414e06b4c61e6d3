"""Joint, seeded augmentation of aligned arrays (hazy, clear, depth) with numpy and OpenCV.

Every geometric transform is drawn once and applied to all arrays of a sample, so a hazy
patch stays aligned with its clear patch and its depth. Colour jitter changes only the colour
images, identically for each.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import ConfigError


#: the options of :class:`AugmentConfig` that are probabilities
PROBABILITIES = ("hflip", "vflip", "rot90", "ssr_prob", "jitter_prob", "channel_shuffle", "greyscale", "black_point")


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation does, and from which epoch (1-based) it is switched on."""

    from_epoch: int = 2
    #: crops whose mean HSV value (brightness) is below this are redrawn (0 disables)
    min_brightness: float = 0.15
    max_tries: int = 10
    #: crop side relative to the patch side; larger crops are resized down to the patch
    crop_scale: tuple[float, float] = (1.0, 2.0)
    hflip: float = 0.5
    vflip: float = 0.2
    rot90: float = 0.3
    #: shift-scale-rotate: probability, shift (fraction of the side), scale, rotation (degrees)
    ssr_prob: float = 0.3
    ssr_shift: float = 0.0625
    ssr_scale: float = 0.1
    ssr_rotate: float = 15.0
    #: colour jitter: probability, brightness gain, contrast, saturation, per-channel gain
    jitter_prob: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.2
    channel_gain: float = 0.03
    #: probability of permuting the colour channels (removes the colour bias of a small image set)
    channel_shuffle: float = 0.0
    #: probability of turning the colour images grey (luma, Rec. 601), for monochrome scans
    greyscale: float = 0.0
    #: probability of taking a clean photograph's own veil away before it is hazed (synthetic
    #: haze only; see :func:`black_level`); applied to the crop after the colour jitter
    black_point: float = 0.0

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "AugmentConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = set(cfg) - set(known)
        if unknown:
            raise ConfigError(f"unknown augment option(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for key, value in cfg.items():
            if key == "crop_scale":
                lo, hi = (float(v) for v in value)
                if not 1.0 <= lo <= hi:
                    raise ConfigError("augment.crop_scale must be [low, high] with 1 <= low <= high")
                kw[key] = (lo, hi)
            elif key in ("from_epoch", "max_tries"):
                kw[key] = int(value)
            else:
                kw[key] = float(value)
                if key in PROBABILITIES and not 0.0 <= kw[key] <= 1.0:
                    raise ConfigError(f"augment.{key} is a probability: give a value in [0, 1], not {value}")
        return cls(**kw)

    def active(self, epoch: int) -> bool:
        return epoch >= self.from_epoch


def brightness(image: np.ndarray) -> float:
    """Mean HSV value (max over RGB) of a float image in [0, 1]."""
    return float(image.max(axis=-1).mean()) if image.ndim == 3 else float(image.mean())


def random_crop(arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator, *,
                scale: tuple[float, float] = (1.0, 1.0), min_brightness: float = 0.0,
                max_tries: int = 10) -> list[np.ndarray]:
    """Crop the same window from every array and resize it to ``size`` x ``size``.

    The window side is ``size`` times a factor drawn from ``scale`` (capped by the image).
    The brightness of the first array decides whether a crop is informative enough; after
    ``max_tries`` the brightest crop seen is kept.
    """
    h, w = arrays[0].shape[:2]
    if min(h, w) < size:
        raise ConfigError(f"image of {w}x{h} is smaller than the {size} px patch")
    best, best_v = None, -1.0
    for _ in range(max(1, max_tries)):
        side = int(min(round(size * rng.uniform(*scale)), h, w))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        step = max(1, side // 16)  # a 16x16 sample of the window is enough to judge it
        v = brightness(arrays[0][y:y + side:step, x:x + side:step])
        if v > best_v:
            best, best_v = (y, x, side), v
        if v >= min_brightness:
            break
    y, x, side = best
    out = []
    for a in arrays:
        c = a[y:y + side, x:x + side]
        if side != size:
            c = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(c, np.float32))
    return out


def flip_rotate(arrays: Sequence[np.ndarray], rng: np.random.Generator, *,
                hflip: float = 0.5, vflip: float = 0.0, rot90: float = 0.0) -> list[np.ndarray]:
    """Random horizontal/vertical flips and a quarter-turn, the same for every array."""
    h = rng.random() < hflip
    v = rng.random() < vflip
    k = int(rng.integers(1, 4)) if rng.random() < rot90 else 0
    out = []
    for a in arrays:
        if h:
            a = a[:, ::-1]
        if v:
            a = a[::-1]
        if k:
            a = np.rot90(a, k)
        out.append(np.ascontiguousarray(a))
    return out


def shift_scale_rotate(arrays: Sequence[np.ndarray], rng: np.random.Generator, *, shift: float = 0.0625,
                       scale: float = 0.1, rotate: float = 15.0) -> list[np.ndarray]:
    """One random affine warp (reflected borders) applied to every array."""
    h, w = arrays[0].shape[:2]
    angle = rng.uniform(-rotate, rotate)
    s = 1.0 + rng.uniform(-scale, scale)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, s)
    m[:, 2] += rng.uniform(-shift, shift, 2) * (w, h)
    return [cv2.warpAffine(np.ascontiguousarray(a), m, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101) for a in arrays]


def color_jitter(images: Sequence[np.ndarray], rng: np.random.Generator, *, brightness: float = 0.15,
                 contrast: float = 0.15, saturation: float = 0.2, channel_gain: float = 0.03
                 ) -> list[np.ndarray]:
    """Brightness, contrast, saturation and a small per-channel gain, identical for every image."""
    b = 1.0 + rng.uniform(-brightness, brightness)
    c = 1.0 + rng.uniform(-contrast, contrast)
    s = 1.0 + rng.uniform(-saturation, saturation)
    g = (1.0 + rng.uniform(-channel_gain, channel_gain, 3)).astype(np.float32)
    out = []
    for im in images:
        x = im * b
        mean = x.mean()
        x = (x - mean) * c + mean
        grey = x.mean(axis=-1, keepdims=True)
        x = (x - grey) * s + grey
        out.append(np.clip(x * g, 0.0, 1.0).astype(np.float32))
    return out


#: the percentile of min(R, G, B) over a whole photograph that :func:`black_level` reads
BLACK_PERCENTILE = 5.0


def black_level(image: np.ndarray) -> float:
    """The level the darkest pixels of a whole RGB photograph sit on: the 5th percentile of min(R, G, B).

    Near 0 for most photographs. Mist, backlight or a faded print raise it (0.3 to 0.5 on some
    wallpapers), a veil the haze model would otherwise count as scene.
    """
    return float(np.percentile(np.asarray(image).min(axis=-1), BLACK_PERCENTILE))


def lower_black_level(image: np.ndarray, level: float) -> np.ndarray:
    """``(image - level) / (1 - level)``, clipped to [0, 1]: the veil of :func:`black_level` taken away.

    An affine map, so a veil taken away before hazing leaves the scattering model intact. The
    level is capped at 0.9, so that a nearly white photograph is not stretched into noise.
    """
    level = min(float(level), 0.9)
    return np.clip((image - np.float32(level)) / np.float32(1.0 - level), 0.0, 1.0).astype(np.float32)


def shuffle_channels(images: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One random permutation of the RGB channels, the same for every image."""
    order = rng.permutation(3)
    return [np.ascontiguousarray(im[..., order]) for im in images]


def to_grey(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Rec. 601 luma of each RGB image, repeated over the three channels."""
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    return [np.ascontiguousarray(np.repeat((im @ luma)[..., None], 3, axis=-1)) for im in images]


def augment(arrays: Sequence[np.ndarray], rng: np.random.Generator, cfg: AugmentConfig, *,
            colour: Sequence[int] = (0,)) -> list[np.ndarray]:
    """Flips, rotations, shift-scale-rotate, channel shuffle, colour jitter and greyscale (on the arrays indexed by ``colour``)."""
    out = flip_rotate(arrays, rng, hflip=cfg.hflip, vflip=cfg.vflip, rot90=cfg.rot90)
    if rng.random() < cfg.ssr_prob:
        out = shift_scale_rotate(out, rng, shift=cfg.ssr_shift, scale=cfg.ssr_scale, rotate=cfg.ssr_rotate)
    if colour and cfg.channel_shuffle > 0 and rng.random() < cfg.channel_shuffle:
        for i, im in zip(colour, shuffle_channels([out[i] for i in colour], rng)):
            out[i] = im
    if rng.random() < cfg.jitter_prob and colour:
        jittered = color_jitter([out[i] for i in colour], rng, brightness=cfg.brightness,
                                contrast=cfg.contrast, saturation=cfg.saturation,
                                channel_gain=cfg.channel_gain)
        for i, im in zip(colour, jittered):
            out[i] = im
    if colour and cfg.greyscale > 0 and rng.random() < cfg.greyscale:
        for i, im in zip(colour, to_grey([out[i] for i in colour])):
            out[i] = im
    return out


def patch_for_epoch(arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator, cfg: AugmentConfig,
                    epoch: int, *, colour: Sequence[int] = (0,)) -> list[np.ndarray]:
    """A random ``size`` crop of the arrays, scaled and augmented when augmentation is on at ``epoch``."""
    on = cfg.active(epoch)
    crops = random_crop(arrays, size, rng, scale=cfg.crop_scale if on else (1.0, 1.0),
                        min_brightness=cfg.min_brightness, max_tries=cfg.max_tries)
    return augment(crops, rng, cfg, colour=colour) if on else crops
