"""restore(): tiled output equals an independent whole-image forward pass; shape, dtype, gray and alpha are kept.

Every comparison is against :mod:`tests.reference` (scipy convolutions in float64 on the whole
image), never against another call of the engine, so a bug shared by the tiled and the one-pass
paths still fails here.
"""

import functools
import tracemalloc

import numpy as np
import pytest

import tiledehaze
from tiledehaze.engine import make_plan, restore_bands
from tiledehaze.io import ArrayReader, ImageInfo, Reader

from . import reference
from .images import smooth_image

SHAPES = [(517, 733, 3), (301, 1025, 4), (999, 77), (640, 480, 1), (129, 260, 2)]
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]


@functools.lru_cache(maxsize=None)
def _case(weights_path, shape: tuple, dtype=np.uint8, seed: int | None = None):
    """(image, reference output) for a test image; cached, the reference is the slow part."""
    img = smooth_image(shape[0], shape[1], shape[2] if len(shape) == 3 else None, dtype,
                       seed=sum(shape) if seed is None else seed)
    return img, reference.restore(reference.read_weights(weights_path), img)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("tile", [64, 200, 512, None])
def test_tiled_output_equals_the_whole_image_reference(weights_path, shape, tile):
    img, ref = _case(weights_path, shape)
    out = tiledehaze.restore(img, weights=weights_path, tile=tile)
    assert out.shape == img.shape and out.dtype == img.dtype
    reference.assert_equal_to_rounding(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("tile", [96, None])
def test_every_dtype_is_kept_and_tiled_output_equals_the_reference(weights_path, dtype, tile):
    img, ref = _case(weights_path, (333, 421, 3), dtype, seed=3)
    out = tiledehaze.restore(img, weights=weights_path, tile=tile)
    assert out.dtype == np.dtype(dtype) and out.shape == img.shape
    reference.assert_equal_to_rounding(out, ref)


def test_seams_are_invisible_on_a_trained_looking_output(weights_path):
    """The tiled result has no step along tile edges: a seam would show as a jump in the row differences."""
    img, ref = _case(weights_path, (333, 421, 3), np.float32, seed=3)
    out = tiledehaze.restore(img, weights=weights_path, tile=96)
    plan = make_plan(333, 421, tiledehaze.get_model(weights=weights_path), tile=96)
    edges = sorted({s for s, _ in plan.rows[1:]} | {e for _, e in plan.rows[:-1]})
    steps = np.abs(np.diff(out.astype(np.float64), axis=0))[[e - 1 for e in edges]]
    ref_steps = np.abs(np.diff(ref.astype(np.float64), axis=0))[[e - 1 for e in edges]]
    assert np.abs(steps - ref_steps).max() < 1e-5
    assert ref.std() > 0.1  # the picture has contrast, so a seam would be visible


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32], ids=lambda d: np.dtype(d).name)
def test_alpha_passes_through_untouched(weights_path, dtype):
    img, ref = _case(weights_path, (300, 400, 4), dtype, seed=5)
    out = tiledehaze.restore(img, weights=weights_path, tile=128)
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    reference.assert_equal_to_rounding(out[..., :3], ref[..., :3])


@pytest.mark.parametrize("shape", [(256, 256), (256, 256, 1), (256, 256, 2)], ids=["HW", "HW1", "gray+alpha"])
def test_gray_image_is_restored_as_gray(weights_path, shape):
    """Gray goes to the model as three equal channels and comes back as their mean, not as one of them."""
    img, ref = _case(weights_path, shape, np.uint8, seed=2)
    out = tiledehaze.restore(img, weights=weights_path, tile=100)
    assert out.shape == img.shape
    reference.assert_equal_to_rounding(out, ref)
    rgb = reference.aodnet(reference.read_weights(weights_path), np.repeat(img.reshape(256, 256, -1)[..., :1] / 255, 3, 2))
    assert np.abs(rgb[..., 0] - rgb.mean(axis=2)).max() * 255 > 5  # red alone would be visibly wrong


