"""The one progress facility, on stderr: a tqdm bar on a terminal, plain lines elsewhere.

Where stderr is not a terminal (cron, CI, a log file) a bar would be noise, and nothing at all
looks like a hang: a plain line (done/total, rate, ETA) is written at most every
:data:`LINE_EVERY` seconds, and none for runs shorter than that.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm

#: seconds between plain progress lines (and before the first); TILEDEHAZE_PROGRESS_EVERY overrides it
LINE_EVERY = 10.0


class ProgressLines:
    """Plain progress lines: :meth:`due` says when the next one may be written."""

    def __init__(self, every: float | None = None):
        self.every = every if every is not None else float(os.environ.get("TILEDEHAZE_PROGRESS_EVERY", LINE_EVERY))
        self.start = time.monotonic()
        self.next = self.start + self.every

    def due(self) -> float | None:
        """Seconds since the start if a line is due now, else None."""
        now = time.monotonic()
        if now < self.next:
            return None
        self.next = now + self.every
        return now - self.start

    def tick(self, head: str, done: float, total: float | None, unit: str, *, since: float | None = None,
             tail: str = "") -> None:
        """Write ``head``, the rate and ETA of ``done`` out of ``total``, and ``tail``, if a line is due.

        The rate counts from ``since`` (a ``time.monotonic()`` value), by default from the start.
        """
        if self.due() is not None:
            elapsed = time.monotonic() - (self.start if since is None else since)
            print(f"{head}, {rate_and_eta(done, total, elapsed, unit)}{tail}", file=sys.stderr, flush=True)


def rate_and_eta(done: float, total: float | None, elapsed: float, unit: str) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = tqdm.format_interval((total - done) / rate) if total and rate > 0 else "?"
    return f"{rate:.2f} {unit}/s, ETA {eta}"


def _mode(enabled: bool | None) -> str:
    if enabled is False:
        return "off"
    return "bar" if enabled or sys.stderr.isatty() else "lines"


@contextmanager
def progress_bar(desc: str, unit: str = "tile", enabled: bool | None = None) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield ``(set_total, advance)`` fed with counts of completed work; shows done, rate and ETA.

    ``enabled``: None picks a bar on a terminal and plain lines elsewhere; True a bar; False nothing.
    """
    mode = _mode(enabled)
    if mode == "lines":
        lines, state = ProgressLines(), {"done": 0, "total": None}

        def set_total(total: int) -> None:
            state["total"] = total

        def advance(n: int) -> None:
            state["done"] += n
            lines.tick(f"{desc}: {state['done']}/{state['total'] or '?'} {unit}s", state["done"], state["total"],
                       unit + "s")

        yield set_total, advance
        return
    bar = tqdm(desc=desc, unit=unit, disable=mode == "off", dynamic_ncols=True, leave=False, file=sys.stderr)

    def reset(total: int) -> None:
        bar.reset(total=total)

    try:
        yield reset, bar.update
    finally:
        bar.close()


@contextmanager
def batch_progress(files: int, megapixels: float,
                   enabled: bool | None = None) -> Iterator[Callable[[float, bool], None]]:
    """Yield ``advance(megapixels, failed)``, called once per finished file (in the driving process).

    Files done and failed, MP/s and an ETA from the megapixels still to go (files whose
    header could not be read count as zero); a bar or plain lines as in :func:`progress_bar`.
    """
    mode = _mode(enabled)
    total = round(megapixels, 2) or None
    state = {"done": 0, "failed": 0, "mp": 0.0}

    def counts() -> str:
        return f"{state['done']}/{files} files" + (f", {state['failed']} failed" if state["failed"] else "")

    if mode == "lines":
        lines = ProgressLines()

        def advance_lines(mp: float, failed: bool = False) -> None:
            state["done"] += 1
            state["failed"] += bool(failed)
            state["mp"] += mp
            lines.tick(f"{counts()}, {state['mp']:.1f}/{total or 0:.1f} MP", state["mp"], total, "MP")

        yield advance_lines
        return
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} MP [{elapsed}<{remaining}, {rate_fmt}]" \
        if total else "{desc}: {n:.1f} MP [{elapsed}, {rate_fmt}]"
    bar = tqdm(total=total, unit="MP", disable=mode == "off", dynamic_ncols=True, leave=False, file=sys.stderr,
               bar_format=bar_format)

    def advance(mp: float, failed: bool = False) -> None:
        state["done"] += 1
        state["failed"] += bool(failed)
        bar.set_description_str(counts(), refresh=False)
        bar.update(round(mp, 2))
        bar.refresh()  # files finish seconds apart: show every one

    try:
        bar.set_description_str(counts(), refresh=False)
        yield advance
    finally:
        bar.close()
