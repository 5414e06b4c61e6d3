"""Remote-sensing GeoTIFFs, built and checked with rasterio and rio-cogeo (GDAL), not with our own reader.

Band mapping, bit depth, nodata and masks, GDAL metadata, overviews and Cloud-Optimized GeoTIFF output.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
cogeo = pytest.importorskip("rio_cogeo.cogeo")

from rasterio.crs import CRS  # noqa: E402
from rasterio.enums import ColorInterp  # noqa: E402
from affine import Affine  # noqa: E402

import tiledehaze  # noqa: E402
from tiledehaze.cli import main  # noqa: E402

from .images import hazy_photo, smooth_image  # noqa: E402

CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)  # 10 m pixels, UTM 33N


def write_raster(path, data: np.ndarray, *, descriptions=None, tags=None, mask=None, cog=False, **profile):
    """``data`` (bands, h, w) as a tiled, DEFLATE + predictor GeoTIFF (or a COG with overviews)."""
    count, height, width = data.shape
    opts = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype, crs=CRS_UTM,
                transform=TRANSFORM, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                predictor=3 if data.dtype.kind == "f" else 2)
    opts.update(profile)
    target = path.with_name("plain_" + path.name) if cog else path
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(target, "w", **opts) as dst:
            dst.write(data)
            if descriptions:
                dst.descriptions = tuple(descriptions)
            for band, items in (tags or {}).items():
                dst.update_tags(band, **items)
            if mask is not None:
                dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
        if cog:
            rasterio.shutil.copy(target, path, driver="COG", blocksize=256, overview_resampling="average",
                                 compress="deflate")
    return path


def bands_first(img: np.ndarray) -> np.ndarray:
    return np.moveaxis(img, -1, 0) if img.ndim == 3 else img[None]


def read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def cli(*args) -> int:
    return main(["process", *map(str, args), "--no-progress"])


def assert_same_georeferencing(src, dst):
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert (b.count, b.width, b.height, b.dtypes) == (a.count, a.width, a.height, a.dtypes)
        assert b.nodata == a.nodata or (np.isnan(b.nodata) and np.isnan(a.nodata))


# ------------------------------------------------------------------------------------------- bands


def test_rasterio_four_band_layout_needs_bands_and_names_the_option(tmp_path, weights_file, capsys):
    data = bands_first(smooth_image(300, 400, 4, np.uint16, seed=1))
    src = write_raster(tmp_path / "s.tif", data)
    assert cli(src, "-o", tmp_path / "out.tif", "--weights", weights_file) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bands" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("count, choice, interleave", [(4, "3,2,1", "pixel"), (8, "4,3,2", "band")])
def test_bands_choose_what_the_model_sees_and_the_rest_pass_bit_for_bit(tmp_path, weights_file, count, choice,
                                                                        interleave):
    data = bands_first(smooth_image(300, 520, count, np.uint16, seed=count))
    names = [f"B{i + 1}" for i in range(count)]
    src = write_raster(tmp_path / "s.tif", data, descriptions=names, interleave=interleave,
                       tags={1: {"STATISTICS_MEAN": "1234.5", "STATISTICS_MAXIMUM": "65535", "SENSOR": "MSI"}})
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file, "--bands", choice) == 0
    assert_same_georeferencing(src, dst)
    out = read(dst)
    chosen = [int(b) - 1 for b in choice.split(",")]
    changed = [b for b in range(count) if not np.array_equal(out[b], data[b])]
    assert changed == sorted(chosen), "the chosen bands are restored, every other band passes through"
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.descriptions == tuple(names)
        assert b.colorinterp == a.colorinterp
        assert b.tags(1).get("SENSOR") == "MSI"
        assert not any(k.startswith("STATISTICS_") for k in b.tags(1))


def test_an_unspecified_extra_sample_is_never_alpha(tmp_path, weights_file):
    data = bands_first(smooth_image(256, 300, 4, np.uint16, seed=2))
    src = write_raster(tmp_path / "s.tif", data, photometric="RGB")
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file) == 0
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert a.colorinterp[3] == ColorInterp.undefined
        assert b.colorinterp == a.colorinterp
        out = b.read()
    assert np.array_equal(out[3], data[3])
    assert not np.array_equal(out[:3], data[:3])


def test_bands_out_of_range_is_one_clear_line(tmp_path, weights_file, capsys):
    src = write_raster(tmp_path / "s.tif", bands_first(smooth_image(64, 64, 4, np.uint8)))
    assert cli(src, "-o", tmp_path / "out.tif", "--weights", weights_file, "--bands", "5,2,1") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bands 5" in err[0]


# ----------------------------------------------------------------------------------- nodata, masks

BORDER = 40


def _bordered(img: np.ndarray, nodata) -> np.ndarray:
    out = img.copy()
    out[:BORDER], out[-BORDER:], out[:, :BORDER], out[:, -BORDER:] = nodata, nodata, nodata, nodata
    return out


@pytest.mark.parametrize("model, dtype, nodata", [("aodnet", np.uint8, 0), ("dcp", np.uint8, 0),
                                                  ("aodnet", np.uint16, 65535), ("dcp", np.float32, np.nan)])
def test_nodata_border_stays_exact_and_leaves_no_rim(tmp_path, weights_file, model, dtype, nodata):
    hazy = np.maximum(hazy_photo(400, 480, seed=3), 1)  # no nodata inside the scene
    # uint16 holds 12-bit values, so the nodata value would wreck the scaling if it were counted
    img = {np.uint8: hazy, np.uint16: hazy.astype(np.uint16) * 16, np.float32: hazy / np.float32(255)}[dtype]
    scale = {np.uint8: 255.0, np.uint16: 4080.0, np.float32: 1.0}[dtype]
    src = write_raster(tmp_path / "s.tif", bands_first(_bordered(img, nodata)), nodata=nodata, photometric="RGB")
    whole = write_raster(tmp_path / "whole.tif", bands_first(img), photometric="RGB")
    extra = ["--weights", weights_file] if model == "aodnet" else []
    for path in (src, whole):
        assert cli(path, "-o", tmp_path / f"out_{path.name}", "--model", model, "--tile", "256", *extra) == 0
    assert_same_georeferencing(src, tmp_path / "out_s.tif")
    out = np.moveaxis(read(tmp_path / "out_s.tif"), 0, -1)
    inside = np.zeros(out.shape[:2], bool)
    inside[BORDER:-BORDER, BORDER:-BORDER] = True
    border = out[~inside]
    assert np.array_equal(border, np.full_like(border, nodata), equal_nan=True)
    # the same scene restored with its real content where the border is: valid pixels next to
    # the nodata border must not get a rim (unfilled, DCP is 20 steps in 255 off on average there)
    ref = np.moveaxis(read(tmp_path / "out_whole.tif"), 0, -1)[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64)
    diff = np.abs(out[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64) - ref) / scale
    ring = np.pad(np.zeros((diff.shape[0] - 16, diff.shape[1] - 16), bool), 8, constant_values=True)
    mean, worst = (0.004, 0.06) if model == "aodnet" else (0.025, 0.13)
    assert diff[ring].mean() < mean and diff[ring].max() < worst


def test_internal_mask_pixels_come_out_exactly_and_the_mask_is_kept(tmp_path, weights_file):
    img = smooth_image(300, 400, 3, np.uint8, seed=5)
    mask = np.ones(img.shape[:2], bool)
    mask[:, :60] = False
    mask[200:, 300:] = False
    src = write_raster(tmp_path / "s.tif", bands_first(img), mask=mask, photometric="RGB")
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file) == 0
    assert_same_georeferencing(src, dst)
    with rasterio.open(dst) as b:
        out = np.moveaxis(b.read(), 0, -1)
        kept = b.dataset_mask() > 0
    assert np.array_equal(kept, mask)
    assert np.array_equal(out[~mask], img[~mask])
    assert not np.array_equal(out[mask], img[mask])


# -------------------------------------------------------------------------------------- bit depth


def _as_8bit_result(tmp_path, img16, high, weights_file):
    """The 8-bit restoration of the same scene, in the 16-bit scene's units."""
    img8 = np.round(img16.astype(np.float64) / high * 255).astype(np.uint8)
    return tiledehaze.restore(img8, weights=weights_file).astype(np.float64) / 255 * high


