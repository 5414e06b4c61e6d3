"""Haze synthesis, data sources and augmentation."""

import cv2
import numpy as np
import pytest

from tiledehaze.errors import ConfigError
from tiledehaze.train import augment as A
from tiledehaze.train import synth
from tiledehaze.dataset import clear_candidates
from tiledehaze.train.data import BUILTIN_IMAGES, load_builtin, match_pairs, PairedSource, split_pairs


def _write(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 48, 3), value, np.uint8))


def test_reside_hazy_names_share_one_clear_image(tmp_path, caplog):
    for name in ["0001_0.8_0.2.png", "0001_0.9_0.16.png", "1400_9.png", "0002.png", "0003_0.7_0.1.png"]:
        _write(tmp_path / "hazy" / name)
    for name in ["0001.png", "1400.png", "0002.png"]:
        _write(tmp_path / "clear" / name)
    pairs = {h.name: c.name for h, c in match_pairs(tmp_path / "hazy", tmp_path / "clear")}
    assert pairs == {"0001_0.8_0.2.png": "0001.png", "0001_0.9_0.16.png": "0001.png",
                     "1400_9.png": "1400.png", "0002.png": "0002.png"}
    assert "no clear image" in caplog.text  # 0003 has none


def test_same_stem_wins_over_reside_prefix(tmp_path):
    _write(tmp_path / "hazy" / "27_outdoor.jpg")
    _write(tmp_path / "clear" / "27_outdoor.jpg")
    [(h, c)] = match_pairs(tmp_path / "hazy", tmp_path / "clear")
    assert c.name == h.name
    assert clear_candidates("0001_0.8_0.2")[-1] == "0001" and clear_candidates("27_outdoor")[-1] == "27_outdoor"


def test_held_out_split_keeps_every_hazy_version_with_its_clear_image(tmp_path):
    for i in range(6):
        _write(tmp_path / "clear" / f"{i:04d}.png")
        for beta in ("0.8", "1.2"):
            _write(tmp_path / "hazy" / f"{i:04d}_{beta}_0.2.png")
    pairs = match_pairs(tmp_path / "hazy", tmp_path / "clear")
    train, val = split_pairs(pairs, 0.34, seed=3)
    train_clear, val_clear = {c for _, c in train}, {c for _, c in val}
    assert val and train and not (train_clear & val_clear)
    assert len(train) + len(val) == len(pairs)
    assert split_pairs(pairs, 0.34, seed=3) == (train, val)  # fixed


def test_paired_source_gives_aligned_patches(tmp_path):
    rng = np.random.default_rng(0)
    clear = rng.integers(0, 200, (64, 80, 3), dtype=np.uint8)
    (tmp_path / "clear").mkdir()
    (tmp_path / "hazy").mkdir()
    cv2.imwrite(str(tmp_path / "clear" / "0001.png"), clear)
    cv2.imwrite(str(tmp_path / "hazy" / "0001_0.8_0.2.png"), clear + 50)
    src = PairedSource(match_pairs(tmp_path / "hazy", tmp_path / "clear"), 24,
                       A.AugmentConfig(from_epoch=1, jitter_prob=0.0, ssr_prob=0.0, crop_scale=(1.0, 1.0)))
    for _ in range(5):
        hazy, c = src.sample(rng, epoch=3)
        np.testing.assert_allclose(hazy, c + 50 / 255, atol=1e-6)


def test_add_haze_follows_the_scattering_model():
    rng = np.random.default_rng(1)
    clear = rng.random((32, 40, 3), dtype=np.float32)
    depth = rng.random((32, 40)).astype(np.float32) * 2
    airlight = np.array([0.9, 0.85, 0.8], np.float32)
    hazy, t = synth.add_haze(clear, depth, beta=1.1, airlight=airlight)
    np.testing.assert_allclose(t, np.exp(-1.1 * depth), rtol=1e-5)
    np.testing.assert_allclose(hazy, clear * t[..., None] + airlight * (1 - t[..., None]), atol=1e-6)
    same, t0 = synth.add_haze(clear, np.zeros_like(depth), beta=1.1, airlight=airlight)
    np.testing.assert_allclose(same, clear, atol=1e-6)  # no depth, no haze
    assert np.all(t0 == 1)


