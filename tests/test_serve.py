"""``tiledehaze serve``: the upload API, the tiles of large images, and requests that must be refused."""

from __future__ import annotations

import io
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile
from PIL import Image

import tiledehaze
from tiledehaze.cli import main

from .images import hazy_photo, smooth_image
from .servers import live_server

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'tiledehaze[web]')")
with warnings.catch_warnings():  # newer Starlette asks for httpx2 in its TestClient; httpx still works
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402

from tiledehaze.options import RunOptions  # noqa: E402
from tiledehaze.serve import Settings, create_app  # noqa: E402
from tiledehaze.serve.pyramid import OVERVIEW, TILE  # noqa: E402


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buf, pixels, photometric="rgb")
    else:
        Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return tifffile.imread(io.BytesIO(data))
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def client(weights_file):
    with TestClient(create_app(Settings(options=RunOptions(weights=weights_file)))) as c:
        yield c


def test_restore_returns_the_restored_image_in_the_uploaded_format(client, weights_file):
    photo = hazy_photo(90, 120)
    r = client.post("/api/restore", files={"file": ("my photo.png", encode(photo, "PNG"), "image/png")})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert 'filename="my_photo_dehazed.png"' in r.headers["content-disposition"]
    np.testing.assert_array_equal(decode(r.content), tiledehaze.restore(photo, weights=weights_file))


def test_restore_keeps_tiff_and_16_bit(client, weights_file):
    photo = smooth_image(64, 80, 3, np.uint16)
    r = client.post("/api/restore", files={"file": ("scan.tif", encode(photo, "TIFF"))})
    assert r.status_code == 200 and r.headers["content-type"] == "image/tiff"
    out = decode(r.content)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, tiledehaze.restore(photo, weights=weights_file))


def test_jpeg_comes_back_as_jpeg(client):
    r = client.post("/api/restore", files={"file": ("a.jpg", encode(hazy_photo(64, 64), "JPEG"))})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"


def test_model_and_its_options_are_chosen_per_request(client):
    photo = hazy_photo(80, 96)
    data = encode(photo, "PNG")
    r = client.post("/api/restore", files={"file": ("a.png", data)}, data={"model": "dcp", "omega": "0.6"})
    assert r.status_code == 200
    np.testing.assert_array_equal(decode(r.content), tiledehaze.restore(photo, model="dcp", omega=0.6))
    default = client.post("/api/restore", files={"file": ("a.png", data)}, data={"model": "dcp"})
    assert not np.array_equal(decode(default.content), decode(r.content))


@pytest.mark.parametrize("form, message", [
    ({"model": "nonsense"}, "unknown model"),
    ({"model": "dcp", "omega": "3"}, "omega must be between"),
    ({"model": "dcp", "patch": "many"}, "patch must be a number"),
])
def test_bad_options_get_400_with_one_line(client, form, message):
    r = client.post("/api/restore", files={"file": ("a.png", encode(hazy_photo(32, 32), "PNG"))}, data=form)
    assert r.status_code == 400
    assert message in r.text and "\n" not in r.text.strip()


@pytest.mark.parametrize("name, data, status", [
    ("notes.txt", b"just some text, not pixels", 415),
    ("empty.jpg", b"", 415),
    ("cut.jpg", encode(hazy_photo(256, 256), "JPEG")[:2000], 400),
    ("fake.tif", b"II*\x00" + b"\xff" * 40, 415),
])
def test_a_file_that_is_not_an_image_gets_4xx_and_the_server_keeps_serving(client, name, data, status):
    r = client.post("/api/restore", files={"file": (name, data)})
    assert r.status_code == status
    assert name in r.text and "\n" not in r.text.strip() and "Traceback" not in r.text
    ok = client.post("/api/restore", files={"file": ("a.png", encode(hazy_photo(32, 32), "PNG"))})
    assert ok.status_code == 200


def test_a_request_without_a_file_gets_400(client):
    assert client.post("/api/restore", data={"model": "dcp"}).status_code == 400
    assert client.post("/api/restore", content=b"raw", headers={"content-type": "image/png"}).status_code == 400


def test_upload_above_the_size_limit_gets_413(weights_file):
    with TestClient(create_app(Settings(max_upload_mb=1, options=RunOptions(weights=weights_file)))) as c:
        r = c.post("/api/restore", files={"file": ("big.png", b"\0" * (2 << 20))})
        assert r.status_code == 413 and "--max-upload-mb" in r.text
        assert c.post("/api/restore", files={"file": ("a.png", encode(hazy_photo(32, 32), "PNG"))}).status_code == 200


