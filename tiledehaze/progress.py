"""The one progress facility: a tqdm bar on stderr, fed with counts of completed work."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm


@contextmanager
def progress_bar(desc: str, unit: str = "tile", enabled: bool | None = None) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield ``(set_total, advance)``; shows tiles done, rate and ETA. Hidden when stderr is not a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    bar = tqdm(desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr)

    def set_total(total: int) -> None:
        bar.reset(total=total)

    try:
        yield set_total, bar.update
    finally:
        bar.close()


@contextmanager
def batch_progress(files: int, megapixels: float,
                   enabled: bool | None = None) -> Iterator[Callable[[float, bool], None]]:
    """Yield ``advance(megapixels, failed)``, called once per finished file (in the driving process).

    One bar across all files: files done and failed, MP/s and an ETA from the megapixels still
    to go (files whose header could not be read count as zero).
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    total = round(megapixels, 2) or None
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} MP [{elapsed}<{remaining}, {rate_fmt}]" \
        if total else "{desc}: {n:.1f} MP [{elapsed}, {rate_fmt}]"
    bar = tqdm(total=total, unit="MP", disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr,
               bar_format=bar_format)
    state = {"done": 0, "failed": 0}

    def advance(mp: float, failed: bool = False) -> None:
        state["done"] += 1
        state["failed"] += bool(failed)
        extra = f", {state['failed']} failed" if state["failed"] else ""
        bar.set_description_str(f"{state['done']}/{files} files{extra}", refresh=False)
        bar.update(round(mp, 2))
        bar.refresh()  # files finish seconds apart: show every one

    try:
        bar.set_description_str(f"0/{files} files", refresh=False)
        yield advance
    finally:
        bar.close()