@pytest.mark.parametrize("with_map", [False, True])
def test_synthesized_pairs_are_valid_haze(with_map):
    rng = np.random.default_rng(2)
    image, depth = load_builtin("astronaut")
    cfg = synth.SynthConfig()
    for _ in range(20):
        clear = np.array(image[100:164, 200:264])
        hazy, t = synth.synthesize(clear, rng, cfg, depth_map=depth[100:164, 200:264] if with_map else None)
        assert hazy.shape == clear.shape and hazy.dtype == np.float32
        assert t.min() > 0 and t.max() <= 1
        assert hazy.min() >= 0 and hazy.max() <= 1
        # the airlight recovered from every hazed pixel is one value per channel, inside its range
        m = t < 0.95
        a = (hazy[m] - clear[m] * t[m][:, None]) / (1 - t[m][:, None])
        assert np.ptp(a, axis=0).max() < 1e-3
        lo, hi = cfg.airlight
        assert np.all(a.mean(0) >= lo * (1 - cfg.tint) - 1e-4) and np.all(a.mean(0) <= hi + 1e-4)


def test_wavelength_dependent_haze_is_densest_in_blue():
    rng = np.random.default_rng(9)
    clear = np.full((16, 16, 3), 0.2, np.float32)
    depth = np.full((16, 16), 0.8, np.float32)
    p = synth.HazeParams(beta=1.0, airlight=np.full(3, 0.9, np.float32), depth_max=1.0, depth_model="uniform",
                         angstrom=1.3)
    beta = p.channel_beta()
    assert beta[2] > beta[1] > beta[0] and beta[1] == pytest.approx(1.0)  # Angstrom's law, relative to green
    hazy, t = synth.add_haze(clear, depth, beta=beta, airlight=0.9)
    assert t.shape == (16, 16, 3)
    np.testing.assert_allclose(t[0, 0], np.exp(-beta * 0.8), rtol=1e-5)
    assert hazy[0, 0, 2] > hazy[0, 0, 1] > hazy[0, 0, 0]  # distant grey turns blue-grey
    grey = synth.SynthConfig.from_dict({"angstrom": [0.0, 0.0]})
    for _ in range(5):  # without the option every channel sees the same transmission
        _, t = synth.synthesize(clear, rng, grey)
        assert t.ndim == 2


def test_airlight_gradient_and_scene_scale_shape_the_haze():
    rng = np.random.default_rng(10)
    field = synth.airlight_field((40, 60), np.full(3, 0.8, np.float32), 0.15, rng)
    assert field.shape == (40, 60, 3)
    assert field.min() >= 0.8 * 0.85 - 1e-6 and field.max() <= 0.8 * 1.15 + 1e-6 and np.ptp(field) > 0
    # a patch of a 10x larger scene sees a tenth of the scene's depth range, not all of it
    ramp = synth.ramp_depth((48, 48), rng)
    window = synth._scene_window(ramp, 10.0, rng)
    assert window.shape == (48, 48) and np.ptp(window) < 0.5 * np.ptp(ramp)
    assert synth._scene_window(ramp, 1.0, rng) is ramp
    layers = synth.layers_depth((64, 64), rng)
    assert layers.max() == pytest.approx(1.0, abs=1e-3) and layers.min() < 0.81  # nearer objects in front


def test_exposure_keeps_the_airlight_at_least_as_bright_as_the_pictures_whites():
    rng = np.random.default_rng(12)
    clear = np.full((64, 64, 3), 0.3, np.float32)
    clear[:8, :8] = (0.95, 0.9, 0.85)  # a white object: 1.6 % of the picture
    dim = np.array([0.5, 0.45, 0.4], np.float32)
    raised = synth.expose_airlight(dim, clear, rng)
    assert 0.9 * 0.95 - 1e-6 <= raised.mean() <= 1.0
    gain = raised / dim  # one gain for every channel (the tint kept), but no channel above 1
    assert np.allclose(gain[raised < 1], gain[raised < 1][0], atol=1e-5) and (raised <= 1).all()
    bright = np.array([0.75, 0.8, 0.85], np.float32)
    assert np.array_equal(synth.expose_airlight(bright, clear * 0.7, rng), bright)  # already above the whites
    # in synthesis: always, never, and exposure 0 draws exactly what a recipe without the option draws
    base = {"airlight": [0.4, 0.5], "tint": 0.0}
    def airlights(exposure, seed=5):
        cfg = synth.SynthConfig.from_dict({**base, "exposure": exposure})
        r = np.random.default_rng(seed)
        return np.array([synth.synthesize(clear, r, cfg, return_airlight=True)[2].mean() for _ in range(200)])
    assert airlights(1.0).min() >= 0.9 * 0.95 - 1e-6
    assert airlights(0.0).max() <= 0.5 + 1e-6
    assert 0.3 < np.mean(airlights(0.5) > 0.6) < 0.7
    without = synth.SynthConfig.from_dict(base)
    r = np.random.default_rng(5)
    assert np.array_equal(airlights(0.0), [synth.synthesize(clear, r, without, return_airlight=True)[2].mean()
                                           for _ in range(200)])
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"exposure": 1.5})


