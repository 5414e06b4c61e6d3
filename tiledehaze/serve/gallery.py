"""The images named on the command line: their tiles, and a restored copy made in the background.

Only these files are ever read from disk on a client's behalf; clients name them by their
index in the list, never by a path.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import process_file
from ..errors import TileDehazeError
from ..options import RunOptions
from .pyramid import TILE, TileSource

log = logging.getLogger(__name__)
#: pixel limit for files the user named: any size (the engine's default limit guards against uploads)
ANY_SIZE = 2**62


class Stopped(Exception):
    """The server is stopping; the restoration in progress is abandoned (its output never appears)."""


@dataclass
class Entry:
    """One named image and the state of its restored copy."""

    id: int
    source: TileSource
    restored_path: Path | None = None
    status: str = "queued"  # queued, preparing, restoring, ready, failed or stopped
    done: int = 0
    total: int = 0
    error: str | None = None
    restored: TileSource | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.source.path.name, "width": self.source.width, "height": self.source.height,
            "tile": TILE, "levels": self.source.levels, "status": self.status, "done": self.done,
            "total": self.total, "error": self.error,
        }


class Gallery:
    """Opens every image up front (a bad path fails before the server starts); prepares and restores them in turn."""

    def __init__(self, paths: list[Path], options: RunOptions):
        self.entries: list[Entry] = []
        self._options = options
        self._stopping = threading.Event()
        try:
            for i, path in enumerate(map(Path, paths)):
                self.entries.append(Entry(i, TileSource(path, pixel_limit=ANY_SIZE)))
        except BaseException:
            self.close()
            raise

    def get(self, image_id: int) -> Entry | None:
        return self.entries[image_id] if 0 <= image_id < len(self.entries) else None

    def start(self, pool: Executor, workdir: Path) -> None:
        """Restore every image into ``workdir``, one after the other in ``pool``."""
        for entry in self.entries:
            entry.restored_path = workdir / f"{entry.id}-{entry.source.path.stem}_dehazed.tif"
            pool.submit(self._restore, entry)

    def _restore(self, entry: Entry) -> None:
        def on_plan(total: int) -> None:
            entry.total, entry.done = total, 0

        def check() -> None:
            if self._stopping.is_set():
                raise Stopped

        def progress(n: int) -> None:
            check()
            entry.done += n

        try:
            entry.status = "preparing"
            entry.source.prepare(check)
            entry.status = "restoring"
            process_file(entry.source.path, entry.restored_path, compression="zstd", overwrite=True,
                         max_pixels=ANY_SIZE, on_plan=on_plan, progress=progress, options=self._options)
            restored = TileSource(entry.restored_path, pixel_limit=ANY_SIZE)
            restored.prepare(check)
            entry.restored, entry.status = restored, "ready"
        except Stopped:
            entry.status = "stopped"
        except TileDehazeError as exc:
            entry.error, entry.status = str(exc), "failed"
        except Exception as exc:  # keep serving the input; say what went wrong on the page and in the log
            log.exception("restoring %s failed", entry.source.path)
            entry.error, entry.status = f"{type(exc).__name__}: {exc}", "failed"

    def stop(self) -> None:
        """Abandon the restoration in progress at its next tile."""
        self._stopping.set()

    def close(self) -> None:
        for entry in self.entries:
            entry.source.close()
            if entry.restored is not None:
                entry.restored.close()
