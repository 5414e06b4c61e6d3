"""Models registered by name: ``create_model("aodnet")``, ``list_models()``.

Default weights are a property of the registered entry, not of the call site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..options import RunOptions
from .base import Model
from .spec import ModelSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it, and what its weights cannot tell (:class:`ModelSpec`)."""

    name: str
    factory: Callable[[RunOptions], Model]
    description: str
    default_weights: Path | None = None
    #: the model's own options, besides the run options every model takes
    options: tuple[str, ...] = ()
    spec: ModelSpec = ModelSpec()

    @property
    def ships_weights(self) -> bool:
        return self.default_weights is not None


_REGISTRY: dict[str, ModelEntry] = {}
#: what ``tiledehaze process`` and :func:`tiledehaze.restore` use without a model name
DEFAULT_MODEL = "hazenet"


def register_model(entry: ModelEntry) -> None:
    """Add ``entry``; a name can be registered once only."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def list_models() -> list[ModelEntry]:
    return list(_REGISTRY.values())


def model_entry(name: str) -> ModelEntry:
    """The registered entry ``name``; :class:`ConfigError` (with the choices) when there is none."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(options: RunOptions) -> Model:
    """The model ``options`` describe, on the backend they ask for."""
    if isinstance(options.model, Model):
        return options.model
    entry = model_entry(options.model)
    if options.weights is None and not entry.ships_weights and entry.spec.weights_source:
        raise ConfigError(f"no weights ship for {entry.name}; the authors publish them at "
                          f"{entry.spec.weights_source}: download them and pass --weights FILE")
    return entry.factory(options)


def resolve_model(name: str | None, weights: str | Path | None = None) -> str:
    """The model to run: ``name`` if given, else the network ``weights`` belong to, else :data:`DEFAULT_MODEL`.

    So ``--weights aodnet.safetensors`` alone runs AOD-Net, as it did before HazeNet became the default, and
    ``--weights checkpoint.pth`` alone runs SRCNN when the file holds SRCNN's tensors.
    """
    if name is not None:
        return name
    if weights is None:
        return DEFAULT_MODEL
    path = Path(weights)
    if path.suffix not in (".safetensors", ".pt", ".pth") or not path.is_file():
        return DEFAULT_MODEL
    keys = _weight_keys(path)
    if keys is None:  # unreadable: the loader of the file's usual model reports it in one line
        return "aodnet" if path.suffix in (".pt", ".pth") else DEFAULT_MODEL
    if "enc1.weight" in keys:
        return "hazenet"
    if keys == _SRCNN_KEYS:  # three convolutions; AOD-Net's five have the same names
        return "srcnn"
    return "aodnet" if "conv1.weight" in keys else DEFAULT_MODEL


_SRCNN_KEYS = {f"conv{i}.{kind}" for i in (1, 2, 3) for kind in ("weight", "bias")}


