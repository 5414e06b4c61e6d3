"""Weights files never run code: a malicious pickle is refused, and its payload never fires.

The payloads here are real: unpickled the ordinary way, each creates a marker file (checked at the
end of every test, so a payload that could not fire would fail the test rather than pass it).
"""

import io
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch

import tiledehaze
from tiledehaze.cli import main
from tiledehaze.models.aodnet import LAYERS, load_weights

from .images import smooth_image

# torch notes that a plain pickle uses protocol 4 before refusing it; the refusal is what is tested
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class CreatesAFile:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is trusted."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(marker) -> dict:
    """A plausible AOD-Net state dict with the payload hidden among real tensors."""
    state = {f"{name}.{part}": torch.zeros((3, cin, k, k) if part == "weight" else (3,))
             for name, cin, k in LAYERS for part in ("weight", "bias")}
    state["conv3.bias"] = CreatesAFile(marker)
    return state


def _torch_zip(path, marker):
    torch.save(_state(marker), path)


def _checkpoint(path, marker):
    torch.save({"model": _state(marker), "epoch": 3}, path)


def _plain_pickle(path, marker):
    path.write_bytes(pickle.dumps(_state(marker)))


def _disguised_as_safetensors(path, marker):
    path.write_bytes(pickle.dumps(CreatesAFile(marker)))


#: the one-line refusals: an unsafe checkpoint, or a file that is no weights file at all
REFUSED = "not a safe checkpoint|cannot read weights"

MAKERS = {"torch-zip.pt": _torch_zip, "training-checkpoint.pth": _checkpoint, "plain-pickle.pt": _plain_pickle,
          "pickle.safetensors": _disguised_as_safetensors}


def _fire(path):
    """Unpickle ``path`` the unsafe way, to prove the payload is live."""
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        torch.load(path, weights_only=False)
    else:
        pickle.loads(data)


@pytest.fixture(params=sorted(MAKERS))
def malicious(request, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / request.param
    MAKERS[request.param](path, marker)
    yield path, marker
    # the payload is real: the unsafe way of loading creates the marker
    _fire(path)
    assert marker.exists()


def test_malicious_weights_are_refused_by_the_python_api(malicious):
    path, marker = malicious
    with pytest.raises(tiledehaze.ConfigError, match=REFUSED):
        load_weights(path)
    with pytest.raises(tiledehaze.ConfigError, match=REFUSED):
        tiledehaze.restore(smooth_image(32, 32, 3, np.uint8), weights=path)
    assert not marker.exists()


def test_malicious_weights_are_refused_by_the_command_line(malicious, capsys):
    path, marker = malicious
    src = path.parent / "photo.png"
    from PIL import Image

    Image.fromarray(smooth_image(40, 50, 3, np.uint8)).save(src)
    code = main(["process", str(src), "--weights", str(path), "--no-progress"])
    assert code == tiledehaze.ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tiledehaze: error: ") and re.search(REFUSED, err[0])
    assert not marker.exists()
    assert not (path.parent / "photo_dehazed.png").exists()