def _twelve_bit_result(tmp_path, weights_file, **extra) -> tuple[np.ndarray, np.ndarray]:
    """(the 12-bit scene, its restoration as float64) through the command line."""
    img = (smooth_image(300, 400, 3, np.uint16, seed=6) // 16).astype(np.uint16)  # 0 .. 4095
    src = write_raster(tmp_path / "s.tif", bands_first(img), photometric="RGB", **extra)
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file) == 0
    return img, np.moveaxis(read(dst), 0, -1).astype(np.float64)


@pytest.mark.parametrize("nbits", [None, 12])
def test_twelve_bit_scenes_are_scaled_and_mapped_back(tmp_path, weights_file, nbits):
    _, out = _twelve_bit_result(tmp_path, weights_file, **({"nbits": 12, "predictor": 1} if nbits else {}))
    assert out.max() <= 4095 * 1.06 and out.mean() > 0.2 * 4095  # neither black nor stretched off the scale


def test_an_nbits_tag_fixes_the_range_like_an_8_bit_scene(tmp_path, weights_file):
    """The NBITS tag fixes the range at 0 .. 4095: the same result as the 8-bit scene."""
    img, out = _twelve_bit_result(tmp_path, weights_file, nbits=12, predictor=1)
    assert np.abs(out - _as_8bit_result(tmp_path, img, 4095, weights_file)).mean() < 0.01 * 4095


