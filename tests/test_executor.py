"""Out-of-memory back-off, batches in flight, one dask worker per GPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import tiledehaze
from tiledehaze.backends import Backend
from tiledehaze.batch import gpu_worker_commands, gpu_worker_resources
from tiledehaze.errors import OutOfMemory
from tiledehaze.executor import BackoffRunner, split_batch
from tiledehaze.pending import Done
from tiledehaze.pipeline import pipelined
from tiledehaze.models.aodnet import AODNetModel


class FakeOOM(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError."""


class ShrinkingGPU(Backend):
    """A backend that runs out of memory on batches larger than ``fits``; doubles every pixel."""

    name = "fake-gpu"
    oom_errors = (FakeOOM,)

    def __init__(self, fits: int, preferred_batch: int = 8):
        self.fits = fits
        self.preferred_batch = preferred_batch
        self.calls: list[int] = []
        self.released = 0

    def run(self, tiles: np.ndarray) -> np.ndarray:
        self.calls.append(len(tiles))
        if len(tiles) > self.fits:
            raise FakeOOM("CUDA out of memory")
        return tiles * 2

    def release_memory(self) -> None:
        self.released += 1


def tiles(n: int) -> np.ndarray:
    return np.arange(n * 4 * 4 * 3, dtype=np.float32).reshape(n, 4, 4, 3)


def test_out_of_memory_halves_the_batch_and_keeps_every_tile_in_order(caplog):
    backend = ShrinkingGPU(fits=2)
    with caplog.at_level(logging.WARNING, logger="tiledehaze.executor"):
        out = BackoffRunner(backend).run(tiles(8))
    np.testing.assert_array_equal(out, tiles(8) * 2)
    assert backend.calls[:3] == [8, 4, 2]  # 8 fails, 4 fails, then pieces of 2
    assert all(n <= 2 for n in backend.calls[3:])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "out of device memory" in warnings[0].getMessage()
    assert backend.released == 2  # cached memory handed back before each retry


def test_the_smaller_batch_is_remembered_so_later_rows_do_not_fail_again(caplog):
    backend = ShrinkingGPU(fits=3)
    runner = BackoffRunner(backend)
    runner.run(tiles(8))
    assert runner.limit == 2
    backend.calls.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tiledehaze.executor"):
        np.testing.assert_array_equal(runner.run(tiles(5)), tiles(5) * 2)
    assert backend.calls == [2, 2, 1]
    assert not caplog.records


def test_submit_falls_back_to_smaller_batches_on_oom():
    backend = ShrinkingGPU(fits=1)
    runner = BackoffRunner(backend)
    np.testing.assert_array_equal(runner.submit(tiles(4)).result(), tiles(4) * 2)
    assert runner.limit == 1


def test_a_single_tile_that_does_not_fit_is_a_clear_error_not_a_loop():
    with pytest.raises(OutOfMemory, match="single 4x4 tile; use a smaller --tile"):
        BackoffRunner(ShrinkingGPU(fits=0)).run(tiles(4))


def test_other_errors_are_never_swallowed():
    class Broken(ShrinkingGPU):
        def run(self, tiles):
            raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        BackoffRunner(Broken(fits=8)).run(tiles(4))


def test_backends_that_signal_oom_in_the_message_are_understood():
    class MessageOOM(ShrinkingGPU):
        oom_errors = ()

        def run(self, tiles):
            if len(tiles) > self.fits:
                raise RuntimeError("Failed to allocate memory for requested buffer")
            return tiles * 2

        def is_oom(self, exc):
            return "failed to allocate" in str(exc).lower()

    np.testing.assert_array_equal(BackoffRunner(MessageOOM(fits=1)).run(tiles(3)), tiles(3) * 2)


def test_pipelined_keeps_order_and_bounds_the_work_in_flight():
    in_flight = []
    peak = []

    class Handle:
        def __init__(self, value):
            self.value = value
            in_flight.append(self)
            peak.append(len(in_flight))

        def result(self):
            in_flight.remove(self)
            return self.value

    out = list(pipelined(lambda x: Handle(x * 3), (np.full(2, i) for i in range(7)), depth=2))
    assert [int(o[0]) for o in out] == [3 * i for i in range(7)]
    assert max(peak) == 2 and not in_flight


def test_pipelined_consumes_its_input_lazily():
    taken = []

    def batches():
        for i in range(5):
            taken.append(i)
            yield np.zeros(1)

    results = pipelined(Done, batches(), depth=2)
    next(results)
    assert taken == [0, 1]  # only the batches in flight have been stacked


def test_whole_image_through_a_backend_that_runs_out_of_memory_matches_a_clean_run():
    from tiledehaze.backends.ort import OnnxRuntimeBackend
    from tiledehaze.models.aodnet import AODNet, init_weights

    network = AODNet(init_weights(seed=4))
    cpu = OnnxRuntimeBackend(network, threads=1)

    class Tight(ShrinkingGPU):
        def run(self, tiles):
            self.calls.append(len(tiles))
            if len(tiles) > self.fits:
                raise FakeOOM("out of memory")
            return cpu.run(tiles)

    image = (np.random.default_rng(0).random((150, 420, 3)) * 255).astype(np.uint8)
    clean = tiledehaze.restore(image, model=AODNetModel(cpu), tile=64)
    tight = AODNetModel(Tight(fits=2))
    np.testing.assert_array_equal(tiledehaze.restore(image, model=tight, tile=64, batch=8), clean)
    assert tight.runner.limit == 2


def test_split_batch_covers_every_tile_once():
    assert split_batch(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert split_batch(3, 8) == [(0, 3)]
    assert split_batch(0, 8) == []
    assert split_batch(2, 0) == [(0, 1), (1, 2)]


def test_one_dask_worker_per_gpu():
    assert gpu_worker_resources() == {"GPU": 1.0}
    cmds = gpu_worker_commands("tcp://sched:8786", 2)
    assert len(cmds) == 2
    assert cmds[1].startswith("CUDA_VISIBLE_DEVICES=1 dask worker tcp://sched:8786")
    assert all("--resources GPU=1" in c and "--nthreads 1" in c for c in cmds)
