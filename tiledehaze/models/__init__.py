"""Models registered by name: ``create_model("aodnet")``, ``list_models()``.

Default weights are a property of the registered entry, not of the call site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .base import Model


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., Model]
    description: str
    default_weights: Path | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    _REGISTRY[entry.name] = entry


def list_models() -> list[ModelEntry]:
    return list(_REGISTRY.values())


def create_model(name: str = "aodnet", **options) -> Model:
    """Create a registered model; options go to its factory (weights, backend, threads...)."""
    if isinstance(name, Model):
        return name
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name].factory(**options)


def _aodnet(*, weights: str | Path | None = None, backend: str = "auto", threads: int | None = None,
            device: str | None = None, **backend_options) -> Model:
    from ..backends import check_backend, create_backend
    from .aodnet import AODNet, AODNetModel, load_weights

    check_backend(backend)  # an unusable backend is reported before weights are read
    network = AODNet(load_weights(weights))
    opts = dict(backend_options, threads=threads)
    if device is not None:
        opts["device"] = device
    return AODNetModel(create_backend(backend, network, **opts))


from .aodnet import DEFAULT_WEIGHTS  # noqa: E402

register_model(ModelEntry("aodnet", _aodnet, "AOD-Net (Li et al. 2017), 1,761 parameters", DEFAULT_WEIGHTS))


def _dcp(*, patch: int = 15, omega: float = 0.95, t0: float = 0.1, top_fraction: float = 0.001,
         guided_radius: int = 40, guided_eps: float = 1e-3, backend: str | None = None, threads: int | None = None,
         device: str | None = None, weights: str | Path | None = None, precision: str | None = None) -> Model:
    """Dark Channel Prior; backend/threads/device/weights/precision are accepted so the engine can pass them
    uniformly."""
    from .dcp import DCPModel

    return DCPModel(patch=patch, omega=omega, t0=t0, top_fraction=top_fraction,
                    guided_radius=guided_radius, guided_eps=guided_eps)


register_model(ModelEntry("dcp", _dcp, "Dark Channel Prior (He et al. 2009), guided-filter refinement, no weights"))

__all__ = ["Model", "ModelEntry", "create_model", "list_models", "register_model"]
