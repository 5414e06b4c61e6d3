"""``tiledehaze info``: models, backends, and why a backend cannot run here."""

from __future__ import annotations

from .. import __version__
from ..backends import available_backends
from ..models import DEFAULT_MODEL, ModelEntry, list_models


def register(sub) -> None:
    p = sub.add_parser("info", help="list models and inference backends, and whether each can run here")
    p.set_defaults(func=run)


def model_traits(entry: ModelEntry) -> str:
    """Tiling mode, halo, CPU speed class and weights of a registered model, in one line."""
    spec = entry.spec
    tiling = spec.tiling if spec.max_pixels is None else f"{spec.tiling} (up to {spec.max_pixels / 1e6:g} MP)"
    if entry.ships_weights:
        weights = "weights ship"
    elif spec.weights_source:
        weights = f"no weights ship (the authors publish them at {spec.weights_source})"
    else:
        weights = "needs no weights"
    speed = f"CPU {spec.speed}" if spec.speed else "CPU speed not measured"
    return f"tiling {tiling}, halo {spec.halo} px, {speed}, {weights}"


def run(args) -> int:
    print(f"tiledehaze {__version__}")
    print("models:")
    width = max(len(entry.name) for entry in list_models())
    for entry in list_models():
        mark = " (default)" if entry.name == DEFAULT_MODEL else ""
        print(f"  {entry.name:{width}s} {entry.description}{mark}")
        print(f"  {'':{width}s} {model_traits(entry)}")
    print("backends (auto picks the first usable):")
    for info in available_backends():
        state = "usable" if info.unavailable is None else f"unavailable: {info.unavailable}"
        print(f"  {info.name:20s} {state}  [{info.description}]")
    return 0
