"""Folders of images for training and evaluation: listing, reading, and pairing hazy with clear.

Images are read through :mod:`tiledehaze.io`, exactly as ``tiledehaze process`` reads them
(JPEG EXIF orientation applied, 16-bit kept until the conversion, TIFF of any layout), and
handed out as float32 RGB in [0, 1]: 8-bit / 255, 16-bit / 65535, grey replicated, alpha
dropped.

Pairing follows RESIDE's naming: a hazy image pairs with the clear image of the same stem or,
failing that, with the stem left after stripping ``_<number>`` suffixes one at a time
(``1400_9.png`` -> ``1400.png``; ``0001_0.8_0.2.png`` -> ``0001_0.8`` -> ``0001``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import InputError
from .io import EXTENSIONS, open_image
from .pixels import Layout, to_unit_rgb

_RESIDE_SUFFIX = re.compile(r"^(.*)_[0-9]+(?:\.[0-9]+)?$")


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (by extension), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """An in-memory grey, RGB or RGBA image (uint8, uint16 or float) as float32 RGB in [0, 1]."""
    image = np.asarray(image)
    return to_unit_rgb(image, Layout.of(image.shape, image.dtype))


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as float32 RGB (H, W, 3) in [0, 1], oriented as its EXIF says."""
    with open_image(path) as reader:
        info = reader.info
        return to_unit_rgb(reader.read(0, info.height), info.layout)


def clear_candidates(stem: str) -> list[str]:
    """Stems a hazy image's clear image may have: itself, then RESIDE suffixes stripped one at a time."""
    out = [stem]
    while (m := _RESIDE_SUFFIX.match(out[-1])) and m.group(1):
        out.append(m.group(1))
    return out


def images_by_stem(folder: str | Path) -> dict[str, Path]:
    """The images of ``folder`` by stem (of two files with one stem, the first by name)."""
    by_stem: dict[str, Path] = {}
    for path in image_files(folder):
        by_stem.setdefault(path.stem, path)
    return by_stem


def find_clear(hazy: Path, clear_by_stem: Mapping[str, Path]) -> Path | None:
    """The clear image for the hazy file ``hazy`` (see :func:`clear_candidates`), or None."""
    return next((clear_by_stem[s] for s in clear_candidates(hazy.stem) if s in clear_by_stem), None)