def test_a_chunked_upload_is_cut_off_at_the_limit_not_read_to_the_end(weights_file):
    import httpx

    sent = []

    def body():
        yield (b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(500):
            sent.append(1)
            yield b"\0" * (1 << 20)

    with live_server(Settings(max_upload_mb=2, options=RunOptions(weights=weights_file))) as url:
        r = httpx.post(f"{url}/api/restore", content=body(), timeout=60,
                       headers={"content-type": "multipart/form-data; boundary=xx"})
        assert r.status_code == 413
        assert len(sent) < 100  # the server stopped reading long before the client's 500 MB
        assert httpx.get(f"{url}/api/models").status_code == 200


def test_upload_above_the_pixel_limit_gets_413_before_decoding(weights_file):
    settings = Settings(max_upload_pixels=10_000, options=RunOptions(weights=weights_file))
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/restore", files={"file": ("a.png", encode(hazy_photo(200, 100), "PNG"))})
        assert r.status_code == 413 and "200" in r.text


def test_preview_shows_16_bit_tiff_as_8_bit_png(client):
    photo = smooth_image(40, 50, 3, np.uint16)
    r = client.post("/api/preview", files={"file": ("scan.tif", encode(photo, "TIFF"))})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    shown = decode(r.content)
    assert shown.dtype == np.uint8
    np.testing.assert_allclose(shown, photo / 257.0, atol=0.51)


def test_concurrent_uploads_get_their_own_results(weights_file):
    import httpx

    photos = [hazy_photo(70 + 8 * i, 90, seed=i) for i in range(6)]
    settings = Settings(workers=3, options=RunOptions(weights=weights_file))
    with live_server(settings) as url:
        def post(photo):
            r = httpx.post(f"{url}/api/restore", files={"file": ("p.png", encode(photo, "PNG"))}, timeout=120)
            return decode(r.content)

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(post, photos))
    for photo, result in zip(photos, results):
        np.testing.assert_array_equal(result, tiledehaze.restore(photo, weights=weights_file))


# ---------- images named on the command line ----------

@pytest.fixture
def wide_tiff(tmp_path):
    """A TIFF wide enough for the coarse levels to come from the overview."""
    pixels = smooth_image(300, 4500, 3, np.uint8, seed=3)
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, pixels, tile=(128, 128), compression="zlib", photometric="rgb")
    return path, pixels


