"""Files in, files out: pixels, bit depth and metadata survive; streamed output equals restore()."""

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

import tiledehaze
from tiledehaze.io import open_image

from .images import smooth_image

GEOTAGS = [
    (33550, 12, 3, (0.5, 0.5, 0.0), True),
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
    (34736, 12, 1, (6378137.0,), True),
    (34737, 2, 0, "WGS 84 / UTM zone 33N|", True),
    (42113, 2, 0, "-9999", True),  # a nodata value these images never hold
]


def _write_geotiff(path, img, **kwargs):
    opts = dict(tile=(256, 256), compression="zlib", predictor=True, extratags=GEOTAGS, resolution=(300, 300),
                resolutionunit="INCH", iccprofile=b"\x00ICCprofile" * 8, metadata=None)
    opts.update(kwargs)
    tifffile.imwrite(path, img, photometric="rgb" if img.ndim == 3 and img.shape[2] >= 3 else "minisblack", **opts)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_geotiff_keeps_georeferencing_bit_depth_tiling_and_profile(tmp_path, weights_path, dtype):
    img = smooth_image(700, 900, 3, dtype, seed=1)
    src, dst = tmp_path / "scene.tif", tmp_path / "out" / "scene.tif"
    _write_geotiff(src, img)
    tiledehaze.process_file(src, dst, weights=weights_path, tile=256)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(dst) as b:
        pa, pb = a.pages[0], b.pages[0]
        for code in (33550, 33922, 34735, 34736, 34737, 42113, 34675, 282, 283, 296):
            assert pb.tags[code].value == pa.tags[code].value, code
        assert pb.dtype == pa.dtype and pb.shape == pa.shape
        assert (pb.tilelength, pb.tilewidth) == (256, 256)
        assert pb.compression == pa.compression
        out = pb.asarray()
    assert np.array_equal(out, tiledehaze.restore(img, weights=weights_path, tile=256))


def test_streamed_bigtiff_equals_restore_and_stays_bigtiff(tmp_path, weights_path):
    img = smooth_image(1100, 1300, 3, np.uint8, seed=4)
    src, dst = tmp_path / "big.tif", tmp_path / "big_out.tif"
    tifffile.imwrite(src, img, bigtiff=True, tile=(128, 128), photometric="rgb")
    tiledehaze.process_file(src, dst, weights=weights_path, tile=300)
    with tifffile.TiffFile(dst) as t:
        assert t.is_bigtiff and t.pages[0].is_tiled
        out = t.asarray()
    assert np.array_equal(out, tiledehaze.restore(img, weights=weights_path, tile=300))


@pytest.mark.parametrize("layout", ["striped", "planar", "gray", "rgba"])
def test_tiff_layouts_are_read_correctly(tmp_path, weights_path, layout):
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
    assert np.array_equal(out, tiledehaze.restore(img, weights=weights_path, tile=128))
    if layout == "rgba":
        assert np.array_equal(out[..., 3], img[..., 3])


def test_jpeg_orientation_is_applied_and_icc_exif_are_kept(tmp_path, weights_path):
    img = smooth_image(120, 200, 3, np.uint8, seed=8)
    src, dst = tmp_path / "photo.jpg", tmp_path / "photo_out.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    exif[0x010F] = "TestCam"
    Image.fromarray(img).save(src, quality=98, exif=exif.tobytes(), icc_profile=b"\x00icc" * 20)
    tiledehaze.process_file(src, dst, weights=weights_path)
    with Image.open(dst) as out:
        assert out.size == (120, 200)  # displayed upright: width and height swapped
        assert out.info.get("icc_profile") == b"\x00icc" * 20
        out_exif = out.getexif()
        assert out_exif[0x010F] == "TestCam" and out_exif.get(0x0112, 1) == 1


def test_png16_and_rgba_png_keep_depth_and_alpha(tmp_path, weights_path):
    import cv2

    img = smooth_image(150, 170, 4, np.uint16, seed=3)
    src, dst = tmp_path / "deep.png", tmp_path / "deep_out.png"
    cv2.imwrite(str(src), cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA))
    tiledehaze.process_file(src, dst, weights=weights_path)
    out = cv2.cvtColor(cv2.imread(str(dst), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    np.testing.assert_array_equal(out, tiledehaze.restore(img, weights=weights_path))


@pytest.mark.parametrize("ext", ["png", "webp", "bmp"])
def test_common_formats_round_trip(tmp_path, weights_path, ext):
    img = smooth_image(90, 110, 3, np.uint8, seed=2)
    src, dst = tmp_path / f"in.{ext}", tmp_path / f"out.{ext}"
    Image.fromarray(img).save(src, **({"lossless": True} if ext == "webp" else {}))
    tiledehaze.process_file(src, dst, weights=weights_path)
    with Image.open(dst) as out:
        assert out.size == (110, 90) and out.mode == "RGB"


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
