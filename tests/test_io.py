"""Files in, files out: pixels equal an independent whole-image forward pass; bit depth and metadata survive.

Output pixels are compared with :mod:`tests.reference` (scipy convolutions on the whole image,
computed here), never with another run of the engine.
"""

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

import tiledehaze
from tiledehaze.cli import main
from tiledehaze.io import open_image

from . import reference
from .images import smooth_image

GEOTAGS = [
    (33550, 12, 3, (0.5, 0.5, 0.0), True),
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),
    (34264, 12, 16, tuple(float(v) for v in (0.5, 0, 0, 500000, 0, -0.5, 0, 4000000, 0, 0, 0, 0, 0, 0, 0, 1)), True),
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
    (34736, 12, 1, (6378137.0,), True),
    (34737, 2, 0, "WGS 84 / UTM zone 33N|", True),
    (42113, 2, 0, "-9999", True),  # a nodata value these images never hold
    (306, 2, 0, "2024:05:17 10:42:00", True),
    (315, 2, 0, "A. Surveyor", True),
    (33432, 2, 0, "(c) 2024 Example Survey", True),
]
GDAL_STATS = ('<GDALMetadata><Item name="DESCRIPTION" sample="0" role="description">red</Item>'
              '<Item name="STATISTICS_MAXIMUM" sample="0">255</Item>'
              '<Item name="STATISTICS_MEAN" sample="0">97.2</Item></GDALMetadata>')
KEPT_TAGS = {33550: "ModelPixelScale", 33922: "ModelTiepoint", 34264: "ModelTransformation",
             34735: "GeoKeyDirectory", 34736: "GeoDoubleParams", 34737: "GeoAsciiParams", 42113: "GDAL_NODATA",
             306: "DateTime", 315: "Artist", 33432: "Copyright", 34675: "ICC profile", 282: "XResolution",
             283: "YResolution", 296: "ResolutionUnit"}


def _write_geotiff(path, img, **kwargs):
    opts = dict(tile=(256, 256), compression="zlib", predictor=True,
                extratags=GEOTAGS + [(42112, 2, 0, GDAL_STATS, True)], resolution=(300, 300),
                resolutionunit="INCH", iccprofile=b"\x00ICCprofile" * 8, metadata=None)
    opts.update(kwargs)
    tifffile.imwrite(path, img, photometric="rgb" if img.ndim == 3 and img.shape[2] >= 3 else "minisblack", **opts)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32], ids=lambda d: np.dtype(d).name)
def test_geotiff_output_equals_the_reference_and_keeps_georeferencing_bit_depth_and_tiling(
        tmp_path, weights_path, ref_weights, dtype):
    img = smooth_image(700, 900, 3, dtype, seed=1)
    src, dst = tmp_path / "scene.tif", tmp_path / "out" / "scene.tif"
    _write_geotiff(src, img)
    tiledehaze.process_file(src, dst, weights=weights_path, tile=256)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(dst) as b:
        pa, pb = a.pages[0], b.pages[0]
        for code, name in KEPT_TAGS.items():
            assert pb.tags[code].value == pa.tags[code].value, name
        assert pb.dtype == pa.dtype and pb.shape == pa.shape
        assert (pb.tilelength, pb.tilewidth) == (256, 256)
        assert pb.compression == pa.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        out = pb.asarray()
    reference.assert_equal_to_rounding(out, reference.restore(ref_weights, img))


@pytest.mark.parametrize("dtype,predictor", [(np.uint8, 2), (np.uint16, 2), (np.float32, 3)],
                         ids=["uint8", "uint16", "float32"])
def test_tiff_predictor_is_kept(tmp_path, weights_path, dtype, predictor):
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, smooth_image(100, 120, 3, dtype), tile=(64, 64), compression="zstd", predictor=True,
                     photometric="rgb")
    tiledehaze.process_file(src, dst, weights=weights_path, tile=64)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(dst) as b:
        assert a.pages[0].predictor == predictor  # the source really has one
        assert b.pages[0].predictor == predictor
        assert b.pages[0].compression == tifffile.COMPRESSION.ZSTD


