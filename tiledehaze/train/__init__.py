"""Training AOD-Net: haze synthesis, data sources, augmentation and the training loop.

``train(load_config("configs/aodnet.yaml"))`` does what ``tiledehaze train`` does. Training
needs torch (``pip install 'tiledehaze[train]'``); the configuration and the export of
weights to ONNX do not, so the loop is imported only when asked for.
"""

from .config import DEFAULTS, config_hash, load_config

__all__ = ["DEFAULTS", "TrainResult", "config_hash", "load_config", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "train"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
