"""The Dark Channel Prior model: it dehazes, A is global, and tiles reproduce the whole image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tiledehaze.errors import ConfigError
from tiledehaze.models import create_model
from tiledehaze.models import dcp as dcp_module
from tiledehaze.models.dcp import DCPModel, dehaze, estimate_airlight


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def scene(h: int = 240, w: int = 320, seed: int = 0, sky: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A colourful clear image (dark pixels in every patch, as the prior assumes) and its hazy version."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    clear = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    clear[::9, :] *= 0.1  # thin dark lines keep the dark channel near zero everywhere
    clear = np.clip(clear + 0.03 * rng.standard_normal(clear.shape).astype(np.float32), 0, 1)
    depth = np.linspace(1.6, 0.2, h, dtype=np.float32)[:, None, None].repeat(w, axis=1)
    depth[:sky] = 8.0  # `sky` rows of haze-opaque distance, where the hazy image is the airlight
    t = np.exp(-depth)
    airlight = np.array([0.92, 0.9, 0.88], np.float32)
    hazy = clear * t + airlight * (1 - t)
    return clear, hazy.astype(np.float32)


def tiled(model: DCPModel, image: np.ndarray, tile: int, context: int) -> np.ndarray:
    """Simulate the engine: crops with `context` px of real context, edge crops shifted inside, A from the whole image."""
    state = model.global_state(image)
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            y1, x1 = min(h, y + tile), min(w, x + tile)
            ya, yb, xa, xb = max(0, y - context), min(h, y1 + context), max(0, x - context), min(w, x1 + context)
            out[y:y1, x:x1] = model.run(image[None, ya:yb, xa:xb], state)[0][y - ya:y1 - ya, x - xa:x1 - xa]
    return out


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.int16)


def test_dcp_moves_a_hazy_image_toward_its_clear_version():
    clear, hazy = scene()
    restored = dehaze(hazy)
    assert restored.shape == hazy.shape and restored.dtype == np.float32
    assert 0.0 <= restored.min() and restored.max() <= 1.0
    assert psnr(restored, clear) > psnr(hazy, clear) + 3.0


def test_airlight_is_estimated_from_the_overview_and_is_the_brightest_haze_opaque_pixel():
    clear, hazy = scene(sky=30)
    model = create_model("dcp")
    overview = cv2.resize(hazy, (160, 120), interpolation=cv2.INTER_AREA)
    airlight = model.global_state(overview)["airlight"]
    assert np.allclose(airlight, estimate_airlight(hazy), atol=0.03)
    assert np.allclose(airlight, [0.92, 0.9, 0.88], atol=0.05)


def test_every_tile_receives_the_same_airlight(monkeypatch):
    _, hazy = scene()
    model = DCPModel(guided_radius=8)
    seen = []
    original = dcp_module.restore_block

    def spy(block, airlight, **kw):
        seen.append(np.array(airlight))
        return original(block, airlight, **kw)

    monkeypatch.setattr(dcp_module, "restore_block", spy)
    tiled(model, hazy, tile=100, context=model.halo)
    assert len(seen) == 12  # 3 x 4 tiles
    assert all(np.array_equal(a, seen[0]) for a in seen)
    assert np.array_equal(seen[0], model.global_state(hazy)["airlight"])


def test_run_without_global_state_is_refused():
    _, hazy = scene(64, 64)
    with pytest.raises(ValueError, match="airlight"):
        create_model("dcp").run(hazy[None], {})


def test_halo_follows_from_patch_and_guided_radius():
    assert DCPModel(patch=15, guided_radius=40).halo == 7 + 2 * 40
    assert DCPModel(patch=9, guided_radius=0).halo == 4


@pytest.mark.parametrize("options", [dict(guided_radius=12, guided_eps=1e-3), dict(), dict(patch=1, guided_radius=5),
                                     dict(patch=7, guided_radius=0)])
def test_tiles_with_halo_context_equal_the_whole_image_within_one_lsb(options):
    _, hazy = scene(300, 420, seed=1)
    model = DCPModel(**options)
    whole = model.run(hazy[None], model.global_state(hazy))[0]
    pieces = tiled(model, hazy, tile=128, context=model.halo)
    assert np.abs(to_uint8(pieces) - to_uint8(whole)).max() <= 1
    assert np.abs(pieces - whole).max() < 1e-4


def test_less_context_than_the_halo_shows_at_tile_seams():
    _, hazy = scene(300, 420, seed=1)
    model = DCPModel(guided_radius=12)
    whole = model.run(hazy[None], model.global_state(hazy))[0]
    short = tiled(model, hazy, tile=128, context=model.halo // 2)
    assert np.abs(short - whole).max() > 1e-3


def test_large_tiles_are_processed_in_blocks_with_the_same_result():
    _, hazy = scene(300, 420, seed=2)
    model = DCPModel(guided_radius=10)
    state = model.global_state(hazy)
    one = model.run(hazy[None], state)
    model.block = 64
    blocked = model.run(hazy[None], state)
    assert np.abs(blocked - one).max() < 1e-5


def test_generic_engine_options_are_accepted_and_bad_options_refused():
    model = create_model("dcp", patch=9, guided_radius=20, backend="auto", threads=2, device="cpu", weights=None)
    assert model.halo == 4 + 40 and model.needs_overview
    for bad in (dict(patch=4), dict(omega=1.5), dict(t0=0.0), dict(guided_radius=-1), dict(top_fraction=0)):
        with pytest.raises(ConfigError):
            create_model("dcp", **bad)


def test_restore_through_the_engine_equals_whole_image_dcp(monkeypatch):
    import tiledehaze

    _, hazy = scene(300, 420, seed=3)
    image = to_uint8(hazy).astype(np.uint8)
    model = tiledehaze.get_model("dcp", guided_radius=12)
    calls = []
    original = DCPModel.global_state

    def counting(self, overview, valid=None):
        calls.append(overview.shape)
        return original(self, overview, valid=valid)

    monkeypatch.setattr(DCPModel, "global_state", counting)
    whole = tiledehaze.restore(image, model=model, tile=None)
    pieces = tiledehaze.restore(image, model=model, tile=160)
    assert pieces.shape == image.shape and pieces.dtype == np.uint8
    assert len(calls) == 2  # once per restore call, however many tiles
    assert np.abs(pieces.astype(int) - whole.astype(int)).max() <= 1


def test_restore_by_name_accepts_dcp_options():
    import tiledehaze

    _, hazy = scene(120, 160, seed=4)
    out = tiledehaze.restore(hazy, model="dcp", tile=None, patch=9, guided_radius=8)
    assert out.shape == hazy.shape and out.dtype == hazy.dtype
