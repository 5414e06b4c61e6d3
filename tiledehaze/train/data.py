"""Training data: paired hazy/clear folders, and synthetic pairs made on the fly from clean images.

Both kinds of source hand out float32 patches in [0, 1], laid out (H, W, channels), one
``sample(rng, epoch)`` at a time: RGB pairs of hazy and clear images, or (for SRCNN) luma pairs
of a JPEG-degraded and a clean image. The default clean images are colour photographs bundled
with scikit-image, which load from the installed package without any network access.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from ..dataset import find_clear, image_files, images_by_stem, read_rgb, to_float_rgb
from ..errors import ConfigError, InputError
from .augment import AugmentConfig, black_level, lower_black_level, patch_for_epoch
from .synth import SynthConfig, cap_depth, disparity_depth, synthesize

log = logging.getLogger(__name__)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()
    return load


def _motorcycle(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return data.stereo_motorcycle()[index]
    return load


#: photographs shipped inside scikit-image (no download). ``cat`` is ``chelsea`` again.
BUILTIN_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "motorcycle_left": _motorcycle(0),
    "motorcycle_right": _motorcycle(1),
    # grey photographs and textures (used as neutral RGB): texture statistics and no colour to cast
    "camera": _skimage("camera"),
    "coins": _skimage("coins"),
    "moon": _skimage("moon"),
    "text": _skimage("text"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "brick": _skimage("brick"),
}


def expand_clean(names: Sequence[str]) -> list[str]:
    """Built-in names stay; a folder becomes the image files in it (sorted), a file stays as it is."""
    out: list[str] = []
    for name in names:
        if name in BUILTIN_IMAGES:
            out.append(name)
        elif Path(name).is_dir():
            out.extend(str(p) for p in image_files(Path(name)))
        elif Path(name).is_file():
            out.append(str(name))
        else:
            raise ConfigError(f"unknown clean image {name!r}: neither a built-in image "
                              f"({', '.join(BUILTIN_IMAGES)}) nor an image file or folder")
    return out


@lru_cache(maxsize=None)
def load_clean(name: str, max_side: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A built-in image or an image file, as float32 RGB in [0, 1] with its depth map in [0, 1].

    Files are shrunk (area interpolation) so that their longer side is at most ``max_side``
    (0: kept as they are); their depth is the colour-attenuation prior.
    """
    if name in BUILTIN_IMAGES:
        return load_builtin(name)
    image = read_rgb(name)
    scale = max_side / max(image.shape[:2]) if max_side else 1.0
    if scale < 1.0:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    depth = cap_depth(image)
    image.setflags(write=False)
    depth.setflags(write=False)
    return image, depth


@lru_cache(maxsize=None)
def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled clean image as float32 RGB in [0, 1] and its depth map in [0, 1].

    ``motorcycle_left`` gets the real depth from its stereo disparity; the others get the
    colour-attenuation prior computed on the clean image.
    """
    if name not in BUILTIN_IMAGES:
        raise ConfigError(f"unknown built-in image {name!r}; choose from {', '.join(BUILTIN_IMAGES)}")
    image = to_float_rgb(BUILTIN_IMAGES[name]())
    if name == "motorcycle_left":
        from skimage import data

        depth = disparity_depth(data.stereo_motorcycle()[2])
    else:
        depth = cap_depth(image)
    image.setflags(write=False)
    depth.setflags(write=False)
    return image, depth


# --------------------------------------------------------------------------- paired folders

def match_pairs(hazy_dir: str | Path, clear_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair every hazy image with its clear image by name.

    A hazy file pairs with the clear file of the same stem or, failing that, with the clear
    file named by its RESIDE prefix (several hazy images may share one clear image; see
    :mod:`tiledehaze.dataset`).
    """
    hazy = image_files(hazy_dir)
    clear = images_by_stem(clear_dir)
    pairs, missing = [], []
    for h in hazy:
        c = find_clear(h, clear)
        (pairs.append((h, c)) if c is not None else missing.append(h.name))
    if missing:
        log.warning("%d hazy image(s) have no clear image, e.g. %s", len(missing), missing[0])
    if not pairs:
        raise InputError(f"no hazy/clear pairs found in {hazy_dir} and {clear_dir}")
    return pairs


