"""GeoTIFF specifics: GDAL's metadata tag, band roles, nodata, and which pages are what.

GDAL keeps band descriptions, colour interpretations, scale/offset and free-form items in
one XML tag (42112); its ``STATISTICS_*`` items describe the pixels and go stale once they
change, so they are dropped (GDAL recomputes them on demand). A COG or a GDAL-written
GeoTIFF holds reduced-resolution pages (overviews) and mask pages beside the image; they are
recognised here so that the reader restores the image and the writer can rebuild them.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

GDAL_METADATA = 42112
GDAL_NODATA = 42113
#: NewSubfileType bits
REDUCED, MASK = 1, 4


def clean_gdal_metadata(text: str) -> str | None:
    """GDAL's metadata XML without the STATISTICS_* items (stale after restoration); None if nothing is left."""
    try:
        root = ET.fromstring(text.strip().rstrip("\x00"))
    except ET.ParseError:
        log.warning("GDAL metadata tag is not well-formed XML; not copied")
        return None
    for item in list(root):
        if item.get("name", "").upper().startswith("STATISTICS_"):
            root.remove(item)
    if not len(root):
        return None
    return ET.tostring(root, encoding="unicode")


def page_roles(pages) -> tuple[list, list, list]:
    """Split a TIFF's pages after the first into (overviews, masks, others)."""
    overviews, masks, others = [], [], []
    for page in list(pages)[1:]:
        kind = int(getattr(page, "subfiletype", 0) or 0)
        if kind & MASK:
            masks.append(page)
        elif kind & REDUCED:
            overviews.append(page)
        else:
            others.append(page)
    return overviews, masks, others


def model_bands(path, channels: int, photometric: str, bands: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """0-based bands the model sees, from ``--bands`` (1-based, as GDAL counts) or the colour interpretation.

    RGB photometric means bands 1-3; an unspecified extra sample is never alpha, it just passes
    through. Gray (MINISBLACK) with one or two bands is gray (+ a band passed through); with
    three it is taken as RGB; with four or more the user must say which bands are red, green and blue.
    """
    if bands is not None:
        if len(bands) not in (1, 3):
            raise InputError(f"--bands takes one band or three (R,G,B), not {len(bands)}")
        if len(set(bands)) != len(bands):
            raise InputError(f"--bands {','.join(map(str, bands))} names a band twice")
        bad = [b for b in bands if not 1 <= b <= channels]
        if bad:
            raise InputError(f"--bands {bad[0]} is out of range: the image has {channels} band(s), counted from 1")
        return tuple(b - 1 for b in bands)
    if photometric == "rgb" or channels <= 3:
        return None
    raise InputError(f"{path}: {channels} bands and no RGB colour interpretation; say which bands are red, green "
                     "and blue with --bands R,G,B (counted from 1, e.g. --bands 3,2,1)")


def significant_bits(page, dtype: np.dtype) -> int | None:
    """Bits per sample when fewer than the dtype's (GDAL's NBITS), else None."""
    bits = int(page.bitspersample)
    return bits if dtype.kind in "ui" and bits < 8 * dtype.itemsize else None
