"""Run a producer in a background thread behind a bounded queue.

Used to overlap reading, inference and writing: the consumer (an encoder) pulls from the
queue while the producer computes the next band. Exceptions cross over to the consumer;
closing the consumer's generator (an error or Ctrl-C downstream) stops the producer.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def background(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a daemon thread, at most ``depth`` results ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="tiledehaze-producer", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
