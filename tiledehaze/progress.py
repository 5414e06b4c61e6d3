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