def test_channel_order_is_rgb(weights_path):
    """A BGR image gives another output: the model sees the channels in the order given."""
    img, ref = _case(weights_path, (200, 300, 3), np.uint8, seed=9)
    swapped = tiledehaze.restore(img[..., ::-1].copy(), weights=weights_path, tile=None)
    assert reference.lsb_error(swapped[..., ::-1], ref) > 10
    reference.assert_equal_to_rounding(tiledehaze.restore(img, weights=weights_path, tile=None), ref)


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 200, 3), (200, 5), (70, 70, 3)], ids=str)
def test_tiny_images_work(weights_path, shape):
    img, ref = _case(weights_path, shape)
    out = tiledehaze.restore(img, weights=weights_path, tile=64)
    assert out.shape == img.shape
    reference.assert_equal_to_rounding(out, ref)


class TallImage(Reader):
    """A uint8 RGB image produced band by band on request: the whole image never exists."""

    def __init__(self, height: int, width: int):
        self.info = ImageInfo(height, width, 3, False, np.dtype(np.uint8), "array")
        self.requests: list[tuple[int, int]] = []

    def read(self, y0: int, y1: int) -> np.ndarray:
        self.requests.append((y0, y1))
        y = np.arange(y0, y1, dtype=np.float32)[:, None, None]
        x = np.arange(self.info.width, dtype=np.float32)[None, :, None]
        c = np.arange(3, dtype=np.float32)
        return (127.5 + 100 * np.sin(y / (13 + c) + x / (7 + 2 * c))).astype(np.uint8)


def test_memory_is_bounded_by_one_row_of_tiles(weights_path):
    """Peak memory grows with the width, not the height: measured, for an image 40 tile rows tall."""
    height, width, tile = 10240, 256, 256
    reader = TallImage(height, width)
    model = tiledehaze.get_model(weights=weights_path)
    plan = make_plan(height, width, model, tile=tile)
    rows = 0
    tracemalloc.start()
    try:
        for y0, band, _ in restore_bands(reader, model, plan):
            assert y0 == rows
            rows += band.shape[0]
            del band
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == height
    assert max(y1 - y0 for y0, y1 in reader.requests) <= tile
    whole_float = height * width * 3 * 4  # one float32 RGB copy of the whole image: 31 MB
    one_row = tile * width * 3 * 4  # the accumulator of one row of tiles: 0.8 MB
    assert peak < 12 * one_row < whole_float / 3


def test_nan_input_is_refused_with_a_clear_error(weights_path):
    img = smooth_image(64, 64, 3, np.float32)
    img[10, 10, 1] = np.nan
    with pytest.raises(tiledehaze.InputError, match="NaN"):
        tiledehaze.restore(img, weights=weights_path)


def test_progress_counts_every_tile(weights_path):
    img = smooth_image(600, 700, 3, np.uint8)
    done = []
    tiledehaze.restore(img, weights=weights_path, tile=256, progress=done.append)
    model = tiledehaze.get_model(weights=weights_path)
    assert sum(done) == len(make_plan(600, 700, model, tile=256)) == 9


def test_bands_come_out_in_order_and_cover_the_image_once(weights_path):
    img = smooth_image(2000, 300, 3, np.uint8)
    model = tiledehaze.get_model(weights=weights_path)
    bands = list(restore_bands(ArrayReader(img), model, make_plan(2000, 300, model, tile=256)))
    starts = [y0 for y0, _, _ in bands]
    assert starts == [sum(b.shape[0] for _, b, _ in bands[:i]) for i in range(len(bands))]
    assert sum(b.shape[0] for _, b, _ in bands) == 2000



def test_models_built_from_a_name_are_cached(weights_path, tmp_path, monkeypatch):
    """restore() in a loop builds the inference session once."""
    import shutil

    import tiledehaze.api

    weights = tmp_path / "own.safetensors"  # a path no other test used, so the cache starts empty for it
    shutil.copy(weights_path, weights)
    built = []
    build = tiledehaze.api.build_model
    monkeypatch.setattr(tiledehaze.api, "build_model", lambda *a, **k: built.append(a) or build(*a, **k))
    img = smooth_image(40, 50, 3, np.uint8)
    for _ in range(3):
        tiledehaze.restore(img, weights=weights, tile=None)
    assert len(built) == 1
    assert tiledehaze.get_model(weights=weights) is tiledehaze.get_model(weights=weights)