def test_stale_gdal_statistics_are_dropped(tmp_path, weights_path):
    img = smooth_image(100, 120, 3, np.uint8)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    _write_geotiff(src, img, tile=(64, 64))
    tiledehaze.process_file(src, dst, weights=weights_path)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(dst) as b:
        assert "STATISTICS_MEAN" in a.pages[0].tags[42112].value
        kept = b.pages[0].tags[42112].value
        assert b.pages[0].tags[34264].value == a.pages[0].tags[34264].value  # the rest of the profile is kept
    assert "STATISTICS_" not in kept  # stale once the pixels change
    assert '<Item name="DESCRIPTION" sample="0" role="description">red</Item>' in kept  # the band description stays


def test_streamed_bigtiff_equals_the_reference_and_stays_bigtiff(tmp_path, weights_path, ref_weights):
    img = smooth_image(1100, 1300, 3, np.uint8, seed=4)
    src, dst = tmp_path / "big.tif", tmp_path / "big_out.tif"
    tifffile.imwrite(src, img, bigtiff=True, tile=(128, 128), photometric="rgb")
    tiledehaze.process_file(src, dst, weights=weights_path, tile=300)
    with tifffile.TiffFile(dst) as t:
        assert t.is_bigtiff and t.pages[0].is_tiled
        out = t.asarray()
    reference.assert_equal_to_rounding(out, reference.restore(ref_weights, img))


@pytest.mark.parametrize("layout", ["striped", "planar", "gray", "rgba"])
def test_tiff_layouts_are_read_correctly(tmp_path, weights_path, ref_weights, layout):
    channels = {"gray": None, "rgba": 4}.get(layout, 3)
    img = smooth_image(300, 350, channels, np.uint8, seed=6)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    if layout == "planar":
        tifffile.imwrite(src, np.moveaxis(img, -1, 0), planarconfig="separate", photometric="rgb")
    elif layout == "rgba":
        tifffile.imwrite(src, img, photometric="rgb", extrasamples=[2], rowsperstrip=16)
    else:
        tifffile.imwrite(src, img, rowsperstrip=7, photometric="minisblack" if channels is None else "rgb")
    with open_image(src) as reader:
        assert np.array_equal(reader.read(0, 300), img)
    tiledehaze.process_file(src, dst, weights=weights_path, tile=128)
    out = tifffile.imread(dst)
    assert out.shape == img.shape
    # alpha is compared exactly here: the reference copies it
    reference.assert_equal_to_rounding(out, reference.restore(ref_weights, img))


def _jpeg_with_orientation(path, img, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    Image.fromarray(img).save(path, quality=98, exif=exif.tobytes(), icc_profile=b"\x00icc" * 20)


# EXIF orientation -> how the stored pixels are turned to display them upright
UPRIGHT = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation):
    img = smooth_image(120, 200, 3, np.uint8, seed=8)
    src = tmp_path / "photo.jpg"
    _jpeg_with_orientation(src, img, orientation)
    with Image.open(src) as im:
        stored = np.asarray(im)  # Pillow does not apply the orientation by itself
    with open_image(src) as reader:
        upright = reader.read(0, reader.info.height)
    np.testing.assert_array_equal(upright, UPRIGHT[orientation](stored))


def test_jpeg_output_is_upright_and_keeps_icc_and_exif(tmp_path, weights_path, ref_weights):
    img = smooth_image(120, 200, 3, np.uint8, seed=8)
    src, dst = tmp_path / "photo.jpg", tmp_path / "photo_out.jpg"
    _jpeg_with_orientation(src, img, 6)
    with Image.open(src) as im:
        upright = np.rot90(np.asarray(im), -1)
    tiledehaze.process_file(src, dst, weights=weights_path, quality=100)
    with Image.open(dst) as out:
        assert out.size == (120, 200)  # displayed upright: width and height swapped
        assert out.info.get("icc_profile") == b"\x00icc" * 20
        out_exif = out.getexif()
        assert out_exif[0x010F] == "TestCam" and out_exif[0x0112] == 1
        pixels = np.asarray(out).astype(float)
    expected = reference.restore(ref_weights, upright).astype(float)
    assert np.abs(pixels - expected).mean() < 2  # JPEG's own loss
    assert np.abs(pixels - np.rot90(expected, 2)).mean() > 10  # turned the other way would show


