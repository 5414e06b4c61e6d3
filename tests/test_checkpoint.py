"""Checkpoints from the authors load safely: containers unwrapped, prefixes stripped, numpy
scalars allowed, code never unpickled, every mismatch named in one line."""

import hashlib
import io
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tiledehaze.errors import ConfigError
from tiledehaze.models.checkpoint import CONTAINERS, load_checkpoint, load_exact

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class Toy(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.head = torch.nn.Conv2d(1, width, 3)
        self.tail = torch.nn.Conv2d(width, 1, 3)


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in Toy().state_dict().items()}


@pytest.mark.parametrize("container", CONTAINERS)
def test_official_containers_unwrap_and_lose_their_module_prefix(tmp_path, container):
    tensors = _tensors()
    path = tmp_path / "official.pth"
    # a training container: DataParallel keys, optimiser step and numpy scalars beside the weights
    torch.save({container: {f"module.{k}": v for k, v in tensors.items()}, "step": 4000,
                "max_psnr": np.float64(31.2), "psnrs": [np.float32(28.5), np.float32(30.1)],
                "best_epoch": np.int64(7)}, path)
    ckpt = load_checkpoint(path)
    assert sorted(ckpt.tensors) == sorted(tensors)
    assert all(torch.equal(ckpt.tensors[k], tensors[k]) for k in tensors)
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_ema_weights_are_preferred_over_the_raw_ones(tmp_path):
    ema, raw = _tensors(1), _tensors(2)
    path = tmp_path / "basicsr.pth"
    torch.save({"params": raw, "params_ema": ema}, path)
    ckpt = load_checkpoint(path)
    assert all(torch.equal(ckpt.tensors[k], ema[k]) for k in ema)


def _as_numpy1_pickle(path):
    """Rewrite a torch zip so that its pickle names numpy 1's module, as checkpoints saved years ago do."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    renamed = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item)
            renamed += data.count(b"numpy._core.multiarray")
            dst.writestr(item, data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    path.write_bytes(out.getvalue())
    return renamed


def test_numpy1_scalars_of_old_training_checkpoints_load(tmp_path):
    tensors = _tensors()
    path = tmp_path / "aecr-style.pk"
    torch.save({"model": {f"module.{k}": v for k, v in tensors.items()}, "max_psnr": np.float64(20.5),
                "psnrs": np.array([1.0, 2.0])}, path)
    assert _as_numpy1_pickle(path) > 0
    ckpt = load_checkpoint(path)
    assert all(torch.equal(ckpt.tensors[k], tensors[k]) for k in tensors)


def test_safetensors_load_with_their_digest(tmp_path):
    tensors = _tensors()
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    ckpt = load_checkpoint(path)
    assert all(torch.equal(ckpt.tensors[k], tensors[k]) for k in tensors)
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_needs_code_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params": {**_tensors(), "extra": Payload(marker)}}, path)
    with pytest.raises(ConfigError, match="not a safe checkpoint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: trusting the file runs it
    assert marker.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_tensor_that_is_not_finite_is_named(tmp_path, bad):
    tensors = _tensors()
    tensors["tail.bias"][0] = bad
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ConfigError, match=r"tail\.bias holds NaN or inf"):
        load_checkpoint(path)


@pytest.mark.parametrize("content, message", [
    (b"hello, not weights", "not a weights file"),
    (b"PK\x03\x04truncated zip", "cannot read weights"),
])
def test_files_that_are_not_checkpoints_get_one_line(tmp_path, content, message):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_a_container_without_tensors_is_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ConfigError, match="holds no tensors"):
        load_checkpoint(path)


def test_load_exact_fills_the_network(tmp_path):
    tensors = _tensors()
    path = tmp_path / "w.pth"
    torch.save({"net": tensors}, path)
    module = Toy()
    load_exact(module, load_checkpoint(path), "Toy")
    assert all(torch.equal(module.state_dict()[k], tensors[k]) for k in tensors)
    assert not module.training


def test_load_exact_names_missing_unexpected_and_misshaped_keys_in_one_line(tmp_path):
    tensors = _tensors()
    del tensors["head.bias"]
    tensors["stray.weight"] = torch.zeros(2)
    tensors["tail.weight"] = torch.zeros(1, 8, 3, 3)
    path = tmp_path / "w.pth"
    torch.save(tensors, path)
    with pytest.raises(ConfigError) as err:
        load_exact(Toy(), load_checkpoint(path), "Toy")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "not Toy weights" in message
    assert "missing head.bias" in message
    assert "unexpected stray.weight" in message
    assert "tail.weight is [1, 8, 3, 3], expected [1, 4, 3, 3]" in message
