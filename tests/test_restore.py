"""restore(): tiled output equals whole-image output; shape, dtype and alpha are kept."""

import numpy as np
import pytest

import tiledehaze
from tiledehaze.engine import make_plan, restore_bands
from tiledehaze.io import ArrayReader

from .images import smooth_image


def _lsb(dtype) -> float:
    return 1 if np.dtype(dtype).kind in "ui" else 1 / 255


@pytest.mark.parametrize("shape", [(517, 733, 3), (301, 1025, 4), (999, 77), (640, 480, 1), (129, 260, 2)])
@pytest.mark.parametrize("tile", [64, 200, 512])
def test_tiled_equals_whole_image(weights_path, shape, tile):
    img = smooth_image(shape[0], shape[1], shape[2] if len(shape) == 3 else None, np.uint8, seed=sum(shape))
    whole = tiledehaze.restore(img, weights=weights_path, tile=None)
    tiled = tiledehaze.restore(img, weights=weights_path, tile=tile)
    assert tiled.shape == img.shape and tiled.dtype == img.dtype
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtype_is_kept_and_tiling_is_exact_for_every_dtype(weights_path, dtype):
    img = smooth_image(333, 421, 3, dtype, seed=3)
    whole = tiledehaze.restore(img, weights=weights_path, tile=None)
    tiled = tiledehaze.restore(img, weights=weights_path, tile=128)
    assert tiled.dtype == np.dtype(dtype)
    if np.dtype(dtype).kind == "f":
        assert np.abs(tiled - whole).max() <= 1e-5
    else:
        assert np.abs(tiled.astype(np.int64) - whole.astype(np.int64)).max() <= 1


def test_alpha_passes_through_untouched(weights_path):
    img = smooth_image(300, 400, 4, np.uint16, seed=5)
    out = tiledehaze.restore(img, weights=weights_path, tile=128)
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    assert not np.array_equal(out[..., :3], img[..., :3])


def test_channel_order_is_rgb(weights_path):
    """Swapping R and B in the input swaps them in the output only if the model sees RGB as given."""
    img = smooth_image(200, 300, 3, np.uint8, seed=9)
    out = tiledehaze.restore(img, weights=weights_path, tile=None)
    swapped = tiledehaze.restore(img[..., ::-1].copy(), weights=weights_path, tile=None)
    assert np.abs(swapped[..., ::-1].astype(int) - out).max() > 2  # the model is not symmetric in R and B
    from tiledehaze.models import create_model

    direct = create_model("aodnet", weights=weights_path).run(img[None].astype(np.float32) / 255, {})[0]
    assert np.abs(np.round(direct * 255) - out).max() <= 1


def test_gray_image_is_restored_as_gray(weights_path):
    img = smooth_image(256, 256, None, np.uint8, seed=2)
    out = tiledehaze.restore(img, weights=weights_path, tile=100)
    assert out.shape == img.shape


def test_tiny_images_work(weights_path):
    for shape in [(1, 1, 3), (3, 200, 3), (200, 5)]:
        img = smooth_image(*shape[:2], shape[2] if len(shape) == 3 else None, np.uint8)
        assert tiledehaze.restore(img, weights=weights_path, tile=64).shape == img.shape


def test_memory_is_bounded_by_one_row_of_tiles(weights_path):
    """The engine never asks the reader for more rows than one tile row at a time."""
    img = smooth_image(2000, 300, 3, np.uint8)
    reader = ArrayReader(img)
    requests = []
    original = reader.read
    reader.read = lambda y0, y1: requests.append((y0, y1)) or original(y0, y1)
    model = tiledehaze.get_model(weights=weights_path)
    plan = make_plan(2000, 300, model, tile=256)
    bands = list(restore_bands(reader, model, plan))
    assert max(y1 - y0 for y0, y1 in requests) <= 256
    assert sum(rows.shape[0] for _, rows, _ in bands) == 2000
    assert [band[0] for band in bands] == sorted(band[0] for band in bands)


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
    assert sum(done) == len(make_plan(600, 700, model, tile=256))
