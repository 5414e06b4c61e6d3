"""What decides a batch's outputs: the run options plus the output format, and their fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import RunOptions, fingerprint

#: ``format`` -> the extension given to converted outputs
FORMAT_EXTENSIONS = {"tiff": ".tif", "jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}


@dataclass(frozen=True)
class Settings:
    """Everything that decides what an output looks like: the run options plus the output's format."""

    run: RunOptions = RunOptions()
    compression: str | None = "keep"
    quality: int = 95
    max_pixels: int | None = None
    format: str | None = None
    bands: tuple[int, ...] | None = None
    input_range: Any = None  # a pixels.ValueRange, or None for auto
    cog: bool = False

    @property
    def io_options(self) -> dict[str, Any]:
        """What process_file takes besides the run options to read and write a file."""
        return dict(bands=self.bands, input_range=self.input_range, cog=self.cog)

    def fingerprint(self) -> str:
        """A short hash of the settings that change the output (not threads, backend, batch or device)."""
        geo = {k: v for k, v in self.io_options.items() if v}  # absent when unset: earlier manifests stay valid
        return fingerprint({**self.run.fingerprint_key(), "compression": self.compression,
                            "quality": self.quality, "format": self.format, **geo})



def output_relpath(relpath: str, format: str | None) -> str:
    if format is None:
        return relpath
    if format not in FORMAT_EXTENSIONS:
        raise ConfigError(f"unknown output format {format!r}; choose from {', '.join(FORMAT_EXTENSIONS)}")
    stem, _, _ = relpath.rpartition(".") if "." in Path(relpath).name else (relpath, "", "")
    return stem + FORMAT_EXTENSIONS[format]

