"""Training AOD-Net: haze synthesis, data sources, augmentation and the training loop.

``train(load_config("configs/aodnet.yaml"))`` does what ``tiledehaze train`` does.
"""

from .config import DEFAULTS, config_hash, load_config
from .loop import TrainResult, train

__all__ = ["DEFAULTS", "TrainResult", "config_hash", "load_config", "train"]
