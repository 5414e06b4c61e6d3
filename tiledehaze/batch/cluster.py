"""Running a batch's jobs on dask: a local cluster of worker processes, or an existing one."""

from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from ..errors import ConfigError
from .jobs import Job, JobResult, describe_task_error
from .memory import default_memory_limit, parse_memory
from .settings import Settings

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

Runner = Callable[[Job, Settings, "int | None"], JobResult]


def worker_threads() -> int | None:
    """Inside a dask worker: cores shared fairly between its task threads; elsewhere: the default."""
    try:
        from distributed import get_worker

        nthreads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, nthreads))


def run_on_dask(jobs: Sequence[Job], settings: Settings, run: Runner, finished: Callable[[JobResult, Job], bool], *,
                workers: int | None, scheduler: str | None, threads: int | None, memory_limit, retries: int,
                overlap: int, split_above: float | None = None) -> str:
    """Run ``jobs`` on dask, handing each result to ``finished`` (which returns False to stop); returns a label
    for the report. ``overlap`` is the plan's, for the memory estimate.

    TIFFs above ``split_above`` megapixels are each spread over all workers (see :mod:`.split`)
    while the other files run one task per file beside them.
    """
    from distributed import as_completed

    from .split import run_split_job, splittable

    big = [j for j in jobs if splittable(j, settings, split_above)]
    small = [j for j in jobs if j not in big]

    def need(n: int) -> tuple[int, int]:
        return default_memory_limit(jobs, n, tile=settings.run.tile, overlap=overlap)

    with dask_client(workers=workers, scheduler=scheduler, threads=threads, memory_limit=memory_limit,
                     need=need) as (client, label, threads):
        futures = client.map(run, small, settings=settings, threads=threads, pure=False, retries=retries)
        by_key = {f.key: job for f, job in zip(futures, small)}
        for job in big:
            if not finished(run_split_job(job, settings, client, threads=threads, retries=retries), job):
                client.cancel(futures)
                return label
        done = as_completed(futures, with_results=True, raise_errors=False)
        for future, result in done:
            job = by_key[future.key]
            if future.status != "finished":
                exc = result[1] if isinstance(result, tuple) and len(result) == 3 else future.exception()
                result = JobResult(job.relpath, job.source, job.output, "failed", describe_task_error(exc))
                log.error("%s: %s", job.source, "".join(traceback.format_exception(exc)).rstrip())
            if not finished(result, job):
                client.cancel([f for f in futures if not f.done()])
                break
        return label


@contextmanager
def dask_client(*, workers: int | None, scheduler: str | None, threads: int | None, memory_limit: int | None,
                need: Callable[[int], tuple[int, int]]) -> Iterator[tuple["Client", str, int | None]]:
    """``(client, label, threads per task)`` on an existing cluster or on a local one of ``workers`` processes.

    A local cluster gets ``memory_limit`` bytes per worker, or, without one, what ``need(workers)``
    returns as ``(workers, bytes per worker)`` (fewer workers when the work would not fit).
    """
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    # the scheduler and nanny log every start and stop at INFO, and the client warns of keys it
    # could not gather while a Ctrl-C shuts the workers down; keep them for -vv only (dask's own
    # logging config gives distributed.client a level of its own, so it is set too)
    for name in ("distributed", "distributed.client"):
        logging.getLogger(name).setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR)
    with dask.config.set({
        # keep glibc's adaptive mmap threshold: a fixed trim threshold makes every large
        # temporary a fresh mmap, which halves inference speed (see FIELD-NOTES)
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    }):
        if scheduler:
            check_reachable(scheduler)
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
            label = f"cluster {scheduler}"
        else:
            workers, limit = need(workers) if memory_limit is None else (workers, memory_limit)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = threads or max(1, cores // workers)
            with warnings.catch_warnings(), ignoring_sigint():  # Ctrl-C: only this process handles it
                # the scheduler's HTTP endpoint moves to a free port when another cluster holds 8787
                warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=limit,
                                       dashboard_address=None, worker_dashboard_address=None,
                                       # workers' logs (errors from a shutdown in mid-task) only with -vv
                                       silence_logs=logging.ERROR if log.isEnabledFor(logging.DEBUG)
                                       else logging.CRITICAL)
            client = Client(cluster)
            label = f"{workers} dask worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
    try:
        yield client, label, threads
    except BaseException:
        # Ctrl-C or a failure tears the cluster down in mid-task: what the scheduler and its
        # connections say about the keys it loses is not the user's concern (-vv keeps it)
        if not log.isEnabledFor(logging.DEBUG):
            # dask's logging config gives some of these loggers levels of their own
            for name in list(logging.root.manager.loggerDict):
                if name.split(".")[0] in ("distributed", "tornado"):
                    logging.getLogger(name).setLevel(logging.CRITICAL)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_cluster_options(workers: int | None, scheduler: str | None, memory_limit: str | int | None) -> int | None:
    """Refuse contradictory cluster options; returns the memory limit in bytes (None: automatic)."""
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers and scheduler:
        raise ConfigError("use either --workers (a local cluster) or --scheduler (an existing one), not both")
    return None if memory_limit is None else parse_memory(memory_limit)


@contextmanager
def ignoring_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT for life (the disposition survives exec).

    A terminal's Ctrl-C goes to every process in the foreground group; dask's workers would
    each print a traceback. With this, only the driving process sees it and shuts them down.
    A Ctrl-C while they start is lost: press it again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_reachable(address: str) -> None:
    """Fail in a moment, not after the client's timeout, when nothing listens at a tcp:// address."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port or 8786), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot reach the dask scheduler at {address} ({reason}); "
                          "is 'dask scheduler' running there?") from None


def gpu_worker_resources(gpus: int = 1) -> dict[str, float]:
    """dask resources a task needs to own ``gpus`` GPUs: ``client.submit(..., resources=...)``.

    Start one dask worker per GPU, each pinned to its device and advertising one GPU::

        CUDA_VISIBLE_DEVICES=0 dask worker tcp://scheduler:8786 --nworkers 1 --nthreads 1 --resources GPU=1
        CUDA_VISIBLE_DEVICES=1 dask worker tcp://scheduler:8786 --nworkers 1 --nthreads 1 --resources GPU=1

    Tasks submitted with ``resources=gpu_worker_resources()`` then run one at a time per GPU.
    A request no worker can satisfy waits forever, so only ask for it when GPU workers exist.
    """
    return {"GPU": float(gpus)}


def gpu_worker_commands(scheduler: str, gpus: int | Iterable[int], *, threads: int = 1) -> list[str]:
    """Shell commands that start one dask worker per GPU (see :func:`gpu_worker_resources`)."""
    ids = range(gpus) if isinstance(gpus, int) else list(gpus)
    return [f"CUDA_VISIBLE_DEVICES={i} dask worker {scheduler} --nworkers 1 --nthreads {threads} "
            f"--resources GPU=1 --name gpu{i}" for i in ids]
