"""Every overlap of reading, inference and writing, each stage bounded to one or two items.

- :func:`read_ahead`: the engine reads and decodes the next band in a thread while it blends
  the current one;
- :func:`pipelined`: up to ``depth`` batches of tiles are in flight on a device, so that while
  the GPU works on one batch the host already stacks the next and the previous one is copied
  back;
- :func:`background`: :func:`tiledehaze.process_file` lets the writer encode the previous band
  while the engine computes the next.

So reading, host-to-device copies, inference, device-to-host copies and writing all overlap,
and memory stays bounded by the image width whatever its height.
"""

from __future__ import annotations

import collections
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .pending import Pending

T = TypeVar("T")
_DONE = object()


def read_ahead(read: Callable[[int, int], T], spans: Sequence[tuple[int, int]]) -> Iterator[T]:
    """Yield ``read(*span)`` for every span in order, reading the next span in a thread meanwhile."""
    if not spans:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tiledehaze-read") as pool:
        pending = pool.submit(read, *spans[0])
        for i in range(len(spans)):
            item = pending.result()
            if i + 1 < len(spans):
                pending = pool.submit(read, *spans[i + 1])
            yield item


def pipelined(submit: Callable[[np.ndarray], Pending], batches: Iterable[np.ndarray], *,
              depth: int = 2) -> Iterator[np.ndarray]:
    """Yield the results of ``submit(batch)`` in order, with up to ``depth`` batches in flight.

    ``batches`` is consumed lazily, so the next batch is stacked on the host while the device
    works on the ones already submitted; at most ``depth`` inputs and outputs are alive.
    """
    depth = max(1, depth)
    in_flight: collections.deque[Pending] = collections.deque()
    for batch in batches:
        in_flight.append(submit(batch))
        if len(in_flight) >= depth:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def background(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a daemon thread, at most ``depth`` results ahead of the consumer.

    Exceptions cross over to the consumer; closing the consumer's generator (an error or
    Ctrl-C downstream) stops the producer.
    """
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
