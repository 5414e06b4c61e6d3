"""One options object: built once from keywords, refused when misspelt, handed whole to the backend."""

from __future__ import annotations

import numpy as np
import pytest

import tiledehaze
from tiledehaze.backends import base
from tiledehaze.errors import ConfigError
from tiledehaze.models import DEFAULT_MODEL
from tiledehaze.options import RunOptions


def test_a_misspelt_option_is_refused_in_one_line_naming_the_valid_ones():
    image = np.full((32, 32, 3), 128, np.uint8)
    with pytest.raises(ConfigError) as err:
        tiledehaze.restore(image, precison="fp16")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"unknown option 'precison' for model '{DEFAULT_MODEL}'; valid options: ")
    assert "precision" in message and "device" in message and "tile" in message


def test_model_options_are_checked_against_the_model_that_takes_them(tmp_path):
    with pytest.raises(ConfigError, match=f"unknown option 'patch' for model '{DEFAULT_MODEL}'"):
        tiledehaze.process_file(tmp_path / "missing.png", tmp_path / "o.png", patch=9)
    with pytest.raises(ConfigError, match="unknown option 'radius' for model 'dcp'; valid options: .*guided_radius"):
        tiledehaze.create_model("dcp", radius=3)
    with pytest.raises(ConfigError, match="unknown option 'radius' for model 'dcp'"):
        RunOptions(model="dcp", model_options=(("radius", 3),))
    with pytest.raises(ConfigError, match="unknown model 'dpc'; choose from aodnet, hazenet, dcp"):
        RunOptions(model="dpc")
    assert RunOptions.create(model="dcp", patch=9).model_kwargs == {"patch": 9}


def test_a_batch_refuses_a_misspelt_option_before_touching_the_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown option 'devcie'"):
        tiledehaze.process_batch([tmp_path], out, devcie="cpu")
    assert not out.exists()


def test_options_and_separate_keywords_do_not_mix():
    with pytest.raises(ConfigError, match="either options= or tile="):
        tiledehaze.restore(np.zeros((8, 8, 3), np.uint8), options=RunOptions(), tile=512)


def test_the_fingerprint_changes_with_what_the_output_depends_on_only():
    base_opts = RunOptions.create()
    assert base_opts.fingerprint() == RunOptions.create(backend="torch", threads=1, batch=4,
                                                       device="cpu").fingerprint()
    for changed in (dict(tile=512), dict(overlap=40), dict(precision="fp16"), dict(model="dcp")):
        assert RunOptions.create(**changed).fingerprint() != base_opts.fingerprint(), changed


def test_the_plans_tile_and_batch_reach_the_backend(monkeypatch, tmp_path):
    """A GPU backend sizes its engine profile from them (TensorRT), so they must arrive."""
    seen = {}

    class Recorder(base.Backend):
        name = "recorder"

        def __init__(self, network, **options):
            seen.update(options)

        def run(self, tiles):
            return tiles

    monkeypatch.setitem(base._FACTORIES, "torch", Recorder)
    image = np.full((40, 40, 3), 100, np.uint8)
    out = tiledehaze.restore(image, model="aodnet", backend="torch", tile=32, overlap=22, batch=3, precision="fp32",
                             device="cpu", threads=1)
    assert out.shape == image.shape
    assert seen == {"tile": 32, "batch": 3, "precision": "fp32", "device": "cpu", "threads": 1}