def test_reflectance_times_10000_keeps_its_range(tmp_path, weights_file):
    img = (smooth_image(300, 400, 3, np.float32, seed=7) * 6000 + 200).astype(np.uint16)
    src = write_raster(tmp_path / "s.tif", bands_first(img), photometric="RGB")
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file, "--input-range", "0,10000") == 0
    out = np.moveaxis(read(dst), 0, -1).astype(np.float64)
    assert np.abs(out - _as_8bit_result(tmp_path, img, 10000, weights_file)).mean() < 0.01 * 10000


def test_an_input_range_that_would_clip_the_scene_is_refused(tmp_path, weights_file, capsys):
    img = (smooth_image(200, 200, 3, np.uint16, seed=8) // 16).astype(np.uint16)
    src = write_raster(tmp_path / "s.tif", bands_first(img), photometric="RGB")
    assert cli(src, "-o", tmp_path / "out.tif", "--weights", weights_file, "--input-range", "0,1000") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--input-range" in err[0]
    assert not (tmp_path / "out.tif").exists()


# ------------------------------------------------------------------------------ overviews and COG


def _block_mean(level: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """2x2 averages of (bands, h, w) over the valid samples of each band (even sizes), as GDAL's nodata masks do."""
    c, h, w = level.shape
    v = valid.reshape(c, h // 2, 2, w // 2, 2).astype(np.float64)
    s = (level.astype(np.float64) * valid).reshape(c, h // 2, 2, w // 2, 2).sum(axis=(2, 4))
    return s / np.maximum(v.sum(axis=(2, 4)), 1)


def test_a_cog_in_gives_a_valid_cog_out(tmp_path, weights_file, caplog):
    img = _bordered(smooth_image(1024, 1280, 3, np.uint8, seed=9), 0)
    src = write_raster(tmp_path / "s.tif", bands_first(img), nodata=0, photometric="RGB", cog=True,
                       descriptions=["red", "green", "blue"])
    assert cogeo.cog_validate(src, strict=True, quiet=True)[0]
    dst = tmp_path / "out.tif"
    with caplog.at_level(logging.WARNING):
        assert cli(src, "-o", dst, "--weights", weights_file) == 0
    assert "images" not in caplog.text
    valid, errors, warnings = cogeo.cog_validate(dst, strict=True, quiet=True)
    assert valid, errors + warnings
    assert_same_georeferencing(src, dst)
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.overviews(1) == a.overviews(1) and len(b.overviews(1)) >= 2
        assert b.descriptions == ("red", "green", "blue")
        full = b.read()
        ov = b.read(out_shape=(3, b.height // 2, b.width // 2))  # GDAL reads overview level 0
    valid = full != 0
    expected = _block_mean(full, valid)
    any_valid = valid.reshape(3, 512, 2, 640, 2).any(axis=(2, 4))
    assert np.abs(ov[any_valid] - expected[any_valid]).max() <= 1  # nodata-aware average
    assert (ov[~any_valid] == 0).all() and (~any_valid).sum() > 3 * 20 * 640


@pytest.mark.parametrize("count, dtype, nodata", [(1, np.uint16, None), (4, np.uint8, None), (3, np.float32, -9999.0)])
def test_cog_option_makes_a_valid_cog_from_any_tiff(tmp_path, weights_file, count, dtype, nodata):
    img = smooth_image(700, 900, count, dtype, seed=count)
    data = bands_first(img)
    if nodata is not None:
        data[:, :, :30] = nodata
    extra = {"photometric": "RGB"} if count == 4 else {}
    src = write_raster(tmp_path / "s.tif", data, nodata=nodata, **extra)
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file, "--cog") == 0
    valid, errors, warnings = cogeo.cog_validate(dst, strict=True, quiet=True)
    assert valid, errors + warnings
    assert_same_georeferencing(src, dst)
    with rasterio.open(dst) as b:
        assert b.overviews(1) == [2, 4]
        out = b.read()
    held = data[:, :, :30] == nodata  # the nodata columns (none when the raster declares no nodata)
    assert np.array_equal(out[:, :, :30][held], data[:, :, :30][held])
    alpha = [3] if count == 4 else []
    assert all(np.array_equal(out[b], data[b]) for b in alpha)  # alpha passes through


def test_a_masked_cog_keeps_its_mask_at_every_level(tmp_path, weights_file):
    img = smooth_image(600, 800, 3, np.uint8, seed=11)
    mask = np.ones(img.shape[:2], bool)
    mask[:, :100] = False
    src = write_raster(tmp_path / "s.tif", bands_first(img), mask=mask, photometric="RGB", cog=True)
    dst = tmp_path / "out.tif"
    assert cli(src, "-o", dst, "--weights", weights_file) == 0
    valid, errors, warnings = cogeo.cog_validate(dst, strict=True, quiet=True)
    assert valid, errors + warnings
    with rasterio.open(dst) as b:
        assert np.array_equal(b.dataset_mask() > 0, mask)
        small = b.dataset_mask(out_shape=(300, 400)) > 0
        out = np.moveaxis(b.read(), 0, -1)
    assert not small[:, :50].any() and small[:, 50:].all()
    assert np.array_equal(out[~mask], img[~mask])


def test_scene_statistics_come_from_the_files_own_overview_with_its_mask(tmp_path):
    from tiledehaze.io import open_image

    img = smooth_image(2400, 2048, 3, np.uint16, seed=12)
    mask = np.ones(img.shape[:2], bool)
    mask[:, :512] = False
    src = write_raster(tmp_path / "s.tif", bands_first(img), mask=mask, photometric="RGB", cog=True)
    with rasterio.open(src) as a:
        assert a.overviews(1)[0] == 2
        expected = a.read(out_shape=(3, 1200, 1024))
    with open_image(src) as reader:
        pixels, valid = reader.overview()
    assert np.array_equal(np.moveaxis(pixels, -1, 0), expected)
    assert not valid[:, :256].any() and valid[:, 256:].all()


@pytest.mark.parametrize("nodata", [None, 0])
def test_streamed_overviews_equal_averaging_the_whole_level(nodata):
    """Rows arriving in bands of any height give the same overview as averaging the whole image."""
    from tiledehaze.io.cog import Halver

    rng = np.random.default_rng(0)
    image = rng.integers(0, 4, (301, 257, 2)).astype(np.uint8) * 60
    halver, out = Halver(np.uint8, nodata), []
    for y0, y1 in [(0, 7), (7, 140), (140, 141), (141, 301)]:
        half = halver.add(image[y0:y1], None)
        if half is not None:
            out.append(half[0])
    out.append(halver.flush()[0])
    got = np.concatenate(out)
    padded = np.pad(image.astype(np.float64), ((0, 1), (0, 1), (0, 0)))
    weight = np.pad(np.ones(image.shape) if nodata is None else (image != nodata).astype(np.float64),
                    ((0, 1), (0, 1), (0, 0)))
    total = (padded * weight).reshape(151, 2, 129, 2, 2).sum(axis=(1, 3))
    count = weight.reshape(151, 2, 129, 2, 2).sum(axis=(1, 3))
    expected = np.where(count > 0, np.rint(total / np.maximum(count, 1)), 0)
    assert got.shape == (151, 129, 2)
    assert np.array_equal(got, expected)


def test_nodata_never_sets_the_airlight():
    from tiledehaze.models.dcp import estimate_airlight

    image = np.full((60, 80, 3), 0.5, np.float32)
    image[:, :20] = 1.0  # a bright nodata strip: the brightest dark channel of the image
    image[30, 50] = (0.7, 0.8, 0.9)
    valid = np.ones(image.shape[:2], bool)
    valid[:, :20] = False
    assert np.allclose(estimate_airlight(image, patch=1), 1.0)
    assert np.allclose(estimate_airlight(image, patch=1, valid=valid), (0.7, 0.8, 0.9))


def test_a_batch_takes_bands_and_cog_for_every_file(tmp_path, weights_file):
    data = bands_first(smooth_image(200, 300, 4, np.uint16, seed=13))
    (tmp_path / "in").mkdir()
    for name in ("a.tif", "b.tif"):
        write_raster(tmp_path / "in" / name, data)
    out = tmp_path / "out"
    assert cli(tmp_path / "in", "-o", out, "--weights", weights_file, "--bands", "3,2,1", "--cog") == 0
    for name in ("a.tif", "b.tif"):
        assert np.array_equal(read(out / name)[3], data[3])
        assert cogeo.cog_validate(out / name, strict=True, quiet=True)[0]
