"""Bad input, single file: every crafted case ends in one clear line and a non-zero exit, or a
correct output where the input is legitimately usable. Never a traceback, never a changed input.

The corpus is generated at test time; ``scripts/fuzz_inputs.py`` runs the longer mutation fuzz.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tiledehaze import TileDehazeError, process_file
from tiledehaze.cli import main

from .images import hazy_photo

PHOTO = hazy_photo(48, 64, seed=7)


def encode(fmt: str, pixels: np.ndarray = PHOTO, **options) -> bytes:
    buf = io.BytesIO()
    if fmt == "tiff":
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            options.setdefault("photometric", "rgb")
        tifffile.imwrite(buf, pixels, **options)
    else:
        Image.fromarray(pixels).save(buf, format=fmt, **options)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with hand-made CRCs."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", idat or zlib.compress(b"\x00" * 7)) + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_tag_patched(tag: int, value: int, **options) -> bytes:
    data = bytearray(encode("tiff", **options))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        t = tif.pages.first.tags[tag]
        fmt = {3: "<H", 4: "<I"}[t.dtype]
        struct.pack_into(fmt, data, t.valueoffset, value)
    return bytes(data)


def tiff_damaged_tile() -> bytes:
    data = bytearray(encode("tiff", tile=(16, 16), compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        page = tif.pages.first
        off, count = page.dataoffsets[3], page.databytecounts[3]
    data[off:off + count] = os.urandom(count)
    return bytes(data)


def tiff_offset_past_end() -> bytes:
    data = bytearray(encode("tiff", tile=(16, 16)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        t = tif.pages.first.tags[324]  # TileOffsets
        struct.pack_into("<I", data, t.valueoffset + 4, len(data) + 1000)
    return bytes(data)


def float_tiff(value: float) -> bytes:
    pixels = PHOTO.astype(np.float32) / 255
    pixels[10, 10, 1] = value
    return encode("tiff", pixels)


def png16() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", PHOTO.astype(np.uint16) * 257)
    return buf.tobytes()


def cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def flip_middle(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid: mid + 64] = bytes(x ^ 0xA5 for x in b[mid: mid + 64])
    return bytes(b)


def png_bad_crc() -> bytes:
    data = bytearray(encode("PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF
    return bytes(data)


#: name -> (file name, content, what a user should get: "error" or "ok" (a correct output))
CASES: dict[str, tuple[str, bytes, str]] = {
    "empty jpeg": ("e.jpg", b"", "error"),
    "empty tiff": ("e.tif", b"", "error"),
    "empty png": ("e.png", b"", "error"),
    "text named jpg": ("t.jpg", b"hello, this is not an image\n" * 10, "error"),
    "random bytes named tif": ("r.tif", bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)), "error"),
    "jpeg truncated to half": ("h.jpg", cut(encode("JPEG"), 0.5), "error"),
    "jpeg header only": ("h2.jpg", encode("JPEG")[:300], "error"),
    "jpeg only SOI marker": ("soi.jpg", b"\xff\xd8\xff", "error"),
    "jpeg corrupt scan data": ("c.jpg", flip_middle(encode("JPEG")), "error"),
    "jpeg declaring 65000x65000": ("big.jpg", jpeg_declaring(65000, 65000), "error"),
    "jpeg declaring 0x0": ("zero.jpg", jpeg_declaring(0, 0), "error"),
    "png truncated to half": ("h.png", cut(encode("PNG"), 0.5), "error"),
    "png signature only": ("sig.png", b"\x89PNG\r\n\x1a\n", "error"),
    "png header only (no IDAT)": ("ho.png", encode("PNG")[:33], "error"),
    "png bad IDAT crc": ("crc.png", png_bad_crc(), "error"),
    "png declaring 200000x200000": ("huge.png", png_declaring(200000, 200000), "error"),
    "png declaring 0x10": ("zw.png", png_declaring(0, 10), "error"),
    "png declaring 3x3 with too little data": ("short.png", png_declaring(3, 3), "error"),
    "png 16-bit truncated": ("h16.png", cut(png16(), 0.6), "error"),
    "tiff truncated to half": ("h.tif", cut(encode("tiff", tile=(16, 16)), 0.5), "error"),
    "tiff striped truncated": ("hs.tif", cut(encode("tiff", rowsperstrip=8), 0.7), "error"),
    "tiff header only": ("ho.tif", b"II*\x00\x08\x00\x00\x00", "error"),
    "tiff damaged tile": ("dt.tif", tiff_damaged_tile(), "error"),
    "tiff tile offset past the end": ("off.tif", tiff_offset_past_end(), "error"),
    "tiff width 0": ("w0.tif", tiff_tag_patched(256, 0), "error"),
    "tiff huge width": ("hw.tif", tiff_tag_patched(256, 1 << 30, tile=(16, 16)), "error"),
    "tiff 5 channels": ("c5.tif", encode("tiff", np.zeros((16, 16, 5), np.uint8), photometric="minisblack",
                                         planarconfig="contig"), "error"),
    "tiff int32 pixels": ("i32.tif", encode("tiff", np.zeros((16, 16), np.int32)), "error"),
    "tiff float NaN": ("nan.tif", float_tiff(np.nan), "error"),
    "tiff float inf": ("inf.tif", float_tiff(np.inf), "error"),
    "tiff CMYK": ("cmyk.tif", encode("tiff", np.zeros((16, 16, 4), np.uint8), photometric="separated"), "error"),
    "gif": ("a.gif", encode("GIF", PHOTO[..., 0]), "error"),
    "bmp truncated": ("h.bmp", cut(encode("BMP"), 0.5), "error"),
    "webp truncated": ("h.webp", cut(encode("WEBP"), 0.5), "error"),
    "png content named jpg": ("png.jpg", encode("PNG"), "ok"),
    "tiff content named png": ("tif.png", encode("tiff"), "ok"),
    "jpeg named tif": ("jpg.tif", encode("JPEG"), "ok"),
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def run_cli(capfd, *args: str) -> tuple[int, list[str]]:
    code = main(["process", *args, "--no-progress"])
    err = capfd.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_one_clear_line(code: int, err: list[str]) -> None:
    assert code != 0
    assert len(err) == 1, err
    assert err[0].startswith("tiledehaze: error: ") and len(err[0]) > 30


def run_case(case: str, tmp_path: Path, weights_file: str, capfd) -> tuple[int, list[str], Path]:
    """Run one corpus file through the CLI; the input is never changed and no temporary is left."""
    name, content, _ = CASES[case]
    src = tmp_path / name
    src.write_bytes(content)
    before = digest(src)
    out = tmp_path / "out" / f"result{src.suffix}"
    code, err = run_cli(capfd, str(src), "-o", str(out), "--weights", weights_file)
    assert digest(src) == before, "the input was changed"
    assert not list(tmp_path.rglob("*tiledehaze-tmp*"))
    return code, err, out


@pytest.mark.parametrize("case", [c for c, (_, _, expect) in CASES.items() if expect == "error"])
def test_bad_input_fails_cleanly(case, tmp_path, weights_file, capfd):
    code, err, out = run_case(case, tmp_path, weights_file, capfd)
    assert_one_clear_line(code, err)
    assert not out.exists()


@pytest.mark.parametrize("case", [c for c, (_, _, expect) in CASES.items() if expect == "ok"])
def test_readable_input_gives_a_whole_output(case, tmp_path, weights_file, capfd):
    code, err, out = run_case(case, tmp_path, weights_file, capfd)
    assert code == 0, err
    with Image.open(out) if out.suffix != ".tif" else io.BytesIO(out.read_bytes()) as f:
        shape = (tifffile.imread(f) if out.suffix == ".tif" else np.asarray(f)).shape
    assert shape[:2] == (48, 64)


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30


def test_oversized_declared_size_says_how_to_raise_the_limit(tmp_path, weights_file, capfd):
    src = tmp_path / "huge.png"
    src.write_bytes(png_declaring(200000, 200000))
    code, err = run_cli(capfd, str(src), "-o", str(tmp_path / "o.png"), "--weights", weights_file)
    assert_one_clear_line(code, err)
    assert "--max-pixels" in err[0] and "TILEDEHAZE_MAX_PIXELS" in err[0] and "huge.png" in err[0]

    ok = tmp_path / "ok.png"
    ok.write_bytes(encode("PNG"))
    code, err = run_cli(capfd, str(ok), "-o", str(tmp_path / "o.png"), "--weights", weights_file, "--max-pixels", "1000")
    assert_one_clear_line(code, err)
    assert "--max-pixels" in err[0]


def test_a_directory_a_missing_path_and_a_fifo_are_refused(tmp_path, weights_file, capfd):
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for args in ([str(folder), "-o", str(tmp_path / "x.png")],
                 [str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x.jpg")],
                 [str(tmp_path / "missing.jpg")],
                 [str(folder)],
                 [str(fifo), "-o", str(tmp_path / "x.png")]):
        code, err = run_cli(capfd, *args, "--weights", weights_file)
        assert_one_clear_line(code, err)
    assert not (tmp_path / "x.png").exists()


def test_output_that_is_the_input_is_refused(tmp_path, weights_file, capfd):
    src = tmp_path / "a.png"
    src.write_bytes(encode("PNG"))
    before = digest(src)
    link = tmp_path / "link.png"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "a.png"):
        code, err = run_cli(capfd, str(src), "-o", str(out), "--weights", weights_file, "--overwrite")
        assert_one_clear_line(code, err)
        assert "input" in err[0]
    assert digest(src) == before


def test_output_format_that_cannot_hold_the_pixels_is_refused(tmp_path, weights_file, capfd):
    src = tmp_path / "f.tif"
    src.write_bytes(encode("tiff", PHOTO.astype(np.float32) / 255))
    for out in ("o.jpg", "o.xyz"):
        code, err = run_cli(capfd, str(src), "-o", str(tmp_path / out), "--weights", weights_file)
        assert_one_clear_line(code, err)


# ---------------------------------------------------------------------------- fuzz (bounded for CI)

SEEDS = {"tiff": encode("tiff", tile=(16, 16), compression="zlib"), "tiff-strips": encode("tiff", rowsperstrip=8),
         "png": encode("PNG"), "jpeg": encode("JPEG", quality=90)}


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[kind])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "truncate", "splice", "zero"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[:pos]
        elif op == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            start = draw(st.integers(0, len(other) - 1))
            data[pos:pos] = other[start:start + draw(st.integers(1, 64))]
        else:
            data[pos:pos + draw(st.integers(1, 32))] = bytes(min(32, len(data) - pos))
        if not data:
            break
    return kind, bytes(data)


def restore_or_refuse(data: bytes, folder: Path, weights: str, name: str = "in.bin") -> str:
    """Run one input through ``process_file``: 'ok' with a sane output, or 'refused' (TileDehazeError)."""
    src = folder / name
    out = folder / "out.tif"
    src.write_bytes(data)
    out.unlink(missing_ok=True)
    try:
        result = process_file(src, out, weights=weights, max_pixels=4_000_000, tile=64)
    except TileDehazeError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()
        assert not out.exists()
        return "refused"
    finally:
        assert not list(folder.glob("*tiledehaze-tmp*"))
    assert result.megapixels > 0
    with tifffile.TiffFile(out) as tif:
        assert tif.pages.first.shape[:2] == (tif.pages.first.imagelength, tif.pages.first.imagewidth)
    return "ok"


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=mutated())
def test_fuzzed_images_are_restored_or_refused_cleanly(case, tmp_path_factory, weights_file):
    kind, data = case
    restore_or_refuse(data, tmp_path_factory.mktemp("fuzz"), weights_file)
