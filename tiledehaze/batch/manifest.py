"""The output folder's bookkeeping: the manifest of finished outputs, the lock, stale temporaries."""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import OutputError
from ..io.atomic import TEMP_MARK, atomic_output, describe_os_error
from .jobs import Job

log = logging.getLogger(__name__)

MANIFEST_NAME = ".tiledehaze-manifest.jsonl"
LOCK_NAME = ".tiledehaze.lock"


class Manifest:
    """JSON lines in the output folder; the last line for an output is its current state."""

    def __init__(self, outdir: Path):
        self.path = outdir / MANIFEST_NAME
        self.entries: dict[str, dict] = {}
        self._file = None
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.entries[entry["output"]] = entry
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash
        self._compact()
        self._file = open(self.path, "a", encoding="utf-8")

    def _compact(self) -> None:
        with atomic_output(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for entry in self.entries.values():
                f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def is_current(self, job: Job, settings_key: str, digest: str | None, outdir: Path) -> bool:
        e = self.entries.get(job.relpath)
        if not e or e.get("state") != "done":
            return False
        if (e.get("settings"), e.get("size")) != (settings_key, job.size):
            return False
        if digest is not None:  # content decides: a copied or restored archive has new times
            if e.get("sha256") != digest:
                return False
        elif e.get("mtime_ns") != job.mtime_ns:
            return False
        try:
            return (outdir / job.relpath).stat().st_size == e.get("output_size")
        except OSError:
            return False

    def owns(self, relpath: str) -> bool:
        return relpath in self.entries

    def record(self, entries: list[dict]) -> None:
        text = "".join(json.dumps(e) + "\n" for e in entries)
        if not text:
            return
        for e in entries:
            self.entries[e["output"]] = e
        try:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.path)) from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@contextmanager
def locked(outdir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``outdir`` so that two runs never write into it at once."""
    import fcntl

    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(outdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, outdir)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another tiledehaze run is writing into {outdir}; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def clean_stale_temporaries(outdir: Path) -> int:
    """Remove hidden ``.tiledehaze-tmp-`` files left by runs that were killed; returns how many."""
    removed = 0
    for root, _, files in os.walk(outdir):
        for name in files:
            if TEMP_MARK in name:
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError as exc:
                    log.warning("cannot remove stale temporary %s: %s", name, exc.strerror)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    return removed
