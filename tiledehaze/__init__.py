"""tiledehaze: dehaze images of any size, tiled, streamed and blended without seams.

>>> import tiledehaze
>>> restored = tiledehaze.restore(image)                      # doctest: +SKIP
>>> tiledehaze.process_file("scene.tif", "scene_dehazed.tif")  # doctest: +SKIP
>>> tiledehaze.process_batch(["photos/"], "dehazed/", workers=2)  # doctest: +SKIP
"""

from .api import ProcessResult, default_output, get_model, process_file, restore
from .batch import BatchReport, process_batch
from .errors import BackendUnavailable, ConfigError, InputError, OutOfMemory, OutputError, TileDehazeError
from .models import create_model, list_models
from .options import RunOptions
from .plan import TilePlan

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "BatchReport", "ConfigError", "InputError", "OutOfMemory", "OutputError", "ProcessResult",
    "RunOptions", "TileDehazeError", "TilePlan", "create_model", "default_output", "get_model", "list_models",
    "process_batch", "process_file", "restore",
]
