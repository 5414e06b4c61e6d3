"""``tiledehaze info``: models, backends, and why a backend cannot run here."""

from __future__ import annotations

from .. import __version__
from ..backends import available_backends
from ..models import DEFAULT_MODEL, list_models


def register(sub) -> None:
    p = sub.add_parser("info", help="list models and inference backends, and whether each can run here")
    p.set_defaults(func=run)


def run(args) -> int:
    print(f"tiledehaze {__version__}")
    print("models:")
    for entry in list_models():
        mark = " (default)" if entry.name == DEFAULT_MODEL else ""
        print(f"  {entry.name:12s} {entry.description}{mark}")
    print("backends (auto picks the first usable):")
    for info in available_backends():
        state = "usable" if info.unavailable is None else f"unavailable: {info.unavailable}"
        print(f"  {info.name:20s} {state}  [{info.description}]")
    return 0