def test_png_keeps_icc_profile_and_resolution(tmp_path, weights_path, ref_weights):
    img = smooth_image(90, 110, 3, np.uint8, seed=2)
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(img).save(src, icc_profile=b"\x00PNGicc" * 10, dpi=(300, 300))
    tiledehaze.process_file(src, dst, weights=weights_path)
    with Image.open(dst) as out:
        assert out.info["icc_profile"] == b"\x00PNGicc" * 10
        assert out.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        reference.assert_equal_to_rounding(np.asarray(out), reference.restore(ref_weights, img))


@pytest.mark.parametrize("ext,mode", [("png", "L"), ("png", "LA"), ("jpg", "L"), ("tif", "L")])
def test_gray_files_stay_gray_and_equal_the_reference(tmp_path, weights_path, ref_weights, ext, mode):
    img = smooth_image(100, 140, None if mode == "L" else 2, np.uint8, seed=11)
    src, dst = tmp_path / f"gray.{ext}", tmp_path / f"out.{ext}"
    if ext == "tif":
        tifffile.imwrite(src, img, photometric="minisblack")
    else:
        Image.fromarray(img, mode).save(src, **({"quality": 100} if ext == "jpg" else {}))
    with open_image(src) as reader:
        stored = reader.read(0, 100)  # JPEG's loss happens on the way in
    tiledehaze.process_file(src, dst, weights=weights_path, quality=100)
    with Image.open(dst) as out:
        assert out.mode == mode
        pixels = np.asarray(out)
    expected = reference.restore(ref_weights, stored)
    error = np.abs(pixels.astype(float) - expected).mean() if ext == "jpg" else reference.lsb_error(pixels, expected)
    assert error <= 1.5  # JPEG's own loss on the way out; exact for the others