def wait_ready(client, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (image,) = client.get("/api/images").json()
        if image["status"] in ("ready", "failed"):
            return image
        time.sleep(0.1)
    raise AssertionError("the restored copy was not made in time")


def test_named_image_tiles_show_input_and_restored_copy(wide_tiff, weights_file):
    path, pixels = wide_tiff
    with TestClient(create_app(Settings(images=[path], options=RunOptions(weights=weights_file)))) as c:
        image = wait_ready(c)
        assert image["status"] == "ready" and image["done"] == image["total"] > 0
        assert (image["width"], image["height"], image["name"]) == (4500, 300, "wide.tif")
        r = c.get("/api/images/0/input/0/2/1.png")
        np.testing.assert_array_equal(decode(r.content), pixels[TILE:2 * TILE, 2 * TILE:3 * TILE])
        restored = tiledehaze.restore(pixels, weights=weights_file)
        r = c.get("/api/images/0/output/0/2/1.png")
        np.testing.assert_array_equal(decode(r.content), restored[TILE:2 * TILE, 2 * TILE:3 * TILE])
        top = image["levels"] - 1
        whole = decode(c.get(f"/api/images/0/output/{top}/0/0.png").content)
        assert max(whole.shape[:2]) <= TILE and whole.shape[1] == -(-4500 // 2 ** top)
        assert abs(float(whole.mean()) - float(restored.mean())) < 1.0
        assert c.get(f"/api/images/0/input/{top + 1}/0/0.png").status_code == 404
        assert c.get("/api/images/0/input/0/99/0.png").status_code == 404


def test_tiles_never_decode_the_whole_image(wide_tiff, weights_file):
    path, _ = wide_tiff
    app = create_app(Settings(images=[path], options=RunOptions(weights=weights_file)))
    source = app.state.gallery.entries[0].source
    regions = []
    read_region = source.reader.read_region
    with TestClient(app) as c:
        wait_ready(c)  # the overview has been read
        source.reader.read = lambda *a: pytest.fail("a tile request read whole rows")
        source.reader.read_region = lambda y0, y1, x0, x1: regions.append((y1 - y0) * (x1 - x0)) or read_region(
            y0, y1, x0, x1)
        for level in range(source.levels):
            cols, rows = source.tiles(level)
            for x in range(cols):
                for y in range(rows):
                    assert c.get(f"/api/images/0/input/{level}/{x}/{y}.png").status_code == 200
    assert regions and max(regions) <= (TILE * OVERVIEW // 2) ** 2


def test_paths_outside_the_named_images_are_unreachable(wide_tiff, weights_file):
    path, _ = wide_tiff
    with TestClient(create_app(Settings(images=[path], options=RunOptions(weights=weights_file)))) as c:
        for url in ["/static/../app.py", "/static/..%2f..%2fapi.py", "/static/%2e%2e/%2e%2e/pyproject.toml",
                    "/static/index.html/../../../cli.py", "/../../../etc/passwd", "/static/app.py",
                    "/api/images/..%2f..%2fetc%2fpasswd/input/0/0/0.png", "/api/images/-1/input/0/0/0.png",
                    "/api/images/1/input/0/0/0.png", "/api/images/0/..%2f..%2f/0/0/0.png",
                    "/api/images/0/input/0/0/..%2f..%2fpyproject.toml", f"/api/images/{path}/input/0/0/0.png"]:
            r = c.get(url)
            assert r.status_code in (404, 422), url
            assert b"import" not in r.content and b"[project]" not in r.content and b"root:" not in r.content


def test_tiles_not_ready_yet_get_409_and_fine_input_tiles_are_served_at_once(wide_tiff, weights_file):
    path, _ = wide_tiff
    app = create_app(Settings(images=[path], options=RunOptions(weights=weights_file)))
    app.state.gallery.start = lambda pool, workdir: None  # never prepared, never restored
    with TestClient(app) as c:
        (image,) = c.get("/api/images").json()
        assert image["status"] == "queued"
        r = c.get("/api/images/0/output/0/0/0.png")
        assert r.status_code == 409 and "not restored yet" in r.text
        r = c.get(f"/api/images/0/input/{image['levels'] - 1}/0/0.png")
        assert r.status_code == 409 and "still being prepared" in r.text
        assert c.get("/api/images/0/input/0/0/0.png").status_code == 200


def test_stopping_the_server_abandons_a_restoration_and_leaves_nothing(tmp_path, weights_file):
    path = tmp_path / "long.tif"
    tifffile.imwrite(path, smooth_image(1024, 1024, 3, np.uint8), tile=(128, 128), photometric="rgb")
    app = create_app(Settings(images=[path], options=RunOptions(weights=weights_file, tile=32, overlap=16)))
    entry = app.state.gallery.entries[0]
    with TestClient(app):
        while entry.done == 0:
            time.sleep(0.01)
    assert entry.status == "stopped" and 0 < entry.done < entry.total
    assert not entry.restored_path.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.tif"]


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and 'id="slider"' in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    names = [m["name"] for m in client.get("/api/models").json()["models"]]
    # models whose weights do not ship are offered only by a server started with them
    assert names == [m.name for m in tiledehaze.list_models() if m.ships_weights or not m.spec.weights_source]
    assert "aecrnet" not in names and "hinet" not in names


# ---------- the command ----------

def test_serve_refuses_a_missing_image_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope.tif")]) == 2
    err = capsys.readouterr().err
    assert "nope.tif: no such file" in err and "Traceback" not in err and err.count("\n") == 1


def test_serve_says_how_to_install_the_web_extra(monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m == "tiledehaze.serve" or m.startswith("tiledehaze.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve"]) == 2
    assert "pip install 'tiledehaze[web]'" in capsys.readouterr().err


def test_serve_binds_to_localhost_by_default(monkeypatch, capsys):
    import uvicorn

    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: bound.append(sockets[0].getsockname()))
    assert main(["serve", "--port", "0"]) == 0
    (host, port), = bound
    assert host == "127.0.0.1" and port > 0
    assert f"serving on http://127.0.0.1:{port}" in capsys.readouterr().out


def test_a_port_in_use_is_one_line_before_any_work(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