def _weight_keys(path: Path) -> set[str] | None:
    """The tensor names of a weights file (torch files need torch); ``None`` where they cannot be read."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                return set(f.keys())
        from .checkpoint import load_checkpoint

        return set(load_checkpoint(path).tensors)
    except Exception:  # unreadable, unsafe or no torch: the loader of the model run says why in one line
        return None


def create_model(name: str | None = None, **options) -> Model:
    """Create a registered model from keyword options (weights, backend, threads, the model's own...).

    Without a name, the model is the one the ``weights`` option belongs to, or :data:`DEFAULT_MODEL`.
    """
    if isinstance(name, Model):
        return name
    return build_model(RunOptions.create(model=name, **options))


def _aodnet(options: RunOptions) -> Model:
    from ..backends import check_backend, create_backend
    from .aodnet import AODNet, AODNetModel, load_weights

    check_backend(options.backend)  # an unusable backend is reported before weights are read
    network = AODNet(load_weights(options.weights))
    return AODNetModel(create_backend(options.backend, network, options))


from . import aodnet as _aod  # noqa: E402

register_model(ModelEntry("aodnet", _aodnet, "AOD-Net (Li et al. 2017), 1,761 parameters", _aod.DEFAULT_WEIGHTS,
                          spec=ModelSpec(activation="linear", halo=_aod.HALO, speed="fast (~7 MP/s)")))


def _hazenet(options: RunOptions) -> Model:
    from ..backends import check_backend, create_backend
    from .hazenet import HazeNet, HazeNetModel, load_weights

    check_backend(options.backend)
    network = HazeNet(load_weights(options.weights), output="t")
    return HazeNetModel(create_backend(options.backend, network, options), network.t_channels)


from . import hazenet as _hz  # noqa: E402

register_model(ModelEntry("hazenet", _hazenet, f"HazeNet: airlight-normalised transmission U-Net, "
                          f"{_hz.parameter_count():,} parameters", _hz.DEFAULT_WEIGHTS,
                          spec=ModelSpec(halo=_hz.HALO, align=_hz.ALIGN, size_multiple=_hz.ALIGN,
                                         speed="fast (~3.5 MP/s)")))


def _dcp(options: RunOptions) -> Model:
    """Dark Channel Prior; it runs on numpy and OpenCV, so the backend options do not apply."""
    from .dcp import DCPModel

    return DCPModel(**options.model_kwargs)


from . import dcp as _dc  # noqa: E402

register_model(ModelEntry("dcp", _dcp, "Dark Channel Prior (He et al. 2009), guided-filter refinement, no weights",
                          options=("patch", "omega", "t0", "top_fraction", "guided_radius", "guided_eps"),
                          spec=ModelSpec(halo=_dc.DCPModel().halo,  # at the default options
                                         speed="fast (~15 MP/s)")))


def _aecrnet(options: RunOptions) -> Model:
    from .adapter import load_network
    from .aecrnet import AECRNet, to_onnx

    return load_network("aecrnet", AECRNet.from_state_dict, options, onnx_builder=to_onnx)


# the spec is written out here so that listing models never imports torch (aecrnet.py does)
register_model(ModelEntry(
    "aecrnet", _aecrnet, "AECR-Net (Wu et al. 2021), 2.61 M parameters, deformable convolutions; "
    "channel attention pools the whole tile, so tiles are feathered over a wide overlap",
    spec=ModelSpec(size_multiple=4, align=4, halo=96, tiling="approximate", speed="very slow (~0.03 MP/s)",
                   weights_source="https://github.com/GlassyWu/AECR-Net, whose README links them on Baidu Pan")))


def _srcnn(options: RunOptions) -> Model:
    from .adapter import load_network
    from .srcnn import spec_of, to_onnx
    from .srcnn_torch import SRCNN

    return load_network("srcnn", SRCNN.from_state_dict, options, onnx_builder=to_onnx, spec_of=spec_of)


from . import srcnn as _sr  # noqa: E402

register_model(ModelEntry("srcnn", _srcnn, f"SRCNN (Dong et al. 2014), 9-1-5 on luma, trained to remove JPEG "
                          f"artefacts; {_sr.parameter_count():,} parameters (9-5-5 ports load too)", _sr.DEFAULT_WEIGHTS,
                          spec=ModelSpec(colour="luma", channels=1, halo=_sr.seeds_layout().halo,
                                         speed="fast (~2.5 MP/s)")))


#: where the authors publish HINet weights (none ship with tiledehaze)
HINET_WEIGHTS = ("the 'pretrained model' links of https://github.com/megvii-model/HINet (SIDD 1x and 0.5x, GoPro, "
                 "REDS, Rain13k)")


def _hinet(name: str, local: bool) -> Callable[[RunOptions], Model]:
    def factory(options: RunOptions) -> Model:
        from .adapter import load_network
        from .hinet import DEFAULT_BASE_SIZE, from_state_dict, no_onnx, spec_for

        base_size = options.model_kwargs.get("base_size", DEFAULT_BASE_SIZE) if local else None
        return load_network(name, lambda tensors: from_state_dict(tensors, base_size=base_size), options,
                            spec_of=spec_for, onnx_builder=no_onnx if local else None)
    return factory


# Halos of the published depth-5 layout; the loaded checkpoint sets its own (tiledehaze.models.hinet.spec_for).
for _local, _sigmoid in ((False, False), (True, False), (False, True), (True, True)):
    _name = "hinet" + "-tlc" * _local + "-sigmoid" * _sigmoid
    register_model(ModelEntry(
        _name, _hinet(_name, _local),
        "HINet (Chen et al. 2021), the authors' checkpoints, "
        + ("TLC's local statistics (tiles exact)" if _local else "instance normalisation (tiles approximate)")
        + (", sigmoid output (the contest variant)" if _sigmoid else ""),
        options=("base_size",) if _local else (),
        spec=ModelSpec(activation="sigmoid" if _sigmoid else "clamp", size_multiple=16, align=16,
                       halo=1016 if _local else 248, tiling="exact" if _local else "approximate",
                       speed="very slow (~0.01 MP/s)", weights_source=HINET_WEIGHTS)))


__all__ = ["DEFAULT_MODEL", "Model", "ModelEntry", "ModelSpec", "build_model", "create_model", "list_models",
           "model_entry", "register_model", "resolve_model"]