def test_png16_and_rgba_png_keep_depth_and_alpha(tmp_path, weights_path, ref_weights):
    import cv2

    img = smooth_image(150, 170, 4, np.uint16, seed=3)
    src, dst = tmp_path / "deep.png", tmp_path / "deep_out.png"
    cv2.imwrite(str(src), cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA))
    tiledehaze.process_file(src, dst, weights=weights_path)
    out = cv2.cvtColor(cv2.imread(str(dst), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    reference.assert_equal_to_rounding(out, reference.restore(ref_weights, img))


@pytest.mark.parametrize("ext", ["png", "bmp"])
def test_common_formats_round_trip(tmp_path, weights_path, ref_weights, ext):
    img = smooth_image(90, 110, 3, np.uint8, seed=2)
    src, dst = tmp_path / f"in.{ext}", tmp_path / f"out.{ext}"
    Image.fromarray(img).save(src)
    tiledehaze.process_file(src, dst, weights=weights_path)
    with Image.open(dst) as out:
        assert out.size == (110, 90) and out.mode == "RGB"
        reference.assert_equal_to_rounding(np.asarray(out), reference.restore(ref_weights, img))


def test_webp_round_trip(tmp_path, weights_path, ref_weights):
    img = smooth_image(90, 110, 3, np.uint8, seed=2)
    src, dst = tmp_path / "in.webp", tmp_path / "out.webp"
    Image.fromarray(img).save(src, lossless=True)
    tiledehaze.process_file(src, dst, weights=weights_path, quality=100)
    with Image.open(dst) as out:
        assert out.size == (110, 90) and out.mode == "RGB"
        pixels = np.asarray(out).astype(float)
    expected = reference.restore(ref_weights, img).astype(float)
    # WebP is lossy on the way out: the output is still far closer to the reference than the input is
    assert np.abs(pixels - expected).mean() < np.abs(img - expected).mean() / 3


def test_format_follows_the_output_extension(tmp_path, weights_path):
    img = smooth_image(64, 80, 3, np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    tiledehaze.process_file(src, tmp_path / "out.tif", weights=weights_path)
    assert tifffile.imread(tmp_path / "out.tif").shape == img.shape


def test_formats_that_cannot_hold_the_data_are_refused_before_work(tmp_path, weights_path):
    img = smooth_image(64, 64, 3, np.float32)
    src = tmp_path / "f.tif"
    tifffile.imwrite(src, img, photometric="rgb")
    with pytest.raises(tiledehaze.ConfigError, match="cannot store float32"):
        tiledehaze.process_file(src, tmp_path / "f.png", weights=weights_path)
    assert not (tmp_path / "f.png").exists()


def test_probe_reads_the_same_image_info_as_the_readers_without_decoding(tmp_path):
    from tiledehaze.io import probe

    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = smooth_image(30, 50)
    files = {"turned.jpg": lambda p: Image.fromarray(rgb).save(p, exif=exif.tobytes(), icc_profile=b"\x00icc" * 8),
             "rgba.png": lambda p: Image.fromarray(smooth_image(30, 50, 4)).save(p),
             "gray16.png": lambda p: cv2.imwrite(str(p), smooth_image(30, 50, None, np.uint16)),
             "rgb16.png": lambda p: cv2.imwrite(str(p), smooth_image(30, 50, 3, np.uint16)),
             "palette.bmp": lambda p: Image.fromarray(rgb).convert("P").save(p),
             "gray.webp": lambda p: Image.fromarray(smooth_image(30, 50, None)).save(p, lossless=True)}
    for name, save in files.items():
        save(tmp_path / name)
        with open_image(tmp_path / name) as reader:
            assert probe(tmp_path / name) == reader.info, name
    tif = tmp_path / "planar.tif"
    tifffile.imwrite(tif, smooth_image(30, 50, 3, np.uint16).transpose(2, 0, 1), photometric="rgb",
                     planarconfig="separate")
    info = probe(tif)
    with open_image(tif) as reader:
        assert (info.height, info.width, info.channels, info.dtype, info.format) == \
               (reader.info.height, reader.info.width, reader.info.channels, reader.info.dtype, "tiff")
    assert probe(tmp_path / "turned.jpg").shape == (50, 30, 3)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(tiledehaze.InputError, match="empty"):
        probe(tmp_path / "empty.png")


def _tiff_damaged_after_the_first_band(path) -> None:
    """A TIFF whose header and first tiles are fine but whose last tile does not decompress."""
    tifffile.imwrite(path, smooth_image(300, 350, 3, np.uint8), tile=(64, 64), compression="zlib",
                     photometric="rgb")
    with tifffile.TiffFile(path) as t:
        offset, count = t.pages[0].dataoffsets[-1], t.pages[0].databytecounts[-1]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)


@pytest.mark.parametrize("failure", ["unreadable input", "damaged data found mid-image"])
def test_overwrite_followed_by_a_failure_leaves_the_old_output_intact(tmp_path, weights_path, capsys, failure):
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    if failure == "unreadable input":
        src.write_bytes(b"II*\x00" + b"\x00" * 40)
    else:
        _tiff_damaged_after_the_first_band(src)
    dst.write_bytes(b"the previous result")
    with pytest.raises(tiledehaze.InputError):
        tiledehaze.process_file(src, dst, weights=weights_path, tile=128, overwrite=True)
    assert dst.read_bytes() == b"the previous result"
    assert main(["process", str(src), "-o", str(dst), "--overwrite", "--weights", str(weights_path),
                 "--no-progress"]) == tiledehaze.InputError.exit_code
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert dst.read_bytes() == b"the previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]  # no temporary left