def split_pairs(pairs: Sequence[tuple[Path, Path]], val_fraction: float, seed: int
                ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Hold out a fixed fraction of the *clear images* (with all their hazy versions)."""
    keys = sorted({c.name for _, c in pairs})
    rng = np.random.default_rng(seed)
    n_val = int(round(len(keys) * val_fraction))
    if val_fraction > 0 and len(keys) > 1:
        n_val = min(max(n_val, 1), len(keys) - 1)
    val_keys = set(rng.permutation(keys)[:n_val].tolist())
    train = [p for p in pairs if p[1].name not in val_keys]
    val = [p for p in pairs if p[1].name in val_keys]
    return train, val


# --------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class JpegDegradation:
    """The degraded input SRCNN learns to repair: a photograph saved as a low-quality JPEG.

    The clean patch is rounded to 8 bits (it stands for a stored photograph), shrunk by
    ``scale`` (PIL's bicubic; 1: kept at its size), saved as a JPEG of ``quality`` with PIL's
    defaults (4:2:0 chroma), decoded, and brought back to its size bicubically. Both are
    returned as full-range BT.601 luma (H, W, 1), which is what the network sees in the engine.
    """

    quality: int = 20
    scale: float = 1.0

    @classmethod
    def from_dict(cls, cfg: dict) -> "JpegDegradation":
        out = cls(int(cfg["quality"]), float(cfg["scale"]))
        if not 1 <= out.quality <= 95 or out.scale < 1.0:
            raise ConfigError("jpeg.quality must lie in [1, 95] and jpeg.scale be at least 1")
        return out

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from ..models.srcnn import luma

        clean8 = np.round(np.clip(clean, 0.0, 1.0) * 255).astype(np.uint8)
        unit = np.float32(1 / 255)
        return luma(self.degrade(clean8) * unit)[..., None], luma(clean8 * unit)[..., None]

    def degrade(self, clean8: np.ndarray) -> np.ndarray:
        """The degraded version of an 8-bit RGB image (H, W, 3), 8-bit RGB of the same size."""
        from PIL import Image

        image = Image.fromarray(clean8)
        if self.scale > 1.0:
            small = (max(1, round(image.width / self.scale)), max(1, round(image.height / self.scale)))
            image = image.resize(small, Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=self.quality)
        degraded = Image.open(buffer).convert("RGB")
        if degraded.size != (clean8.shape[1], clean8.shape[0]):
            degraded = degraded.resize((clean8.shape[1], clean8.shape[0]), Image.BICUBIC)
        return np.asarray(degraded)


class Source(Protocol):
    def sample(self, rng: np.random.Generator, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """One (hazy, clear) patch pair."""


@dataclass
class SyntheticSource:
    """Hazy/clear patches synthesised on the fly from clean images (with depth maps), or
    degraded/clean patches made by ``degrade`` from the clean patch instead of haze."""

    images: Sequence[tuple[np.ndarray, np.ndarray]]
    patch: int
    synth: SynthConfig
    aug: AugmentConfig
    #: also hand out the true transmission of each colour (H, W, 3) and the airlight (3,)
    extras: bool = False
    degrade: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        self._black_levels = [black_level(image) for image, _ in self.images] if self.aug.black_point > 0 else []

    def sample(self, rng: np.random.Generator, epoch: int) -> tuple[np.ndarray, ...]:
        index = int(rng.integers(len(self.images)))
        image, depth = self.images[index]
        clear, d = patch_for_epoch([image, depth], self.patch, rng, self.aug, epoch, colour=(0,))
        if self._black_levels and self.aug.active(epoch) and rng.random() < self.aug.black_point:
            clear = lower_black_level(clear, self._black_levels[index])
        if self.degrade is not None:
            return self.degrade(clear, rng)
        if not self.extras:
            hazy, _ = synthesize(clear, rng, self.synth, depth_map=d)
            return hazy, clear
        hazy, t, airlight = synthesize(clear, rng, self.synth, depth_map=d, return_airlight=True)
        return hazy, clear, np.broadcast_to(t.reshape(*t.shape[:2], -1), hazy.shape), airlight


@dataclass
class PairedSource:
    """Patches cropped from paired hazy/clear files (images are cached after the first read)."""

    pairs: Sequence[tuple[Path, Path]]
    patch: int
    aug: AugmentConfig
    #: also hand out an unknown transmission (-1) and the airlight estimated from the hazy patch
    extras: bool = False

    def __post_init__(self) -> None:
        self._cache: dict[Path, np.ndarray] = {}

    def _read(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = read_rgb(path)
        return self._cache[path]

    def sample(self, rng: np.random.Generator, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        h_path, c_path = self.pairs[int(rng.integers(len(self.pairs)))]
        hazy, clear = self._read(h_path), self._read(c_path)
        if hazy.shape != clear.shape:  # e.g. SOTS ground truths with a border
            clear = cv2.resize(clear, hazy.shape[1::-1], interpolation=cv2.INTER_AREA)
        hazy, clear = patch_for_epoch([hazy, clear], self.patch, rng, self.aug, epoch, colour=(0, 1))
        if not self.extras:
            return hazy, clear
        from ..models.dcp import estimate_airlight

        return hazy, clear, np.full(hazy.shape, -1.0, np.float32), estimate_airlight(hazy)


def make_batch(source: Source, n: int, rng: np.random.Generator, epoch: int) -> tuple[np.ndarray, ...]:
    """``n`` samples stacked as (hazy, clear[, t, airlight]), each with a leading axis of ``n``."""
    samples = [source.sample(rng, epoch) for _ in range(n)]
    return tuple(np.stack(column) for column in zip(*samples))


def fixed_set(source: Source, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """A validation set drawn once from ``seed`` with augmentation off: the same every epoch."""
    return make_batch(source, n, np.random.default_rng(seed), epoch=0)


def build_sources(data: dict, synth: SynthConfig, aug: AugmentConfig, *, patch: int, seed: int,
                  extras: bool = False, degrade: Callable | None = None) -> tuple[Source, Source]:
    """Training and validation sources from the ``data`` section of a training config.

    ``degrade`` (clean patch, rng) -> (input, target) replaces haze synthesis (synthetic source only).
    """
    kind = data.get("source", "synthetic")
    if aug.black_point > 0 and (kind != "synthetic" or degrade is not None):
        raise ConfigError("augment.black_point takes a veil away from clean photographs before they are hazed: "
                          "it needs data.source 'synthetic' and a hazing model")
    val_aug = AugmentConfig(from_epoch=10**9, min_brightness=aug.min_brightness, max_tries=aug.max_tries)
    if kind == "synthetic":
        names = expand_clean(list(data.get("clean_images") or []))
        val_names = expand_clean(list(data.get("val_images") or []))
        train_names = [n for n in names if n not in val_names]
        if not train_names or not val_names:
            raise ConfigError("data: need at least one training image and one validation image")
        side = int(data.get("max_side") or 0)
        train = SyntheticSource([load_clean(n, side) for n in train_names], patch, synth, aug, extras, degrade)
        val = SyntheticSource([load_clean(n, side) for n in val_names], int(data["val_patch_size"]), synth, val_aug,
                              extras, degrade)
        return train, val
    if kind == "paired" and degrade is not None:
        raise ConfigError("this model makes its degraded inputs from clean images: use data.source 'synthetic'")
    if kind == "paired":
        paired = data.get("paired") or {}
        root = paired.get("root")
        if not root:
            raise ConfigError("data.paired.root must name a folder holding hazy/ and clear/")
        pairs = match_pairs(Path(root) / "hazy", Path(root) / "clear")
        train_pairs, val_pairs = split_pairs(pairs, float(paired.get("val_fraction", 0.1)), seed)
        if not train_pairs or not val_pairs:
            raise ConfigError("data.paired: need at least two clear images to hold one out")
        return (PairedSource(train_pairs, patch, aug, extras),
                PairedSource(val_pairs, int(data["val_patch_size"]), val_aug, extras))
    raise ConfigError(f"data.source must be 'synthetic' or 'paired', not {kind!r}")