def test_depth_models_are_normalised():
    rng = np.random.default_rng(3)
    for model in synth.PROCEDURAL_DEPTHS:
        d = synth.random_depth((30, 50), rng, model)
        assert d.shape == (30, 50) and d.min() >= 0 and d.max() <= 1
    from skimage import data

    disp = data.stereo_motorcycle()[2]
    d = synth.disparity_depth(disp)
    assert d.min() == 0 and d.max() == 1
    valid = np.where(np.isfinite(disp) & (disp > 0), disp, np.nan)
    near, far = np.nanargmax(valid), np.nanargmin(valid)
    assert d.flat[near] < d.flat[far]  # large disparity = near
    assert np.all(d[~np.isfinite(disp)] == 1)  # unknown disparity counts as far
    cap = synth.cap_depth(load_builtin("rocket")[0])
    assert cap.min() >= 0 and cap.max() <= 1


def test_builtin_images_load_offline_as_float_rgb():
    for name in BUILTIN_IMAGES:
        image, depth = load_builtin(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        assert depth.shape == image.shape[:2]


def test_bad_synthesis_options_are_refused():
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"beta": [1.6, 0.4]})
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"betta": [0.4, 1.6]})
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"scene_scale": [0.5, 2.0]})
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"airlight_gradient": 1.5})
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"beta_scale": "log", "beta": [0.0, 2.0]})
    with pytest.raises(ConfigError):
        synth.SynthConfig.from_dict({"beta_scale": "cubic"})


def test_log_uniform_beta_draws_as_many_light_hazes_as_dense_ones():
    rng = np.random.default_rng(11)
    cfg = synth.SynthConfig.from_dict({"beta": [0.01, 1.0], "beta_scale": "log"})
    betas = np.array([synth.draw_params(rng, cfg, has_map=False).beta for _ in range(4000)])
    assert betas.min() >= 0.01 and betas.max() <= 1.0
    assert np.mean(betas < 0.1) == pytest.approx(0.5, abs=0.03)  # the geometric middle of the range
    linear = synth.SynthConfig.from_dict({"beta": [0.01, 1.0]})
    betas = np.array([synth.draw_params(rng, linear, has_map=False).beta for _ in range(4000)])
    assert np.mean(betas < 0.1) == pytest.approx(0.09, abs=0.03)


def test_augmentation_keeps_hazy_clear_and_depth_aligned():
    rng = np.random.default_rng(4)
    clear = rng.random((90, 110, 3), dtype=np.float32)
    hazy = 0.6 * clear + 0.3  # a pixelwise relation that must survive every geometric transform
    depth = clear[..., 1].copy()
    cfg = A.AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, ssr_prob=0.5, jitter_prob=0.0)
    for _ in range(30):
        h, c, d = A.random_crop([hazy, clear, depth], 32, rng, scale=(1.0, 2.0))
        h, c, d = A.augment([h, c, d], rng, cfg, colour=(0, 1))
        assert h.shape == c.shape == (32, 32, 3) and d.shape == (32, 32)
        np.testing.assert_allclose(h, 0.6 * c + 0.3, atol=1e-5)
        np.testing.assert_allclose(d, c[..., 1], atol=1e-6)


def test_colour_jitter_is_identical_for_identical_images():
    rng = np.random.default_rng(5)
    img = rng.random((16, 16, 3), dtype=np.float32)
    a, b = A.color_jitter([img, img.copy()], rng)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, img)


def test_brightness_threshold_avoids_dark_crops():
    rng = np.random.default_rng(6)
    image = np.zeros((100, 100, 3), np.float32)
    image[:, 70:] = 0.8  # only the right strip is informative
    for _ in range(10):
        [crop] = A.random_crop([image], 30, rng, min_brightness=0.5, max_tries=200)
        assert crop.max(-1).mean() >= 0.5


def test_augmentation_switches_on_at_its_epoch():
    cfg = A.AugmentConfig(from_epoch=3)
    assert not cfg.active(2) and cfg.active(3)


def _pair_with_depth(seed):
    """rng, hazy, clear and depth for colour-only augmentation tests (hazy = 0.5 clear + 0.4)."""
    rng = np.random.default_rng(seed)
    clear = rng.random((20, 20, 3), dtype=np.float32)
    return rng, 0.5 * clear + 0.4, clear, rng.random((20, 20), dtype=np.float32)


def _colour_only(**options):
    return A.AugmentConfig(hflip=0, vflip=0, rot90=0, ssr_prob=0, jitter_prob=0, **options)


