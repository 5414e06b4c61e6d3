"""The registry knows what a state dict cannot tell, and the engine follows it: tiling modes,
halos, weights that ship or must be fetched from the authors, one name per model."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import tiledehaze
from tiledehaze import models
from tiledehaze.cli import main
from tiledehaze.engine import make_plan
from tiledehaze.errors import ConfigError
from tiledehaze.models import ModelEntry, ModelSpec, create_model, list_models, model_entry, register_model
from tiledehaze.models.adapter import load_network
from tiledehaze.models.checkpoint import load_exact

from .images import smooth_image


class Toy(torch.nn.Module):
    """One 3x3 convolution on luma; its width is read from the checkpoint."""

    def __init__(self, width: int):
        super().__init__()
        self.a = torch.nn.Conv2d(1, width, 3, padding=1)
        self.b = torch.nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return x + 0.1 * self.b(torch.relu(self.a(x)))

    @classmethod
    def from_state_dict(cls, tensors):
        module = cls(tensors["a.weight"].shape[0])
        load_exact(module, tensors, "Toy")
        return module


SOURCE = "https://example.org/toy-weights"


def _entry(name="toy", **spec):
    spec = {"colour": "luma", "channels": 1, "halo": 1, "weights_source": SOURCE, **spec}
    return ModelEntry(name, lambda options: load_network(name, Toy.from_state_dict, options),
                      "a toy network", spec=ModelSpec(**spec))


@pytest.fixture
def toy(monkeypatch):
    """Register ``toy`` (no shipped weights) for one test; returns a function registering variants."""
    def add(name="toy", **spec):
        entry = _entry(name, **spec)
        monkeypatch.setitem(models._REGISTRY, name, entry)
        return entry

    add()
    return add


@pytest.fixture
def toy_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "toy.pth"
    torch.save({"params": {f"module.{k}": v for k, v in Toy(5).state_dict().items()}}, path)
    return path


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_image(60, 80, 3, np.uint8)).save(path)
    return path


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelEntry("aodnet", lambda options: None, "another AOD-Net"))
    assert [e.name for e in list_models()].count("aodnet") == 1


@pytest.mark.parametrize("name", ["aodnet", "hazenet", "dcp"])
def test_the_registry_describes_the_engine_models_as_they_run(name, weights_path):
    entry = model_entry(name)
    model = create_model(name, **({"weights": weights_path} if name == "aodnet" else {}))
    assert (model.halo, model.align, model.tiling) == (entry.spec.halo, entry.spec.align, entry.spec.tiling)
    assert entry.ships_weights == (name != "dcp")


def test_without_weights_the_user_learns_in_one_line_where_the_authors_publish_them(toy, photo, capsys):
    code = main(["process", str(photo), "--model", "toy", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ConfigError.exit_code and len(err) == 1
    assert "no weights ship for toy" in err[0] and SOURCE in err[0] and "--weights" in err[0]
    assert not photo.with_name("photo_dehazed.png").exists()


def test_with_the_authors_weights_a_registered_network_runs_from_the_command_line(toy, photo, toy_weights):
    assert main(["process", str(photo), "--model", "toy", "--weights", str(toy_weights), "--no-progress"]) == 0
    out = np.asarray(Image.open(photo.with_name("photo_dehazed.png")))
    assert out.shape == (60, 80, 3) and not np.array_equal(out, np.asarray(Image.open(photo)))


def test_weights_of_another_network_are_refused_in_one_line(toy, photo, tmp_path, capsys):
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(3, 3, 1, 1)}}, wrong)
    code = main(["process", str(photo), "--model", "toy", "--weights", str(wrong), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ConfigError.exit_code and len(err) == 1
    assert str(wrong) in err[0] and "not toy weights (no tensor 'a.weight')" in err[0]


def test_approximate_models_get_a_quarter_tile_of_feathered_overlap_on_top_of_their_halo(toy, toy_weights):
    toy("approx", tiling="approximate", halo=4)
    model = create_model("approx", weights=toy_weights)
    assert make_plan(3000, 3000, model, tile=1024).overlap == 2 * 4 + 8 + 256
    assert make_plan(3000, 3000, model, tile=512).overlap == 2 * 4 + 8 + 128
    assert make_plan(3000, 3000, model, tile=512, overlap=40).overlap == 40  # the user's choice wins


def test_whole_image_models_run_in_one_pass_and_refuse_larger_images(toy, toy_weights, tmp_path):
    toy("global", tiling="whole", max_pixels=100 * 100)
    model = create_model("global", weights=toy_weights)
    assert len(make_plan(100, 100, model, tile=32)) == 1
    img = smooth_image(90, 100, 3, np.uint8)
    assert tiledehaze.restore(img, model=model, tile=32).shape == img.shape
    with pytest.raises(ConfigError, match=r"one pass.*at most 0\.01 MP; this image is 101x100 \(0\.0101 MP\)") as err:
        tiledehaze.restore(smooth_image(100, 101, 3, np.uint8), model=model)
    assert "\n" not in str(err.value)
    tif = tmp_path / "scene.tif"
    tifffile.imwrite(tif, img, photometric="rgb")
    with pytest.raises(ConfigError, match="cannot be spread over workers"):
        tiledehaze.process_file(tif, tmp_path / "out.tif", model="global", weights=toy_weights, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif", "toy.pth"]


def test_info_lists_every_model_with_tiling_halo_speed_and_weights(toy, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for entry in list_models():
        assert f"tiling {entry.spec.tiling}, halo {entry.spec.halo} px" in out
    assert "tiling exact, halo 7 px, CPU fast" in out  # aodnet
    assert f"no weights ship (the authors publish them at {SOURCE})" in out
    assert out.count("weights ship") >= 2 and "needs no weights" in out


def test_the_checkpoint_digest_is_in_the_batch_manifest_and_the_eval_report(toy, toy_weights, photo, tmp_path):
    import hashlib
    import json

    from tiledehaze.batch import MANIFEST_NAME
    from tiledehaze.evaluate import evaluate

    digest = hashlib.sha256(toy_weights.read_bytes()).hexdigest()
    tiledehaze.process_batch([photo], tmp_path / "out", model="toy", weights=toy_weights)
    lines = [json.loads(line) for line in (tmp_path / "out" / MANIFEST_NAME).read_text().splitlines()]
    assert [e["weights_sha256"] for e in lines if e["state"] == "done"] == [digest]

    report = evaluate(photo.parent, models=["toy", "dcp"], model_options={"toy": {"weights": toy_weights}},
                      out_dir=tmp_path / "eval", grids=False)
    assert report.settings["weights_sha256"] == {"toy": digest, "dcp": None}
    assert digest in (tmp_path / "eval" / "report.md").read_text()


def test_the_web_page_offers_a_model_without_shipped_weights_only_when_started_with_it(toy, toy_weights):
    import warnings

    pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'tiledehaze[web]')")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient
    from tiledehaze.options import RunOptions
    from tiledehaze.serve import Settings, create_app

    def offered(options):
        with TestClient(create_app(Settings(options=options))) as client:
            return [m["name"] for m in client.get("/api/models").json()["models"]]

    assert "toy" not in offered(RunOptions(model="dcp")) and "dcp" in offered(RunOptions(model="dcp"))
    assert "toy" in offered(RunOptions(model="toy", weights=toy_weights))


def test_a_factory_may_replace_the_spec_for_a_variant(toy, toy_weights):
    from tiledehaze.options import RunOptions

    options = RunOptions(model="toy", weights=toy_weights, backend="torch")
    assert load_network("toy", Toy.from_state_dict, options).tiling == "exact"
    variant = load_network("toy", Toy.from_state_dict, options,
                           spec=ModelSpec(colour="luma", channels=1, halo=9, tiling="approximate"))
    assert (variant.tiling, variant.halo) == ("approximate", 9)
    assert make_plan(2000, 2000, variant, tile=512).overlap == 2 * 9 + 8 + 128
