"""The page in a real browser: headless Chromium driven by Playwright.

Upload a photograph, wait for the result, move the before/after slider, zoom the large-image
view and check what the page shows. Set TILEDEHAZE_FIGURES to a folder to keep the
screenshots (the README's figure comes from here).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from .servers import live_server

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'tiledehaze[web]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is missing (apt-get install -y chromium)")

from tiledehaze.serve import Settings  # noqa: E402


SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "halong_bay.jpg"  # a real hazy photograph


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import cv2
    from PIL import Image

    # a large image named on the command line: the sample enlarged three times, 5997 x 3984 pixels
    big = tmp_path_factory.mktemp("photos") / "halong_bay_x3.tif"
    pixels = np.asarray(Image.open(SAMPLE))
    large = cv2.resize(pixels, (pixels.shape[1] * 3, pixels.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    tifffile.imwrite(big, large, tile=(256, 256), compression="zlib", photometric="rgb")
    return SAMPLE, big


@pytest.fixture(scope="module")
def page(photos):
    _, big = photos
    with live_server(Settings(images=[big])) as url:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1700})
            page.goto(url)
            page.url_base = url
            yield page
            browser.close()


def figures(tmp_path) -> Path:
    folder = Path(os.environ.get("TILEDEHAZE_FIGURES") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def canvas_mean(page, x0: float, x1: float) -> float:
    """Mean brightness of the large view's canvas between fractions x0 and x1 of its width."""
    return page.evaluate("""([x0, x1]) => {
        const c = document.getElementById('viewer');
        const a = Math.round(c.width * x0), b = Math.round(c.width * x1);
        const d = c.getContext('2d').getImageData(a, 0, b - a, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
        return s / (d.length / 4 * 3);
    }""", [x0, x1])


def wait_tiles(page) -> None:
    """Until every tile the view asked for has arrived and been drawn."""
    page.wait_for_function("""() => { const v = window.tiledehazeViewer;
        return v.drawn > 0 && [...v.tiles.values()].every(t => t.ok || t.img.complete) && !v.frame; }""")


def test_upload_compare_and_download(page, photos, tmp_path):
    sample, _ = photos
    page.set_input_files("#file", str(sample))
    page.wait_for_selector("#compare[data-ready=true]", timeout=60_000)
    assert "restored in" in page.text_content("#status")
    size = page.evaluate("() => [document.getElementById('after').naturalWidth, "
                         "document.getElementById('after').naturalHeight]")
    assert size == [1999, 1328]
    assert page.get_attribute("#download", "download") == "halong_bay_dehazed.jpg"
    # the download is the service's answer for the same file, byte for byte
    downloaded = page.evaluate("""async () => {
        const b = await (await fetch(document.getElementById('download').href)).arrayBuffer();
        return Array.from(new Uint8Array(b));
    }""")
    import httpx

    direct = httpx.post(f"{page.url_base}/api/restore", files={"file": ("halong_bay.jpg", sample.read_bytes())},
                        timeout=60).content
    assert bytes(downloaded) == direct
    # the slider uncovers the restored image from the right
    page.fill("#slider", "20")
    assert page.evaluate("() => getComputedStyle(document.getElementById('after')).clipPath") == \
        "inset(0px 0px 0px 20%)"
    page.locator("#upload-section").screenshot(path=str(figures(tmp_path) / "serve-upload.jpg"), quality=85)


def test_a_16_bit_tiff_is_shown_through_the_preview_and_downloaded_as_tiff(page, tmp_path):
    from .images import smooth_image

    scan = tmp_path / "scan.tif"
    tifffile.imwrite(scan, smooth_image(300, 400, 3, np.uint16), photometric="rgb")
    page.set_input_files("#file", str(scan))
    page.wait_for_function("() => document.getElementById('download').download === 'scan_dehazed.tif'",
                           timeout=60_000)
    assert page.get_attribute("#compare", "data-ready") == "true"
    shown = page.evaluate("() => ['before', 'after'].map(id => document.getElementById(id).naturalWidth)")
    assert shown == [400, 400]
    head = page.evaluate("""async () => {
        const b = await (await fetch(document.getElementById('download').href)).arrayBuffer();
        return Array.from(new Uint8Array(b.slice(0, 4)));
    }""")
    assert bytes(head) in (b"II*\x00", b"MM\x00*")


def test_a_bad_upload_shows_one_line_and_the_page_keeps_working(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert page.text_content("#status").startswith("415: notes.jpg: not an image")


def test_large_view_restores_with_progress_and_zooms(page, tmp_path):
    page.wait_for_selector("#large-section:not([hidden])")
    assert page.text_content("#image") == "halong_bay_x3.tif"
    page.wait_for_selector("#job[data-status=ready]", timeout=120_000)
    assert page.text_content("#job-text") == "restored (5997×3984)"
    assert page.evaluate("() => document.getElementById('progress').value") == \
        page.evaluate("() => document.getElementById('progress').max") > 1
    wait_tiles(page)
    fitted = int(page.get_attribute("#viewer", "data-level"))
    requested = []
    page.on("response", lambda r: requested.append((r.url, r.status)) if "/api/images/0/" in r.url else None)
    page.click("#zoom-in")
    page.click("#zoom-in")
    page.wait_for_function(f"() => Number(document.getElementById('viewer').dataset.level) === {fitted - 2}")
    wait_tiles(page)
    tiles = [(re.search(r"/api/images/0/(input|output)/(\d+)/", u), s) for u, s in requested]
    finer = [(m[1], s) for m, s in tiles if int(m[2]) == fitted - 2]
    assert {side for side, _ in finer} == {"input", "output"}
    assert all(s == 200 for _, s in finer)
    # all input, all output, then half and half: the restored side is the less hazy, darker picture
    halves = {}
    for split in ("100", "0", "50"):
        page.fill("#split", split)
        wait_tiles(page)
        halves[split] = canvas_mean(page, 0.0, 0.45), canvas_mean(page, 0.55, 1.0)
    assert halves["0"][0] < halves["100"][0] - 5 and halves["0"][1] < halves["100"][1] - 5
    assert halves["50"][0] == pytest.approx(halves["100"][0], abs=0.5)  # left of the split: the input
    assert halves["50"][1] == pytest.approx(halves["0"][1], abs=0.5)  # right of it: the restored copy
    # panning moves the view
    box = page.locator("#viewer").bounding_box()
    cx = page.evaluate("() => window.tiledehazeViewer.cx")
    page.mouse.move(box["x"] + 400, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 200, steps=5)
    page.mouse.up()
    assert page.evaluate("() => window.tiledehazeViewer.cx") > cx
    wait_tiles(page)
    page.locator("#large-section").screenshot(path=str(figures(tmp_path) / "serve-large.jpg"), quality=85)