def test_channel_shuffle_permutes_colour_images_alike_and_leaves_depth_alone():
    rng, hazy, clear, depth = _pair_with_depth(7)
    cfg = _colour_only(channel_shuffle=1.0)
    seen = set()
    for _ in range(20):
        h, c, d = A.augment([hazy, clear, depth], rng, cfg, colour=(0, 1))
        np.testing.assert_allclose(h, 0.5 * c + 0.4, atol=1e-6)
        np.testing.assert_array_equal(d, depth)
        order = tuple(int(np.argmin(np.abs(clear[0, 0] - v))) for v in c[0, 0])
        assert sorted(order) == [0, 1, 2]
        seen.add(order)
    assert len(seen) > 1


def test_greyscale_turns_colour_images_grey_alike_and_leaves_depth_alone():
    rng, hazy, clear, depth = _pair_with_depth(8)
    h, c, d = A.augment([hazy, clear, depth], rng, _colour_only(greyscale=1.0), colour=(0, 1))
    luma = clear @ np.array([0.299, 0.587, 0.114], np.float32)
    for ch in range(3):
        np.testing.assert_allclose(c[..., ch], luma, atol=1e-6)
    np.testing.assert_allclose(h, 0.5 * c + 0.4, atol=1e-6)  # the pair stays a consistent pair
    np.testing.assert_array_equal(d, depth)
    off = A.augment([hazy, clear, depth], rng, _colour_only(greyscale=0.0), colour=(0, 1))
    np.testing.assert_array_equal(off[1], clear)


def test_black_point_takes_a_photographs_own_veil_away_before_hazing():
    from tiledehaze.train.data import SyntheticSource

    rng = np.random.default_rng(9)
    scene = rng.random((160, 160, 3), dtype=np.float32)
    misty = 0.35 + 0.6 * scene  # a photograph whose darkest pixels sit on a veil of 0.35
    assert 0.35 <= A.black_level(misty) < 0.37 and A.black_level(scene) < 0.02
    np.testing.assert_allclose(A.lower_black_level(misty, 0.35), 0.6 / 0.65 * scene, atol=1e-6)
    # an affine map: a hazed photograph with its veil taken away is the veil-free photograph hazed
    t, air, level = 0.4, np.float32(0.9), 0.35
    np.testing.assert_allclose(A.lower_black_level(misty * t + air * (1 - t), level),
                               A.lower_black_level(misty, level) * t + (air - level) / (1 - level) * (1 - t), atol=1e-6)

    depth = np.ones((160, 160), np.float32)
    cfg = synth.SynthConfig.from_dict({"beta": [1.0, 1.0], "airlight": [0.9, 0.9], "tint": 0.0})

    def samples(black_point, epoch=5, seed=3):
        aug = _colour_only(black_point=black_point, crop_scale=(1.0, 1.0))
        source = SyntheticSource([(misty, depth)], 64, cfg, aug, extras=True)
        r = np.random.default_rng(seed)
        return [source.sample(r, epoch) for _ in range(6)]

    for hazy, clear, t_map, airlight in samples(1.0):
        assert np.percentile(clear.min(axis=-1), 5) < 0.05  # the veil is gone from the clean target
        np.testing.assert_allclose(hazy, clear * t_map + airlight * (1 - t_map), atol=1e-5)
    assert all(np.percentile(c.min(axis=-1), 5) > 0.3 for _, c, _, _ in samples(0.0))
    half = [np.percentile(c.min(axis=-1), 5) < 0.05 for seed in range(8) for _, c, _, _ in samples(0.5, seed=seed)]
    assert 0.25 < np.mean(half) < 0.75
    # before augmentation starts, and at probability 0, the samples are those of a recipe without the option
    for a, b in zip(samples(1.0, epoch=1), samples(0.0, epoch=1)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    r = np.random.default_rng(3)
    r.integers(1)
    aug = _colour_only(crop_scale=(1.0, 1.0))
    clear, d = A.patch_for_epoch([misty, depth], 64, r, aug, 5, colour=(0,))
    hazy, t_map, airlight = synth.synthesize(clear, r, cfg, depth_map=d, return_airlight=True)
    first = samples(0.0)[0]
    for x, y in zip(first, (hazy, clear, np.stack([t_map] * 3, -1), airlight)):  # grey fog: one t for every colour
        np.testing.assert_array_equal(x, y)


def test_black_point_needs_synthetic_haze_and_probabilities_stay_in_range():
    from tiledehaze.train.data import build_sources

    for bad in ({"black_point": 1.5}, {"hflip": -0.1}):
        with pytest.raises(ConfigError, match="probability"):
            A.AugmentConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="black_point"):
        build_sources({"source": "paired", "paired": {"root": "nowhere"}}, synth.SynthConfig(),
                      A.AugmentConfig(black_point=0.5), patch=32, seed=0)
