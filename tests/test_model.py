"""AOD-Net is the network of the paper, declares its receptive field, and exports faithfully."""

import numpy as np
import pytest
import torch

from tiledehaze.models import create_model
from tiledehaze.models.aodnet import HALO, AODNet, init_weights, load_weights
from tiledehaze.models.aodnet_torch import AODNetModule


def test_architecture_matches_the_paper():
    module = AODNetModule()
    assert sum(p.numel() for p in module.parameters()) == 1761
    assert HALO == 7


@pytest.mark.parametrize("distance,changes", [(HALO, True), (HALO + 1, False), (HALO + 20, False)])
def test_receptive_field_radius_is_the_declared_halo(weights_path, distance, changes):
    """A perturbation `distance` px away changes the output only within the halo."""
    net = AODNet(load_weights(weights_path)).to_torch()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    net = net.double()
    y0 = net(x)
    x2 = x.clone()
    x2[0, :, 20, 20 + distance] += 0.5  # horizontal offset
    x2[0, :, 20 + distance, 20] += 0.5  # and vertical
    y1 = net(x2)
    moved = (y1[0, :, 20, 20] - y0[0, :, 20, 20]).abs().max().item()
    assert (moved > 0) == changes


def test_onnx_graph_equals_torch(weights_path):
    net = AODNet(load_weights(weights_path))
    x = np.random.default_rng(0).random((2, 37, 53, 3), dtype=np.float32)
    ort = create_model("aodnet", weights=weights_path, backend="onnxruntime").run(x, {})
    ref = create_model("aodnet", weights=weights_path, backend="torch").run(x, {})
    assert ort.shape == x.shape
    np.testing.assert_allclose(ort, ref, atol=1e-5)
    assert isinstance(net.to_onnx(), bytes)


def test_weights_are_validated(tmp_path):
    from safetensors.numpy import save_file

    from tiledehaze.errors import ConfigError

    bad = tmp_path / "bad.safetensors"
    w = init_weights(0)
    w["conv3.weight"] = w["conv3.weight"][:, :3]
    save_file(w, str(bad))
    with pytest.raises(ConfigError, match="conv3.weight"):
        load_weights(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(ConfigError, match="not a weights file"):
        load_weights(junk)


def test_torch_checkpoints_load_without_unpickling_code(tmp_path):
    module = AODNetModule.from_numpy(init_weights(1))
    path = tmp_path / "w.pt"
    torch.save(module.state_dict(), path)
    loaded = load_weights(path)
    np.testing.assert_array_equal(loaded["conv5.weight"], module.conv5.weight.detach().numpy())


def test_the_output_is_the_papers_formula_applied_to_k(weights_path):
    """J = ReLU(K * I - K + 1), the same in torch and in the ONNX graph: both agree with numpy."""
    import onnxruntime as ort

    from tiledehaze.models.aodnet import clean_image

    net = AODNet(load_weights(weights_path))
    module = net.to_torch()
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        k = module.estimate_k(x).numpy()
        j = module(x).numpy()
    expected = np.maximum(k * x.numpy() - k + 1, 0)
    np.testing.assert_allclose(j, expected, atol=1e-6)
    np.testing.assert_allclose(clean_image(k, x.numpy(), relu=lambda v: np.maximum(v, 0)), expected, atol=1e-6)
    session = ort.InferenceSession(net.to_onnx(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([net.output_name], {net.input_name: x.numpy()})
    np.testing.assert_allclose(onnx_out, expected, atol=2e-5)
